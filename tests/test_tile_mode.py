"""Tile mode: the backbone sees a window every few pixels and each pixel's features are resampled
from them (models.learning.inference.grid_probabilities). Tiny backbone, seeded random start: these
check the machinery (alignment, seams, nodata, small rasters, cancel, adapters of either mode), not
accuracy.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from engine_data import (class_changes, make_polygons, make_test_raster, read_band, tiny_settings,
                         valid_mask)
from osgeo import gdal

from hyperadapt.models import options
from hyperadapt.models.data.bands import BandAdaptation
from hyperadapt.models.data.raster import RasterReader, read_raster_info
from hyperadapt.models.data.regions import read_adapted_region
from hyperadapt.models.data.windows import extract_windows
from hyperadapt.models.errors import HyperAdaptError, JobCancelled
from hyperadapt.models.jobs import classify, fine_tune, rebuild_model
from hyperadapt.models.learning.inference import grid_probabilities, predict_probabilities
from hyperadapt.models.learning.predict import classify_raster
from hyperadapt.models.stores.adapter_file import load_adapter_file, save_adapter_file

WINDOW = 7          # tile mode steps 5 pixels; the tests below also classify at 3
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A noisy 48 x 44 scene with nodata in a box and along its right edge, and an adapter."""
    folder = tmp_path_factory.mktemp("tile")
    raster = make_test_raster(folder / "scene.tif", width=48, height=44,
                              nodata_box=(10, 20, 6, 5), noise=0.25)
    dataset = gdal.Open(str(raster.path), gdal.GA_Update)
    for band in range(1, dataset.RasterCount + 1):
        values = dataset.GetRasterBand(band).ReadAsArray()
        values[:, -3:] = -9999.0
        dataset.GetRasterBand(band).WriteArray(values)
    dataset = None
    layer = make_polygons(folder / "training.gpkg", raster)
    result = fine_tune(str(raster.path), str(layer), "class", str(folder / "adapter.pt"),
                       settings=tiny_settings(epochs=3, window_size=WINDOW, segment_size=0))
    record = load_adapter_file(result.adapter_path)
    model, _ = rebuild_model(record)
    return raster, result, record, model


def _classify(trained, out, *, tile, step, segment_size=0, spectral=None):
    raster, _, record, model = trained
    with RasterReader(read_raster_info(raster.path)) as reader:
        classify_raster(reader=reader, model=model,
                        adaptation=BandAdaptation.from_state(record.band_adaptation),
                        classes=record.classes, output_path=out, window_size=WINDOW, device=CPU,
                        step=step, tile=tile, segment_size=segment_size, spectral=spectral)
    return read_band(out)


def test_new_adapters_record_the_default_mode_and_tile_mode_steps_two_thirds_of_a_window(
        trained):
    _, _, record, _ = trained
    assert record.classify_mode == options.DEFAULT_CLASSIFY_MODE == "tile"
    assert options.classify_step("tile", WINDOW) == 5
    assert options.classify_step("tile", 15) == 10
    assert options.classify_step("tile", 9) == 6
    assert options.classify_step("window", 15) == 1
    assert options.classify_step("tile", 15, tile_step=4) == 4
    assert options.classify_step("window", 15, tile_step=4) == 1
    assert options.classify_step("tile", 1) == 1         # too small a window to skip any
    assert record.tile_step == 5 and record.classify_step() == 5
    assert record.classify_step("window") == 1


