"""Classify with an adapter from the library, and the library window (rename, delete, import,
export, open folder), in real QGIS offscreen.

One adapter is trained once for the module (engine call, tiny random-start backbone); each test
copies it into its own empty library.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import QgsPalettedRasterRenderer, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QApplication, QFileDialog, QInputDialog, QMessageBox

import hyperadapt
from hyperadapt.models.jobs import FineTuneSettings, fine_tune
from hyperadapt.models.stores import library
from hyperadapt.models.stores.adapter_file import load_adapter_file, save_adapter_file
from hyperadapt.plugin.worker import limit_torch_threads, restore_torch_threads
from gui_data import SENSOR, screenshot_paths, write_test_raster, write_training_polygons

CLASS_NAMES = ["water", "vegetation", "soil"]


def wait_until(condition, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and not condition():
        QApplication.processEvents()
        QTest.qWait(20)
    return condition()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A raster, an adapter trained on it and the classification fine_tune made with it."""
    folder = tmp_path_factory.mktemp("trained")
    raster = write_test_raster(folder / "scene.tif")
    polygons = write_training_polygons(folder / "areas.gpkg")
    settings = FineTuneSettings(backbone="tiny", random_start=True, epochs=3, input_size=16,
                                window_size=5, learning_rate=3e-3, device="cpu",
                                min_validation_pixels=0)   # small polygons, still validated
    previous_threads = limit_torch_threads()   # as the dialogs' worker does: fast on a busy machine
    try:
        result = fine_tune(str(raster), str(polygons), "landcover", str(folder / "scene_model.pt"),
                           settings=settings, layer_name="training", sensor=SENSOR,
                           adapter_name="scene model",
                           classification_path=str(folder / "fine_tune_classes.tif"))
    finally:
        restore_torch_threads(previous_threads)
    return {"raster": raster, "adapter": folder / "scene_model.pt",
            "classification": result.classification_path, "classes": result.classes}


def add_other_sensor_adapter(adapter_path, name="other sensor model") -> str:
    """The same adapter, relabelled as made for a 30-band sensor: it does not fit the raster."""
    record = load_adapter_file(adapter_path)
    record.name = name
    record.sensor = {**record.sensor, "name": "OTHER", "band_count": 30}
    path = library.library_adapter_path("OTHER", name)
    save_adapter_file(record, path)
    return str(path)


