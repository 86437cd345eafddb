"""The segment vote: SLIC superpixels on band-adapted data, and each pixel taking its superpixel's
mean class probabilities, tile by tile with the same result as on the whole raster."""
from __future__ import annotations

import numpy as np
import torch

from engine_data import (class_changes, make_polygons, make_test_raster, read_band, tiny_settings,
                         valid_mask)
from hyperadapt.models.data.bands import BandAdaptation
from hyperadapt.models.data.raster import RasterReader, read_raster_info
from hyperadapt.models.data.segments import segment_vote, slic_segments
from hyperadapt.models.jobs import fine_tune, rebuild_model
from hyperadapt.models.learning.predict import classify_raster
from hyperadapt.models.stores.adapter_file import load_adapter_file


def _two_fields(height=30, width=40, boundary=17):
    """Two fields with a vertical boundary off the superpixel grid, plus a little noise."""
    rng = np.random.default_rng(0)
    features = np.zeros((3, height, width), dtype=np.float32)
    features[:, :, boundary:] = 3.0
    features += 0.05 * rng.standard_normal(features.shape).astype(np.float32)
    return features


def test_superpixels_follow_a_field_edge_and_have_the_grid_size():
    features = _two_fields()
    valid = np.ones(features.shape[1:], dtype=bool)
    labels = slic_segments(features, valid, size=6)
    left, right = labels[:, :17], labels[:, 17:]
    assert not set(np.unique(left)) & set(np.unique(right))      # none crosses the edge
    sizes = np.unique(labels, return_counts=True)[1]
    assert 0.5 * 36 < np.median(sizes) < 2 * 36


def test_nodata_takes_no_superpixel_and_keeps_its_scores():
    features = _two_fields()
    valid = np.ones(features.shape[1:], dtype=bool)
    valid[5:9, 5:9] = False
    labels = slic_segments(features, valid, size=6)
    assert (labels[~valid] == -1).all() and (labels[valid] >= 0).all()
    scores = np.random.default_rng(1).random((4, *valid.shape)).astype(np.float32)
    voted = segment_vote(scores, labels)
    np.testing.assert_array_equal(voted[:, ~valid], scores[:, ~valid])
    # Inside a superpixel every pixel gets the same summed scores, and the winner is a class that
    # was there before the vote.
    for segment in np.unique(labels[valid])[:10]:
        members = labels == segment
        np.testing.assert_allclose(voted[:, members], voted[:, members][:, :1].repeat(
            members.sum(), axis=1), rtol=1e-6)
        np.testing.assert_allclose(voted[:, members][:, 0], scores[:, members].sum(axis=1),
                                   rtol=1e-5)


def test_a_block_with_a_halo_gets_the_whole_rasters_superpixels_in_its_middle():
    rng = np.random.default_rng(2)
    features = np.repeat(np.repeat(rng.random((3, 12, 12)).astype(np.float32), 5, 1), 5, 2)
    features += 0.02 * rng.standard_normal(features.shape).astype(np.float32)
    valid = np.ones(features.shape[1:], dtype=bool)
    whole = slic_segments(features, valid, size=5)
    y0, x0, size = 17, 22, 20
    margin = 10
    block = slic_segments(features[:, y0 - margin:y0 + size + margin,
                                   x0 - margin:x0 + size + margin],
                          valid[y0 - margin:y0 + size + margin, x0 - margin:x0 + size + margin],
                          size=5, origin=(y0 - margin, x0 - margin))
    middle = block[margin:margin + size, margin:margin + size]
    agree = (middle == whole[y0:y0 + size, x0:x0 + size]).mean()
    assert agree >= 0.98


def test_tiled_classification_with_the_vote_matches_one_tile_and_keeps_classes_and_nodata(
        tmp_path):
    # Noisy stripes and a briefly trained model: a speckled map with every class in it.
    raster = make_test_raster(tmp_path / "scene.tif", width=48, height=44,
                              nodata_box=(10, 20, 6, 5), noise=0.25)
    layer = make_polygons(tmp_path / "training.gpkg", raster)
    fine_tune(str(raster.path), str(layer), "class", str(tmp_path / "adapter.pt"),
              settings=tiny_settings(epochs=3, segment_size=0))
    record = load_adapter_file(tmp_path / "adapter.pt")
    model, _ = rebuild_model(record)
    adaptation = BandAdaptation.from_state(record.band_adaptation)
    info = read_raster_info(raster.path)

    def classify(name, *, tile, segment_size):
        out = tmp_path / f"{name}.tif"
        with RasterReader(info) as reader:
            classify_raster(reader=reader, model=model, adaptation=adaptation,
                            classes=record.classes, output_path=out,
                            window_size=record.window_size, device=torch.device("cpu"),
                            segment_size=segment_size, tile=tile)
        return read_band(out)

    unvoted = classify("plain", tile=64, segment_size=0)
    whole = classify("whole", tile=64, segment_size=6)
    tiled = classify("tiled", tile=16, segment_size=6)
    valid = valid_mask(raster.path)
    values = {c.value for c in record.classes}
    assert set(np.unique(unvoted[valid])) == values
    for voted in (whole, tiled):
        assert (voted[~valid] == 0).all()
        assert set(np.unique(voted[valid])) <= values and (voted[valid] > 0).all()
    # Tiles are classified with a margin of three superpixels: no seams (without the margin, 2 %
    # of this map differed).
    assert (tiled[valid] == whole[valid]).mean() >= 0.995

    assert class_changes(whole) < 0.8 * class_changes(unvoted)
