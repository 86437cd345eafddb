"""What the HyperAdapt algorithms share: the engine call with feedback, inputs as paths, styled outputs."""
from __future__ import annotations

import os
from pathlib import Path

from qgis.core import (QgsProcessing, QgsProcessingAlgorithm, QgsProcessingException,
                       QgsProcessingLayerPostProcessorInterface, QgsProcessingParameterEnum,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterMapLayer,
                       QgsProcessingParameterMultipleLayers, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterVectorLayer,
                       QgsProcessingUtils, QgsRasterLayer, QgsVectorLayer)
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ...models import options
from .. import dependencies
from ..styling import apply_classification_style, style_path_for

PLUGIN_DIR = Path(__file__).resolve().parents[2]
DEVICE_OPTIONS = options.DEVICES
GEOTIFF_SUFFIXES = (".tif", ".tiff")
ADAPTER_FILE_FILTER = "HyperAdapt adapter (*.pt *.PT)"
WEIGHTS_FILE_FILTER = ("SpectralGPT checkpoint or HyperAdapt backbone (*.pth *.pt *.PTH *.PT);;"
                       "All files (*.*)")


class HyperAdaptAlgorithm(QgsProcessingAlgorithm):
    """Base of the HyperAdapt algorithms: translation, icon, a fresh instance per run."""

    def tr(self, text: str) -> str:
        return QCoreApplication.translate("HyperAdapt", text)

    def createInstance(self):  # noqa: N802 (QGIS's name)
        return type(self)()

    def icon(self):
        return QIcon(str(PLUGIN_DIR / "resources" / "icon.png"))

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS's name)
        # QGIS's own check says only "Incorrect parameter value for WINDOW_SIZE" for a number out
        # of its range, and "not found" for a file it cannot read: say which value and why first.
        problem = value_problem(self, parameters)
        if problem:
            return False, problem
        return super().checkParameterValues(parameters, context)


def _format_number(value: float, integer: bool) -> str:
    return f"{int(value):,}" if integer else f"{value:g}"


def _number_problem(definition: QgsProcessingParameterNumber, value) -> str | None:
    name = definition.description()
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None  # an expression or a model's input: QGIS evaluates it
    integer = definition.dataType() == QgsProcessingParameterNumber.Integer
    if integer and number != int(number):
        return f"{name} must be a whole number, not {number:g}."
    low, high = definition.minimum(), definition.maximum()
    # QGIS stores "no limit" as the extreme doubles.
    low = None if low < -1e300 else low
    high = None if high > 1e300 else high
    if (low is None or number >= low) and (high is None or number <= high):
        return None
    if low is not None and high is not None:
        span = f"from {_format_number(low, integer)} to {_format_number(high, integer)}"
    elif low is not None:
        span = f"at least {_format_number(low, integer)}"
    else:
        span = f"at most {_format_number(high, integer)}"
    return f"{name} must be {span}; {_format_number(number, integer)} was given."


_LAYER_KINDS = {"raster": "raster", "vector": "vector layer", "layer": "raster or vector layer"}


def _file_problem(path: str, kind: str) -> str | None:
    """A sentence when ``path`` names a file that is missing or that GDAL cannot open as a
    ``kind`` ("raster", "vector" or "layer", either)."""
    from osgeo import gdal

    if not isinstance(path, str) or not path or not os.path.isabs(path.split("|")[0]):
        return None  # a layer id or a layer of the project: QGIS resolves it
    path = path.split("|")[0]
    if not os.path.exists(path):
        return f"{path} does not exist."
    if os.path.isdir(path) and kind == "raster":
        return f"{path} is a folder, not a raster."
    flags = {"raster": gdal.OF_RASTER, "vector": gdal.OF_VECTOR,
             "layer": gdal.OF_RASTER | gdal.OF_VECTOR}[kind]
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        opened = gdal.OpenEx(path, flags)
    except RuntimeError:
        opened = None
    finally:
        gdal.PopErrorHandler()
    if opened is None:
        return f"{Path(path).name} is not a {_LAYER_KINDS[kind]} that GDAL can read."
    return None


