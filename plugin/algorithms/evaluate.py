"""hyperadapt:evaluate -- accuracy of a classification against reference polygons, points or a raster."""
from __future__ import annotations

from qgis.core import (QgsMapLayerType, QgsProcessing, QgsProcessingException,
                       QgsProcessingOutputNumber, QgsProcessingParameterDefinition,
                       QgsProcessingParameterField, QgsProcessingParameterFileDestination,
                       QgsProcessingParameterMapLayer, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterLayer)

from ...models import options
from .common import (EngineFeedback, HyperAdaptAlgorithm, file_destination_or_none, format_number,
                     format_ratio, raster_file, require_engine, run_engine_job, vector_file)


class EvaluateAlgorithm(HyperAdaptAlgorithm):
    INPUT = "INPUT"
    REFERENCE = "REFERENCE"
    REFERENCE_FIELD = "REFERENCE_FIELD"
    MAX_UNMATCHED = "MAX_UNMATCHED"
    OUTPUT_HTML = "OUTPUT_HTML"
    OUTPUT_JSON = "OUTPUT_JSON"
    OVERALL_ACCURACY = "OVERALL_ACCURACY"
    AVERAGE_ACCURACY = "AVERAGE_ACCURACY"
    KAPPA = "KAPPA"
    NUM_SAMPLES = "NUM_SAMPLES"
    UNMATCHED_SHARE = "UNMATCHED_SHARE"
    ADJUSTED_OVERALL_ACCURACY = "ADJUSTED_OVERALL_ACCURACY"
    ADJUSTED_OVERALL_ACCURACY_CI = "ADJUSTED_OVERALL_ACCURACY_CI"

    def name(self):
        return "evaluate"

    def displayName(self):  # noqa: N802 (QGIS's name)
        return self.tr("Evaluate a classification")

    def shortHelpString(self):  # noqa: N802 (QGIS's name)
        return self.tr(
            "Compares a HyperAdapt classification with reference data: polygons or points with a "
            "class field (names or values), or a class raster on the same grid (0 = no reference). "
            "Writes overall accuracy, average accuracy, kappa, per-class accuracies and the "
            "confusion matrix as an HTML report and as JSON, and beside them the estimates that "
            "weigh each class by its mapped area (Olofsson et al. 2014): overall, user's and "
            "producer's accuracy and each class's area, with 95 % confidence intervals. When more than the accepted share "
            "of the reference pixels belong to classes the classification does not have, it "
            "refuses and names them, because the accuracy of the rest would mislead.")

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS's name)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Classification")))
        self.addParameter(QgsProcessingParameterMapLayer(
            self.REFERENCE, self.tr("Reference (polygons, points or a class raster)"),
            types=[QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeVectorPoint,
                   QgsProcessing.TypeRaster]))
        self.addParameter(QgsProcessingParameterField(
            self.REFERENCE_FIELD, self.tr("Reference class field (vector reference only)"),
            parentLayerParameterName=self.REFERENCE, optional=True))
        share = QgsProcessingParameterNumber(
            self.MAX_UNMATCHED, self.tr("Accepted share of reference pixels of unknown classes"),
            QgsProcessingParameterNumber.Double, options.DEFAULT_MAX_UNMATCHED_SHARE,
            minValue=0.0, maxValue=1.0)
        share.setFlags(share.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(share)
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_HTML, self.tr("Accuracy report"), fileFilter="HTML files (*.html)"))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_JSON, self.tr("Accuracy figures (JSON)"), fileFilter="JSON files (*.json)",
            optional=True, createByDefault=True))
        for key, label in ((self.OVERALL_ACCURACY, "Overall accuracy"),
                           (self.AVERAGE_ACCURACY, "Average accuracy"), (self.KAPPA, "Kappa"),
                           (self.NUM_SAMPLES, "Reference pixels compared"),
                           (self.UNMATCHED_SHARE, "Share of reference pixels of unknown classes"),
                           (self.ADJUSTED_OVERALL_ACCURACY,
                            "Area-adjusted overall accuracy (Olofsson et al. 2014)"),
                           (self.ADJUSTED_OVERALL_ACCURACY_CI,
                            "Its 95 % confidence half-width")):
            self.addOutput(QgsProcessingOutputNumber(key, self.tr(label)))

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS's name)
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        classification = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if classification is None or not classification.isValid():
            return False, self.tr("The classification cannot be read.")
        reference = self.parameterAsLayer(parameters, self.REFERENCE, context)
        if reference is None or not reference.isValid():
            return False, self.tr("The reference layer cannot be read.")
        field = self.parameterAsString(parameters, self.REFERENCE_FIELD, context)
        if reference.type() == QgsMapLayerType.VectorLayer:
            if not field:
                return False, self.tr("A vector reference needs its class field (REFERENCE_FIELD).")
            if reference.fields().lookupField(field) < 0:
                return False, self.tr("The reference layer '{}' has no field named '{}'.").format(
                    reference.name(), field)
        return True, ""

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS's name)
        require_engine()
        from ...models.jobs import evaluate

        classification = raster_file(self.parameterAsRasterLayer(parameters, self.INPUT, context),
                                     "classification")
        reference = self.parameterAsLayer(parameters, self.REFERENCE, context)
        class_field = None
        layer_name = None
        if reference is not None and reference.type() == QgsMapLayerType.VectorLayer:
            reference_path, layer_name = vector_file(reference, context, feedback, "reference layer")
            class_field = self.parameterAsString(parameters, self.REFERENCE_FIELD, context)
        elif reference is not None and reference.type() == QgsMapLayerType.RasterLayer:
            reference_path = raster_file(reference, "reference raster")
        else:
            raise QgsProcessingException("The reference must be a vector layer or a class raster.")
        html = file_destination_or_none(self, parameters, self.OUTPUT_HTML, context)
        json_path = file_destination_or_none(self, parameters, self.OUTPUT_JSON, context)
        with EngineFeedback(feedback=feedback) as engine_feedback:
            metrics = run_engine_job(evaluate, classification, reference_path, class_field=class_field,
                                     layer_name=layer_name, html_path=html, json_path=json_path,
                                     max_unmatched_share=self.parameterAsDouble(
                                         parameters, self.MAX_UNMATCHED, context),
                                     progress=engine_feedback.progress, cancel=engine_feedback.cancel)
        overall, average, kappa = (metrics.get(key) for key in
                                   ("overall_accuracy", "average_accuracy", "kappa"))
        adjusted = metrics.get("area_adjusted") or {}
        feedback.pushInfo(f"Overall accuracy {format_ratio(overall)}, average accuracy "
                          f"{format_ratio(average)}, kappa {format_number(kappa)} over "
                          f"{metrics.get('num_samples')} reference pixels.")
        return {self.OUTPUT_HTML: html, self.OUTPUT_JSON: json_path, self.OVERALL_ACCURACY: overall,
                self.AVERAGE_ACCURACY: average, self.KAPPA: kappa,
                self.NUM_SAMPLES: metrics.get("num_samples"),
                self.UNMATCHED_SHARE: metrics.get("unmatched_reference_share"),
                self.ADJUSTED_OVERALL_ACCURACY: adjusted.get("overall_accuracy"),
                self.ADJUSTED_OVERALL_ACCURACY_CI: adjusted.get("overall_accuracy_ci")}
