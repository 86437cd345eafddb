"""The Fine-tune dialog in real QGIS (offscreen): training on a worker thread, a styled result,
the adapter in the library, Cancel, and inputs that must not start anything.

A tiny random-start backbone (settings backbone "tiny", input 16) on a 24 x 24 x 20 raster keeps
each run to seconds.
"""
from __future__ import annotations

import shutil
import time

import pytest
from osgeo import ogr
from qgis.core import (Qgis, QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsDefaultValue,
                       QgsGeometry, QgsPalettedRasterRenderer, QgsPointXY, QgsProject,
                       QgsRasterLayer, QgsVectorLayer, QgsVectorLayerUtils)
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QApplication

import hyperadapt
from hyperadapt.models.stores import library
from hyperadapt.plugin.fine_tune_dialog import FineTuneDialog
from gui_data import (CLASSES, ORIGIN_X, ORIGIN_Y, PIXEL_SIZE, SENSOR, render_map_with_legend,
                      screenshot_paths, style_by_class, write_test_raster,
                      write_training_polygons)

EXPECTED_STYLE = {name: "#%02x%02x%02x" % rgb for name, (rgb, _) in CLASSES.items()}


def wait_until(condition, timeout_s: float, step_ms: int = 20) -> bool:
    """Runs the event loop until ``condition()`` holds; False on timeout."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        QApplication.processEvents()
        QTest.qWait(step_ms)
    return condition()


@pytest.fixture()
def scene(iface, tmp_path, monkeypatch):
    """A raster and styled training polygons in the project; no cached weights, no saved output."""
    monkeypatch.setenv("HYPERADAPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HYPERADAPT_OUTPUT", str(tmp_path / "default_output"))
    raster = QgsRasterLayer(str(write_test_raster(tmp_path / "scene.tif")), "scene")
    areas = write_training_polygons(tmp_path / "areas.gpkg")
    polygons = QgsVectorLayer(f"{areas}|layername=training", "areas", "ogr")
    assert raster.isValid() and polygons.isValid()
    style_by_class(polygons)
    QgsProject.instance().addMapLayers([raster, polygons])
    return raster, polygons


@pytest.fixture()
def open_dialog(iface):
    """Opens Fine-tune dialogs; whatever they still run is stopped when the test ends."""
    dialogs = []

    def open_one() -> FineTuneDialog:
        dialog = FineTuneDialog(iface, None)
        dialog.show()
        dialogs.append(dialog)
        return dialog

    yield open_one
    for dialog in dialogs:
        dialog.shutdown()


def fill_form(dialog: FineTuneDialog, raster, polygons, output, *, steps: int,
              name: str = "gui_test") -> None:
    dialog.raster_combo.setLayer(raster)
    dialog.training_combo.setLayer(polygons)
    dialog.field_combo.setField("landcover")
    dialog.method_combo.setCurrentIndex(dialog.method_combo.findData("krona_plus"))
    dialog.steps_spin.setValue(steps)
    dialog.min_passes_spin.setValue(0)   # exactly the steps asked for, however many pixels
    dialog.lr_spin.setValue(0.003)
    dialog.window_spin.setValue(5)
    dialog.input_size_spin.setValue(16)
    dialog.backbone_combo.setCurrentIndex(dialog.backbone_combo.findData("tiny"))
    dialog.device_combo.setCurrentIndex(dialog.device_combo.findData("cpu"))
    dialog.random_start_check.setChecked(True)
    dialog.output_folder.setFilePath(str(output))
    dialog.confidence_check.setChecked(True)
    dialog.adapter_name_edit.setText(name)


def test_where_to_draw_next_after_fine_tune_suggests_with_the_new_adapter(iface, open_dialog,
                                                                         scene, library_dir,
                                                                         tmp_path):
    raster, polygons = scene
    dialog = open_dialog()
    fill_form(dialog, raster, polygons, tmp_path / "out", steps=10, name="round one")
    assert not dialog.suggest_button.isEnabled()        # nothing trained yet
    dialog.start_button.click()
    assert wait_until(lambda: not dialog.is_running(), 150), dialog.message_label.text()
    assert dialog.last_result is not None and dialog.suggest_button.isEnabled()

    from hyperadapt.plugin.training_layer import TrainingLayerPanel

    # The panel as the user left it: suggestions 2 pixels apart on this small raster.
    panel = dialog.suggestions_panel = TrainingLayerPanel(iface, None)
    box = panel.suggestions
    box.spacing_spin.setValue(2)
    dialog.suggest_button.click()
    assert panel.raster_combo.currentLayer() is raster and panel.layer is polygons
    assert box.adapter_combo.currentData() == dialog.last_result.adapter_path
    assert box.adapter_combo.currentText() == "round one"
    assert wait_until(lambda: box.runner is None and box.layer is not None, 60), \
        box.info_label.text()
    assert box.info_label.text().startswith(f"Suggestion 1 of {len(box.features)}")
    assert len(box.features) == box.count_spin.value()
    for point in box.features:                           # away from what is drawn already
        assert not any(area.geometry().contains(point.geometry())
                       for area in polygons.getFeatures())


def test_fine_tune_in_background_adds_styled_layer_and_library_adapter(iface, open_dialog, scene,
                                                                       library_dir, tmp_path):
    raster, polygons = scene
    output = tmp_path / "out"
    dialog = open_dialog()
    fill_form(dialog, raster, polygons, output, steps=40)
    assert dialog.sensor_edit.text() == SENSOR   # from the raster's metadata
    assert dialog.validation_problem() is None and dialog.start_button.isEnabled()

    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(20)
    clicked = time.monotonic()
    QTest.mouseClick(dialog.start_button, Qt.LeftButton)
    click_seconds = time.monotonic() - clicked
    assert dialog.is_running() and not dialog.start_button.isEnabled()

    grabbed = []

    def grab_during_training():
        if not grabbed and len(dialog.plot.points()) >= 3:
            image = dialog.grab()
            for path in screenshot_paths(tmp_path, "fine_tune_dialog_training.png"):
                assert image.save(str(path))
            grabbed.append(dialog.is_running())
        return not dialog.is_running()

    started = time.monotonic()
    assert wait_until(grab_during_training, 150), dialog.message_label.text()
    training_seconds = time.monotonic() - started
    timer.stop()

    # The GUI thread kept running its event loop the whole time: the click returned at once and
    # the timer ticked throughout, never stalled for long.
    assert click_seconds < 1.0
    during = [t for t in ticks if clicked <= t <= clicked + training_seconds]
    assert len(during) > training_seconds / 0.02 * 0.3
    assert max(b - a for a, b in zip(during, during[1:])) < 1.5
    assert grabbed == [True]

    assert dialog.last_result is not None, dialog.status_label.text()
    layer = dialog.result_layer
    assert layer is not None and QgsProject.instance().mapLayer(layer.id()) is layer
    renderer = layer.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    shown = {c.label: c.color.name() for c in renderer.classes()}
    assert shown == EXPECTED_STYLE
    assert sorted(c.value for c in renderer.classes()) == [1, 2, 3]
    assert dialog.confidence_layer is not None and dialog.confidence_layer.isValid()

    entries = library.list_adapters()
    assert [(e.name, e.sensor, e.method) for e in entries] == [
        ("gui_test", SENSOR, "krona_plus")]
    assert entries[0].path.parent.parent == library_dir
    assert {c["name"]: tuple(c["color"]) for c in entries[0].classes} == \
        {name: rgb for name, (rgb, _) in CLASSES.items()}

    # Classes of a few dozen pixels keep them all for training: the summary and the curve say so.
    summary = dialog.last_summary
    assert "none held out for validation" in summary and "validation accuracy" not in summary
    assert "adapter" in summary and "Random start" in summary
    assert any("none held out" in m for m in iface.messageBar().get_messages(Qgis.Warning))
    assert dialog.plot.title == "Training accuracy (nothing held out)"
    assert (output / "gui_test_report.html").is_file()
    assert (output / "gui_test_classification.tif").is_file()
    # The schedule is counted in steps; the epochs follow from the training pixels.
    epochs = len(dialog.last_result.history)
    assert epochs >= 3
    assert [epoch for epoch, _ in dialog.plot.points()] == list(range(1, epochs + 1))
    assert dialog.epoch_label.text() == f"Epoch {epochs}/{epochs}"
    assert dialog.loss_label.text() != "Loss –"

    image = render_map_with_legend([layer, raster], raster.extent(), raster.crs(),
                                   "gui_test classes")
    for path in screenshot_paths(tmp_path, "classified_map_with_legend.png"):
        assert image.save(str(path))


def test_cancel_stops_within_seconds_and_leaves_nothing(iface, open_dialog, scene, library_dir,
                                                        tmp_path):
    raster, polygons = scene
    output = tmp_path / "out"
    output.mkdir()
    layers_before = set(QgsProject.instance().mapLayers())
    dialog = open_dialog()
    fill_form(dialog, raster, polygons, output, steps=5000)
    dialog.start_button.click()
    assert wait_until(lambda: dialog.message_label.text().startswith("Epoch 1/"), 60)
    assert dialog.is_running()

    thread = dialog.runner.thread
    cancelled = time.monotonic()
    dialog.cancel_button.click()
    assert wait_until(lambda: not dialog.is_running(), 5.0)
    assert time.monotonic() - cancelled < 5.0
    assert thread.isFinished()
    assert dialog.status_label.text().startswith("Cancelled")
    assert set(QgsProject.instance().mapLayers()) == layers_before
    assert list(output.iterdir()) == []
    assert not library_dir.exists() or not list(library_dir.rglob("*.pt"))
    assert dialog.start_button.isEnabled()


def test_unloading_the_plugin_during_training_stops_the_thread(iface, scene, library_dir,
                                                               tmp_path):
    raster, polygons = scene
    plugin = hyperadapt.classFactory(iface)
    plugin.initGui()
    try:
        dialog = plugin.show_fine_tune()
        fill_form(dialog, raster, polygons, tmp_path / "out", steps=5000)
        dialog.start_button.click()
        assert wait_until(lambda: dialog.progress_bar.value() > 0, 60)
        thread = dialog.runner.thread
        unloading = time.monotonic()
    finally:
        plugin.unload()
    assert time.monotonic() - unloading < 5.0
    assert thread.isFinished() and dialog.runner is None
    assert not library_dir.exists() or not list(library_dir.rglob("*.pt"))


def test_invalid_inputs_start_nothing_and_say_why(iface, open_dialog, scene, library_dir,
                                                  tmp_path):
    raster, polygons = scene
    far_away = QgsVectorLayer(f"{write_training_polygons(tmp_path / 'far.gpkg', shift_x=2e5)}"
                              f"|layername=training", "far away", "ogr")
    one_class = QgsVectorLayer("Polygon?crs=EPSG:32633&field=landcover:string", "one class",
                               "memory")
    feature = QgsVectorLayerUtils.createFeature(one_class, QgsGeometry.fromPointXY(
        QgsPointXY(ORIGIN_X + 5 * PIXEL_SIZE, ORIGIN_Y - 5 * PIXEL_SIZE)).buffer(40, 4))
    feature["landcover"] = "water"
    one_class.dataProvider().addFeatures([feature])
    QgsProject.instance().addMapLayers([far_away, one_class])

    dialog = open_dialog()
    fill_form(dialog, raster, polygons, tmp_path / "out", steps=10)
    assert dialog.validation_problem() is None
    # The training panel changing the layer's default class reloads its fields: the choice stays.
    polygons.setDefaultValueDefinition(1, QgsDefaultValue("'water'"))
    assert dialog.field_combo.currentField() == "landcover"

    def refused(fragment: str) -> None:
        assert not dialog.start_button.isEnabled()
        assert fragment in dialog.status_label.text(), dialog.status_label.text()
        dialog.start()                      # even when called directly, nothing starts
        assert not dialog.is_running() and dialog.runner is None

    dialog.field_combo.setField("")
    refused("field")
    dialog.field_combo.setField("note")     # a field with one value: one class
    refused("at least two")
    dialog.field_combo.setField("landcover")

    dialog.training_combo.setLayer(far_away)
    dialog.field_combo.setField("landcover")
    refused("does not overlap")
    dialog.training_combo.setLayer(one_class)
    dialog.field_combo.setField("landcover")
    refused("at least two")
    dialog.training_combo.setLayer(polygons)
    dialog.field_combo.setField("landcover")

    dialog.raster_combo.setLayer(polygons)  # a vector is not offered as the raster
    assert dialog.raster_combo.currentLayer() is not polygons
    dialog.raster_combo.setLayer(None)
    refused("raster")
    dialog.raster_combo.setLayer(raster)

    dialog.random_start_check.setChecked(False)
    refused("weights")
    dialog.weights_file.setFilePath(str(tmp_path / "missing.pth"))
    refused("does not exist")
    dialog.random_start_check.setChecked(True)
    assert dialog.validation_problem() is None and dialog.start_button.isEnabled()
    assert not (tmp_path / "out").exists()


def test_prepare_backbone_shows_loss_cancels_and_resumes(iface, open_dialog, scene, library_dir,
                                                        tmp_path):
    from hyperadapt.models.jobs.pretraining import resume_path_for
    from hyperadapt.models.stores.backbone_file import default_backbone_path

    raster, polygons = scene
    dialog = open_dialog()
    fill_form(dialog, raster, polygons, tmp_path / "out", steps=10)
    dialog.pretrain_epochs_spin.setValue(2)
    dialog.pretrain_overrides = {
        "samples_per_epoch": 320, "batch_size": 16,
        "backbone_overrides": {"embed_dim": 32, "depth": 1, "num_heads": 2},
        "decoder_overrides": {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}}
    backbone = default_backbone_path(SENSOR, "tiny")
    assert dialog.prepare_button.text() == "Prepare backbone for this sensor"

    dialog.prepare_button.click()
    assert dialog.is_running() and dialog.job_kind == "pretrain"
    assert wait_until(lambda: "masked loss" in dialog.message_label.text(), 60), \
        dialog.message_label.text()   # the live loss of the running epoch
    dialog.cancel_button.click()
    assert wait_until(lambda: not dialog.is_running(), 5.0)
    assert resume_path_for(backbone).is_file() and not backbone.exists()
    assert dialog.prepare_button.text().startswith("Resume")
    assert "paused" in dialog.weights_info_label.text()

    dialog.prepare_button.click()
    assert wait_until(lambda: not dialog.is_running(), 90), dialog.message_label.text()
    assert backbone.is_file() and not resume_path_for(backbone).exists()
    assert dialog.weights_path() == str(backbone)
    assert not dialog.random_start_check.isChecked()
    assert "Backbone prepared for" in dialog.weights_info_label.text()
    assert dialog.validation_problem() is None


def test_result_message_has_a_button_that_opens_the_report(tmp_path, monkeypatch):
    from qgis.gui import QgsMessageBar
    from qgis.PyQt.QtGui import QDesktopServices
    from qgis.PyQt.QtWidgets import QPushButton
    from hyperadapt.plugin.widgets import push_message

    class Interface:
        bar = QgsMessageBar()

        def messageBar(self):  # noqa: N802 (QGIS's name)
            return self.bar

    report = tmp_path / "report.html"
    report.write_text("<html></html>")
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url) or True)
    item = push_message(Interface(), "HyperAdapt", "validation accuracy 97.0 %", Qgis.Success,
                        link_path=str(report))
    assert Interface.bar.currentItem() is item
    button = item.findChild(QPushButton, "hyperadapt_open_link")
    button.click()
    assert [url.toLocalFile() for url in opened] == [str(report)]


def test_worker_reads_what_qgis_shows_of_the_training_layer(iface, open_dialog, scene, library_dir,
                                                            tmp_path):
    raster, polygons = scene
    # GPS points in WGS 84, in a memory layer that OGR cannot read.
    to_wgs84 = QgsCoordinateTransform(raster.crs(), QgsCoordinateReferenceSystem("EPSG:4326"),
                                      QgsProject.instance())
    points = QgsVectorLayer("Point?crs=EPSG:4326&field=kind:string", "gps points", "memory")
    for kind, col in (("water", 2), ("water", 3), ("soil", 20)):
        position = to_wgs84.transform(QgsPointXY(ORIGIN_X + col * PIXEL_SIZE,
                                                 ORIGIN_Y - 4 * PIXEL_SIZE))
        feature = QgsVectorLayerUtils.createFeature(points, QgsGeometry.fromPointXY(position))
        feature["kind"] = kind
        points.dataProvider().addFeatures([feature])
    QgsProject.instance().addMapLayer(points)
    dialog = open_dialog()
    fill_form(dialog, raster, polygons, tmp_path / "out", steps=10)

    request = dialog.build_request()           # a saved OGR layer is read in place
    assert request.vector_path == str(tmp_path / "areas.gpkg") and request.snapshot_dir is None
    assert request.layer_name == "training"
    assert request.class_colors == {name: rgb for name, (rgb, _) in CLASSES.items()}
    assert request.class_names == {}           # its labels are its values

    dialog.training_combo.setLayer(points)     # a memory layer: copied for the worker
    dialog.field_combo.setField("kind")
    assert dialog.validation_problem() is None  # extents compared in the raster's CRS
    request = dialog.build_request()
    copied = ogr.Open(request.vector_path)
    layer = copied.GetLayerByName(request.layer_name)
    assert sorted(f.GetField("kind") for f in layer) == ["soil", "water", "water"]
    assert layer.GetSpatialRef().GetAuthorityCode(None) == "4326"
    copied = layer = None
    shutil.rmtree(request.snapshot_dir)

    polygons.startEditing()                    # unsaved edits: copied too, edits included
    polygons.deleteFeature(next(polygons.getFeatures()).id())
    dialog.training_combo.setLayer(polygons)
    dialog.field_combo.setField("landcover")
    request = dialog.build_request()
    assert request.snapshot_dir is not None
    assert ogr.Open(request.vector_path).GetLayerByName("training").GetFeatureCount() == 8
    shutil.rmtree(request.snapshot_dir)
    polygons.rollBack()


def test_jobs_leave_a_core_to_the_gui_thread(qgis_app):
    import os

    import torch
    from hyperadapt.plugin.worker import JobRunner

    before = torch.get_num_threads()
    seen = []
    runner = JobRunner(job=lambda progress, cancel: torch.get_num_threads())
    runner.worker.done.connect(seen.append, Qt.DirectConnection)
    runner.start()
    assert runner.thread.wait(10000)
    assert seen == [max(1, min(before, (os.cpu_count() or 2) - 1))]
    assert torch.get_num_threads() == before


def test_engine_error_is_one_sentence_and_adds_nothing(iface, open_dialog, scene, library_dir,
                                                       tmp_path):
    raster, polygons = scene
    broken = tmp_path / "SpectralGPT+.pth"
    broken.write_bytes(b"this download was cut off")
    layers_before = set(QgsProject.instance().mapLayers())
    dialog = open_dialog()
    fill_form(dialog, raster, polygons, tmp_path / "out", steps=10)
    dialog.random_start_check.setChecked(False)
    dialog.weights_file.setFilePath(str(broken))
    assert dialog.validation_problem() is None

    dialog.start_button.click()
    assert wait_until(lambda: not dialog.is_running(), 60)
    message = dialog.status_label.text()
    assert "SpectralGPT+.pth" in message and "\n" not in message and "Traceback" not in message
    assert "b00020" in dialog.status_label.styleSheet()      # shown as an error
    assert iface.messageBar().get_messages(Qgis.Critical) == [f"HyperAdapt:{message}"]
    assert set(QgsProject.instance().mapLayers()) == layers_before
    assert list((tmp_path / "out").iterdir()) == []
    assert not library_dir.exists() or not list(library_dir.rglob("*.pt"))


def test_an_untouched_dialog_asks_for_the_engines_default_run(open_dialog):
    from hyperadapt.models import options
    from hyperadapt.models.settings import FineTuneSettings

    dialog = open_dialog()
    asked = dialog.settings_dict()
    defaults = FineTuneSettings()
    for name in ("method", "steps", "min_passes", "learning_rate", "lr_ratio", "batch_size",
                 "window_size", "input_size", "band_adaptation", "targets", "rank", "preset",
                 "backbone", "pixel_dim", "context_dropout", "spectral_weight", "spectral_context",
                 "class_weighting", "classify_mode", "training_mode", "tile_step", "segment_size",
                 "self_training_rounds", "majority_size", "sieve_pixels"):
        assert asked[name] == getattr(defaults, name), name
    assert [dialog.method_combo.itemData(i) for i in range(dialog.method_combo.count())] == \
        list(options.METHODS)
    assert [dialog.band_combo.itemData(i) for i in range(dialog.band_combo.count())] == \
        list(options.BAND_ADAPTATIONS)
    assert [dialog.training_mode_combo.itemData(i)
            for i in range(dialog.training_mode_combo.count())] == list(options.TRAINING_MODES)
    assert dialog.pretrain_epochs_spin.value() == options.DEFAULT_PRETRAIN_EPOCHS


def test_the_fast_preset_caps_the_steps_and_drops_the_least_epochs(open_dialog):
    from hyperadapt.models import options

    dialog = open_dialog()
    dialog.preset_combo.setCurrentIndex(dialog.preset_combo.findData("fast"))
    asked = dialog.settings_dict()
    assert (asked["steps"], asked["min_passes"], asked["input_size"]) == (
        options.FAST_MAX_STEPS, 0, options.FAST_INPUT_SIZE)
    dialog.preset_combo.setCurrentIndex(dialog.preset_combo.findData("paper"))
    asked = dialog.settings_dict()
    assert (asked["min_passes"], asked["input_size"]) == (options.DEFAULT_MIN_PASSES,
                                                          options.DEFAULT_INPUT_SIZE)


def test_clean_up_boxes_step_through_odd_windows_and_show_off(open_dialog):
    dialog = open_dialog()
    assert dialog.majority_spin.text() == "off" and dialog.sieve_spin.text() == "off"
    dialog.majority_spin.stepUp()
    dialog.sieve_spin.setValue(6)
    assert dialog.majority_spin.value() == 3
    asked = dialog.settings_dict()
    assert (asked["majority_size"], asked["sieve_pixels"]) == (3, 6)


def test_cross_validation_before_training_is_in_the_summary_and_its_report(
        iface, open_dialog, scene, library_dir, tmp_path):
    raster, polygons = scene
    output = tmp_path / "out"
    dialog = open_dialog()
    fill_form(dialog, raster, polygons, output, steps=20)
    dialog.cross_validation_spin.setValue(2)
    fractions = []
    dialog.start()
    assert wait_until(lambda: (fractions.append(dialog.progress_bar.value()) or
                               not dialog.is_running()), 300), dialog.message_label.text()
    assert dialog.last_result is not None, dialog.status_label.text()
    pooled = dialog.last_result.cross_validation
    assert [f["fold"] for f in pooled["folds"]] == [1, 2]
    summary = dialog.last_summary
    assert f"cross-validated accuracy {100 * pooled['overall_accuracy']:.1f} % (2 folds by " \
           f"polygon: " in summary
    assert (output / "gui_test_cross_validation.html").is_file()
    seen = [f for f in fractions if f >= 0]
    assert seen == sorted(seen)        # one bar for the folds and the training, never back
