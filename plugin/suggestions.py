""""Where to draw next" in the training panel: suggestions from an adapter, walked through one by one.

The box asks models.jobs.suggest (in a background thread) for the pixels the chosen library
adapter is least sure of, away from the training layer's polygons, and adds them as a point
layer coloured by score. It then zooms to each suggestion in turn: "Add as its guess" or "Add as
the selected class" draws a square of the chosen size (on the raster's pixel grid) into the
training layer with that class, "Skip" goes on. Fine-tune again afterwards, continuing from the
adapter (Advanced: continue from) or afresh.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from qgis.core import (QgsCoordinateTransform, QgsFeature, QgsGeometry, QgsGraduatedSymbolRenderer,
                       QgsPointXY, QgsProject, QgsRectangle, QgsRendererRange, QgsSymbol,
                       QgsVectorLayer, QgsWkbTypes)
from qgis.PyQt.QtCore import pyqtSlot
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import (QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                                 QPushButton, QSpinBox, QVBoxLayout)

from .layers import export_layer, unique_stem, vector_source
from .worker import JobRunner, kept_output_folder

# Score bands of the suggestions layer: 1 - (top - second probability).
SCORE_BANDS = ((0.0, 0.5, "fairly sure", "#f2d33c"), (0.5, 0.8, "unsure", "#f28c28"),
               (0.8, 1.0001, "undecided", "#d7191c"))


def style_suggestions(layer: QgsVectorLayer) -> None:
    """Points coloured by score band, larger where the model is less sure."""
    ranges = []
    for low, high, label, color in SCORE_BANDS:
        symbol = QgsSymbol.defaultSymbol(QgsWkbTypes.PointGeometry)
        symbol.setColor(QColor(color))
        symbol.setSize(2.2 + 2.0 * low)
        ranges.append(QgsRendererRange(low, high, symbol, label))
    layer.setRenderer(QgsGraduatedSymbolRenderer("score", ranges))


def pixel_square(point: QgsPointXY, raster, size_px: int) -> QgsGeometry:
    """A square of ``size_px`` pixels centred on the pixel holding ``point`` (raster CRS), its
    edges on the raster's pixel edges."""
    extent = raster.extent()
    dx, dy = raster.rasterUnitsPerPixelX(), raster.rasterUnitsPerPixelY()
    col = int((point.x() - extent.xMinimum()) // dx)
    row = int((extent.yMaximum() - point.y()) // dy)
    half = size_px // 2
    x0 = extent.xMinimum() + (col - half) * dx
    y1 = extent.yMaximum() - (row - half) * dy
    return QgsGeometry.fromRect(QgsRectangle(x0, y1 - size_px * dy, x0 + size_px * dx, y1))


def run_suggest(raster_path: str, adapter_path: str, output_path: str, count: int,
                min_spacing: int, training: tuple[str, str | None] | None, class_field: str | None,
                progress, cancel):
    from ..models.jobs import suggest

    return suggest(raster_path, adapter_path, output_path, count=count, min_spacing=min_spacing,
                   training_path=training[0] if training else None,
                   layer_name=training[1] if training else None,
                   class_field=class_field if training else None, progress=progress,
                   cancel=cancel)


class SuggestionsBox(QGroupBox):
    """The panel's "Where to draw next" box (see the module's docstring)."""

    def __init__(self, panel):
        """Args:
            panel: the TrainingLayerPanel whose raster, training layer and classes it uses.
        """
        super().__init__("Where to draw next", panel)
        self.panel = panel
        self.runner: JobRunner | None = None
        self.layer: QgsVectorLayer | None = None
        self.features: list[QgsFeature] = []
        self.position = 0
        self.added = 0
        self._snapshot: tempfile.TemporaryDirectory | None = None

        self.adapter_combo = QComboBox(self)
        self.adapter_combo.setToolTip("A library adapter made for this raster's sensor.")
        self.count_spin = QSpinBox(self)
        self.count_spin.setRange(1, 500)
        self.count_spin.setValue(20)
        self.spacing_spin = QSpinBox(self)
        self.spacing_spin.setRange(0, 10000)
        self.spacing_spin.setValue(10)
        self.spacing_spin.setSuffix(" px")
        self.spacing_spin.setToolTip("Least distance between suggestions, and from the training "
                                     "layer's pixels.")
        self.square_spin = QSpinBox(self)
        self.square_spin.setRange(1, 51)
        self.square_spin.setSingleStep(2)
        self.square_spin.setValue(3)
        self.square_spin.setSuffix(" px")
        self.square_spin.setToolTip("Side of the square drawn for an accepted suggestion.")
        self.suggest_button = QPushButton("Suggest where to draw next", self)
        self.info_label = QLabel("", self)
        self.info_label.setWordWrap(True)
        self.accept_guess_button = QPushButton("Add as its guess", self)
        self.accept_class_button = QPushButton("Add as the selected class", self)
        self.skip_button = QPushButton("Skip", self)

        form = QFormLayout()
        form.addRow("Adapter", self.adapter_combo)
        form.addRow("Suggestions", self.count_spin)
        form.addRow("Spacing", self.spacing_spin)
        form.addRow("Square", self.square_spin)
        buttons = QHBoxLayout()
        for button in (self.accept_guess_button, self.accept_class_button, self.skip_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.suggest_button)
        layout.addWidget(self.info_label)
        layout.addLayout(buttons)

        self.suggest_button.clicked.connect(self.suggest)
        self.accept_guess_button.clicked.connect(self.accept_guess)
        self.accept_class_button.clicked.connect(self.accept_selected_class)
        self.skip_button.clicked.connect(self.skip)
        panel.raster_combo.layerChanged.connect(self.refresh_adapters)
        self.refresh_adapters()

    def showEvent(self, event):  # noqa: N802 (Qt's name)
        # The library grows with every Fine-tune: list it afresh whenever the box is shown.
        self.refresh_adapters()
        super().showEvent(event)

    # -- adapters -----------------------------------------------------------------------------
    @pyqtSlot()
    def refresh_adapters(self, *args) -> None:
        """The library adapters that fit the panel's raster, newest first."""
        self.adapter_combo.clear()
        raster = self.panel.raster_combo.currentLayer()
        if raster is None:
            self._update_buttons()
            return
        from ..models.data.raster import read_raster_info
        from ..models.errors import HyperAdaptError
        from ..models.stores import library

        try:
            entries = [e for e in library.list_adapters(read_raster_info(raster.source()))
                       if e.fits]
        except HyperAdaptError:
            entries = []
        for entry in sorted(entries, key=lambda e: e.created, reverse=True):
            self.adapter_combo.addItem(entry.name, str(entry.path))
        self._update_buttons()

    def suggest_from(self, adapter_path: str, name: str) -> None:
        """Suggest with this adapter (just trained, maybe outside the library)."""
        index = self.adapter_combo.findData(str(adapter_path))
        if index < 0:
            self.adapter_combo.insertItem(0, name, str(adapter_path))
            index = 0
        self.adapter_combo.setCurrentIndex(index)
        self._update_buttons()
        self.suggest()

    # -- suggesting ---------------------------------------------------------------------------
    @pyqtSlot()
    def suggest(self) -> None:
        raster = self.panel.raster_combo.currentLayer()
        adapter = self.adapter_combo.currentData()
        if raster is None or not adapter or self.runner is not None:
            self.info_label.setText("Choose a raster and an adapter of its sensor first.")
            return
        training, field = None, None
        if self.panel.layer is not None and self.panel.field_name:
            field = self.panel.field_name
            training = vector_source(self.panel.layer)
            if training is None:      # unsaved edits: what QGIS shows, copied
                self._snapshot = tempfile.TemporaryDirectory(prefix="hyperadapt-suggest-")
                training = export_layer(self.panel.layer,
                                        Path(self._snapshot.name) / "training.gpkg",
                                        QgsProject.instance().transformContext(),
                                        layer_name="training", field_name=field)
        folder = kept_output_folder()
        folder.mkdir(parents=True, exist_ok=True)
        output = folder / (unique_stem(folder, f"{Path(raster.source()).stem}_suggestions",
                                       (".gpkg",)) + ".gpkg")
        count = self.count_spin.value()
        spacing = self.spacing_spin.value()
        self.runner = JobRunner(job=lambda progress, cancel: run_suggest(
            raster.source(), adapter, str(output), count, spacing, training, field, progress,
            cancel), name="HyperAdapt suggest")
        self.runner.worker.done.connect(self._done)
        self.runner.worker.failed.connect(self._failed)
        self.runner.worker.cancelled.connect(self._cancelled)
        self.runner.thread.finished.connect(self._finished)
        self.info_label.setText("Scoring the scene…")
        self._update_buttons()
        self.runner.start()

    @pyqtSlot(object)
    def _done(self, result) -> None:
        path = result["output_path"]
        layer = QgsVectorLayer(f"{path}|layername=suggestions", "where to draw next", "ogr")
        if not layer.isValid():
            self.info_label.setText(f"The suggestions layer {path} cannot be read.")
            return
        style_suggestions(layer)
        QgsProject.instance().addMapLayer(layer)
        self.layer = layer
        self.features = sorted(layer.getFeatures(), key=lambda f: f["rank"])
        self.position = 0
        self.added = 0
        self._show_current()

    @pyqtSlot(str, str)
    def _failed(self, message: str, details: str) -> None:
        self.info_label.setText(message)

    @pyqtSlot()
    def _cancelled(self) -> None:
        self.info_label.setText("Cancelled.")

    @pyqtSlot()
    def _finished(self) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            runner.thread.wait()    # "finished" comes just before the thread has quite ended
        if self._snapshot is not None:
            self._snapshot.cleanup()
            self._snapshot = None
        self._update_buttons()

    # -- walking through them -----------------------------------------------------------------
    def current(self) -> QgsFeature | None:
        return self.features[self.position] if self.position < len(self.features) else None

    @pyqtSlot()
    def accept_guess(self) -> None:
        feature = self.current()
        if feature is not None:
            self._add(feature, str(feature["guess"]))

    @pyqtSlot()
    def accept_selected_class(self) -> None:
        feature = self.current()
        chosen = self.panel.current_class()
        if feature is None or not chosen:
            self.info_label.setText("Select a class in the list first.")
            return
        self._add(feature, chosen)

    @pyqtSlot()
    def skip(self) -> None:
        if self.current() is not None:
            self.position += 1
            self._show_current()

    def _add(self, feature: QgsFeature, class_name: str) -> None:
        """The square (or the point, on a point layer) into the training layer with the class."""
        layer, field = self.panel.layer, self.panel.field_name
        raster = self.panel.raster_combo.currentLayer()
        if layer is None or not field or raster is None:
            self.info_label.setText("Pick the training layer and its class field first.")
            return
        if class_name not in self.panel.class_names():
            self.panel.add_class(class_name)
        point = feature.geometry().asPoint()
        if layer.geometryType() == QgsWkbTypes.PointGeometry:
            geometry = QgsGeometry.fromPointXY(point)
        else:
            geometry = pixel_square(point, raster, self.square_spin.value())
        transform = QgsCoordinateTransform(self.layer.crs(), layer.crs(), QgsProject.instance())
        geometry.transform(transform)
        if QgsWkbTypes.isMultiType(layer.wkbType()):
            geometry.convertToMultiType()
        added = QgsFeature(layer.fields())
        added.setGeometry(geometry)
        added.setAttribute(field, class_name)
        if not layer.isEditable():
            layer.startEditing()
        layer.addFeature(added)
        self.added += 1
        self.position += 1
        self._show_current()

    def _show_current(self) -> None:
        feature = self.current()
        if feature is None:
            self.info_label.setText(f"Done: {self.added} of {len(self.features)} suggestions "
                                    f"added to the training layer. Save it and Fine-tune again "
                                    f"(continuing from the adapter is quicker).")
        else:
            self.info_label.setText(
                f"Suggestion {self.position + 1} of {len(self.features)}: the model guesses "
                f"'{feature['guess']}' ({100 * feature['probability']:.0f} %), score "
                f"{feature['score']:.2f}.")
            canvas = self.panel.iface.mapCanvas()
            if canvas is not None:
                transform = QgsCoordinateTransform(self.layer.crs(),
                                                   canvas.mapSettings().destinationCrs(),
                                                   QgsProject.instance())
                canvas.setCenter(transform.transform(feature.geometry().asPoint()))
                canvas.refresh()
        self._update_buttons()

    def _update_buttons(self) -> None:
        running = self.runner is not None
        self.suggest_button.setEnabled(not running and self.adapter_combo.count() > 0)
        walking = self.current() is not None and not running
        for button in (self.accept_guess_button, self.accept_class_button, self.skip_button):
            button.setEnabled(walking)

    def shutdown(self) -> None:
        if self.runner is not None:
            self.runner.shutdown()
            self.runner = None


def open_suggestions(dialog, raster, adapter_path: str, name: str, *, training=None,
                     field: str | None = None):
    """The training panel on ``raster`` suggesting with an adapter (the Fine-tune and Classify
    dialogs' "Where to draw next…"); ``training`` and ``field``, when given, become the panel's
    training layer, else it keeps its own. A dialog opened without the plugin (scripts, tests)
    keeps its own panel in ``dialog.suggestions_panel``."""
    if dialog.plugin is not None:
        panel = dialog.plugin.show_training_panel()
    else:
        from .training_layer import TrainingLayerPanel

        if dialog.suggestions_panel is None:
            dialog.suggestions_panel = TrainingLayerPanel(dialog.iface, None)
        panel = dialog.suggestions_panel
        panel.show()
    if panel is None:
        return None
    panel.raster_combo.setLayer(raster)
    if training is not None:
        panel.set_training_layer(training, field)
    panel.suggestions.suggest_from(adapter_path, name)
    return panel
