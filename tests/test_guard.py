"""No job replaces a user's file: every output, with the files written beside it, is checked
against every input (and the files kept beside them) and against the other outputs, before any
work; the sentence is checked, and so is that no file changed and nothing new was left."""
from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest
from osgeo import gdal

from engine_data import make_polygons, make_test_raster, tiny_settings
from hyperadapt.models.errors import HyperAdaptError, os_error_sentence
from hyperadapt.models.jobs import classify, cross_validate, evaluate, fine_tune, postprocess
from hyperadapt.models.jobs.pretraining import PretrainSettings, pretrain_backbone
from hyperadapt.models.stores.guard import check_job_files


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A scene, its training layer with a style beside it, an adapter and a classification."""
    folder = tmp_path_factory.mktemp("guarded")
    raster = make_test_raster(folder / "scene.tif")
    layer = make_polygons(folder / "fields.gpkg", raster)
    (folder / "fields.qml").write_text("<qgis>the user's own style</qgis>")
    json_layer = folder / "plots.json"
    gdal.VectorTranslate(str(json_layer), str(layer), format="GeoJSON")
    fine_tune(str(raster.path), str(layer), "class", str(folder / "adapter.pt"),
              settings=tiny_settings(epochs=1), classification_path=str(folder / "classes.tif"))
    (folder / "folder.tif").mkdir()
    (folder / "notes.txt").write_text("a file, not a folder")
    os.symlink(raster.path, folder / "link.tif")
    return folder


def _state(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _fine_tune(folder, adapter="new.pt", *, layer="fields.gpkg", **outputs):
    paths = {key: str(folder / value) for key, value in outputs.items()}
    settings = tiny_settings(epochs=1, weights=paths.pop("weights", None))
    return fine_tune(str(folder / "scene.tif"), str(folder / layer), "class", str(folder / adapter),
                     settings=settings, **paths)


CASES = {
    "adapter over the training layer": (
        lambda f: _fine_tune(f, "fields.gpkg"),
        "The adapter file would overwrite the training layer; choose another file name."),
    "adapter over the raster": (
        lambda f: _fine_tune(f, "scene.tif"),
        "The adapter file would overwrite the input raster; choose another file name."),
    "adapter through a link to the raster": (
        lambda f: _fine_tune(f, "link.tif"),
        "The adapter file would overwrite the input raster; choose another file name."),
    "adapter through .. to the raster": (
        lambda f: _fine_tune(f, "folder.tif/../scene.tif"),
        "The adapter file would overwrite the input raster; choose another file name."),
    "report over the training layer": (
        lambda f: _fine_tune(f, report_path="fields.gpkg"),
        "The report would overwrite the training layer; choose another file name."),
    "classification style over the layer's style": (
        lambda f: _fine_tune(f, classification_path="fields.tif"),
        "The classification writes fields.qml beside it, which would overwrite fields.qml, kept "
        "beside the training layer; choose another file name."),
    "report figures over a GeoJSON training layer": (
        lambda f: _fine_tune(f, layer="plots.json", report_path="plots.html"),
        "The report writes plots.json beside it, which would overwrite the training layer; "
        "choose another file name."),
    "classification over the weights": (
        lambda f: _fine_tune(f, classification_path="adapter.pt", weights="adapter.pt"),
        "The classification would overwrite the weights file; choose another file name."),
    "classification and report": (
        lambda f: _fine_tune(f, classification_path="out.tif", report_path="out.tif"),
        "The classification and the report need different file names."),
    "classification style and report": (
        lambda f: _fine_tune(f, classification_path="out.tif", report_path="out.qml"),
        "The classification and the report need different file names."),
    "adapter is a folder": (
        lambda f: _fine_tune(f, "folder.tif"),
        None),  # names the folder's full path
    "adapter in a file taken for a folder": (
        lambda f: _fine_tune(f, "notes.txt/new.pt"),
        None),
    "classify over the adapter": (
        lambda f: classify(str(f / "scene.tif"), str(f / "adapter.pt"), str(f / "adapter.pt")),
        "The classification would overwrite the adapter file; choose another file name."),
    "classify over the raster": (
        lambda f: classify(str(f / "scene.tif"), str(f / "adapter.pt"), str(f / "scene.tif")),
        "The classification would overwrite the input raster; choose another file name."),
    "classify confidence over the classification": (
        lambda f: classify(str(f / "scene.tif"), str(f / "adapter.pt"), str(f / "new.tif"),
                           confidence_path=str(f / "new.tif")),
        "The classification and the confidence raster need different file names."),
    "evaluate report over the classification": (
        lambda f: evaluate(str(f / "classes.tif"), str(f / "fields.gpkg"), class_field="class",
                           html_path=str(f / "classes.tif")),
        "The report would overwrite the classification; choose another file name."),
    "evaluate figures over the reference layer": (
        lambda f: evaluate(str(f / "classes.tif"), str(f / "plots.json"), class_field="class",
                           json_path=str(f / "plots.json")),
        "The figures (JSON) would overwrite the reference; choose another file name."),
    "evaluate figures over the classification's style": (
        lambda f: evaluate(str(f / "classes.tif"), str(f / "fields.gpkg"), class_field="class",
                           json_path=str(f / "classes.qml")),
        "The figures (JSON) would overwrite classes.qml, kept beside the classification; choose "
        "another file name."),
    "evaluate figures over the reference's style": (
        lambda f: evaluate(str(f / "classes.tif"), str(f / "fields.gpkg"), class_field="class",
                           json_path=str(f / "fields.qml")),
        "The figures (JSON) would overwrite fields.qml, kept beside the reference; choose "
        "another file name."),
    "evaluate report over the reference raster": (
        lambda f: evaluate(str(f / "classes.tif"), str(f / "classes.tif"),
                           html_path=str(f / "classes.tif")),
        "The report would overwrite the classification; choose another file name."),
    "clean-up over the classification": (
        lambda f: postprocess(str(f / "classes.tif"), str(f / "classes.tif"), sieve_pixels=2),
        "The cleaned classification would overwrite the input raster; choose another file name."),
    "clean-up over the scene": (
        lambda f: postprocess(str(f / "classes.tif"), str(f / "scene.tif"), segment_size=4,
                              raster_path=str(f / "scene.tif")),
        "The cleaned classification would overwrite the scene's raster; choose another file "
        "name."),
    "clean-up style over the classification's style": (
        lambda f: postprocess(str(f / "classes.tif"), str(f / "classes.qml"), sieve_pixels=2),
        "The cleaned classification would overwrite classes.qml, kept beside the input raster; "
        "choose another file name."),
    "cross-validation report over the training layer": (
        lambda f: cross_validate(str(f / "scene.tif"), str(f / "fields.gpkg"), "class", folds=2,
                                 settings=tiny_settings(epochs=1),
                                 html_path=str(f / "fields.gpkg")),
        "The report would overwrite the training layer; choose another file name."),
    "pretraining over its raster": (
        lambda f: pretrain_backbone([str(f / "scene.tif")], str(f / "scene.tif"),
                                    settings=PretrainSettings(epochs=1)),
        "The backbone file would overwrite the input raster scene.tif; choose another file "
        "name."),
}


@pytest.mark.parametrize("case", [name for name, (_, sentence) in CASES.items()
                                  if sentence is not None])
def test_a_clash_is_one_sentence_before_any_work_and_changes_nothing(folder, case):
    run, sentence = CASES[case]
    before = _state(folder)
    with pytest.raises(HyperAdaptError) as caught:
        run(folder)
    assert str(caught.value) == sentence
    assert _state(folder) == before


def test_a_folder_or_a_file_in_the_way_is_named(folder):
    before = _state(folder)
    with pytest.raises(HyperAdaptError) as caught:
        CASES["adapter is a folder"][0](folder)
    assert str(caught.value) == (f"The adapter file {folder / 'folder.tif'} is a folder; give a "
                                 f"file name.")
    with pytest.raises(HyperAdaptError) as caught:
        CASES["adapter in a file taken for a folder"][0](folder)
    assert str(caught.value) == (f"HyperAdapt cannot write in the folder {folder / 'notes.txt'} "
                                 f"(for the adapter file); choose another folder.")
    assert _state(folder) == before


def test_a_map_may_share_a_name_with_a_layer_without_a_style(tmp_path, folder):
    """fields.tif beside fields.gpkg is a natural choice; only an existing style is protected."""
    check_job_files({"classification": [tmp_path / "plots.tif", tmp_path / "plots.qml"]},
                    {"training layer": [tmp_path / "plots.gpkg", tmp_path / "plots.qml"]})


def test_too_little_free_space_is_said_before_the_work(tmp_path):
    with pytest.raises(HyperAdaptError) as caught:
        check_job_files({"classification": tmp_path / "map.tif"}, needed_bytes=10**18)
    assert str(caught.value).startswith(f"The disk holding {tmp_path} has ")
    assert str(caught.value).endswith(" free, but the classification needs about "
                                      "953,674,316,406 MB; free some space or choose another "
                                      "folder.")
    check_job_files({"classification": tmp_path / "map.tif"}, needed_bytes=1)


@pytest.mark.parametrize("error, sentence", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/map.tif"),
     "The disk is full: HyperAdapt could not finish writing /data/map.tif; free some space and "
     "run again."),
    (PermissionError(errno.EACCES, "Permission denied", "/data/map.tif"),
     "HyperAdapt may not write /data/map.tif (permission denied); choose another folder."),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/data/maps"),
     "/data/maps is a folder; give a file name."),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/gone"),
     "/data/gone does not exist."),
])
def test_file_errors_read_as_sentences(error, sentence):
    assert os_error_sentence(error) == sentence


@pytest.mark.parametrize("failure", ["full disk", "cancel"])
def test_a_late_failure_leaves_the_previous_results_as_they_were(folder, tmp_path, monkeypatch,
                                                                 failure):
    """A write that fails after training and classifying (a full disk while writing the report),
    or a cancel at that point: the previous run's adapter, map, style, report and figures are
    byte for byte what they were, and nothing of the failed run is left."""
    import hyperadapt.models.jobs.fine_tuning as fine_tuning

    outputs = dict(classification_path=str(tmp_path / "c.tif"),
                   confidence_path=str(tmp_path / "conf.tif"),
                   report_path=str(tmp_path / "report.html"))
    fine_tune(str(folder / "scene.tif"), str(folder / "fields.gpkg"), "class",
              str(tmp_path / "adapter.pt"), settings=tiny_settings(epochs=1), **outputs)
    before = _state(tmp_path)
    assert sorted(before) == ["adapter.pt", "c.qml", "c.tif", "c.tif.aux.xml", "conf.tif",
                              "report.html", "report.json"]
    cancelled = []

    def failing_report(metrics, path, **_):
        Path(path).write_text("half a rep")
        if failure == "cancel":
            cancelled.append(True)
            return
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(fine_tuning, "write_html_report", failing_report)
    with pytest.raises((OSError, HyperAdaptError)) as caught:
        fine_tune(str(folder / "scene.tif"), str(folder / "fields.gpkg"), "class",
                  str(tmp_path / "adapter.pt"), settings=tiny_settings(epochs=2, seed=5),
                  cancel=lambda: bool(cancelled), **outputs)
    if failure == "full disk":
        assert os_error_sentence(caught.value).startswith("The disk is full: HyperAdapt could "
                                                          "not finish writing")
    else:
        assert str(caught.value) == "The job was cancelled."
    assert _state(tmp_path) == before


def test_a_second_run_replaces_every_output_and_leaves_no_temporary_file(folder, tmp_path):
    outputs = dict(classification_path=str(tmp_path / "c.tif"),
                   report_path=str(tmp_path / "report.html"))
    for seed in (0, 5):
        fine_tune(str(folder / "scene.tif"), str(folder / "fields.gpkg"), "class",
                  str(tmp_path / "adapter.pt"), settings=tiny_settings(epochs=1, seed=seed),
                  **outputs)
        if seed == 0:
            first = _state(tmp_path)
    second = _state(tmp_path)
    assert sorted(second) == sorted(first) == ["adapter.pt", "c.qml", "c.tif", "c.tif.aux.xml",
                                               "report.html", "report.json"]
    assert second["adapter.pt"] != first["adapter.pt"]


def test_an_evaluation_that_fails_writing_keeps_the_previous_report_and_figures(
        folder, tmp_path, monkeypatch):
    import hyperadapt.models.jobs.evaluation as evaluation

    paths = dict(html_path=str(tmp_path / "e.html"), json_path=str(tmp_path / "e.json"))
    evaluate(str(folder / "classes.tif"), str(folder / "fields.gpkg"), class_field="class",
             **paths)
    before = _state(tmp_path)

    def full_disk(metrics, path, **_):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(evaluation, "write_html_report", full_disk)
    with pytest.raises(OSError):
        evaluate(str(folder / "classes.tif"), str(folder / "plots.json"), class_field="class",
                 **paths)
    assert _state(tmp_path) == before      # the JSON written first did not replace the old one
