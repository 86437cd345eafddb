"""An archive classified on Ray (local, 2 CPUs): the maps of the serial classify, reruns skip
finished scenes, a failed scene is retried and one that keeps failing is named."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import ray  # noqa: F401  (requirements/dev.txt: the archive is optional for users, not here)
from osgeo import gdal

from engine_data import make_polygons, make_test_raster, tiny_settings
from hyperadapt.archive import classify_archive, output_for
from hyperadapt.models.jobs import classify, fine_tune


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    folder = tmp_path_factory.mktemp("archive")
    rasters = [make_test_raster(folder / f"scene_{n}.tif", seed=n).path for n in range(4)]
    layer = make_polygons(folder / "fields.gpkg", make_test_raster(folder / "train.tif"))
    adapter = folder / "adapter.pt"
    fine_tune(str(folder / "train.tif"), str(layer), "class", str(adapter),
              settings=tiny_settings(epochs=2))
    serial = folder / "serial"
    serial.mkdir()
    for raster in rasters:
        classify(str(raster), str(adapter), str(output_for(raster, serial)))
    return folder, [str(r) for r in rasters], str(adapter), serial


def _map(path) -> np.ndarray:
    return gdal.Open(str(path)).ReadAsArray()


def test_two_workers_make_the_serial_maps_and_a_rerun_skips_them(archive, tmp_path):
    folder, rasters, adapter, serial = archive
    lines = []
    report = classify_archive(adapter, rasters, tmp_path, workers=2, say=lines.append)
    assert sorted(d["raster"] for d in report["done"]) == sorted(rasters)
    assert report["failed"] == {} and report["skipped"] == []
    for raster in rasters:
        assert (_map(output_for(raster, tmp_path)) == _map(output_for(raster, serial))).all()
    assert any(line.startswith("4/4 scenes, ") and "pixels/s" in line for line in lines)
    again = classify_archive(adapter, rasters, tmp_path, workers=2, say=lines.append)
    assert again["done"] == [] and sorted(again["skipped"]) == sorted(rasters)


def test_a_failure_is_retried_and_a_broken_scene_is_named(archive, tmp_path, monkeypatch):
    folder, rasters, adapter, serial = archive
    tests = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", tests)          # Ray's workers import the flaky worker
    marker = tmp_path / "fail_once.txt"
    marker.write_text("scene_1.tif scene_3.tif")
    monkeypatch.setenv("HYPERADAPT_TEST_FAIL_ONCE", str(marker))
    broken = tmp_path / "broken.tif"
    broken.write_text("not a raster")
    from archive_faults import FlakyClassifier

    out = tmp_path / "maps"
    lines = []
    report = classify_archive(adapter, [*rasters, str(broken)], out, workers=2, retries=2,
                              say=lines.append, worker_class=FlakyClassifier)
    assert sorted(d["raster"] for d in report["done"]) == sorted(rasters)
    assert list(report["failed"]) == [str(broken)]
    assert "broken.tif" in report["failed"][str(broken)]
    assert sum("failed (RuntimeError); trying again." in line for line in lines) == 2
    assert lines[-1].startswith(f"FAILED {broken}: ")
    for raster in rasters:
        assert (_map(output_for(raster, out)) == _map(output_for(raster, serial))).all()
    # Complete maps only: no temporary or partial file is left.
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".tif") == \
        [f"scene_{n}_classes.tif" for n in range(4)]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
