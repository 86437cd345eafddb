"""Keeping the segment vote only where the held-out polygons say it helps
(models.jobs.vote_choice) and the probabilities it compares (models.learning.predict.
probabilities_at). Tiny backbone, seeded random start: the machinery, not accuracy.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from engine_data import make_polygons, make_test_raster, read_band, tiny_settings, valid_mask

from hyperadapt.models.data.raster import RasterReader, read_raster_info
from hyperadapt.models.jobs import fine_tune
from hyperadapt.models.jobs.classification import load_adapter
from hyperadapt.models.jobs.vote_choice import compare_vote
from hyperadapt.models.learning.predict import (classify_raster, fit_segment_vote,
                                                probabilities_at)
from hyperadapt.models.stores.adapter_file import load_adapter_file

CPU = torch.device("cpu")


def test_the_vote_goes_only_when_leaving_it_out_puts_right_more_than_chance_would():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    right = np.eye(2)[labels] * 0.8 + 0.1
    wrong = 1.0 - right

    def choice(changed_right, changed_wrong):
        """Leaving the vote out puts ``changed_right`` pixels right and ``changed_wrong`` wrong."""
        with_vote, without = right.copy(), right.copy()
        with_vote[:changed_right] = wrong[:changed_right]
        without[changed_right:changed_right + changed_wrong] = wrong[
            changed_right:changed_right + changed_wrong]
        return compare_vote(without=without, with_vote=with_vote, labels=labels)

    dropped = choice(3, 0)                    # 3 - 0 > sqrt(3)
    assert not dropped.keep and (dropped.put_right, dropped.put_wrong) == (3, 0)
    assert dropped.accuracy_with == 5 / 8 and dropped.accuracy_without == 1.0
    assert "was left out" in dropped.note(5) and "of the 8 held-out pixels" in dropped.note(5)
    assert choice(4, 1).keep is False         # 3 > sqrt(5)
    assert choice(1, 0).keep                  # one pixel: 1 is not above sqrt(1)
    assert choice(3, 2).keep                  # 1 < sqrt(5)
    assert choice(0, 3).keep and "stays" in choice(0, 3).note(5)
    assert choice(0, 0).keep                  # nothing changes: the vote stays


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vote_choice")
    raster = make_test_raster(folder / "scene.tif", width=40, height=36,
                              nodata_box=(8, 20, 5, 4), noise=0.25)
    layer = make_polygons(folder / "training.gpkg", raster, rows_per_polygon=3, gap=2)
    return folder, raster, layer


def test_probabilities_at_pixels_are_the_maps(scene):
    folder, raster, layer = scene
    result = fine_tune(str(raster.path), str(layer), "class", str(folder / "plain.pt"),
                       settings=tiny_settings(epochs=2, segment_size=0))
    loaded = load_adapter(result.adapter_path, device="cpu")
    record = loaded.record
    lookup = np.array([c.value for c in record.classes])
    rows, cols = np.nonzero(valid_mask(raster.path))
    pick = np.random.default_rng(0).choice(len(rows), size=40, replace=False)
    # Pixels spread to the raster's corners (one tile: the whole tile is classified), and a
    # cluster in the middle (a box around it and the vote's margin).
    spread = (np.r_[rows[pick], 0, 35], np.r_[cols[pick], 0, 39])
    cluster = np.meshgrid(np.arange(14, 19), np.arange(12, 17), indexing="ij")
    cluster = (cluster[0].ravel(), cluster[1].ravel())
    with RasterReader(read_raster_info(str(raster.path))) as reader:
        vote = fit_segment_vote(reader, loaded.adaptation, 3)
        # Tile mode (the adapter's) and a window per pixel.
        for step in (record.classify_step(), 1):
            maps = {}
            for size in (0, 3):
                output = folder / f"map{size}_{step}.tif"
                confidence = folder / f"confidence{size}_{step}.tif"
                classify_raster(reader=reader, model=loaded.model, adaptation=loaded.adaptation,
                                classes=record.classes, output_path=output,
                                window_size=record.window_size, device=CPU, segment_size=size,
                                step=step, spectral=loaded.spectral, confidence_path=confidence)
                maps[size] = read_band(output), read_band(confidence)
            for (r, c), exact in ((spread, True), (cluster, False)):
                without, with_vote = probabilities_at(
                    reader, loaded.model, loaded.adaptation, r, c,
                    window_size=record.window_size, num_classes=len(record.classes),
                    device=CPU, batch_size=64, vote=vote, step=step, spectral=loaded.spectral)
                np.testing.assert_array_equal(lookup[without.argmax(axis=1)], maps[0][0][r, c])
                np.testing.assert_allclose(without.max(axis=1), maps[0][1][r, c], atol=1e-5)
                agree = lookup[with_vote.argmax(axis=1)] == maps[3][0][r, c]
                assert agree.all() if exact else agree.mean() >= 0.8
                if exact:
                    np.testing.assert_allclose(with_vote.max(axis=1), maps[3][1][r, c],
                                               atol=1e-5)
                assert not np.allclose(without, with_vote)


def test_fine_tune_keeps_or_drops_the_vote_as_the_held_out_polygons_say(scene):
    folder, raster, layer = scene
    settings = tiny_settings(epochs=2, segment_size=3, min_validation_pixels=1)
    result = fine_tune(str(raster.path), str(layer), "class", str(folder / "voted.pt"),
                       settings=settings, classification_path=str(folder / "voted.tif"),
                       report_path=str(folder / "voted.html"))
    choice = result.metrics["segment_vote"]
    assert choice["pixels"] == result.metrics["split"]["validation_pixels"] > 0
    right, wrong = choice["put_right"], choice["put_wrong"]
    assert choice["keep"] == (not right - wrong > math.sqrt(right + wrong))
    record = load_adapter_file(result.adapter_path)
    assert record.segment_size == (3 if choice["keep"] else 0)
    assert any("segment vote (3-pixel superpixels)" in note for note in result.notes)
    report = (folder / "voted.html").read_text(encoding="utf-8")
    assert ("kept" if choice["keep"] else "left out") + " (held-out polygons: accuracy" in report
    # Asked not to check, the vote stays as set and nothing is compared.
    unchecked = fine_tune(str(raster.path), str(layer), "class", str(folder / "unchecked.pt"),
                          settings=tiny_settings(epochs=2, segment_size=3,
                                                 min_validation_pixels=1, validate_vote=False))
    assert "segment_vote" not in unchecked.metrics
    assert load_adapter_file(unchecked.adapter_path).segment_size == 3
