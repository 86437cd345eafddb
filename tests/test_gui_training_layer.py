"""The "New training layer" panel: a GeoPackage layer in the raster's CRS, styled, drawn class by class."""
from __future__ import annotations

from qgis.core import (
    QgsCategorizedSymbolRenderer, QgsEditFormConfig, QgsGeometry, QgsPointXY, QgsProject,
    QgsRasterLayer, QgsRectangle, QgsVectorLayer, QgsVectorLayerUtils, QgsWkbTypes,
)
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QApplication

import hyperadapt
from hyperadapt.plugin.training_layer import CLASS_FIELD, TrainingLayerPanel
from gui_data import (ORIGIN_X, ORIGIN_Y, PIXEL_SIZE, PIXELS_PER_BOX, screenshot_paths,
                      write_test_raster, write_training_polygons)


def _pixel_rect(col0, row0, col1, row1) -> QgsGeometry:
    return QgsGeometry.fromRect(QgsRectangle(ORIGIN_X + col0 * PIXEL_SIZE, ORIGIN_Y - row1 * PIXEL_SIZE,
                                             ORIGIN_X + col1 * PIXEL_SIZE, ORIGIN_Y - row0 * PIXEL_SIZE))


def _draw(layer, geometry) -> None:
    # createFeature fills the field defaults, as QGIS's add-polygon tool does with the form suppressed.
    feature = QgsVectorLayerUtils.createFeature(layer, geometry)
    assert layer.addFeature(feature)


def _add_raster(tmp_path) -> QgsRasterLayer:
    raster = QgsRasterLayer(str(write_test_raster(tmp_path / "scene.tif")), "scene")
    assert raster.isValid()
    QgsProject.instance().addMapLayer(raster)
    return raster


def test_new_layer_is_in_raster_crs_styled_and_polygons_get_the_current_class(iface, tmp_path):
    raster = _add_raster(tmp_path)
    panel = TrainingLayerPanel(iface, None)
    try:
        layer = panel.create_training_layer(raster, tmp_path / "areas.gpkg")

        assert layer.isValid() and layer.isEditable()
        assert layer.crs() == raster.crs()
        assert layer.geometryType() == QgsWkbTypes.PolygonGeometry
        assert layer.editFormConfig().suppress() == QgsEditFormConfig.SuppressOn
        order = [node.layerId() for node in QgsProject.instance().layerTreeRoot().findLayers()]
        assert order.index(layer.id()) == order.index(raster.id()) - 1  # just above the raster

        panel.rename_class("class 1", "water")
        panel.add_class("forest")                  # a new class becomes the current one
        assert panel.current_class() == "forest"
        _draw(layer, _pixel_rect(10, 2, 14, 5))    # 4 x 3 pixels
        _draw(layer, _pixel_rect(10, 8, 12, 10))   # 2 x 2 pixels
        panel.set_current_class("water")
        _draw(layer, _pixel_rect(1, 1, 3, 4))      # 2 x 3 pixels

        panel.refresh_counts()
        assert panel.class_counts() == {"forest": (2, 16), "water": (1, 6)}
        shown = {panel.class_table.item(row, 0).text(): panel.class_table.item(row, 1).text()
                 for row in range(panel.class_table.rowCount())}
        assert shown == {"water": "1", "forest": "2"}
        assert panel.field_combo.currentField() == CLASS_FIELD
        panel.resize(340, 480)
        for path in screenshot_paths(tmp_path, "training_classes_panel.png"):
            assert panel.grab().save(str(path))

        renderer = layer.renderer()
        assert isinstance(renderer, QgsCategorizedSymbolRenderer)
        assert renderer.classAttribute() == CLASS_FIELD
        colors = {c.value(): c.symbol().color().name() for c in renderer.categories()}
        assert set(colors) == {"water", "forest"} and len(set(colors.values())) == 2

        assert layer.commitChanges()
        saved = QgsVectorLayer(f"{tmp_path / 'areas.gpkg'}|layername=training", "saved", "ogr")
        values = sorted(f[CLASS_FIELD] for f in saved.getFeatures())
        assert values == ["forest", "forest", "water"]
        assert saved.crs().authid() == "EPSG:32633"
        # Saving the edits stored the style beside the file, for runs that open the file alone.
        stored = {c.value(): c.symbol().color().name() for c in saved.renderer().categories()}
        assert stored == colors
        layer.startEditing()                       # and the next edits still save
        _draw(layer, _pixel_rect(20, 20, 21, 21))
        assert layer.commitChanges()
    finally:
        panel.shutdown()


