"""The Fine-tune dialog: pick a raster and training polygons, train an adapter in the background,
and get the classified raster as a styled layer plus the adapter in the per-sensor library.

The dialog reads everything it needs from the layers on the GUI thread (source paths, class
colours from the categorized style) and hands plain values to a worker thread, which runs
``models.jobs.fine_tune`` (training, the adapter file, the classification of the whole raster and
the report). When it ends, the GUI thread adds the classification layer and sums up the result in
the message bar.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from qgis.core import Qgis, QgsMapLayerProxyModel, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.gui import QgsFileWidget
from qgis.PyQt import uic
from qgis.PyQt.QtCore import QVariant, pyqtSlot

from ..models import options
from ..models.errors import HyperAdaptError
from .layers import (export_layer, guess_class_field, placement_problem, safe_file_stem,
                     unique_stem, vector_source)
from .rendering import show_in_true_colour
from .suggestions import open_suggestions
from .widgets import AccuracyPlot, JobDialog, format_bytes, format_duration, push_message
from .worker import kept_output_folder

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
FORM_CLASS, _ = uic.loadUiType(str(UI_DIR / "fine_tune_dialog.ui"))

TARGET_CHECKS = {"attn.q": "target_attn_q", "attn.k": "target_attn_k", "attn.v": "target_attn_v",
                 "attn.proj": "target_attn_proj", "mlp.fc1": "target_mlp_fc1",
                 "mlp.fc2": "target_mlp_fc2"}
# The number boxes start at the engine's defaults (models.options).
SPIN_DEFAULTS = {"steps_spin": options.DEFAULT_STEPS, "min_passes_spin": options.DEFAULT_MIN_PASSES,
                 "lr_spin": options.DEFAULT_LEARNING_RATE,
                 "lambda_spin": options.DEFAULT_LR_RATIO, "window_spin": options.DEFAULT_WINDOW_SIZE,
                 "input_size_spin": options.DEFAULT_INPUT_SIZE, "rank_spin": options.DEFAULT_RANK,
                 "batch_spin": options.DEFAULT_BATCH_SIZE, "pixel_dim_spin": options.DEFAULT_PIXEL_DIM,
                 "context_dropout_spin": options.DEFAULT_CONTEXT_DROPOUT,
                 "spectral_weight_spin": options.DEFAULT_SPECTRAL_WEIGHT,
                 "spectral_context_spin": max(1, options.DEFAULT_SPECTRAL_CONTEXT),
                 "segment_size_spin": options.DEFAULT_SEGMENT_SIZE,
                 "tile_step_spin": options.DEFAULT_TILE_STEP,
                 "majority_spin": max(1, options.DEFAULT_MAJORITY_SIZE),
                 "sieve_spin": options.DEFAULT_SIEVE_PIXELS,
                 "self_training_spin": options.DEFAULT_SELF_TRAINING_ROUNDS,
                 "pretrain_epochs_spin": options.DEFAULT_PRETRAIN_EPOCHS}


def detect_devices() -> list[tuple[str, str]]:
    """(label, id) pairs for the device box; only asks torch whether CUDA is there, computes nothing."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return [(f"Automatic (GPU: {name})", "auto"), (f"CUDA: {name}", "cuda"), ("CPU", "cpu")]
    return [("Automatic (CPU, no GPU found)", "auto"), ("CPU", "cpu")]


@dataclass
class FineTuneRequest:
    """Plain values for the worker: nothing here refers to a widget or a layer."""

    raster_path: str
    vector_path: str
    layer_name: str | None
    class_field: str
    class_colors: dict
    class_names: dict
    sensor: str
    adapter_name: str
    adapter_path: str
    classification_path: str
    confidence_path: str | None
    report_path: str
    settings: dict
    training_layer_label: str = ""
    snapshot_dir: str | None = None
    folds: int = 0                          # cross-validation before training; 0: none
    cross_validation_path: str | None = None


