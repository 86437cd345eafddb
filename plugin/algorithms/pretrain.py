"""hyperadapt:pretrain -- adapt the backbone to a sensor without labels, by masked pretraining on its scenes."""
from __future__ import annotations

import os
import time

from qgis.core import (QgsProcessing, QgsProcessingOutputNumber,
                       QgsProcessingOutputString, QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum, QgsProcessingParameterFile,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterMultipleLayers,
                       QgsProcessingParameterNumber, QgsProcessingParameterString, QgsRasterLayer)

from ...models import options
from .common import (HyperAdaptAlgorithm, file_destination_or_none, raster_file, require_engine,
                     run_engine_job)

# Enum parameters pass positions: the engine's choices in models.options' order.
PRESETS = list(options.PRETRAIN_PRESETS)
BAND_ADAPTATIONS = list(options.BAND_ADAPTATIONS)
BACKBONE_FILE_FILTER = "HyperAdapt backbone (*.pt *.PT)"
OFFICIAL_WEIGHTS_FILTER = "SpectralGPT checkpoint (*.pth *.PTH);;All files (*.*)"
# The live loss goes to the log at most this often (the progress text shows every batch).
LOSS_LOG_INTERVAL_S = 10.0


class PretrainAlgorithm(HyperAdaptAlgorithm):
    RASTERS = "RASTERS"
    SENSOR = "SENSOR"
    PRESET = "PRESET"
    EPOCHS = "EPOCHS"
    TIME_BUDGET = "TIME_BUDGET"
    MASK_RATIO = "MASK_RATIO"
    WEIGHTS = "WEIGHTS"
    BAND_ADAPTATION = "BAND_ADAPTATION"
    BATCH_SIZE = "BATCH_SIZE"
    SEED = "SEED"
    DEVICE = "DEVICE"
    OUTPUT = "OUTPUT"
    BACKBONE_ID = "BACKBONE_ID"
    FINAL_LOSS = "FINAL_LOSS"
    EPOCHS_RUN = "EPOCHS_RUN"

    def name(self):
        return "pretrain"

    def displayName(self):  # noqa: N802 (QGIS's name)
        return self.tr("Prepare a backbone for a sensor (pretrain without labels)")

    def shortHelpString(self):  # noqa: N802 (QGIS's name)
        return self.tr(
            "Adapts SpectralGPT to a sensor using only its rasters, no labels: the model learns to "
            "reconstruct hidden parts of windows cut from the scenes (SpectralGPT's own masked "
            "pretraining). Use it when the official Sentinel-2 weights cannot be downloaded or the "
            "sensor is far from Sentinel-2. The result is a backbone file with its band adaptation; "
            "give it as the weights of the Fine-tune algorithm, and keep using it to classify with "
            "those adapters. Training stops after the epochs or the time budget, whichever comes "
            "first (0 = no limit of that kind). The Base size continues from the official weights "
            "when they are given or were downloaded. A cancelled run keeps its state beside the output "
            "file; running it again with the same settings continues from there.\n\n"
            "Without an output file, the backbone goes into the library: "
            "backbones/<sensor>/<preset>.pt.")

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS's name)
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.RASTERS, self.tr("Rasters of the sensor"), QgsProcessing.TypeRaster))
        self.addParameter(QgsProcessingParameterString(
            self.SENSOR, self.tr("Sensor name (guessed from the first raster if empty)"),
            optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            self.PRESET, self.tr("Backbone size"), options=list(options.PRETRAIN_PRESETS.values()),
            defaultValue=PRESETS.index(options.DEFAULT_PRETRAIN_PRESET)))
        self.addParameter(QgsProcessingParameterNumber(
            self.EPOCHS, self.tr("Epochs (0 = no epoch limit)"), QgsProcessingParameterNumber.Integer,
            0, minValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            self.TIME_BUDGET, self.tr("Time budget in minutes (0 = no time limit)"),
            QgsProcessingParameterNumber.Double, options.DEFAULT_PRETRAIN_MINUTES, minValue=0.0))
        self.addParameter(QgsProcessingParameterFile(
            self.WEIGHTS, self.tr("Official SpectralGPT weights to continue from (base only)"),
            behavior=QgsProcessingParameterFile.File, fileFilter=OFFICIAL_WEIGHTS_FILTER,
            optional=True))
        advanced = [
            QgsProcessingParameterNumber(
                self.MASK_RATIO, self.tr("Share of tokens hidden (0 = chosen from the token count)"),
                QgsProcessingParameterNumber.Double, 0.0, minValue=0.0, maxValue=0.95),
            QgsProcessingParameterEnum(
                self.BAND_ADAPTATION, self.tr("Band adaptation"),
                options=list(options.BAND_ADAPTATIONS.values()),
                defaultValue=BAND_ADAPTATIONS.index(options.PRETRAIN_BAND_ADAPTATION)),
            QgsProcessingParameterNumber(self.BATCH_SIZE, self.tr("Batch size"),
                                         QgsProcessingParameterNumber.Integer, 64, minValue=1,
                                         maxValue=options.MAX_BATCH_SIZE),
            QgsProcessingParameterNumber(self.SEED, self.tr("Random seed"),
                                         QgsProcessingParameterNumber.Integer, 0, minValue=0),
            QgsProcessingParameterEnum(self.DEVICE, self.tr("Device"), options=list(options.DEVICES),
                                       defaultValue=0),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT, self.tr("Backbone file (empty: the library)"),
            fileFilter=BACKBONE_FILE_FILTER, optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputString(self.BACKBONE_ID, self.tr("Backbone id")))
        self.addOutput(QgsProcessingOutputNumber(self.FINAL_LOSS, self.tr("Final masked loss")))
        self.addOutput(QgsProcessingOutputNumber(self.EPOCHS_RUN, self.tr("Epochs run")))

    # -- checks ---------------------------------------------------------------------------------
    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS's name)
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        layers = self.parameterAsLayerList(parameters, self.RASTERS, context)
        if not layers:
            return False, self.tr("Choose at least one raster of the sensor.")
        for layer in layers:
            if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
                return False, self.tr("'{}' is not a raster file readable by GDAL.").format(
                    layer.name())
        if (self.parameterAsInt(parameters, self.EPOCHS, context) == 0
                and self.parameterAsDouble(parameters, self.TIME_BUDGET, context) <= 0):
            return False, self.tr("Give pretraining a budget: a number of epochs, a time limit, "
                                  "or both.")
        weights = self.parameterAsFile(parameters, self.WEIGHTS, context)
        if weights and not os.path.isfile(weights):
            return False, self.tr("The weights file {} does not exist.").format(weights)
        if weights and PRESETS[self.parameterAsEnum(parameters, self.PRESET, context)] != "base":
            return False, self.tr("The official weights have the 'base' shape; choose the Base "
                                  "backbone size to continue from them.")
        return True, ""

    # -- run ------------------------------------------------------------------------------------
    def settings_from_parameters(self, parameters, context):
        from ...models.jobs.pretraining import PretrainSettings

        epochs = self.parameterAsInt(parameters, self.EPOCHS, context)
        minutes = self.parameterAsDouble(parameters, self.TIME_BUDGET, context)
        mask_ratio = self.parameterAsDouble(parameters, self.MASK_RATIO, context)
        return PretrainSettings(
            preset=PRESETS[self.parameterAsEnum(parameters, self.PRESET, context)],
            weights=self.parameterAsFile(parameters, self.WEIGHTS, context) or None,
            mask_ratio=mask_ratio if mask_ratio > 0 else None,
            epochs=epochs if epochs > 0 else None,
            time_budget_s=60.0 * minutes if minutes > 0 else None,
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            band_adaptation=BAND_ADAPTATIONS[
                self.parameterAsEnum(parameters, self.BAND_ADAPTATION, context)],
            seed=self.parameterAsInt(parameters, self.SEED, context),
            device=options.DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS's name)
        require_engine()
        from ...models.data.raster import read_raster_info
        from ...models.jobs.pretraining import pretrain_backbone, resume_path_for
        from ...models.stores.backbone_file import default_backbone_path

        layers = self.parameterAsLayerList(parameters, self.RASTERS, context)
        rasters = [raster_file(layer, f"raster '{layer.name()}'") for layer in layers]
        sensor = self.parameterAsString(parameters, self.SENSOR, context).strip()
        if not sensor:
            sensor = run_engine_job(read_raster_info, rasters[0]).sensor
            feedback.pushInfo(f"Sensor: {sensor} (guessed from {layers[0].name()}).")
        settings = run_engine_job(self.settings_from_parameters, parameters, context)
        if settings.preset == "base" and not settings.weights:
            from ...models.network.weights import find_cached_weights
            cached = find_cached_weights()
            if cached is not None:
                settings.weights = str(cached)
                feedback.pushInfo(f"Continuing from the downloaded official weights {cached}.")
        output = (file_destination_or_none(self, parameters, self.OUTPUT, context)
                  or str(default_backbone_path(sensor, settings.preset)))
        if resume_path_for(output).exists():
            feedback.pushInfo(f"Continuing the unfinished pretraining kept in "
                              f"{resume_path_for(output)}.")
        start = "the official weights" if settings.weights else "a random start"
        feedback.pushInfo(f"Pretraining the {settings.preset} backbone from {start} on "
                          f"{len(rasters)} raster(s); the masked loss should fall.")

        last_logged = [0.0]

        def progress(fraction: float, message: str = "") -> None:
            feedback.setProgress(100.0 * max(0.0, min(1.0, float(fraction))))
            if not message:
                return
            feedback.setProgressText(message)
            now = time.monotonic()
            if "loss" not in message or now - last_logged[0] >= LOSS_LOG_INTERVAL_S:
                feedback.pushInfo(message)
                last_logged[0] = now

        result = run_engine_job(pretrain_backbone, rasters, output, settings=settings,
                                sensor=sensor, progress=progress, cancel=feedback.isCanceled,
                                resume=True)
        final_loss = result.losses[-1] if result.losses else None
        loss_text = "n/a" if final_loss is None else f"{final_loss:.4f}"
        feedback.pushInfo(
            f"Backbone {result.backbone_path} (id {result.backbone_id[:12]}…), {result.epochs} "
            f"epochs, {result.seconds / 60:.1f} min{', resumed' if result.resumed else ''}; "
            f"final masked loss {loss_text}.")
        return {self.OUTPUT: result.backbone_path, self.BACKBONE_ID: result.backbone_id,
                self.FINAL_LOSS: final_loss, self.EPOCHS_RUN: result.epochs}
