"""The "New training layer" panel: a GeoPackage polygon layer to draw on, and its class list.

The panel creates a polygon layer in the raster's CRS with a text class field, styles it by class,
and starts editing with the add-polygon tool. Picking a class in the list makes it the field's
default value and the attribute form is suppressed, so every polygon drawn next gets that class
without a form. The list shows, per class, how many polygons (or points) and about how many
raster pixels the layer holds, updated as the user draws. The style is written to a ``.qml``
beside the GeoPackage whenever the edits are saved, so the class colours travel with the file. Any
existing polygon or point layer with a class field can be picked in the panel as well.
"""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path

from qgis.core import (
    Qgis, QgsCategorizedSymbolRenderer, QgsCoordinateTransform, QgsDefaultValue, QgsEditFormConfig,
    QgsExpression, QgsFeatureRequest, QgsField, QgsFields, QgsMapLayerProxyModel, QgsMessageLog,
    QgsProject, QgsRasterLayer, QgsRendererCategory, QgsSymbol, QgsVectorFileWriter,
    QgsVectorLayer, QgsWkbTypes,
)
from qgis.PyQt import uic
from qgis.PyQt.QtCore import QTimer, QVariant, Qt, pyqtSlot
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import QDockWidget, QHeaderView, QTableWidgetItem

from .layers import guess_class_field
from .rendering import show_in_true_colour
from .styling import style_path_for
from .widgets import LOG_TAG, color_icon, default_class_color
from .worker import kept_output_folder

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
FORM_CLASS, FORM_BASE = uic.loadUiType(str(UI_DIR / "training_layer_panel.ui"))

CLASS_FIELD = "class"
TRAINING_LAYER_NAME = "training"
FIRST_CLASS_NAME = "class 1"
COUNT_DELAY_MS = 250  # recount once the user pauses, not on every vertex


def default_training_path(raster_path: str) -> Path:
    """A new GeoPackage path beside the raster (or in the output folder when that is read-only)."""
    raster = Path(raster_path)
    folder = raster.parent if raster.parent.is_dir() and os.access(raster.parent, os.W_OK) \
        else kept_output_folder()
    folder.mkdir(parents=True, exist_ok=True)
    candidate = folder / f"{raster.stem}_training.gpkg"
    number = 2
    while candidate.exists():
        candidate = folder / f"{raster.stem}_training_{number}.gpkg"
        number += 1
    return candidate


def class_symbol(geometry_type, rgb: tuple[int, int, int]) -> QgsSymbol:
    """A see-through fill (or a marker) in the class colour with a darker outline."""
    symbol = QgsSymbol.defaultSymbol(geometry_type)
    color = QColor(*rgb)
    symbol.setColor(color)
    if geometry_type == QgsWkbTypes.PolygonGeometry:
        symbol.setOpacity(0.65)
        layer = symbol.symbolLayer(0)
        layer.setStrokeColor(color.darker(160))
        layer.setStrokeWidth(0.5)
    return symbol


def store_default_style(layer: QgsVectorLayer) -> None:
    """Writes the layer's style to the ``.qml`` beside its file, which QGIS reads as its default.

    A sidecar file rather than the GeoPackage's ``layer_styles`` table: in QGIS 3.22, once a style
    has been saved into the GeoPackage, committing the next edits to it waits forever.
    """
    path = style_path_for(layer.source().split("|")[0])
    message, saved = layer.saveNamedStyle(str(path))
    if not saved:
        QgsMessageLog.logMessage(f"The style of {layer.name()} was not stored in {path.name}: "
                                 f"{message}", LOG_TAG, Qgis.Warning)


class _PanelContent(FORM_BASE, FORM_CLASS):
    """The panel's widgets, from ui/training_layer_panel.ui."""

    def __init__(self):
        super().__init__()
        self.setupUi(self)