def test_at_grid_points_tile_mode_gives_the_window_of_that_pixel(trained):
    raster, _, record, model = trained
    adaptation = BandAdaptation.from_state(record.band_adaptation)
    step, radius = 3, WINDOW // 2
    y0, x0, h, w = 5, 7, 20, 22       # a region that does not start on the grid
    with RasterReader(read_raster_info(raster.path)) as reader:
        region, valid = read_adapted_region(reader, adaptation, x0, y0, w, h, radius + step)
    rows, cols = np.nonzero(valid)
    tile_mode = grid_probabilities(model, torch.from_numpy(region), rows, cols, origin=(y0, x0),
                                   window_size=WINDOW, halo=radius + step, step=step, device=CPU,
                                   batch_size=16)
    window_mode = predict_probabilities(
        model, extract_windows(torch.from_numpy(region), rows, cols, WINDOW, radius + step),
        device=CPU, batch_size=16)
    on_grid = ((rows + y0) % step == 0) & ((cols + x0) % step == 0)
    assert on_grid.sum() >= 30
    np.testing.assert_allclose(tile_mode[on_grid], window_mode[on_grid], atol=2e-2)
    # between grid points the features are a mix of the neighbours' and the map mostly agrees
    agree = (tile_mode.argmax(1) == window_mode.argmax(1)).mean()
    assert agree >= 0.8


def test_tile_mode_shows_no_seams_and_keeps_nodata(trained, tmp_path):
    raster = trained[0]
    whole = _classify(trained, tmp_path / "whole.tif", tile=64, step=3)
    tiled = _classify(trained, tmp_path / "tiled.tif", tile=10, step=3)
    valid = valid_mask(raster.path)
    assert not valid[:, -3:].any() and not valid[10:16, 20:25].any()
    values = {c.value for c in trained[2].classes}
    for map_values in (whole, tiled):
        assert (map_values[~valid] == 0).all()
        assert (map_values[valid] > 0).all() and set(np.unique(map_values[valid])) <= values
    assert (tiled[valid] == whole[valid]).mean() >= 0.999


def test_a_spectral_classifier_of_neighbourhoods_shows_no_seams_either(trained, tmp_path):
    """Its neighbourhood means come from each tile's halo: tiles of 10 pixels make the whole
    raster's map, pixel for pixel, with nodata left out of the means and of the map."""
    from hyperadapt.models.data.neighbourhood import box_means
    from hyperadapt.models.learning.spectral_kernel import fit_spectral_kernel

    raster, _, record, _ = trained
    bands = BandAdaptation.from_state(record.band_adaptation).band_indices
    with RasterReader(read_raster_info(raster.path)) as reader:
        data, valid = reader.read(0, 0, reader.width, reader.height, bands)
    means = box_means(data, valid, 5)
    rows, cols = np.nonzero(valid)
    pick = np.random.default_rng(0).choice(len(rows), 60, replace=False)
    lookup = {c.value: i for i, c in enumerate(record.classes)}
    truth = np.array([lookup[v] for v in raster.labels[rows[pick], cols[pick]]])
    # A classifier of the neighbourhood's mean alone, weighted to make the map by itself.
    kernel = fit_spectral_kernel(means[:, rows[pick], cols[pick]].T, truth, np.arange(60),
                                 len(record.classes), bands, weight=1.0)
    kernel.inputs, kernel.context_size = "context", 5
    whole = _classify(trained, tmp_path / "whole.tif", tile=64, step=3, spectral=kernel)
    tiled = _classify(trained, tmp_path / "tiled.tif", tile=10, step=3, spectral=kernel)
    values = np.array([c.value for c in record.classes])
    expected = values[kernel.probabilities(means[:, valid].T).argmax(axis=1)]
    assert (whole[valid] == expected).all() and (tiled[valid] == expected).all()
    assert (whole[~valid] == 0).all() and (tiled[~valid] == 0).all()


def test_the_segment_vote_follows_tile_mode_too(trained, tmp_path):
    raster = trained[0]
    valid = valid_mask(raster.path)
    plain = _classify(trained, tmp_path / "plain.tif", tile=64, step=3)
    whole = _classify(trained, tmp_path / "whole.tif", tile=64, step=3, segment_size=6)
    tiled = _classify(trained, tmp_path / "tiled.tif", tile=16, step=3, segment_size=6)

    assert class_changes(whole) < 0.8 * class_changes(plain)
    assert (whole[~valid] == 0).all() and (whole[valid] > 0).all()
    # SLIC's rounds in a tile's halo can draw a superpixel's edge a pixel elsewhere (mostly next to
    # nodata), and this barely trained model flips such pixels: 6 and 13 of about 2,000 in two
    # trainings. A seam would show along whole tile edges (some 180 pixels lie next to them).
    assert (tiled[valid] == whole[valid]).mean() >= 0.99


