"""Classify with an adapter: a raster and an adapter from the library, run in the background.

The list shows the library's adapters with those that fit the raster (band count, wavelengths)
first; the others are shown greyed with the reason. The classification runs in the same kind of
worker thread as fine-tuning (``models.jobs.classify``), and the GUI thread adds the styled layer.
"""
from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsMapLayerProxyModel, QgsProject, QgsRasterLayer
from qgis.gui import QgsFileWidget
from qgis.PyQt import uic
from qgis.PyQt.QtCore import Qt, pyqtSlot
from qgis.PyQt.QtGui import QBrush, QColor
from qgis.PyQt.QtWidgets import QTreeWidgetItem

from ..models.data.samples import describe_class_pixels
from ..models.errors import HyperAdaptError
from ..models.stores import library
from .fine_tune_dialog import detect_devices
from .layers import safe_file_stem, unique_stem
from .library_dialog import accuracy_text, method_label
from .rendering import show_in_true_colour
from .suggestions import open_suggestions
from .widgets import JobDialog, classes_icon, format_duration, push_message
from .worker import kept_output_folder

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
FORM_CLASS, _ = uic.loadUiType(str(UI_DIR / "classify_dialog.ui"))


def run_classify(raster_path: str, adapter_path: str, output_path: str,
                 confidence_path: str | None, weights: str | None, device: str, progress, cancel):
    """The worker thread's job."""
    from ..models.jobs import classify
    return classify(raster_path, adapter_path, output_path, confidence_path=confidence_path,
                    weights=weights, device=device, progress=progress, cancel=cancel)


def needed_weights(entry: library.LibraryEntry) -> str | None:
    """The weights file an adapter was trained on, where it can be found on this machine."""
    from ..models.network.weights import recorded_weights

    found = recorded_weights(entry.backbone)
    return str(found) if found else None


