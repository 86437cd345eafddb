"""Self-training's pseudo-labels: confident, class-balanced, never on the user's own pixels."""
from __future__ import annotations

import numpy as np

from engine_data import make_polygons, make_test_raster, tiny_settings
from hyperadapt.models.data.raster import RasterReader, read_raster_info
from hyperadapt.models.jobs import fine_tune
from hyperadapt.models.learning.pseudo import candidate_pixels, select_pseudo_labels


def test_pseudo_labels_honour_the_threshold_and_each_class_cap():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.full(3, 0.3), size=2000)
    chosen, classes = select_pseudo_labels(probabilities, np.array([10, 2, 0]), threshold=0.9,
                                           factor=5, seed=0)
    assert len(set(chosen.tolist())) == len(chosen)
    assert (probabilities[chosen].max(axis=1) >= 0.9).all()
    np.testing.assert_array_equal(probabilities[chosen].argmax(axis=1), classes)
    # At most five times each class's own training pixels, and none for a class without any.
    counts = np.bincount(classes, minlength=3)
    assert counts[0] == 50 and counts[1] == 10 and counts[2] == 0
    # Confident enough candidates are plentiful here, so the cap, not the threshold, binds; a
    # stricter threshold leaves fewer.
    strict, _ = select_pseudo_labels(probabilities, np.array([1000, 1000, 1000]), threshold=0.999,
                                     factor=1, seed=0)
    assert 0 < len(strict) < int((probabilities.max(axis=1) >= 0.9).sum())
    assert (probabilities[strict].max(axis=1) >= 0.999).all()


def test_candidates_are_valid_and_never_the_users_pixels(tmp_path):
    raster = make_test_raster(tmp_path / "scene.tif", width=30, height=20,
                              nodata_box=(0, 0, 10, 10))
    info = read_raster_info(raster.path)
    user_rows, user_cols = np.nonzero(np.arange(600).reshape(20, 30) % 3 == 0)
    with RasterReader(info) as reader:
        rows, cols = candidate_pixels(reader, info.good_bands, count=10_000, seed=1,
                                      exclude_rows=user_rows, exclude_cols=user_cols)
        valid = reader.read(0, 0, 30, 20)[1]
    taken = set(zip(rows.tolist(), cols.tolist()))
    assert len(taken) == len(rows) > 0
    assert not taken & set(zip(user_rows.tolist(), user_cols.tolist()))
    assert valid[rows, cols].all()
    # Every other valid pixel is a candidate when enough are asked for.
    free = valid.copy()
    free[user_rows, user_cols] = False
    assert len(rows) == int(free.sum())


def test_a_self_training_round_trains_again_with_the_scenes_confident_pixels(tmp_path):
    raster = make_test_raster(tmp_path / "scene.tif")
    layer = make_polygons(tmp_path / "training.gpkg", raster)
    epochs = []
    result = fine_tune(str(raster.path), str(layer), "class", str(tmp_path / "adapter.pt"),
                       settings=tiny_settings(epochs=3, self_training_rounds=1,
                                              pseudo_threshold=0.34),
                       on_epoch=epochs.append)
    notes = [note for note in result.notes if note.startswith("Self-training round 1:")]
    assert len(notes) == 1
    added = int(notes[0].split(": ")[1].split()[0])
    assert added > 0
    assert len(epochs) == 2 * 3                # two trainings of three epochs