def test_a_raster_smaller_than_a_step_and_a_window_is_classified(trained, tmp_path):
    raster, result, record, _ = trained
    small = tmp_path / "small.tif"
    gdal.Translate(str(small), str(raster.path), srcWin=[1, 30, 2, 2])
    out = tmp_path / "small_map.tif"
    classify(str(small), result.adapter_path, str(out), mode="tile")
    values = read_band(out)
    assert values.shape == (2, 2) and set(np.unique(values)) <= {c.value for c in record.classes}
    assert (values > 0).all()


def test_cancel_in_the_middle_of_a_tile_leaves_no_file(trained, tmp_path):
    raster, result, _, _ = trained
    heard = []
    with pytest.raises(JobCancelled):
        classify(str(raster.path), result.adapter_path, str(tmp_path / "c.tif"),
                 confidence_path=str(tmp_path / "conf.tif"), batch_size=2, mode="tile",
                 progress=lambda fraction, message: heard.append(fraction),
                 cancel=lambda: any(0.2 < f < 0.9 for f in heard))
    assert list(tmp_path.iterdir()) == []


def test_an_adapter_of_either_mode_classifies_in_both(trained, tmp_path):
    raster, result, record, _ = trained
    # An adapter from before tile mode has no mode: it classifies as it was made, window by window.
    older = dataclasses.replace(record, postprocess={
        k: v for k, v in record.postprocess.items() if k != "classify_mode"})
    save_adapter_file(older, tmp_path / "older.pt")
    assert load_adapter_file(tmp_path / "older.pt").classify_mode == "window"
    maps = {}
    for name, adapter, mode in (("own", tmp_path / "older.pt", None),
                                ("window", result.adapter_path, "window"),
                                ("tile", tmp_path / "older.pt", "tile"),
                                ("default", result.adapter_path, None)):
        classify(str(raster.path), str(adapter), str(tmp_path / f"{name}.tif"), mode=mode)
        maps[name] = read_band(tmp_path / f"{name}.tif")
    valid = valid_mask(raster.path)
    np.testing.assert_array_equal(maps["own"], maps["window"])
    np.testing.assert_array_equal(maps["tile"], maps["default"])
    assert (maps["tile"][valid] == maps["window"][valid]).mean() >= 0.8
    with pytest.raises(HyperAdaptError, match="classification mode 'grid' is unknown"):
        classify(str(raster.path), result.adapter_path, str(tmp_path / "x.tif"), mode="grid")
    assert not (tmp_path / "x.tif").exists()


def test_an_adapter_classifies_at_the_tile_step_it_records(trained, tmp_path):
    """A model trained in tile mode learned its grid, so the file keeps the step; older files,
    without one, take the engine's share of the window."""
    raster, _, record, _ = trained
    # The network alone: the spectral classifier would hide what the step changes.
    record = dataclasses.replace(record, spectral={})
    at_three = dataclasses.replace(record, postprocess={**record.postprocess, "tile_step": 3})
    save_adapter_file(at_three, tmp_path / "three.pt")
    older = dataclasses.replace(record, postprocess={
        k: v for k, v in record.postprocess.items() if k != "tile_step"})
    save_adapter_file(older, tmp_path / "older.pt")
    assert load_adapter_file(tmp_path / "older.pt").tile_step == 5
    maps = {}
    for name in ("three", "older"):
        classify(str(raster.path), str(tmp_path / f"{name}.pt"), str(tmp_path / f"{name}.tif"))
        maps[name] = read_band(tmp_path / f"{name}.tif")
    valid = valid_mask(raster.path)
    by_step = {step: _classify(trained, tmp_path / f"step{step}.tif", tile=64, step=step)
               for step in (3, 5)}
    # A 48 x 44 raster is one tile: the maps are the same pixel for pixel.
    np.testing.assert_array_equal(maps["three"], by_step[3])
    np.testing.assert_array_equal(maps["older"], by_step[5])
    assert (by_step[3][valid] != by_step[5][valid]).any()
