"""hyperadapt:classify -- classify a raster with a trained adapter file."""
from __future__ import annotations

import os

from qgis.core import (QgsProcessingOutputNumber, QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum, QgsProcessingParameterFile,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterRasterLayer)

from ...models import options
from .common import (ADAPTER_FILE_FILTER, DEVICE_OPTIONS, WEIGHTS_FILE_FILTER, EngineFeedback,
                     HyperAdaptAlgorithm, check_geotiff_destination, destination_or_none,
                     raster_file, require_engine, run_engine_job, style_when_loaded)

# Position 0 keeps the adapter's own mode; then the engine's modes in models.options' order.
MODES = [None, *options.CLASSIFY_MODES]


class ClassifyAlgorithm(HyperAdaptAlgorithm):
    INPUT = "INPUT"
    ADAPTER = "ADAPTER"
    WEIGHTS = "WEIGHTS"
    DEVICE = "DEVICE"
    BATCH_SIZE = "BATCH_SIZE"
    MODE = "MODE"
    OUTPUT = "OUTPUT"
    OUTPUT_CONFIDENCE = "OUTPUT_CONFIDENCE"
    NUM_CLASSES = "NUM_CLASSES"

    def name(self):
        return "classify"

    def displayName(self):  # noqa: N802 (QGIS's name)
        return self.tr("Classify with an adapter")

    def shortHelpString(self):  # noqa: N802 (QGIS's name)
        return self.tr(
            "Classifies a hyperspectral raster with an adapter file made by 'Fine-tune SpectralGPT and "
            "classify'. The raster must come from the same sensor (same bands) as the adapter's "
            "training raster. The output is a GeoTIFF styled with the classes' names and colours; "
            "the optional confidence raster holds the winning class's probability. The raster is "
            "classified as the adapter was made (tile or window mode) unless Advanced says "
            "otherwise.")

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS's name)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Hyperspectral raster")))
        self.addParameter(QgsProcessingParameterFile(
            self.ADAPTER, self.tr("Adapter file"), behavior=QgsProcessingParameterFile.File,
            fileFilter=ADAPTER_FILE_FILTER))
        advanced = [
            QgsProcessingParameterFile(self.WEIGHTS,
                                       self.tr("Weights (official checkpoint or HyperAdapt backbone file)"),
                                       behavior=QgsProcessingParameterFile.File,
                                       fileFilter=WEIGHTS_FILE_FILTER, optional=True),
            QgsProcessingParameterEnum(self.DEVICE, self.tr("Device"), options=list(DEVICE_OPTIONS),
                                       defaultValue=0),
            QgsProcessingParameterEnum(self.MODE, self.tr("Classifying the scene"),
                                       options=[self.tr("As the adapter was made")]
                                       + list(options.CLASSIFY_MODES.values()),
                                       defaultValue=0),
            QgsProcessingParameterNumber(self.BATCH_SIZE, self.tr("Batch size"),
                                         QgsProcessingParameterNumber.Integer, 64, minValue=1,
                                         maxValue=options.MAX_BATCH_SIZE),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT,
                                                                  self.tr("Classification")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_CONFIDENCE, self.tr("Confidence"), optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber(self.NUM_CLASSES, self.tr("Number of classes")))

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS's name)
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        raster = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if raster is None or not raster.isValid():
            return False, self.tr("The hyperspectral raster cannot be read.")
        if raster.providerType() != "gdal":
            return False, self.tr("The hyperspectral raster must be a raster file readable by GDAL.")
        adapter = self.parameterAsFile(parameters, self.ADAPTER, context)
        if not os.path.isfile(adapter):
            return False, self.tr("The adapter file {} does not exist.").format(adapter)
        weights = self.parameterAsFile(parameters, self.WEIGHTS, context)
        if weights and not os.path.isfile(weights):
            return False, self.tr("The weights file {} does not exist.").format(weights)
        return True, ""

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS's name)
        require_engine()
        from ...models.data.samples import describe_class_pixels
        from ...models.jobs import classify

        raster = raster_file(self.parameterAsRasterLayer(parameters, self.INPUT, context),
                             "hyperspectral raster")
        adapter = self.parameterAsFile(parameters, self.ADAPTER, context)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        confidence = destination_or_none(self, parameters, self.OUTPUT_CONFIDENCE, context)
        check_geotiff_destination(output, "classification")
        check_geotiff_destination(confidence, "confidence raster")
        with EngineFeedback(feedback=feedback) as engine_feedback:
            result = run_engine_job(
                classify, raster, adapter, output, confidence_path=confidence,
                weights=self.parameterAsFile(parameters, self.WEIGHTS, context) or None,
                device=DEVICE_OPTIONS[self.parameterAsEnum(parameters, self.DEVICE, context)],
                batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
                mode=MODES[self.parameterAsEnum(parameters, self.MODE, context)],
                progress=engine_feedback.progress, cancel=engine_feedback.cancel)
        for note in result.notes:
            feedback.pushInfo(note)
        feedback.pushInfo(f"Classified {len(result.classes)} classes in {result.seconds:.0f} s: "
                          f"{result.output_path}")
        feedback.pushInfo("Pixels per class: " + describe_class_pixels(result.classes,
                                                                       result.pixels_per_class))
        style_when_loaded(context, result.output_path, classification=True)
        style_when_loaded(context, result.confidence_path, classification=False)
        return {self.OUTPUT: result.output_path, self.OUTPUT_CONFIDENCE: result.confidence_path,
                self.NUM_CLASSES: len(result.classes)}
