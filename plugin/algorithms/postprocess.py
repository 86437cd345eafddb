"""hyperadapt:postprocess -- clean a classification: segment vote, majority filter, sieve."""
from __future__ import annotations

from qgis.core import (QgsProcessingOutputNumber, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer)

from ...models import options
from .common import (EngineFeedback, HyperAdaptAlgorithm, check_geotiff_destination, raster_file,
                     require_engine, run_engine_job, style_when_loaded)


class PostprocessAlgorithm(HyperAdaptAlgorithm):
    INPUT = "INPUT"
    RASTER = "RASTER"
    SEGMENT_SIZE = "SEGMENT_SIZE"
    MAJORITY_SIZE = "MAJORITY_SIZE"
    SIEVE_PIXELS = "SIEVE_PIXELS"
    OUTPUT = "OUTPUT"
    CHANGED_PIXELS = "CHANGED_PIXELS"

    def name(self):
        return "postprocess"

    def displayName(self):  # noqa: N802 (QGIS's name)
        return self.tr("Clean a classification (segment vote, majority filter, sieve)")

    def shortHelpString(self):  # noqa: N802 (QGIS's name)
        return self.tr(
            "Cleans a HyperAdapt classification, in this order: a segment vote (each pixel takes "
            "the class most pixels of its superpixel of the scene have; needs the scene's "
            "raster), a majority filter (each pixel takes the commonest class of the square "
            "around it) and a sieve (patches smaller than a number of pixels join their largest "
            "neighbour). 0 skips a step. Nodata stays nodata; class names and colours are kept.")

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS's name)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Classification")))
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.RASTER, self.tr("The classified scene (for the segment vote)"), optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.SEGMENT_SIZE, self.tr("Segment vote: superpixel size in pixels (0 = off)"),
            QgsProcessingParameterNumber.Integer, 0, minValue=0,
            maxValue=options.MAX_SEGMENT_SIZE))
        self.addParameter(QgsProcessingParameterNumber(
            self.MAJORITY_SIZE, self.tr("Majority filter: window in pixels, odd (0 = off)"),
            QgsProcessingParameterNumber.Integer, 3, minValue=0, maxValue=options.MAX_WINDOW_SIZE))
        self.addParameter(QgsProcessingParameterNumber(
            self.SIEVE_PIXELS, self.tr("Sieve: smallest patch kept, in pixels (0 = off)"),
            QgsProcessingParameterNumber.Integer, 0, minValue=0))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT, self.tr("Cleaned classification")))
        self.addOutput(QgsProcessingOutputNumber(self.CHANGED_PIXELS,
                                                 self.tr("Pixels whose class changed")))

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS's name)
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        if (self.parameterAsInt(parameters, self.SEGMENT_SIZE, context)
                and self.parameterAsRasterLayer(parameters, self.RASTER, context) is None):
            return False, self.tr("The segment vote needs the classified scene's raster.")
        return True, ""

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS's name)
        require_engine()
        from ...models.jobs import postprocess

        classification = raster_file(self.parameterAsRasterLayer(parameters, self.INPUT, context),
                                     "classification")
        scene = self.parameterAsRasterLayer(parameters, self.RASTER, context)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        check_geotiff_destination(output, "cleaned classification")
        with EngineFeedback(feedback=feedback) as engine_feedback:
            result = run_engine_job(
                postprocess, classification, output,
                sieve_pixels=self.parameterAsInt(parameters, self.SIEVE_PIXELS, context),
                majority_size=self.parameterAsInt(parameters, self.MAJORITY_SIZE, context),
                segment_size=self.parameterAsInt(parameters, self.SEGMENT_SIZE, context),
                raster_path=raster_file(scene, "scene raster") if scene is not None else None,
                progress=engine_feedback.progress, cancel=engine_feedback.cancel)
        feedback.pushInfo(f"{', '.join(result['steps'])}: {result['changed_pixels']} pixels "
                          f"changed class.")
        style_when_loaded(context, output, classification=True)
        return {self.OUTPUT: output, self.CHANGED_PIXELS: result["changed_pixels"]}