def test_picking_and_renaming_classes_in_the_table(iface, tmp_path):
    raster = _add_raster(tmp_path)
    panel = TrainingLayerPanel(iface, None)
    try:
        layer = panel.create_training_layer(raster, tmp_path / "areas.gpkg")
        panel.class_name_edit.setText("meadow")
        panel.add_class_button.click()
        assert panel.class_names() == ["class 1", "meadow"]

        panel.class_table.selectRow(0)             # the user clicks the first class
        assert panel.current_class() == "class 1"
        _draw(layer, _pixel_rect(0, 0, 2, 2))
        panel.class_table.item(0, 0).setText("urban")   # edited in place
        QApplication.processEvents()

        assert panel.class_names() == ["urban", "meadow"]
        assert panel.current_class() == "urban"
        assert [f[CLASS_FIELD] for f in layer.getFeatures()] == ["urban"]
        _draw(layer, _pixel_rect(4, 4, 5, 5))
        assert sorted(f[CLASS_FIELD] for f in layer.getFeatures()) == ["urban", "urban"]

        panel.class_name_edit.setText("meadow")    # a duplicate name is refused with a reason
        panel.add_class_button.click()
        assert panel.class_names() == ["urban", "meadow"]
        assert "already" in panel.status_label.text()
    finally:
        panel.shutdown()


def test_existing_point_layer_counts_points_and_keeps_its_field(iface, tmp_path):
    raster = _add_raster(tmp_path)
    polygons = QgsVectorLayer(str(write_training_polygons(tmp_path / "given.gpkg")), "given", "ogr")
    QgsProject.instance().addMapLayer(polygons)
    points = QgsVectorLayer("Point?crs=EPSG:32633&field=kind:string", "points", "memory")
    for kind, col in (("a", 1), ("a", 2), ("b", 20)):
        feature = QgsVectorLayerUtils.createFeature(points, QgsGeometry.fromPointXY(
            QgsPointXY(ORIGIN_X + col * PIXEL_SIZE, ORIGIN_Y - 5 * PIXEL_SIZE)))
        feature["kind"] = kind
        points.dataProvider().addFeatures([feature])
    QgsProject.instance().addMapLayer(points)

    panel = TrainingLayerPanel(iface, None)
    try:
        panel.raster_combo.setLayer(raster)
        panel.layer_combo.setLayer(polygons)
        assert panel.field_name == "landcover"
        assert panel.class_names() == ["soil", "vegetation", "water"]
        counts = panel.class_counts()
        assert counts == {name: (3, 3 * PIXELS_PER_BOX) for name in ("soil", "vegetation", "water")}

        panel.layer_combo.setLayer(points)
        assert panel.field_name == "kind"
        assert panel.class_counts() == {"a": (2, 2), "b": (1, 1)}
    finally:
        panel.shutdown()


