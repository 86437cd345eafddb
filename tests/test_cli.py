"""The jobs from a shell: python -m hyperadapt.cli, in its own process, as a user runs it."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from osgeo import gdal, ogr

from engine_data import TINY_BACKBONE, make_polygons, make_test_raster


def cli(*arguments) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hyperadapt.cli", *map(str, arguments)],
                          capture_output=True, text=True, timeout=600)


TINY = ["--backbone", "tiny", "--random-start", "true", "--epochs", "2", "--input-size", "16",
        "--window-size", "5", "--backbone-overrides", json.dumps(TINY_BACKBONE)]


def test_fine_tune_classify_evaluate_suggest_and_clean_from_a_shell(tmp_path):
    raster = make_test_raster(tmp_path / "scene.tif")
    layer = make_polygons(tmp_path / "fields.gpkg", raster)
    done = cli("finetune", raster.path, layer, "class", tmp_path / "adapter.pt",
               "--classification", tmp_path / "map.tif", "--report", tmp_path / "report.html",
               "--targets", "attn.q", "attn.k", "attn.v", "--class-weighting", "none", *TINY)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Fine-tuned 3 classes in ")
    assert "[100 %] Done" in done.stderr
    from hyperadapt.models.stores.adapter_file import load_adapter_file
    record = load_adapter_file(tmp_path / "adapter.pt")
    assert record.training["targets"] == ["attn.q", "attn.k", "attn.v"]
    assert record.training["epochs"] == 2
    assert record.training["class_weighting"] == "none"

    done = cli("classify", raster.path, tmp_path / "adapter.pt", tmp_path / "again.tif")
    assert done.returncode == 0, done.stderr
    again = gdal.Open(str(tmp_path / "again.tif")).ReadAsArray()
    assert (again == gdal.Open(str(tmp_path / "map.tif")).ReadAsArray()).all()
    assert "pixels per class: class 1: " in done.stdout

    done = cli("evaluate", tmp_path / "map.tif", layer, "--class-field", "class",
               "--json", tmp_path / "e.json")
    assert done.returncode == 0, done.stderr
    oa = json.loads((tmp_path / "e.json").read_text())["overall_accuracy"]
    assert done.stdout.startswith(f"OA {100 * oa:.1f} %")

    done = cli("suggest", raster.path, tmp_path / "adapter.pt", tmp_path / "next.gpkg",
               "--count", "4", "--min-spacing", "3", "--training", layer, "--class-field",
               "class")
    assert done.returncode == 0, done.stderr
    assert ogr.Open(str(tmp_path / "next.gpkg")).GetLayer(0).GetFeatureCount() == 4

    done = cli("postprocess", tmp_path / "map.tif", tmp_path / "clean.tif", "--majority", "3")
    assert done.returncode == 0, done.stderr
    assert np.isin(gdal.Open(str(tmp_path / "clean.tif")).ReadAsArray(), [0, 1, 2, 3]).all()


def test_a_bad_input_is_one_sentence_and_exit_status_two(tmp_path):
    raster = make_test_raster(tmp_path / "scene.tif")
    layer = make_polygons(tmp_path / "fields.gpkg", raster)
    before = sorted(p.name for p in tmp_path.iterdir())
    done = cli("finetune", raster.path, layer, "kind", tmp_path / "adapter.pt", *TINY)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "The layer 'training' has no field named 'kind'."
    done = cli("finetune", raster.path, layer, "class", raster.path, *TINY)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == ("The adapter file would overwrite the input "
                                                    "raster; choose another file name.")
    done = cli("finetune", raster.path, layer, "class", tmp_path / "a.pt", "--steps", "0", *TINY)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == ("The number of steps must be a whole number "
                                                    "from 1 to 100000 (got 0).")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_every_fine_tuning_setting_is_an_option():
    done = cli("finetune", "--help")
    assert done.returncode == 0
    import dataclasses

    from hyperadapt.models.settings import FineTuneSettings

    for item in dataclasses.fields(FineTuneSettings):
        assert "--" + item.name.replace("_", "-") in done.stdout, item.name


def test_sigterm_during_fine_tuning_leaves_the_previous_results_as_they_were(tmp_path):
    import hashlib
    import signal
    import time

    raster = make_test_raster(tmp_path / "scene.tif")
    layer = make_polygons(tmp_path / "fields.gpkg", raster)
    outputs = ["--classification", tmp_path / "map.tif", "--report", tmp_path / "report.html"]
    done = cli("finetune", raster.path, layer, "class", tmp_path / "adapter.pt", *outputs, *TINY)
    assert done.returncode == 0, done.stderr

    def state():
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(tmp_path.iterdir()) if p.is_file()}

    before = state()
    slow = [*TINY[:4], "--epochs", "400", *TINY[6:]]
    process = subprocess.Popen([sys.executable, "-m", "hyperadapt.cli", "finetune", raster.path,
                                layer, "class", tmp_path / "adapter.pt", *outputs, *slow],
                               stderr=subprocess.PIPE, text=True)
    for line in process.stderr:                       # training has begun
        if "Epoch" in line or "loss" in line.lower():
            break
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 143
    assert rest.strip().splitlines()[-1] == "Terminated; earlier results are as they were."
    assert state() == before
