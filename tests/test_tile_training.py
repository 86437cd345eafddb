"""Tile-mode training (models.learning.tile_training): each labelled pixel is seen between the
windows of tile mode's grid, as tile mode classifies it. Tiny backbone, seeded random start: these
check the machinery (the crops, the pixel's place under the augmentation, the same probabilities
as tile mode, the job end to end), not accuracy.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from engine_data import make_polygons, make_test_raster, read_band, tiny_settings, valid_mask

from hyperadapt.models import options
from hyperadapt.models.data.bands import BandAdaptation
from hyperadapt.models.data.raster import RasterReader, read_raster_info
from hyperadapt.models.data.regions import read_adapted_region
from hyperadapt.models.errors import HyperAdaptError, JobCancelled
from hyperadapt.models.jobs import classify, fine_tune, rebuild_model
from hyperadapt.models.jobs.fine_tuning import _read_windows
from hyperadapt.models.learning import device as devices
from hyperadapt.models.learning.inference import grid_probabilities, predict_probabilities
from hyperadapt.models.learning.tile_training import TileView, crop_window_size, grid_crops
from hyperadapt.models.stores.adapter_file import load_adapter_file

WINDOW = 7          # tile mode's own step is 5 pixels; these tests train and classify at 3
STEP = 3
CPU = torch.device("cpu")


def fine_tune_on_grid(raster, layer, folder, *, epochs: int, training_mode: str):
    """Fine-tune at WINDOW and STEP without the vote, mapping the scene and reporting in
    ``folder``."""
    return fine_tune(str(raster.path), str(layer), "class", str(folder / "adapter.pt"),
                     settings=tiny_settings(epochs=epochs, window_size=WINDOW, segment_size=0,
                                            training_mode=training_mode, tile_step=STEP),
                     classification_path=str(folder / "map.tif"),
                     report_path=str(folder / "report.html"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A noisy 40 x 36 scene with a nodata box, fine-tuned in tile mode and classified."""
    folder = tmp_path_factory.mktemp("tile_training")
    raster = make_test_raster(folder / "scene.tif", width=40, height=36,
                              nodata_box=(8, 20, 5, 4), noise=0.25)
    layer = make_polygons(folder / "training.gpkg", raster)
    result = fine_tune_on_grid(raster, layer, folder, epochs=3, training_mode="tile")
    record = load_adapter_file(result.adapter_path)
    model, _ = rebuild_model(record)
    return raster, result, record, model, folder