def run_fine_tune(request: FineTuneRequest, progress, cancel):
    """The worker thread's job: train, store the adapter, classify the raster, write the report."""
    from ..models import jobs

    def report_epoch(record: dict) -> None:
        # A negative fraction leaves the progress bar where it is: this report carries numbers.
        progress(-1.0, "", epoch_record=dict(record))

    settings = jobs.FineTuneSettings(**request.settings)
    cross_validation, share = None, 0.0
    if request.folds:
        # k trainings for the folds and one for the adapter: the progress bar shares them out.
        share = request.folds / (request.folds + 1)
        cross_validation = jobs.cross_validate(
            request.raster_path, request.vector_path, request.class_field, folds=request.folds,
            settings=settings, layer_name=request.layer_name, class_colors=request.class_colors,
            class_names=request.class_names, html_path=request.cross_validation_path,
            progress=lambda fraction, message="", *a, **k: progress(
                fraction * share, f"Cross-validation: {message}"), cancel=cancel)
    result = jobs.fine_tune(
        request.raster_path, request.vector_path, request.class_field, request.adapter_path,
        layer_name=request.layer_name, class_colors=request.class_colors,
        class_names=request.class_names, sensor=request.sensor, adapter_name=request.adapter_name,
        classification_path=request.classification_path,
        confidence_path=request.confidence_path, report_path=request.report_path,
        settings=settings, progress=lambda fraction, message="", *a, **k: progress(
            fraction if fraction < 0 else share + (1 - share) * fraction, message, *a, **k),
        cancel=cancel, on_epoch=report_epoch)
    result.cross_validation = cross_validation
    return result


def run_download(progress, cancel):
    from ..models.network.weights import download_weights
    return str(download_weights(progress=progress, cancel=cancel))


def run_pretrain(raster_path: str, backbone_path: str, sensor: str, settings: dict,
                 progress, cancel):
    from ..models.jobs.pretraining import PretrainSettings, pretrain_backbone
    return pretrain_backbone([raster_path], backbone_path, settings=PretrainSettings(**settings),
                             sensor=sensor, progress=progress, cancel=cancel, resume=True)