def value_problem(algorithm: QgsProcessingAlgorithm, parameters: dict) -> str | None:
    """The first given value outside its parameter's range, option list or readable files, as
    a sentence; None when there is none (QGIS's own check then runs)."""
    for definition in algorithm.parameterDefinitions():
        value = parameters.get(definition.name())
        # Only plain values: a model's inputs and expressions are QGIS's to evaluate.
        if not isinstance(value, (int, float, str, list, tuple)) or value in ("", [], ()):
            continue
        if isinstance(definition, QgsProcessingParameterNumber):
            problem = _number_problem(definition, value)
        elif isinstance(definition, QgsProcessingParameterEnum):
            choices = definition.options()
            try:
                index = int(value)
            except (TypeError, ValueError):
                continue
            problem = None if 0 <= index < len(choices) or definition.allowMultiple() else (
                f"{definition.description()} must be one of "
                + ", ".join(f"{i} ({c})" for i, c in enumerate(choices)) + f"; {value} was given.")
        elif isinstance(definition, QgsProcessingParameterRasterLayer):
            problem = _file_problem(value, "raster")
        elif isinstance(definition, (QgsProcessingParameterVectorLayer,
                                     QgsProcessingParameterFeatureSource)):
            problem = _file_problem(value, "vector")
        elif isinstance(definition, QgsProcessingParameterMapLayer):
            problem = _file_problem(value, "layer")
        elif isinstance(definition, QgsProcessingParameterMultipleLayers):
            values = value if isinstance(value, (list, tuple)) else str(value).split(";")
            kind = "raster" if definition.layerType() == QgsProcessing.TypeRaster else "layer"
            problem = next((p for p in (_file_problem(v, kind) for v in values) if p), None)
        else:
            continue
        if problem:
            return problem
    return None


def require_engine() -> None:
    """Fails with the install instructions when torch, einops or appdirs are missing."""
    missing = dependencies.missing_modules()
    if missing:
        raise QgsProcessingException(dependencies.missing_message(missing))


class EngineFeedback:
    """The engine's progress(fraction, message) and cancel() callbacks, backed by a QGIS feedback.

    The engine reports a message per batch ("Epoch 3/30: loss 0.52"); every one becomes the
    progress text, but the log gets only the last message of each step (the text before the first
    colon), so a run leaves one line per epoch instead of one per batch.
    """

    def __init__(self, *, feedback):
        """Args:
            feedback: the algorithm's QgsProcessingFeedback (None: report nothing, never cancel).
        """
        self.feedback = feedback
        self._step = None
        self._pending = None

    def progress(self, fraction: float, message: str = "") -> None:
        if self.feedback is None:
            return
        self.feedback.setProgress(100.0 * max(0.0, min(1.0, float(fraction))))
        if not message:
            return
        self.feedback.setProgressText(message)
        step = message.split(":", 1)[0]
        if step != self._step:
            self.flush()
            self._step = step
        self._pending = message

    def cancel(self) -> bool:
        return self.feedback is not None and self.feedback.isCanceled()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.flush()
        return False

    def flush(self) -> None:
        """Logs the message held back, if any."""
        if self.feedback is not None and self._pending:
            self.feedback.pushInfo(self._pending)
        self._pending = None


def run_engine_job(job, *args, **kwargs):
    """Runs one models.jobs function; a HyperAdaptError becomes a QgsProcessingException, same
    words, and a failed file operation one sentence."""
    from ...models.errors import HyperAdaptError, os_error_sentence

    try:
        return job(*args, **kwargs)
    except HyperAdaptError as error:
        raise QgsProcessingException(str(error)) from None
    except OSError as error:       # a full disk or a folder taken away while the job ran
        raise QgsProcessingException(os_error_sentence(error)) from None
    except MemoryError:
        raise QgsProcessingException("The computer ran out of memory; use a smaller batch size or "
                                     "a smaller raster.") from None
    except Exception as error:     # a bug: one line for the user, the traceback in the log
        import traceback

        from qgis.core import Qgis, QgsMessageLog

        QgsMessageLog.logMessage(traceback.format_exc(), "HyperAdapt", Qgis.Critical)
        raise QgsProcessingException(
            f"Unexpected error ({type(error).__name__}: {error}); the details are in the "
            f"HyperAdapt log.") from None