class ClassifyDialog(JobDialog, FORM_CLASS):
    """The toolbar's Classify-with-adapter dialog (``select_adapter(path)``, then Classify)."""

    def __init__(self, iface, plugin=None):
        """Args:
            iface: QGIS's interface.
            plugin: the HyperAdapt plugin object.
        """
        super().__init__(iface, parent=iface.mainWindow())
        self.plugin = plugin
        self.setupUi(self)
        self.setObjectName("HyperAdaptClassifyDialog")
        self.entries: list[library.LibraryEntry] = []
        self.result_layer: QgsRasterLayer | None = None
        self.confidence_layer: QgsRasterLayer | None = None
        self.last_result = None
        self.last_summary = ""
        self._running_adapter: library.LibraryEntry | None = None
        self.suggestions_panel = None   # the training panel, when opened without the plugin

        self.raster_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.raster_combo.setAllowEmptyLayer(True)
        for label, device in detect_devices():
            self.device_combo.addItem(label, device)
        self.weights_file.setStorageMode(QgsFileWidget.GetFile)
        self.weights_file.setFilter("SpectralGPT weights or backbone files (*.pth *.pt);;"
                                    "All files (*)")
        self.output_folder.setStorageMode(QgsFileWidget.GetDirectory)
        self.output_folder.lineEdit().setPlaceholderText(
            f"Temporary folder, kept: {kept_output_folder()}")

        self.raster_combo.layerChanged.connect(self.refresh_adapters)
        self.raster_combo.layerChanged.connect(self._raster_changed)
        self.adapter_tree.itemSelectionChanged.connect(self._adapter_selected)
        self.weights_file.fileChanged.connect(self.update_state)
        self.output_folder.fileChanged.connect(self.update_state)
        self.start_button.clicked.connect(self.start)
        self.suggest_button.clicked.connect(self.suggest_next)
        self.cancel_button.clicked.connect(self.cancel_job)
        self.close_button.clicked.connect(self.close)
        self.refresh_adapters()

    def showEvent(self, event):  # noqa: N802 (Qt's name)
        if not self.is_running():
            self.refresh_adapters()
        super().showEvent(event)

    @pyqtSlot("QgsMapLayer*")
    def _raster_changed(self, layer) -> None:
        show_in_true_colour(layer if isinstance(layer, QgsRasterLayer) else None, self.iface)

    # -- the adapter list ---------------------------------------------------------------------
    def raster_layer(self) -> QgsRasterLayer | None:
        layer = self.raster_combo.currentLayer()
        return layer if isinstance(layer, QgsRasterLayer) else None

    @pyqtSlot()
    def refresh_adapters(self, *args) -> None:
        """Lists the library, fitting adapters first; keeps the selection when it still fits."""
        selected = self.selected_path()
        raster = self.raster_layer()
        info = None
        if raster is not None and raster.providerType() == "gdal":
            from ..models.data.raster import read_raster_info
            try:
                info = read_raster_info(raster.source())
            except HyperAdaptError:
                info = None
        self.entries = library.list_adapters(info)
        self.adapter_tree.clear()
        grey = QBrush(QColor(140, 140, 140))
        first_fitting = None
        for entry in self.entries:
            fits = "yes" if entry.fits else ("–" if entry.fits is None else "no")
            name = entry.name + (" (random start)" if entry.backbone.is_random_start else "")
            item = QTreeWidgetItem(self.adapter_tree, [
                name, entry.sensor, ", ".join(c["name"] for c in entry.classes),
                method_label(entry.method), accuracy_text(entry.metrics), fits])
            item.setData(0, Qt.UserRole, str(entry.path))
            item.setIcon(2, classes_icon(tuple(c["color"]) for c in entry.classes))
            if entry.fits is False:
                item.setFlags(item.flags() & ~Qt.ItemIsSelectable)
                for column in range(self.adapter_tree.columnCount()):
                    item.setForeground(column, grey)
                    item.setToolTip(column, entry.problem or "")
            elif first_fitting is None:
                first_fitting = item
            if str(entry.path) == selected and entry.fits is not False:
                item.setSelected(True)
        for column in range(self.adapter_tree.columnCount()):
            self.adapter_tree.resizeColumnToContents(column)
        if not self.adapter_tree.selectedItems() and first_fitting is not None:
            first_fitting.setSelected(True)
        self._adapter_selected()

    def selected_path(self) -> str | None:
        items = self.adapter_tree.selectedItems()
        return items[0].data(0, Qt.UserRole) if items else None

    def selected_entry(self) -> library.LibraryEntry | None:
        path = self.selected_path()
        return next((e for e in self.entries if str(e.path) == path), None)

    def select_adapter(self, path) -> None:
        for row in range(self.adapter_tree.topLevelItemCount()):
            item = self.adapter_tree.topLevelItem(row)
            item.setSelected(Path(item.data(0, Qt.UserRole)) == Path(path))

    def adapter_names(self) -> list[str]:
        """Adapter names in the order listed (fitting ones first)."""
        return [entry.name for entry in self.entries]

    @pyqtSlot()
    def _adapter_selected(self) -> None:
        entry = self.selected_entry()
        random_start = entry is not None and entry.backbone.is_random_start
        self.weights_file.setEnabled(not random_start)
        if entry is not None:
            self.weights_file.blockSignals(True)
            self.weights_file.setFilePath("" if random_start else needed_weights(entry) or "")
            self.weights_file.blockSignals(False)
        self.update_state()

    # -- checking and starting ----------------------------------------------------------------
    def validation_problem(self) -> str | None:
        raster = self.raster_layer()
        if raster is None:
            return "Choose a raster layer to classify."
        if not raster.isValid() or raster.providerType() != "gdal":
            return "The raster must be a file that GDAL reads (not a web or generated layer)."
        if not self.entries:
            return "The adapter library is empty: fine-tune an adapter first, or import one."
        entry = self.selected_entry()
        if entry is None:
            if all(e.fits is False for e in self.entries):
                return "No adapter in the library fits this raster's bands."
            return "Choose an adapter."
        if entry.fits is False:
            return entry.problem or "This adapter does not fit the raster."
        if not entry.backbone.is_random_start:
            weights = self.weights_file.filePath().strip()
            if not weights:
                return ("This adapter needs the backbone weights it was trained on; choose their "
                        "file.")
            if not Path(weights).is_file():
                return f"The weights file {weights} does not exist."
        return None

    @pyqtSlot()
    def update_state(self, *args) -> None:
        problem = self.validation_problem()
        running = self.is_running()
        self.start_button.setEnabled(problem is None and not running)
        self.suggest_button.setEnabled(not running and self.raster_layer() is not None
                                       and self.selected_entry() is not None)
        self.cancel_button.setEnabled(running)
        if not running:
            # A problem with the inputs comes first; else the last run's outcome, if any.
            text, is_error = (problem, True) if problem else (self.outcome or ("Ready to classify.", False))
            self.status_label.setText(text)
            self.status_label.setStyleSheet("color: #b00020;" if is_error else "")

    def update_buttons(self) -> None:
        self.update_state()

    @pyqtSlot()
    def start(self) -> None:
        if self.validation_problem() is not None or self.is_running():
            self.update_state()
            return
        raster = self.raster_layer()
        entry = self.selected_entry()
        chosen = self.output_folder.filePath().strip()
        output = Path(chosen) if chosen else kept_output_folder()
        output.mkdir(parents=True, exist_ok=True)
        stem = unique_stem(output, safe_file_stem(f"{Path(raster.source()).stem}_{entry.name}"),
                           ("_classification.tif", "_confidence.tif"))
        output_path = str(output / f"{stem}_classification.tif")
        confidence_path = str(output / f"{stem}_confidence.tif") \
            if self.confidence_check.isChecked() else None
        weights = None if entry.backbone.is_random_start else self.weights_file.filePath().strip()
        raster_path, adapter_path = raster.source(), str(entry.path)
        device = self.device_combo.currentData()
        self._running_adapter = entry
        self.result_layer = self.confidence_layer = self.last_result = None
        self.show_activity(f"Classifying {raster.name()} with {entry.name}…")
        self.start_job(lambda progress, cancel: run_classify(
            raster_path, adapter_path, output_path, confidence_path, weights, device, progress,
            cancel), kind="classify", title="Classifying…")

    @pyqtSlot()
    def suggest_next(self):
        """Where to draw next on this raster with the selected adapter: the training panel
        scores the scene and walks through the suggestions."""
        raster, entry = self.raster_layer(), self.selected_entry()
        if raster is None or entry is None or self.is_running():
            return None
        return open_suggestions(self, raster, str(entry.path), entry.name)

    def shutdown(self) -> None:
        if self.suggestions_panel is not None:
            self.suggestions_panel.shutdown()
        super().shutdown()

    # -- results ------------------------------------------------------------------------------
    def job_done(self, kind: str, result) -> None:
        from .styling import add_classification_layer

        entry = self._running_adapter
        self.last_result = result
        project = QgsProject.instance()
        try:
            self.result_layer = add_classification_layer(
                result.output_path, name=f"{entry.name} classes", project=project)
        except HyperAdaptError as error:
            self.show_outcome(str(error), is_error=True)
            return
        if result.confidence_path:
            confidence = QgsRasterLayer(result.confidence_path, f"{entry.name} confidence", "gdal")
            if confidence.isValid():
                project.addMapLayer(confidence)
                self.confidence_layer = confidence
        note = " Random-start adapter: for testing only." if entry.backbone.is_random_start else ""
        self.last_summary = (f"Classified with '{entry.name}' into {len(result.classes)} classes "
                             f"in {format_duration(result.seconds)}.{note}")
        self.show_outcome(f"{self.last_summary}\nPixels per class: "
                          f"{describe_class_pixels(result.classes, result.pixels_per_class)}.")
        push_message(self.iface, "HyperAdapt", self.last_summary,
                     Qgis.Warning if note else Qgis.Success, duration=10)

    def job_failed(self, kind: str, message: str) -> None:
        push_message(self.iface, "HyperAdapt", message, Qgis.Critical, duration=10)

    def job_cancelled(self, kind: str) -> None:
        self.show_outcome("Cancelled; nothing was added.")

    def job_ended(self, kind: str) -> None:
        self._running_adapter = None