class TrainingLayerPanel(QDockWidget):
    """Dock panel that creates training layers and manages their classes.

    Public calls (the toolbar, tests): ``start_new_layer()``, ``create_training_layer(raster)``,
    ``set_training_layer(layer, field)``, ``add_class(name)``, ``rename_class(old, new)``,
    ``set_current_class(name)``, ``class_names()``, ``class_counts()``.
    """

    def __init__(self, iface, plugin=None):
        """Args:
            iface: QGIS's interface.
            plugin: the HyperAdapt plugin object (unused here; every window takes it).
        """
        super().__init__(iface.mainWindow())
        self.iface = iface
        self.plugin = plugin
        self.setObjectName("HyperAdaptTrainingLayerPanel")
        self.setWindowTitle("HyperAdapt training classes")
        self.form = _PanelContent()
        self.setWidget(self.form)
        for name in ("raster_combo", "layer_combo", "field_combo", "new_layer_button",
                     "class_table", "class_name_edit", "add_class_button", "color_button",
                     "current_class_label", "status_label"):
            setattr(self, name, getattr(self.form, name))

        self.raster_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.raster_combo.setAllowEmptyLayer(True)
        self.layer_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer
                                    | QgsMapLayerProxyModel.PointLayer)
        self.layer_combo.setAllowEmptyLayer(True)
        self.layer_combo.setLayer(None)
        self.field_combo.setAllowEmptyFieldName(True)
        header = self.class_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        for column in (1, 2):
            header.setSectionResizeMode(column, QHeaderView.ResizeToContents)
        self.color_button.setAllowOpacity(False)
        self.color_button.setShowNoColor(False)

        self.layer: QgsVectorLayer | None = None
        self.field_name: str | None = None
        self._current_class: str | None = None
        self._count_timer = QTimer(self)
        self._count_timer.setSingleShot(True)
        self._count_timer.setInterval(COUNT_DELAY_MS)
        self._count_timer.timeout.connect(self.refresh_counts)

        self.new_layer_button.clicked.connect(self.start_new_layer)
        self.layer_combo.layerChanged.connect(self._layer_picked)
        self.field_combo.fieldChanged.connect(self._field_picked)
        self.raster_combo.layerChanged.connect(self._schedule_count)
        self.add_class_button.clicked.connect(self._add_class_clicked)
        self.class_name_edit.returnPressed.connect(self._add_class_clicked)
        self.class_table.itemSelectionChanged.connect(self._selection_changed)
        self.class_table.itemChanged.connect(self._item_edited)
        self.color_button.colorChanged.connect(self._color_picked)
        from .suggestions import SuggestionsBox

        self.class_table.setMinimumHeight(120)
        self.suggestions = SuggestionsBox(self)
        self.form.layout().addWidget(self.suggestions)
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self)
        self._update_labels()

    # -- creating a layer ---------------------------------------------------------------------
    @pyqtSlot()
    def start_new_layer(self) -> QgsVectorLayer | None:
        """The toolbar action: a new training layer for the chosen (or active) raster."""
        raster = self.raster_combo.currentLayer()
        active = self.iface.activeLayer()
        if raster is None and isinstance(active, QgsRasterLayer):
            raster = active
        if raster is None:
            rasters = [layer for layer in QgsProject.instance().mapLayers().values()
                       if isinstance(layer, QgsRasterLayer)]
            raster = rasters[0] if rasters else None
        if raster is None:
            self.status_label.setText("Add a raster layer to the project first: the training "
                                      "layer takes its CRS.")
            return None
        return self.create_training_layer(raster)

    def create_training_layer(self, raster: QgsRasterLayer, path: str | os.PathLike | None = None,
                              *, project: QgsProject | None = None) -> QgsVectorLayer:
        """Creates the GeoPackage layer, adds it above ``raster``, styles it and starts editing."""
        project = project or QgsProject.instance()
        path = Path(path) if path else default_training_path(raster.source())
        fields = QgsFields()
        fields.append(QgsField(CLASS_FIELD, QVariant.String, "String", 80))
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        options.layerName = TRAINING_LAYER_NAME
        writer = QgsVectorFileWriter.create(str(path), fields, QgsWkbTypes.MultiPolygon,
                                            raster.crs(), project.transformContext(), options)
        error = writer.hasError()
        message = writer.errorMessage()
        del writer  # closes the file
        if error != QgsVectorFileWriter.NoError:
            raise OSError(f"Cannot create the training layer {path}: {message}")

        layer = QgsVectorLayer(f"{path}|layername={TRAINING_LAYER_NAME}",
                               f"{raster.name()} training", "ogr")
        first = {"value": FIRST_CLASS_NAME, "label": FIRST_CLASS_NAME,
                 "color": default_class_color(0)}
        self._set_renderer(layer, CLASS_FIELD, [first])
        form = layer.editFormConfig()
        form.setSuppress(QgsEditFormConfig.SuppressOn)
        layer.setEditFormConfig(form)

        project.addMapLayer(layer, False)
        root = project.layerTreeRoot()
        raster_node = root.findLayer(raster.id())
        parent = raster_node.parent() if raster_node is not None else root
        index = parent.children().index(raster_node) if raster_node is not None else 0
        parent.insertLayer(index, layer)

        # The style is kept beside the GeoPackage too, so qgis_process and batch runs that open
        # the file (not the project's layer) still get the class colours; it is written again
        # each time the edits are saved, with the classes added since.
        store_default_style(layer)
        layer.afterCommitChanges.connect(partial(store_default_style, layer))
        layer.startEditing()
        self.raster_combo.setLayer(raster)
        # People draw on what they can see: bands 1-2-3 of a hyperspectral raster are not that.
        show_in_true_colour(raster, self.iface)
        self.set_training_layer(layer, CLASS_FIELD)
        self.set_current_class(FIRST_CLASS_NAME)
        self.iface.setActiveLayer(layer)
        add_feature = getattr(self.iface, "actionAddFeature", None)
        if add_feature is not None:
            add_feature().trigger()
        self.status_label.setText(f"Draw polygons on the map; each one gets the selected class. "
                                  f"Saved in {path}.")
        return layer

    # -- which layer and field ----------------------------------------------------------------
    def set_training_layer(self, layer: QgsVectorLayer | None, field: str | None = None) -> None:
        """Shows the classes of ``layer``'s ``field`` (a categorized field or the first text one)."""
        if self.layer is not None and self.layer is not layer:
            self._disconnect_layer(self.layer)
        self.layer = layer
        with _Blocked(self.layer_combo, self.field_combo):
            self.layer_combo.setLayer(layer)
            self.field_combo.setLayer(layer)
            if layer is not None and field is None:
                field = guess_class_field(layer)
            self.field_combo.setField(field or "")
        self.field_name = field or None
        self._current_class = None
        if layer is not None:
            layer.featureAdded.connect(self._schedule_count)
            layer.featuresDeleted.connect(self._schedule_count)
            layer.geometryChanged.connect(self._schedule_count)
            layer.attributeValueChanged.connect(self._schedule_count)
            layer.dataChanged.connect(self._schedule_count)
            layer.willBeDeleted.connect(self._layer_removed)
            layer.updatedFields.connect(self._fields_reloaded)
        self._fill_table()

    def _disconnect_layer(self, layer: QgsVectorLayer) -> None:
        for signal in (layer.featureAdded, layer.featuresDeleted, layer.geometryChanged,
                       layer.attributeValueChanged, layer.dataChanged):
            try:
                signal.disconnect(self._schedule_count)
            except TypeError:
                pass
        for signal, slot in ((layer.willBeDeleted, self._layer_removed),
                             (layer.updatedFields, self._fields_reloaded)):
            try:
                signal.disconnect(slot)
            except TypeError:
                pass

    @pyqtSlot()
    def _fields_reloaded(self) -> None:
        # Changing a default value or starting to edit reloads the layer's fields, and the field
        # box then loses its choice; the panel's field stays the class field.
        if self.field_name and self.field_combo.currentField() != self.field_name:
            with _Blocked(self.field_combo):
                self.field_combo.setField(self.field_name)

    @pyqtSlot()
    def _layer_removed(self) -> None:
        self.layer = None
        self.field_name = None
        self._fill_table()

    @pyqtSlot("QgsMapLayer*")
    def _layer_picked(self, layer) -> None:
        self.set_training_layer(layer if isinstance(layer, QgsVectorLayer) else None)

    @pyqtSlot(str)
    def _field_picked(self, field: str) -> None:
        self.field_name = field or None
        self._current_class = None
        self._fill_table()

    # -- classes ------------------------------------------------------------------------------
    def _categories(self) -> list[dict]:
        """The classes: the categorized style's (in its order), then values found only in the data."""
        if self.layer is None or not self.field_name:
            return []
        classes = []
        renderer = self.layer.renderer()
        if isinstance(renderer, QgsCategorizedSymbolRenderer) and \
                renderer.classAttribute() == self.field_name:
            for category in renderer.categories():
                if category.value() in (None, "") or category.symbol() is None:
                    continue
                color = category.symbol().color()
                classes.append({"value": category.value(), "label": category.label(),
                                "color": (color.red(), color.green(), color.blue())})
        known = {str(c["value"]) for c in classes}
        index = self.layer.fields().indexOf(self.field_name)
        for value in sorted(self.layer.uniqueValues(index), key=str):
            if value is None or (isinstance(value, QVariant) and value.isNull()) or \
                    str(value) in known or str(value) == "NULL":
                continue
            classes.append({"value": value, "label": str(value),
                            "color": default_class_color(len(classes))})
            known.add(str(value))
        return classes

    def class_names(self) -> list[str]:
        return [str(c["value"]) for c in self._categories()]

    def current_class(self) -> str | None:
        return self._current_class

    def add_class(self, name: str, color: tuple[int, int, int] | None = None) -> str:
        """Adds a class to the layer's style and makes it the current one."""
        name = name.strip()
        if self.layer is None or not self.field_name:
            raise ValueError("Pick a training layer and its class field first.")
        if not name:
            raise ValueError("A class needs a name.")
        classes = self._categories()
        if name in {str(c["value"]) for c in classes}:
            raise ValueError(f"There is already a class named {name}.")
        classes.append({"value": name, "label": name,
                        "color": color or default_class_color(len(classes))})
        self._set_renderer(self.layer, self.field_name, classes)
        self._fill_table()
        self.set_current_class(name)
        return name

    def rename_class(self, old: str, new: str) -> None:
        """Renames a class in the style and in every feature that has it (in the edit buffer)."""
        new = new.strip()
        if self.layer is None or not self.field_name or not new or new == old:
            return
        classes = self._categories()
        if new in {str(c["value"]) for c in classes}:
            raise ValueError(f"There is already a class named {new}.")
        for entry in classes:
            if str(entry["value"]) == old:
                entry["value"] = entry["label"] = new
        index = self.layer.fields().indexOf(self.field_name)
        request = QgsFeatureRequest().setFilterExpression(
            f"{QgsExpression.quotedColumnRef(self.field_name)} = {QgsExpression.quotedValue(old)}")
        request.setFlags(QgsFeatureRequest.NoGeometry)
        feature_ids = [feature.id() for feature in self.layer.getFeatures(request)]
        if feature_ids:
            if not self.layer.isEditable():
                self.layer.startEditing()
            self.layer.beginEditCommand(f"Rename class {old} to {new}")
            for feature_id in feature_ids:
                self.layer.changeAttributeValue(feature_id, index, new)
            self.layer.endEditCommand()
        self._set_renderer(self.layer, self.field_name, classes)
        was_current = self._current_class == old
        self._fill_table()
        if was_current:
            self.set_current_class(new)

    def set_class_color(self, name: str, rgb: tuple[int, int, int]) -> None:
        classes = self._categories()
        for entry in classes:
            if str(entry["value"]) == name:
                entry["color"] = tuple(rgb)
        self._set_renderer(self.layer, self.field_name, classes)
        self._fill_table()

    def set_current_class(self, name: str) -> None:
        """Makes ``name`` the default value of the class field, so new polygons get it."""
        if self.layer is None or not self.field_name:
            return
        index = self.layer.fields().indexOf(self.field_name)
        field = self.layer.fields().at(index)
        value = QgsExpression.quotedValue(name) if field.type() == QVariant.String else name
        self.layer.setDefaultValueDefinition(index, QgsDefaultValue(value))
        self._current_class = name
        for row in range(self.class_table.rowCount()):
            item = self.class_table.item(row, 0)
            if item.data(Qt.UserRole) == name and not item.isSelected():
                with _Blocked(self.class_table):
                    self.class_table.selectRow(row)
                self._show_selected_color(row)
        self._update_labels()

    def _set_renderer(self, layer: QgsVectorLayer, field: str, classes: list[dict]) -> None:
        geometry_type = layer.geometryType()
        categories = [QgsRendererCategory(entry["value"], class_symbol(geometry_type, entry["color"]),
                                          str(entry["label"]))
                      for entry in classes]
        layer.setRenderer(QgsCategorizedSymbolRenderer(field, categories))
        layer.triggerRepaint()
        layer.emitStyleChanged()

    # -- counts -------------------------------------------------------------------------------
    def class_counts(self) -> dict[str, tuple[int, int]]:
        """Per class: (number of polygons or points, approximate number of raster pixels)."""
        if self.layer is None or not self.field_name:
            return {}
        raster = self.raster_combo.currentLayer()
        pixel_area = None
        transform = None
        if isinstance(raster, QgsRasterLayer) and raster.isValid():
            pixel_area = abs(raster.rasterUnitsPerPixelX() * raster.rasterUnitsPerPixelY()) or None
            if raster.crs() != self.layer.crs():
                transform = QgsCoordinateTransform(self.layer.crs(), raster.crs(),
                                                   QgsProject.instance())
        is_polygon = self.layer.geometryType() == QgsWkbTypes.PolygonGeometry
        counts: dict[str, list[int | float]] = {}
        request = QgsFeatureRequest().setSubsetOfAttributes([self.field_name], self.layer.fields())
        for feature in self.layer.getFeatures(request):
            value = feature[self.field_name]
            if value is None or (isinstance(value, QVariant) and value.isNull()):
                continue
            entry = counts.setdefault(str(value), [0, 0.0])
            entry[0] += 1
            if not is_polygon:
                entry[1] += 1
            elif pixel_area and feature.hasGeometry():
                geometry = feature.geometry()
                if transform is not None:
                    geometry.transform(transform)
                entry[1] += geometry.area() / pixel_area
        return {name: (int(n), int(round(pixels))) for name, (n, pixels) in counts.items()}

    @pyqtSlot()
    def _schedule_count(self, *args) -> None:
        self._count_timer.start()

    @pyqtSlot()
    def refresh_counts(self) -> None:
        counts = self.class_counts()
        with _Blocked(self.class_table):
            for row in range(self.class_table.rowCount()):
                name = self.class_table.item(row, 0).data(Qt.UserRole)
                features, pixels = counts.get(name, (0, 0))
                self.class_table.item(row, 1).setText(str(features))
                self.class_table.item(row, 2).setText(f"≈ {pixels}" if self.layer is not None
                                                      and self.layer.geometryType()
                                                      == QgsWkbTypes.PolygonGeometry
                                                      else str(pixels))
        self._update_labels()

    # -- table --------------------------------------------------------------------------------
    def _fill_table(self) -> None:
        classes = self._categories()
        with _Blocked(self.class_table):
            self.class_table.setRowCount(len(classes))
            for row, entry in enumerate(classes):
                name = str(entry["value"])
                item = QTableWidgetItem(color_icon(entry["color"]), str(entry["label"]))
                item.setData(Qt.UserRole, name)
                item.setFlags(item.flags() | Qt.ItemIsEditable)
                self.class_table.setItem(row, 0, item)
                for column in (1, 2):
                    count = QTableWidgetItem("0")
                    count.setFlags(count.flags() & ~Qt.ItemIsEditable)
                    count.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                    self.class_table.setItem(row, column, count)
        if self._current_class is not None and self._current_class in {str(c["value"])
                                                                        for c in classes}:
            self.set_current_class(self._current_class)
        self.refresh_counts()

    @pyqtSlot()
    def _selection_changed(self) -> None:
        rows = {index.row() for index in self.class_table.selectedIndexes()}
        if len(rows) == 1:
            row = rows.pop()
            self.set_current_class(self.class_table.item(row, 0).data(Qt.UserRole))
            self._show_selected_color(row)

    def _show_selected_color(self, row: int) -> None:
        classes = self._categories()
        if 0 <= row < len(classes):
            with _Blocked(self.color_button):
                self.color_button.setColor(QColor(*classes[row]["color"]))

    @pyqtSlot(QTableWidgetItem)
    def _item_edited(self, item: QTableWidgetItem) -> None:
        if item.column() != 0:
            return
        old, new = item.data(Qt.UserRole), item.text().strip()
        try:
            self.rename_class(old, new)
        except ValueError as error:
            self.status_label.setText(str(error))
            self._fill_table()

    @pyqtSlot()
    def _add_class_clicked(self) -> None:
        try:
            self.add_class(self.class_name_edit.text())
        except ValueError as error:
            self.status_label.setText(str(error))
            return
        self.class_name_edit.clear()

    @pyqtSlot(QColor)
    def _color_picked(self, color: QColor) -> None:
        if self._current_class is not None:
            self.set_class_color(self._current_class, (color.red(), color.green(), color.blue()))

    def _update_labels(self) -> None:
        if self.layer is None:
            self.current_class_label.setText("Create a training layer, or pick a polygon or point "
                                             "layer with a class field.")
        elif not self.field_name:
            self.current_class_label.setText("Pick the field that holds the class.")
        elif self._current_class is None:
            self.current_class_label.setText("Select a class: new features get it.")
        else:
            self.current_class_label.setText(f"New features get the class "
                                             f"<b>{self._current_class}</b>.")

    def shutdown(self) -> None:
        """Called when the plugin unloads: let go of the layer and leave the main window."""
        if self.layer is not None:
            self._disconnect_layer(self.layer)
            self.layer = None
        self._count_timer.stop()
        self.suggestions.shutdown()
        main_window = self.iface.mainWindow()
        if main_window is not None and hasattr(main_window, "removeDockWidget"):
            main_window.removeDockWidget(self)
        self.close()
        self.deleteLater()


class _Blocked:
    """Blocks the widgets' signals inside a ``with`` block."""

    def __init__(self, *widgets):
        self.widgets = widgets

    def __enter__(self):
        self.states = [widget.blockSignals(True) for widget in self.widgets]

    def __exit__(self, *exc):
        for widget, state in zip(self.widgets, self.states):
            widget.blockSignals(state)