def raster_file(layer, what: str) -> str:
    """The GDAL file behind a raster layer parameter, or one sentence saying why there is none."""
    if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
        raise QgsProcessingException(f"The {what} is not a readable raster layer.")
    if layer.providerType() != "gdal":
        raise QgsProcessingException(f"The {what} must be a raster file readable by GDAL, not a "
                                     f"'{layer.providerType()}' layer.")
    return layer.source()


def vector_file(layer, context, feedback, what: str = "training layer") -> tuple[str, str | None]:
    """(path, layer name) of an OGR file holding the layer's features as QGIS shows them.

    A plain OGR layer is read where it is; a filtered, memory or database layer is first copied
    to a GeoPackage in the Processing temporary folder, so the engine reads what the user sees.
    """
    from ...models.errors import HyperAdaptError
    from ..layers import export_layer, vector_source

    if not isinstance(layer, QgsVectorLayer) or not layer.isValid():
        raise QgsProcessingException(f"The {what} is not a readable vector layer.")
    source = vector_source(layer)
    if source is not None:
        return source
    copy = QgsProcessingUtils.generateTempFilename(f"{layer.name() or 'layer'}.gpkg")
    try:
        export_layer(layer, Path(copy), context.transformContext())
    except HyperAdaptError as error:
        raise QgsProcessingException(str(error)) from None
    if feedback is not None:
        feedback.pushInfo(f"Read '{layer.name()}' from a copy: {copy}")
    return copy, "features"


def check_geotiff_destination(path: str, what: str) -> None:
    if path and Path(path).suffix.lower() not in GEOTIFF_SUFFIXES:
        raise QgsProcessingException(f"The {what} is written as a GeoTIFF; give it a .tif name "
                                     f"instead of {Path(path).name}.")


def destination_or_none(algorithm, parameters, name, context) -> str | None:
    """The path of an optional raster destination, or None when the user skipped it."""
    value = parameters.get(name)
    if value is None or value == "":
        return None
    path = algorithm.parameterAsOutputLayer(parameters, name, context)
    return path or None


def file_destination_or_none(algorithm, parameters, name, context) -> str | None:
    value = parameters.get(name)
    if value is None or value == "":
        return None
    path = algorithm.parameterAsFileOutput(parameters, name, context)
    return path or None


class OutputStylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Gives a raster loaded at the end of a run the .qml style the engine wrote beside it.

    Processing opens result layers without their default style, so without this a classification
    would show the colour table's values instead of the class names.
    """

    def __init__(self, *, classification: bool):
        """Args:
            classification: the layer is a class raster and must end with a paletted renderer.
        """
        super().__init__()
        self.classification = classification

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS's name)
        if not isinstance(layer, QgsRasterLayer):
            return
        if self.classification:
            apply_classification_style(layer)
            return
        qml = style_path_for(layer.source())
        if qml.exists():
            layer.loadNamedStyle(str(qml))
            layer.triggerRepaint()


# The context owns each post-processor and deletes it, but the Python half of the object lives
# only as long as a Python reference to it: without one QGIS would call the bare base class.
_LIVE_POST_PROCESSORS: list[OutputStylePostProcessor] = []


def style_when_loaded(context, path: str | None, *, classification: bool = True) -> None:
    """When QGIS will load `path` on completion (Toolbox, batch, model), style it from its .qml."""
    if not path or not context.willLoadLayerOnCompletion(path):
        return
    processor = OutputStylePostProcessor(classification=classification)
    _LIVE_POST_PROCESSORS[:] = [p for p in _LIVE_POST_PROCESSORS if not sip.isdeleted(p)]
    _LIVE_POST_PROCESSORS.append(processor)
    context.layerToLoadOnCompletionDetails(path).setPostProcessor(processor)


def format_ratio(value) -> str:
    """A share as a percentage for the log ("n/a" when there is none)."""
    return "n/a" if value is None else f"{100 * float(value):.1f} %"


def format_number(value) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"
