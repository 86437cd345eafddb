"""hyperadapt:suggest -- where to draw training polygons next, from a fine-tuned adapter."""
from __future__ import annotations

import os
from pathlib import Path

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingOutputLayerDefinition,
                       QgsProcessingOutputNumber,
                       QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterField,
                       QgsProcessingParameterFile, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterVectorDestination)

from .common import (ADAPTER_FILE_FILTER, DEVICE_OPTIONS, EngineFeedback, HyperAdaptAlgorithm,
                     raster_file, require_engine, run_engine_job, vector_file)


GPKG_ONLY = "The suggestions are written as a GeoPackage; give the output a .gpkg name."


class SuggestAlgorithm(HyperAdaptAlgorithm):
    INPUT = "INPUT"
    ADAPTER = "ADAPTER"
    TRAINING = "TRAINING"
    CLASS_FIELD = "CLASS_FIELD"
    COUNT = "COUNT"
    MIN_SPACING = "MIN_SPACING"
    DEVICE = "DEVICE"
    OUTPUT = "OUTPUT"
    NUM_SUGGESTIONS = "NUM_SUGGESTIONS"

    def name(self):
        return "suggest"

    def displayName(self):  # noqa: N802 (QGIS's name)
        return self.tr("Suggest where to draw next")

    def shortHelpString(self):  # noqa: N802 (QGIS's name)
        return self.tr(
            "Points where a new training polygon would teach the adapter most: the pixels it is "
            "least sure of (the smallest margin between its two most probable classes), at least "
            "the given spacing apart and away from the training layer, taken in turn from each "
            "class the model guesses (Tuia et al. 2011, margin sampling with diversity). Each "
            "point has its rank, score (1 = undecided), the model's best guess and its "
            "probability. The output is a GeoPackage.")

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS's name)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT,
                                                            self.tr("Hyperspectral raster")))
        self.addParameter(QgsProcessingParameterFile(
            self.ADAPTER, self.tr("Adapter file"), behavior=QgsProcessingParameterFile.File,
            fileFilter=ADAPTER_FILE_FILTER))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.TRAINING, self.tr("Training polygons or points to stay away from"),
            [QgsProcessing.TypeVectorAnyGeometry], optional=True))
        self.addParameter(QgsProcessingParameterField(
            self.CLASS_FIELD, self.tr("Class field"), parentLayerParameterName=self.TRAINING,
            optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.COUNT, self.tr("Number of suggestions"), QgsProcessingParameterNumber.Integer,
            20, minValue=1, maxValue=10000))
        self.addParameter(QgsProcessingParameterNumber(
            self.MIN_SPACING, self.tr("Least spacing between suggestions (pixels)"),
            QgsProcessingParameterNumber.Integer, 10, minValue=0, maxValue=100000))
        device = QgsProcessingParameterEnum(self.DEVICE, self.tr("Device"),
                                            options=list(DEVICE_OPTIONS), defaultValue=0)
        device.setFlags(device.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(device)
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT, self.tr("Suggestions"), QgsProcessing.TypeVectorPoint))
        self.addOutput(QgsProcessingOutputNumber(self.NUM_SUGGESTIONS,
                                                 self.tr("Number of suggestions made")))

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS's name)
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        adapter = self.parameterAsFile(parameters, self.ADAPTER, context)
        if not os.path.isfile(adapter):
            return False, self.tr("The adapter file {} does not exist.").format(adapter)
        output = parameters.get(self.OUTPUT)
        if isinstance(output, QgsProcessingOutputLayerDefinition):
            output = output.sink.staticValue()
        output = str(output or "")
        if output and output != QgsProcessing.TEMPORARY_OUTPUT and \
                Path(output).suffix.lower() != ".gpkg":
            return False, self.tr(GPKG_ONLY)
        return True, ""

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS's name)
        require_engine()
        from ...models.jobs import suggest

        raster = raster_file(self.parameterAsRasterLayer(parameters, self.INPUT, context),
                             "hyperspectral raster")
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        if Path(output).suffix.lower() != ".gpkg":
            raise QgsProcessingException(GPKG_ONLY)
        training = layer_name = field = None
        if parameters.get(self.TRAINING):
            training, layer_name = vector_file(
                self.parameterAsVectorLayer(parameters, self.TRAINING, context), context,
                feedback)
            field = self.parameterAsString(parameters, self.CLASS_FIELD, context) or None
        with EngineFeedback(feedback=feedback) as engine_feedback:
            result = run_engine_job(
                suggest, raster, self.parameterAsFile(parameters, self.ADAPTER, context), output,
                count=self.parameterAsInt(parameters, self.COUNT, context),
                min_spacing=self.parameterAsInt(parameters, self.MIN_SPACING, context),
                training_path=training, class_field=field, layer_name=layer_name,
                device=DEVICE_OPTIONS[self.parameterAsEnum(parameters, self.DEVICE, context)],
                progress=engine_feedback.progress, cancel=engine_feedback.cancel)
        feedback.pushInfo(f"{len(result['suggestions'])} suggestions from "
                          f"{result['scored_pixels']:,} scored pixels in "
                          f"{result['seconds']:.0f} s: {output}")
        return {self.OUTPUT: output, self.NUM_SUGGESTIONS: len(result["suggestions"])}