def test_toolbar_action_creates_a_layer_for_the_raster(iface, tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERADAPT_OUTPUT", str(tmp_path / "out"))
    raster = _add_raster(tmp_path)
    plugin = hyperadapt.classFactory(iface)
    plugin.initGui()
    try:
        action = next(a for a in plugin.actions if a.objectName() == "hyperadapt_new_training_layer")
        action.trigger()
        panel = plugin.windows["training_layer"]
        assert panel.isVisibleTo(iface.mainWindow())   # docked in the main window
        layer = panel.layer
        assert layer is not None and layer.isEditable() and layer.crs() == raster.crs()
        assert (tmp_path / "scene_training.gpkg").exists()   # beside the raster
        assert panel.class_table.rowCount() == 1
        assert panel.class_table.item(0, 0).data(Qt.UserRole) == panel.current_class()
        layer.rollBack()
    finally:
        plugin.unload()


def test_suggestions_are_walked_through_and_accepted_ones_become_training_squares(
        iface, tmp_path, library_dir, monkeypatch):
    """Suggest where to draw next from a library adapter, then add one as its guess, one as the
    selected class, and skip one: the training layer gains two pixel-aligned squares."""
    import time

    from engine_data import TINY_BACKBONE
    from gui_data import write_training_polygons
    from hyperadapt.models.jobs import FineTuneSettings, fine_tune
    from hyperadapt.models.stores import library

    monkeypatch.setenv("HYPERADAPT_OUTPUT", str(tmp_path / "outputs"))
    raster = _add_raster(tmp_path)
    polygons = write_training_polygons(tmp_path / "fields.gpkg")
    adapter = library.library_adapter_path("GUITESTSENSOR", "scene model")
    fine_tune(raster.source(), str(polygons), "landcover", str(adapter), sensor="GUITESTSENSOR",
              adapter_name="scene model",
              settings=FineTuneSettings(backbone="tiny", random_start=True, epochs=3,
                                        input_size=16, window_size=5,
                                        backbone_overrides=dict(TINY_BACKBONE)))
    training = QgsVectorLayer(f"{polygons}|layername=training", "fields", "ogr")
    QgsProject.instance().addMapLayer(training)
    panel = TrainingLayerPanel(iface, None)
    try:
        panel.raster_combo.setLayer(raster)
        panel.set_training_layer(training, "landcover")
        box = panel.suggestions
        assert [box.adapter_combo.itemText(i) for i in range(box.adapter_combo.count())] == \
            ["scene model"]
        box.count_spin.setValue(3)
        box.spacing_spin.setValue(2)
        box.square_spin.setValue(3)
        before = {f.id() for f in training.getFeatures()}
        box.suggest_button.click()
        deadline = time.monotonic() + 60
        while (box.runner is not None or box.layer is None) and time.monotonic() < deadline:
            QApplication.processEvents()
            time.sleep(0.02)
        assert box.layer is not None, box.info_label.text()
        assert len(box.features) == 3 and box.info_label.text().startswith("Suggestion 1 of 3")
        guesses = [f["guess"] for f in box.features]
        _screenshot_of_suggestions(panel, [box.layer, training, raster], raster, tmp_path)

        box.accept_guess_button.click()
        panel.set_current_class("soil")
        box.accept_class_button.click()
        box.skip_button.click()
        assert box.info_label.text().startswith("Done: 2 of 3 suggestions added")
        assert not box.accept_guess_button.isEnabled()

        added = [f for f in training.getFeatures() if f.id() not in before]
        assert len(added) == 2
        for suggestion, label in zip(box.features, [guesses[0], "soil"]):
            square = [f for f in added if f.geometry().contains(suggestion.geometry())]
            assert len(square) == 1 and square[0]["landcover"] == label
            extent = square[0].geometry().boundingBox()
            assert round(extent.width()) == round(extent.height()) == 90          # 3 pixels
            assert (extent.xMinimum() - ORIGIN_X) % PIXEL_SIZE == 0              # on the grid
    finally:
        panel.shutdown()


def _screenshot_of_suggestions(panel, layers, raster, tmp_path) -> None:
    """For the README: the map with the suggestions beside the panel walking through them."""
    from gui_data import render_layers, side_by_side

    panel.resize(360, 620)
    image = side_by_side(render_layers(layers, raster.extent(), raster.crs()),
                         panel.grab().toImage())
    for path in screenshot_paths(tmp_path, "suggestions.png"):
        assert image.save(str(path))