class FineTuneDialog(JobDialog, FORM_CLASS):
    """The toolbar's Fine-tune dialog.

    Tests and scripts drive it as a user would: set the combo boxes, then ``start_button.click()``;
    ``validation_problem()`` gives the sentence shown when Start is disabled, and
    ``result_layer`` / ``confidence_layer`` / ``last_result`` what the last run produced.
    """

    def __init__(self, iface, plugin=None):
        """Args:
            iface: QGIS's interface.
            plugin: the HyperAdapt plugin object.
        """
        super().__init__(iface, parent=iface.mainWindow())
        self.plugin = plugin
        self.setupUi(self)
        self.setObjectName("HyperAdaptFineTuneDialog")
        self.plot = AccuracyPlot(parent=self)
        self.plot_layout.addWidget(self.plot)
        self.result_layer: QgsRasterLayer | None = None
        self.confidence_layer: QgsRasterLayer | None = None
        self.last_result = None
        self.suggestions_panel = None   # the training panel, when opened without the plugin
        self.last_summary = ""
        self.message_item = None
        self._request: FineTuneRequest | None = None
        self._sensor_edited = False
        self._adapter_name_edited = False
        self._weights_autofilled = False
        self._watched_layer: QgsVectorLayer | None = None
        self._chosen_field = ""
        # Only tests set these: SpectralGPT keyword arguments over the backbone preset, and
        # PretrainSettings values over the dialog's (e.g. fewer samples per epoch).
        self.backbone_overrides: dict | None = None
        self.pretrain_overrides: dict | None = None

        self.raster_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.raster_combo.setAllowEmptyLayer(True)
        self.training_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer
                                       | QgsMapLayerProxyModel.PointLayer)
        self.training_combo.setAllowEmptyLayer(True)
        self.field_combo.setAllowEmptyFieldName(True)
        for method, label in options.METHODS.items():
            self.method_combo.addItem(label, method)
        self.method_combo.setCurrentIndex(self.method_combo.findData(options.DEFAULT_METHOD))
        for combo, choices, default in (
                (self.band_combo, options.BAND_ADAPTATIONS, options.DEFAULT_BAND_ADAPTATION),
                (self.backbone_combo, options.BACKBONES, options.DEFAULT_BACKBONE),
                (self.preset_combo, options.PRESETS, options.DEFAULT_PRESET),
                (self.class_weighting_combo, options.CLASS_WEIGHTINGS,
                 options.DEFAULT_CLASS_WEIGHTING),
                (self.classify_mode_combo, options.CLASSIFY_MODES, options.DEFAULT_CLASSIFY_MODE),
                (self.training_mode_combo, options.TRAINING_MODES,
                 options.DEFAULT_TRAINING_MODE)):
            for key, label in choices.items():
                combo.addItem(label, key)
            combo.setCurrentIndex(combo.findData(default))
        self.lambda_spin.setMinimum(options.MIN_LR_RATIO)
        self.window_spin.setMaximum(options.MAX_WINDOW_SIZE)
        self.steps_spin.setMaximum(options.MAX_STEPS)
        self.min_passes_spin.setMaximum(options.MAX_STEPS)
        self.min_passes_spin.setToolTip(
            f"A larger training set gets more steps, enough to pass over its pixels this many "
            f"times, within {options.MAX_SCHEDULED_STEPS} steps; 0 runs the steps alone.")
        self.batch_spin.setMaximum(options.MAX_BATCH_SIZE)
        self.segment_size_spin.setMaximum(options.MAX_SEGMENT_SIZE)
        self.tile_step_spin.setMaximum(options.MAX_WINDOW_SIZE)
        self.tile_step_spin.setToolTip(
            f"Pixels between the windows tile mode sends the backbone, for classifying and for "
            f"training in tile mode; auto: {options.TILE_STEP_SHARE:.0%} of the window.")
        self.majority_spin.setMaximum(options.MAX_MAJORITY_SIZE)
        self.sieve_spin.setMaximum(options.MAX_SIEVE_PIXELS)
        self.self_training_spin.setMaximum(options.MAX_SELF_TRAINING_ROUNDS)
        self.cross_validation_spin.setMaximum(options.MAX_FOLDS)
        for name, value in SPIN_DEFAULTS.items():
            getattr(self, name).setValue(value)
        for target, name in TARGET_CHECKS.items():
            getattr(self, name).setChecked(target in options.DEFAULT_TARGETS)
        for label, device in detect_devices():
            self.device_combo.addItem(label, device)
        self.weights_file.setStorageMode(QgsFileWidget.GetFile)
        self.weights_file.setFilter("SpectralGPT weights or backbone files (*.pth *.pt);;"
                                    "All files (*)")
        self.weights_file.setDialogTitle("Backbone weights")
        self.output_folder.setStorageMode(QgsFileWidget.GetDirectory)
        self.output_folder.lineEdit().setPlaceholderText(
            f"Temporary folder, kept: {kept_output_folder()}")

        self.raster_combo.layerChanged.connect(self._raster_changed)
        self.training_combo.layerChanged.connect(self._training_layer_changed)
        self.field_combo.fieldChanged.connect(self._field_changed)
        self.method_combo.currentIndexChanged.connect(self._method_changed)
        self.sensor_edit.textEdited.connect(self._sensor_typed)
        self.sensor_edit.textChanged.connect(self.update_state)
        self.adapter_name_edit.textEdited.connect(self._adapter_name_typed)
        self.adapter_name_edit.textChanged.connect(self.update_state)
        self.weights_file.fileChanged.connect(self._weights_chosen)
        self.random_start_check.toggled.connect(self.update_state)
        self.output_folder.fileChanged.connect(self.update_state)
        self.preset_combo.currentIndexChanged.connect(self._preset_changed)
        self.backbone_combo.currentIndexChanged.connect(self._update_prepare_button)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel_job)
        self.close_button.clicked.connect(self.close)
        self.download_button.clicked.connect(self.download_weights)
        self.prepare_button.clicked.connect(self.prepare_backbone)
        self.suggest_button.clicked.connect(self.suggest_next)

        self.plot.reset(1)
        self._raster_changed(self.raster_combo.currentLayer())
        self._training_layer_changed(self.training_combo.currentLayer())
        self._method_changed()

    # -- reading the form ---------------------------------------------------------------------
    def raster_layer(self) -> QgsRasterLayer | None:
        layer = self.raster_combo.currentLayer()
        return layer if isinstance(layer, QgsRasterLayer) else None

    def training_layer(self) -> QgsVectorLayer | None:
        layer = self.training_combo.currentLayer()
        return layer if isinstance(layer, QgsVectorLayer) else None

    def method(self) -> str:
        return self.method_combo.currentData()

    def targets(self) -> tuple[str, ...]:
        return tuple(target for target, name in TARGET_CHECKS.items()
                     if getattr(self, name).isChecked())

    def weights_path(self) -> str:
        return self.weights_file.filePath().strip()

    def output_dir(self) -> Path:
        chosen = self.output_folder.filePath().strip()
        return Path(chosen) if chosen else kept_output_folder()

    def settings_dict(self) -> dict:
        """FineTuneSettings keyword arguments from the form."""
        factor = (self.factor_out_spin.value(), self.factor_in_spin.value())
        random_start = self.random_start_check.isChecked()
        return {
            "method": self.method(), "steps": self.steps_spin.value(),
            "min_passes": self.min_passes_spin.value(),
            "learning_rate": self.lr_spin.value(), "lr_ratio": self.lambda_spin.value(),
            "batch_size": self.batch_spin.value(), "window_size": self.window_spin.value(),
            "input_size": self.input_size_spin.value(),
            "band_adaptation": self.band_combo.currentData(), "targets": self.targets(),
            "rank": self.rank_spin.value(),
            "factor_shape": factor if all(factor) else None,
            "device": self.device_combo.currentData(),
            "backbone": self.backbone_combo.currentData(),
            "weights": None if random_start else self.weights_path() or None,
            "random_start": random_start,
            "preset": self.preset_combo.currentData(),
            "pixel_dim": self.pixel_dim_spin.value(),
            "context_dropout": self.context_dropout_spin.value(),
            "spectral_weight": self.spectral_weight_spin.value(),
            "spectral_context": (self.spectral_context_spin.value()
                                 if self.spectral_context_spin.value() > 1 else 0),
            "class_weighting": self.class_weighting_combo.currentData(),
            "classify_mode": self.classify_mode_combo.currentData(),
            "training_mode": self.training_mode_combo.currentData(),
            "tile_step": self.tile_step_spin.value(),
            "segment_size": self.segment_size_spin.value(),
            # The majority box shows "off" at 1, its minimum, so that its steps stay odd.
            "majority_size": self.majority_spin.value() if self.majority_spin.value() > 1 else 0,
            "sieve_pixels": self.sieve_spin.value(),
            "self_training_rounds": self.self_training_spin.value(),
            "backbone_overrides": dict(self.backbone_overrides) if self.backbone_overrides else None,
        }

    # -- checking it --------------------------------------------------------------------------
    def validation_problem(self) -> str | None:
        """The one sentence that says what is missing, or None when Start makes sense."""
        raster = self.raster_layer()
        if raster is None:
            return "Choose a raster layer to classify."
        if not raster.isValid() or raster.providerType() != "gdal":
            return "The raster must be a file that GDAL reads (not a web or generated layer)."
        training = self.training_layer()
        if training is None:
            return "Choose a training layer with polygons or points."
        field_name = self.field_combo.currentField()
        index = training.fields().indexOf(field_name) if field_name else -1
        if index < 0:
            return "Choose the field of the training layer that holds the class."
        problem = placement_problem(training, raster, QgsProject.instance().transformContext())
        if problem:
            return problem
        num_classes = len({str(v) for v in training.uniqueValues(index)
                           if v is not None and not (isinstance(v, QVariant) and v.isNull())
                           and str(v).strip() and str(v) != "NULL"})
        if num_classes < 2:
            return (f"The field '{field_name}' holds {num_classes} class"
                    f"{'' if num_classes == 1 else 'es'}; training needs at least two.")
        if not self.targets() and self.method() in options.ADAPTER_METHODS:
            return "Tick at least one target layer for the adapter."
        if not self.random_start_check.isChecked():
            weights = self.weights_path()
            if not weights:
                return ("Choose backbone weights (a file, the download, or a backbone prepared "
                        "for this sensor), or tick random start for a test run.")
            if not Path(weights).is_file():
                return f"The weights file {weights} does not exist."
        if not self.sensor_edit.text().strip():
            return "Name the sensor: the adapter library keeps adapters per sensor."
        if not self.adapter_name_edit.text().strip():
            return "Name the adapter."
        if self._library_path().exists():
            return (f"The library already has an adapter named '{self.adapter_name_edit.text()}' "
                    f"for {self.sensor_edit.text()}; choose another name.")
        output = self.output_folder.filePath().strip()
        if output and Path(output).exists() and not Path(output).is_dir():
            return f"The output folder {output} is a file."
        return None

    def _library_path(self) -> Path:
        from ..models.stores.library import library_adapter_path
        return library_adapter_path(self.sensor_edit.text().strip() or "unknown",
                                    self.adapter_name_edit.text().strip() or "adapter")

    @pyqtSlot()
    def update_state(self, *args) -> None:
        problem = self.validation_problem()
        running = self.is_running()
        self.start_button.setEnabled(problem is None and not running)
        self.cancel_button.setEnabled(running)
        for button in (self.download_button, self.prepare_button):
            button.setEnabled(not running)
        self.weights_file.setEnabled(not self.random_start_check.isChecked())
        if not running:
            # A problem with the inputs comes first; else the last run's outcome, if any.
            text, is_error = (problem, True) if problem else (self.outcome or ("Ready to start.", False))
            self.status_label.setText(text)
            self.status_label.setStyleSheet("color: #b00020;" if is_error else "")

    def update_buttons(self) -> None:
        self.update_state()

    # -- reacting to the form -----------------------------------------------------------------
    @pyqtSlot("QgsMapLayer*")
    def _raster_changed(self, layer) -> None:
        raster = layer if isinstance(layer, QgsRasterLayer) else None
        if raster is not None and not self._sensor_edited and raster.providerType() == "gdal":
            self.sensor_edit.setText(self._sensor_from_metadata(raster.source()))
        show_in_true_colour(raster, self.iface)
        self._autofill_weights()
        self._update_prepare_button()
        self.update_state()

    @staticmethod
    def _sensor_from_metadata(path: str) -> str:
        from ..models.data.raster import read_raster_info
        try:
            return read_raster_info(path).sensor
        except HyperAdaptError:
            return ""

    @pyqtSlot("QgsMapLayer*")
    def _training_layer_changed(self, layer) -> None:
        training = layer if isinstance(layer, QgsVectorLayer) else None
        if self._watched_layer is not None:
            try:
                self._watched_layer.updatedFields.disconnect(self._training_fields_reloaded)
            except (TypeError, RuntimeError):
                pass
        self._watched_layer = training
        self.field_combo.setLayer(training)
        if training is not None:
            training.updatedFields.connect(self._training_fields_reloaded)
            self.field_combo.setField(guess_class_field(training) or "")
        self._suggest_adapter_name()
        self.update_state()

    @pyqtSlot(str)
    def _field_changed(self, field_name: str) -> None:
        self._chosen_field = field_name
        self.update_state()

    @pyqtSlot()
    def _training_fields_reloaded(self) -> None:
        # Editing the layer (a new default class from the training panel, say) reloads its
        # fields, and the field box then loses the user's choice: put it back.
        if self._chosen_field and self.field_combo.currentField() != self._chosen_field:
            self.field_combo.setField(self._chosen_field)

    @pyqtSlot()
    def _method_changed(self, *args) -> None:
        method = self.method()
        self.lambda_spin.setEnabled(method in options.PLUS_METHODS)
        self.rank_spin.setEnabled(method in options.RANK_METHODS)
        for spin in (self.factor_out_spin, self.factor_in_spin):
            spin.setEnabled(method in options.FACTOR_METHODS)
        self._suggest_adapter_name()
        self.update_state()

    @pyqtSlot()
    def _preset_changed(self, *args) -> None:
        if self.preset_combo.currentData() == "fast":
            self.input_size_spin.setValue(options.FAST_INPUT_SIZE)
            self.steps_spin.setValue(min(self.steps_spin.value(), options.FAST_MAX_STEPS))
            self.min_passes_spin.setValue(0)   # the fast preset's steps are a ceiling
        else:
            self.input_size_spin.setValue(options.DEFAULT_INPUT_SIZE)
            self.min_passes_spin.setValue(options.DEFAULT_MIN_PASSES)

    @pyqtSlot(str)
    def _sensor_typed(self, text: str) -> None:
        self._sensor_edited = bool(text)
        self._autofill_weights()
        self._update_prepare_button()

    @pyqtSlot(str)
    def _adapter_name_typed(self, text: str) -> None:
        self._adapter_name_edited = bool(text)

    def _suggest_adapter_name(self) -> None:
        if self._adapter_name_edited:
            return
        training = self.training_layer()
        base = safe_file_stem(training.name()) if training is not None else "adapter"
        self.adapter_name_edit.setText(f"{base}_{self.method()}")

    @pyqtSlot(str)
    def _weights_chosen(self, path: str) -> None:
        self._weights_autofilled = False
        self._describe_weights()
        self.update_state()

    def _autofill_weights(self) -> None:
        """Offers the sensor's prepared backbone, else the downloaded official weights."""
        if self.weights_path() and not self._weights_autofilled:
            return
        candidate = self._sensor_backbone_path()
        if candidate is None or not candidate.is_file():
            from ..models.network.weights import find_cached_weights
            candidate = find_cached_weights()
        self.weights_file.blockSignals(True)
        self.weights_file.setFilePath(str(candidate) if candidate else "")
        self.weights_file.blockSignals(False)
        self._weights_autofilled = candidate is not None
        self._describe_weights()

    def _describe_weights(self) -> None:
        path = self.weights_path()
        if not path:
            self.weights_info_label.setText("")
        elif path.endswith(".pth"):
            self.weights_info_label.setText("Official SpectralGPT weights.")
        else:
            self.weights_info_label.setText("A backbone file prepared for a sensor.")

    def _sensor_backbone_path(self) -> Path | None:
        sensor = self.sensor_edit.text().strip()
        if not sensor:
            return None
        from ..models.stores.backbone_file import default_backbone_path
        return default_backbone_path(sensor, self.backbone_combo.currentData())

    @pyqtSlot()
    def _update_prepare_button(self, *args) -> None:
        path = self._sensor_backbone_path()
        from ..models.jobs.pretraining import resume_path_for
        if path is not None and resume_path_for(path).exists():
            self.prepare_button.setText("Resume preparing the backbone for this sensor")
        else:
            self.prepare_button.setText("Prepare backbone for this sensor")

    # -- starting -----------------------------------------------------------------------------
    def build_request(self) -> FineTuneRequest:
        """Reads the layers on the GUI thread into plain values for the worker."""
        from .styling import class_style_from_layer

        raster = self.raster_layer()
        training = self.training_layer()
        field_name = self.field_combo.currentField()
        snapshot_dir = None
        source = vector_source(training)
        if source is None:
            snapshot_dir = tempfile.mkdtemp(prefix="hyperadapt-training-")
            source = export_layer(training, Path(snapshot_dir) / "training.gpkg",
                                  QgsProject.instance().transformContext(),
                                  layer_name="training", field_name=field_name)
        output = self.output_dir()
        output.mkdir(parents=True, exist_ok=True)
        name = self.adapter_name_edit.text().strip()
        suffixes = ("_classification.tif", "_confidence.tif", "_report.html",
                    "_cross_validation.html")
        stem = unique_stem(output, safe_file_stem(name), suffixes)
        confidence = self.confidence_check.isChecked()
        class_colors, class_names = class_style_from_layer(training, field_name)
        return FineTuneRequest(
            raster_path=raster.source(), vector_path=source[0], layer_name=source[1],
            class_field=field_name, class_colors=class_colors, class_names=class_names,
            sensor=self.sensor_edit.text().strip(), adapter_name=name,
            adapter_path=str(self._library_path()),
            classification_path=str(output / f"{stem}_classification.tif"),
            confidence_path=str(output / f"{stem}_confidence.tif") if confidence else None,
            report_path=str(output / f"{stem}_report.html"), settings=self.settings_dict(),
            training_layer_label=training.name(), snapshot_dir=snapshot_dir,
            folds=self.cross_validation_spin.value(),
            cross_validation_path=str(output / f"{stem}_cross_validation.html"))

    @pyqtSlot()
    def start(self) -> None:
        problem = self.validation_problem()
        if problem is not None or self.is_running():
            self.update_state()
            return
        try:
            request = self.build_request()
        except (HyperAdaptError, OSError) as error:
            self.show_outcome(str(error), is_error=True)
            return
        self._request = request
        self.result_layer = self.confidence_layer = self.last_result = None
        self.suggest_button.setEnabled(False)
        self.plot.reset(1)
        self.epoch_label.setText("Epoch –")
        self.loss_label.setText("Loss –")
        self.show_activity("Training…")
        self.start_job(lambda progress, cancel: run_fine_tune(request, progress, cancel),
                       kind="fine_tune", title="Preparing the training samples…")

    def shutdown(self) -> None:
        if self.suggestions_panel is not None:
            self.suggestions_panel.shutdown()
        super().shutdown()

    @pyqtSlot()
    def suggest_next(self):
        """Where to draw next with the adapter just trained: the training panel, on this raster
        and training layer, scores the scene and walks through the suggestions."""
        if self.last_result is None:
            return None
        return open_suggestions(self, self.raster_layer(), self.last_result.adapter_path,
                                self.last_adapter_name, training=self.training_layer(),
                                field=self.field_combo.currentField())

    @pyqtSlot()
    def download_weights(self) -> None:
        if self.is_running():
            return
        self.weights_info_label.setText("Downloading SpectralGPT+ from Zenodo…")
        self.start_job(run_download, kind="download", title="Downloading SpectralGPT+…")

    @pyqtSlot()
    def prepare_backbone(self) -> None:
        if self.is_running():
            return
        raster = self.raster_layer()
        sensor = self.sensor_edit.text().strip()
        if raster is None or raster.providerType() != "gdal" or not sensor:
            self.show_outcome("Choose a raster and name its sensor to prepare a backbone.",
                              is_error=True)
            return
        preset = self.backbone_combo.currentData()
        weights = self.weights_path()
        # Window, band adaptation and (for the tiny backbone) input size are the pretraining
        # defaults of models.options; fine-tuning then takes them from the backbone file.
        settings = {"preset": preset, "epochs": self.pretrain_epochs_spin.value(),
                    **({} if preset == "tiny" else {"input_size": self.input_size_spin.value()}),
                    "device": self.device_combo.currentData(),
                    "weights": weights if preset == "base" and weights.endswith(".pth") else None,
                    "backbone_overrides": dict(self.backbone_overrides)
                    if self.backbone_overrides else None,
                    **(self.pretrain_overrides or {})}
        backbone_path = str(self._sensor_backbone_path())
        raster_path = raster.source()
        self.weights_info_label.setText(f"Preparing a {preset} backbone for {sensor}…")
        self.start_job(lambda progress, cancel: run_pretrain(raster_path, backbone_path, sensor,
                                                             settings, progress, cancel),
                       kind="pretrain", title="Preparing the backbone for this sensor…")

    # -- progress and results -----------------------------------------------------------------
    def job_progress(self, fraction: float, message: str, info: dict) -> None:
        # The engine's message (shown as it is) carries the running loss of every batch; the
        # per-epoch numbers arrive as a record, from fine_tune's on_epoch.
        record = info.get("epoch_record")
        if record:
            planned = record.get("epochs")
            self.epoch_label.setText(f"Epoch {record.get('epoch')}/{planned or '?'}")
            if planned:
                self.plot.plan(int(planned))
            if record.get("loss") is not None:
                self.loss_label.setText(f"Loss {record['loss']:.3f}")
            # Small training sets keep every pixel for training: their curve is the training one.
            held_out = record.get("val_accuracy") is not None
            accuracy = record.get("val_accuracy" if held_out else "train_accuracy")
            if accuracy is not None:
                self.plot.title = ("Validation accuracy" if held_out
                                   else "Training accuracy (nothing held out)")
                self.plot.add_point(int(record["epoch"]), float(accuracy))

    def job_done(self, kind: str, result) -> None:
        if kind == "download":
            self.weights_file.setFilePath(str(result))
            self.weights_info_label.setText(f"Downloaded {Path(result).name}.")
        elif kind == "pretrain":
            self.random_start_check.setChecked(False)
            self.weights_file.setFilePath(result.backbone_path)
            loss = f", final loss {result.losses[-1]:.4f}" if result.losses else ""
            self.weights_info_label.setText(
                f"Backbone prepared for {result.sensor}: {result.epochs} epochs in "
                f"{format_duration(result.seconds)}{loss}. It is now the backbone weights.")
            self._update_prepare_button()
        elif kind == "fine_tune":
            self._show_fine_tune_result(result)

    def _show_fine_tune_result(self, result) -> None:
        from .styling import add_classification_layer

        self.last_result = result
        self.last_adapter_name = self._request.adapter_name
        self.suggest_button.setEnabled(True)
        request = self._request
        project = QgsProject.instance()
        try:
            if result.classification_path:
                self.result_layer = add_classification_layer(
                    result.classification_path, name=f"{request.adapter_name} classes",
                    project=project)
            if result.confidence_path:
                confidence = QgsRasterLayer(result.confidence_path,
                                            f"{request.adapter_name} confidence", "gdal")
                if confidence.isValid():
                    project.addMapLayer(confidence)
                    self.confidence_layer = confidence
        except HyperAdaptError as error:
            self.show_outcome(str(error), is_error=True)
            return
        metrics = result.metrics or {}
        parts = []
        accuracy = metrics.get("overall_accuracy", metrics.get("oa"))
        if accuracy is not None:
            parts.append(f"validation accuracy {100 * float(accuracy):.1f} %")
        else:
            parts.append("every pixel trained, none held out for validation (Evaluate with "
                         "reference data tells the map's accuracy)")
        kappa = metrics.get("kappa")
        if kappa is not None:
            parts.append(f"kappa {float(kappa):.3f}")
        if result.cross_validation:
            folds = [f"{100 * fold['overall_accuracy']:.0f}"
                     for fold in result.cross_validation["folds"]]
            parts.append(f"cross-validated accuracy "
                         f"{100 * result.cross_validation['overall_accuracy']:.1f} % "
                         f"({len(folds)} folds by polygon: {', '.join(folds)} %)")
        parts.append(f"{format_duration(result.seconds)}")
        parts.append(f"adapter {format_bytes(result.adapter_bytes)}")
        random_start = result.backbone.is_random_start
        note = " Random start: for testing only, not a real map." if random_start else ""
        self.last_summary = (f"'{request.adapter_name}' trained on {request.training_layer_label}: "
                             f"{', '.join(parts)}.{note}")
        self.show_outcome(self.last_summary)
        self.message_item = push_message(self.iface, "HyperAdapt", self.last_summary,
                                         Qgis.Warning if random_start else Qgis.Success,
                                         link_path=result.report_path)

    def job_failed(self, kind: str, message: str) -> None:
        push_message(self.iface, "HyperAdapt", message, Qgis.Critical, duration=10)
        if kind == "pretrain":
            self.weights_info_label.setText(message)

    def job_cancelled(self, kind: str) -> None:
        if kind == "pretrain":
            self.weights_info_label.setText("Backbone preparation paused; its state is kept, so "
                                             "preparing again continues from there.")
            self._update_prepare_button()
        elif kind == "download":
            self.weights_info_label.setText("Download paused; downloading again resumes it.")
        self.show_outcome("Cancelled; nothing was added.")

    def job_ended(self, kind: str) -> None:
        request, self._request = self._request, None
        if kind == "fine_tune" and request is not None and request.snapshot_dir:
            shutil.rmtree(request.snapshot_dir, ignore_errors=True)