def test_crops_hold_the_four_grid_windows_and_mark_the_pixel():
    rng = np.random.default_rng(0)
    side = crop_window_size(WINDOW, STEP)
    windows = rng.random((4, 12, side, side), dtype=np.float32)
    rows, cols = np.array([6, 7, 8, 30]), np.array([9, 10, 14, 31])
    crops = grid_crops(windows, rows, cols, WINDOW, STEP)
    assert crops.shape == (4, 13, WINDOW + STEP, WINDOW + STEP)
    for i in range(4):
        marked = np.argwhere(crops[i, -1] == 1.0)
        assert crops[i, -1].sum() == 1.0 and len(marked) == 1
        r, c = marked[0]
        # The pixel lies its offset past the grid point a radius into the crop...
        assert (r, c) == (WINDOW // 2 + rows[i] % STEP, WINDOW // 2 + cols[i] % STEP)
        # ...and carries its own spectrum, the centre of the window read around it.
        np.testing.assert_array_equal(crops[i, :12, r, c], windows[i, :, side // 2, side // 2])
    with pytest.raises(ValueError, match="windows of side 13"):
        grid_crops(windows[:, :, :11, :11], rows, cols, WINDOW, STEP)


def test_training_crops_give_each_pixel_what_tile_mode_gives_it(trained, monkeypatch):
    monkeypatch.setenv(devices.CPU_PRECISION_ENV, "fp32")
    raster, _, record, model, _ = trained
    adaptation = BandAdaptation.from_state(record.band_adaptation)
    halo = WINDOW // 2 + STEP
    y0, x0, h, w = 4, 5, 18, 20       # a region that does not start on the grid
    with RasterReader(read_raster_info(raster.path)) as reader:
        region, valid = read_adapted_region(reader, adaptation, x0, y0, w, h, halo)
        rows, cols = np.nonzero(valid)
        crops = _read_windows(reader, adaptation, rows + y0, cols + x0, WINDOW, STEP)
    tile_mode = grid_probabilities(model, torch.from_numpy(region), rows, cols, origin=(y0, x0),
                                   window_size=WINDOW, halo=halo, step=STEP, device=CPU,
                                   batch_size=16)
    trained_view = predict_probabilities(TileView(model, WINDOW), torch.from_numpy(crops),
                                         device=CPU, batch_size=16)
    assert len(rows) >= 300
    np.testing.assert_allclose(trained_view, tile_mode, atol=1e-5)


def test_the_pixel_moves_with_the_flips_and_quarter_turns(trained):
    """On a grid point a pixel's crop holds its own window in a corner; every flip and quarter
    turn of the augmentation moves the pixel's mark with it, so the view still classifies that
    window, turned the same way."""
    *_, model, _ = trained
    rng = np.random.default_rng(1)
    side = crop_window_size(WINDOW, STEP)
    windows = rng.random((3, 12, side, side), dtype=np.float32)
    rows, cols = np.array([3, 6, 9]), np.array([0, 12, 3])        # on the grid
    crops = torch.from_numpy(grid_crops(windows, rows, cols, WINDOW, STEP))
    own = torch.from_numpy(windows[:, :, STEP:STEP + WINDOW, STEP:STEP + WINDOW])
    view = TileView(model, WINDOW).eval()
    with torch.no_grad():
        for turns in range(4):
            for flip in (False, True):
                def turned(x):
                    x = torch.flip(x, dims=(-1,)) if flip else x
                    return torch.rot90(x, turns, dims=(-2, -1))
                torch.testing.assert_close(view(turned(crops)), model(turned(own)),
                                           atol=1e-5, rtol=1e-5)


def test_fine_tune_in_tile_mode_records_it_and_maps_the_scene(trained):
    raster, result, record, _, folder = trained
    assert record.training["training_mode"] == "tile"
    assert record.tile_step == STEP and record.classify_step() == STEP
    assert len(result.history) == 3
    values = read_band(folder / "map.tif")
    valid = valid_mask(raster.path)
    assert (values[~valid] == 0).all() and (values[valid] > 0).all()
    assert set(np.unique(values[valid])) <= {c.value for c in record.classes}
    report = (folder / "report.html").read_text()
    assert "each pixel between the windows of a grid every 3 pixels" in report
    assert json.loads((folder / "report.json").read_text())["kind"] == "validation"


def test_an_adapter_trained_in_tile_mode_classifies_window_by_window_too(trained, tmp_path):
    """A window centred on the pixel is the grid's own case (a pixel on a grid point), so window
    mode applies a tile-trained adapter as it was trained there."""
    raster, result, record, _, folder = trained
    classify(str(raster.path), result.adapter_path, str(tmp_path / "window.tif"), mode="window")
    classify(str(raster.path), result.adapter_path, str(tmp_path / "tile.tif"))
    window, tile = read_band(tmp_path / "window.tif"), read_band(tmp_path / "tile.tif")
    valid = valid_mask(raster.path)
    assert set(np.unique(window[valid])) <= {c.value for c in record.classes}
    assert (window[~valid] == 0).all()
    np.testing.assert_array_equal(tile, read_band(folder / "map.tif"))
    assert (window[valid] == tile[valid]).mean() >= 0.8


def test_cancel_during_tile_training_leaves_nothing(trained, tmp_path):
    raster = trained[0]
    layer = make_polygons(tmp_path / "training.gpkg", raster)
    out = tmp_path / "out"
    out.mkdir()
    epochs = []
    with pytest.raises(JobCancelled):
        fine_tune(str(raster.path), str(layer), "class", str(out / "adapter.pt"),
                  settings=tiny_settings(epochs=4, window_size=WINDOW, training_mode="tile"),
                  classification_path=str(out / "map.tif"), on_epoch=epochs.append,
                  cancel=lambda: len(epochs) >= 1)
    assert epochs and list(out.iterdir()) == []


def test_tile_training_steps_as_tile_mode_classifies():
    assert options.DEFAULT_TRAINING_MODE == "tile"
    assert options.training_step("tile", WINDOW) == options.classify_step("tile", WINDOW) == 5
    assert options.training_step("tile", WINDOW, STEP) == STEP
    assert options.training_step("tile", 1) == 1         # a one-pixel window trains as it is
    assert options.training_step("window", 15) == 1


def test_a_window_too_large_for_tile_training_is_one_sentence(trained, tmp_path):
    raster = trained[0]
    layer = make_polygons(tmp_path / "training.gpkg", raster)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(HyperAdaptError) as caught:
        fine_tune(str(raster.path), str(layer), "class", str(out / "adapter.pt"),
                  settings=tiny_settings(epochs=1, window_size=41, training_mode="tile"))
    assert str(caught.value) == (
        "Training in tile mode reads windows of 95 pixels around each labelled pixel for "
        "41-pixel windows (the window and a grid step on each side), more than 63; choose "
        "windows of at most 27 pixels, or train window by window.")
    assert list(out.iterdir()) == []


def test_sampled_training_sends_one_corner_drawn_by_its_weight(trained, monkeypatch):
    """While training, a sampling view sends one corner window per crop: a pixel on a grid point
    gets its own window every time, and a pixel between grid points each corner as often as its
    bilinear weight; in evaluation it mixes the four, as the plain view does."""
    *_, model, _ = trained
    rng = np.random.default_rng(2)
    side = crop_window_size(WINDOW, STEP)
    windows = rng.random((2, 12, side, side), dtype=np.float32)
    # A pixel on a grid point, and one 1 row and 2 columns past one (weights 2/3 and 1/3 for the
    # rows, 1/3 and 2/3 for the columns).
    crops = torch.from_numpy(grid_crops(windows, np.array([3, 4]), np.array([6, 8]), WINDOW, STEP))
    seen, pooled = [], model.pooled_features
    monkeypatch.setattr(model, "pooled_features", lambda x: seen.append(x.clone()) or pooled(x))
    view = TileView(model, WINDOW, sampler=torch.Generator().manual_seed(0)).train()
    draws = 3000
    with torch.no_grad():
        for _ in range(draws // 100):
            view(crops.repeat(100, 1, 1, 1))
    view.eval()
    sent = torch.cat(seen)
    assert sent.shape == (draws * 2, 12, WINDOW, WINDOW)      # one window per crop
    bands = crops[:, :-1]
    corners = {(r, c): bands[:, :, r:r + WINDOW, c:c + WINDOW]
               for r in (0, STEP) for c in (0, STEP)}
    assert (sent[0::2] == corners[(0, 0)][0]).all()
    between = sent[1::2]
    for (r, c), weight in {(0, 0): 2 / 9, (0, STEP): 4 / 9, (STEP, 0): 1 / 9,
                           (STEP, STEP): 2 / 9}.items():
        share = (between == corners[(r, c)][1]).flatten(1).all(dim=1).float().mean()
        assert abs(float(share) - weight) < 0.03, (r, c)
    seen.clear()
    with torch.no_grad():
        mixed = view(crops)
    assert len(seen) == 1 and seen[0].shape[0] == 4 * 2            # all four corners
    torch.testing.assert_close(mixed, TileView(model, WINDOW).eval()(crops))


def test_a_fine_tune_in_sampled_tile_mode_trains_a_window_per_pixel_and_maps(trained, tmp_path,
                                                                             monkeypatch):
    raster = trained[0]
    layer = make_polygons(tmp_path / "training.gpkg", raster)
    calls, original = [], TileView._sampled_corners

    def counted(self, bands, frac_r, frac_c):
        calls.append(len(bands))
        return original(self, bands, frac_r, frac_c)

    monkeypatch.setattr(TileView, "_sampled_corners", counted)
    result = fine_tune_on_grid(raster, layer, tmp_path, epochs=2, training_mode="sampled")
    record = load_adapter_file(result.adapter_path)
    assert record.training["training_mode"] == "sampled" and record.classify_step() == STEP
    # Every training window of both epochs went through the sampler, one per pixel.
    assert sum(calls) == 2 * result.metrics["split"]["train_pixels"]
    values, valid = read_band(tmp_path / "map.tif"), valid_mask(raster.path)
    assert (values[~valid] == 0).all() and (values[valid] > 0).all()
    assert "one of the four per step" in (tmp_path / "report.html").read_text()