def test_classify_with_library_adapter_reproduces_the_classes(iface, trained, library_dir,
                                                              tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERADAPT_CACHE_DIR", str(tmp_path / "cache"))
    raster = QgsRasterLayer(str(trained["raster"]), "scene")
    QgsProject.instance().addMapLayer(raster)
    other = add_other_sensor_adapter(trained["adapter"])
    plugin = hyperadapt.classFactory(iface)
    plugin.initGui()
    try:
        dialog = plugin.show_classify()
        dialog.raster_combo.setLayer(raster)
        # Only an adapter for another sensor: listed, greyed, and nothing can start.
        assert dialog.adapter_names() == ["other sensor model"]
        assert not dialog.start_button.isEnabled() and not dialog.suggest_button.isEnabled()
        assert "fits" in dialog.status_label.text()
        assert "30 bands" in dialog.adapter_tree.topLevelItem(0).toolTip(0)

        fitting = str(library.add_to_library(trained["adapter"]))
        dialog.refresh_adapters()
        assert dialog.adapter_names() == ["scene model", "other sensor model"]   # fitting first
        assert dialog.selected_path() == fitting
        dialog.select_adapter(other)      # not selectable: the selection stays empty
        assert dialog.selected_path() is None
        dialog.select_adapter(fitting)
        dialog.output_folder.setFilePath(str(tmp_path / "out"))
        dialog.device_combo.setCurrentIndex(dialog.device_combo.findData("cpu"))
        assert dialog.validation_problem() is None

        QTest.mouseClick(dialog.start_button, Qt.LeftButton)
        assert dialog.is_running()
        assert wait_until(lambda: not dialog.is_running(), 90), dialog.message_label.text()
        assert dialog.last_result is not None, dialog.status_label.text()

        layer = dialog.result_layer
        assert QgsProject.instance().mapLayer(layer.id()) is layer
        renderer = layer.renderer()
        assert isinstance(renderer, QgsPalettedRasterRenderer)
        assert [(c.value, c.label, c.color.getRgb()[:3]) for c in renderer.classes()] == \
            [(c.value, c.name, tuple(c.color)) for c in trained["classes"]]
        assert [c.name for c in trained["classes"]] == CLASS_NAMES
        ours = gdal.Open(dialog.last_result.output_path).ReadAsArray()
        reference = gdal.Open(trained["classification"]).ReadAsArray()
        assert ours.shape == (24, 24) and set(np.unique(ours)) <= {1, 2, 3}
        assert (ours == reference).mean() >= 0.99
        assert "scene model" in dialog.last_summary
        counts = {c.value: int((ours == c.value).sum()) for c in trained["classes"]}
        assert dialog.status_label.text().endswith(
            "Pixels per class: " + ", ".join(f"{c.name}: {counts[c.value]:,} px"
                                             if counts[c.value] else f"{c.name}: none"
                                             for c in trained["classes"]) + ".")

        # Where to draw next with the selected adapter, from the training panel, on this raster.
        panel = plugin.show_training_panel()
        box = panel.suggestions
        box.spacing_spin.setValue(2)                     # suggestions 2 pixels apart on 24 x 24
        assert dialog.suggest_button.isEnabled()
        QTest.mouseClick(dialog.suggest_button, Qt.LeftButton)
        assert panel.raster_combo.currentLayer() is raster
        assert box.adapter_combo.currentData() == fitting
        assert wait_until(lambda: box.runner is None and box.layer is not None, 60), \
            box.info_label.text()
        assert len(box.features) == box.count_spin.value()
        assert box.info_label.text().startswith(f"Suggestion 1 of {len(box.features)}")
    finally:
        plugin.unload()


def test_library_lists_by_sensor_and_renames_exports_deletes_imports(iface, trained, library_dir,
                                                                     tmp_path, monkeypatch):
    fitting = library.add_to_library(trained["adapter"])
    add_other_sensor_adapter(trained["adapter"])
    plugin = hyperadapt.classFactory(iface)
    plugin.initGui()
    try:
        dialog = plugin.show_library()
        assert dialog.sensors() == {SENSOR: ["scene model"], "OTHER": ["other sensor model"]}
        item = dialog.item_for(fitting)
        assert item.text(1) == "water, vegetation, soil"
        assert item.text(2) == "KronA+" and item.text(3).endswith("%")
        assert item.text(0) == "scene model (random start)"
        assert item.text(5).endswith("KB")
        dialog.select(fitting)
        for path in screenshot_paths(tmp_path, "adapter_library.png"):
            assert dialog.grab().save(str(path))

        dialog.select(fitting)
        assert "random start" in dialog.details_label.text()
        monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("field survey 2024", True))
        dialog.rename_button.click()
        renamed = library.library_adapter_path(SENSOR, "field survey 2024")
        assert renamed.is_file() and not fitting.exists()
        assert load_adapter_file(renamed).name == "field survey 2024"
        assert dialog.sensors()[SENSOR] == ["field survey 2024"]

        exported = tmp_path / "shared_model.pt"
        monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(exported), ""))
        dialog.select(renamed)
        dialog.export_button.click()
        assert load_adapter_file(exported).name == "field survey 2024"

        opened = []
        monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url) or True)
        dialog.open_folder_button.click()
        assert [url.toLocalFile() for url in opened] == [str(renamed.parent)]

        monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.No)
        dialog.delete_button.click()
        assert renamed.is_file()
        monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)
        dialog.delete_button.click()
        assert not renamed.exists()
        assert dialog.sensors() == {"OTHER": ["other sensor model"]}

        monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(exported), ""))
        dialog.import_button.click()
        assert renamed.is_file()
        assert dialog.sensors()[SENSOR] == ["field survey 2024"]
        assert dialog.selected_path() == str(renamed)

        not_an_adapter = tmp_path / "notes.pt"
        not_an_adapter.write_bytes(b"not a torch file")
        monkeypatch.setattr(QFileDialog, "getOpenFileName",
                            lambda *a, **k: (str(not_an_adapter), ""))
        dialog.import_button.click()
        assert "could not be read" in dialog.details_label.text()
        assert sorted(p.name for p in library_dir.rglob("*.pt")) == \
            ["field_survey_2024.pt", "other_sensor_model.pt"]
    finally:
        plugin.unload()
