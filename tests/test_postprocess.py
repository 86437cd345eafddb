"""Cleaning a class map: majority filter, sieve and segment vote keep classes, colours and nodata."""
from __future__ import annotations

import numpy as np
import pytest

from engine_data import make_polygons, make_test_raster, read_band, tiny_settings
from hyperadapt.models.errors import HyperAdaptError, JobCancelled
from hyperadapt.models.jobs import classify, fine_tune, postprocess, read_class_raster_classes
from hyperadapt.models.jobs.postprocessing import majority_vote
from hyperadapt.models.stores.adapter_file import load_adapter_file


def test_majority_vote_takes_the_commonest_class_and_keeps_nodata():
    values = np.array([[1, 1, 1, 2, 2],
                       [1, 3, 1, 2, 2],
                       [1, 1, 1, 2, 0],
                       [0, 0, 2, 2, 2]], dtype=np.uint8)
    voted = majority_vote(values, 3)
    assert voted[1, 1] == 1                       # the lone 3 among 1s
    assert voted[2, 4] == 0 and (voted[3, :2] == 0).all()     # nodata stays nodata
    assert set(np.unique(voted)) <= {0, 1, 2, 3}
    assert voted[0, 4] == 2


@pytest.fixture(scope="module")
def speckled(tmp_path_factory):
    """A noisy scene and a briefly trained, speckled classification of it: the network alone,
    without the spectral classifier's smooth neighbourhood means or the vote."""
    folder = tmp_path_factory.mktemp("speckled")
    raster = make_test_raster(folder / "scene.tif", width=48, height=40, noise=0.25,
                              nodata_box=(10, 20, 6, 5))
    layer = make_polygons(folder / "training.gpkg", raster)
    result = fine_tune(str(raster.path), str(layer), "class", str(folder / "adapter.pt"),
                       settings=tiny_settings(epochs=3, segment_size=0, spectral_weight=0.0),
                       classification_path=str(folder / "classes.tif"))
    return raster, result


@pytest.mark.parametrize("step", [{"sieve_pixels": 4}, {"majority_size": 5},
                                  {"segment_size": 5}, {"sieve_pixels": 3, "majority_size": 3,
                                                        "segment_size": 4}])
def test_each_clean_up_keeps_classes_colours_names_and_nodata(speckled, tmp_path, step):
    raster, result = speckled
    before = read_band(result.classification_path)
    output = tmp_path / "clean.tif"
    done = postprocess(result.classification_path, str(output), raster_path=str(raster.path),
                       **step)
    after = read_band(output)
    assert (after == 0).sum() == (before == 0).sum() and ((after == 0) == (before == 0)).all()
    assert set(np.unique(after[after > 0])) <= {c.value for c in result.classes}
    assert 0 < done["changed_pixels"] == int((after != before).sum())
    assert done["pixels_per_class"] == {c.value: int((after == c.value).sum())
                                        for c in result.classes}
    assert read_class_raster_classes(output) == read_class_raster_classes(
        result.classification_path)                   # names and colours kept
    style = output.with_suffix(".qml").read_text()
    assert all(f'label="{c.name}"' in style for c in result.classes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.qml", "clean.tif",
                                                          "clean.tif.aux.xml"]

    def patches(values):
        return int((values[:, 1:] != values[:, :-1]).sum() + (values[1:] != values[:-1]).sum())

    assert patches(after) < patches(before)


def test_bad_clean_ups_are_one_sentence_and_leave_nothing(speckled, tmp_path):
    raster, result = speckled
    output = tmp_path / "clean.tif"
    cases = [({"majority_size": 4}, "The majority filter needs an odd window of at least 3 "
                                    "pixels (got 4)."),
             ({"segment_size": 5}, "The segment vote needs the classified scene's raster, whose "
                                   "bands its superpixels follow."),
             ({}, "Choose at least one clean-up: a sieve, a majority filter or a segment vote.")]
    for values, sentence in cases:
        with pytest.raises(HyperAdaptError) as caught:
            postprocess(result.classification_path, str(output), **values)
        assert str(caught.value) == sentence
    with pytest.raises(HyperAdaptError, match="would overwrite the input raster"):
        postprocess(result.classification_path, result.classification_path, sieve_pixels=4)
    with pytest.raises(JobCancelled):
        postprocess(result.classification_path, str(output), majority_size=3,
                    cancel=lambda: True)
    assert list(tmp_path.iterdir()) == []


def test_fine_tune_and_classify_apply_the_clean_up_the_adapter_records(speckled, tmp_path):
    raster, plain = speckled
    settings = tiny_settings(epochs=3, segment_size=0, majority_size=3, sieve_pixels=4)
    cleaned = fine_tune(str(raster.path), str(make_polygons(tmp_path / "training.gpkg", raster)),
                        "class", str(tmp_path / "adapter.pt"), settings=settings,
                        classification_path=str(tmp_path / "classes.tif"))
    assert load_adapter_file(cleaned.adapter_path).postprocess == {
        "classify_mode": "tile", "tile_step": 3, "segment_size": 0, "majority_size": 3,
        "sieve_pixels": 4}
    # The same seed trains the same model, so the cleaned map is the speckled one cleaned.
    expected = tmp_path / "expected.tif"
    postprocess(plain.classification_path, str(expected), majority_size=3, sieve_pixels=4)
    assert (read_band(cleaned.classification_path) == read_band(expected)).all()
    again = classify(str(raster.path), cleaned.adapter_path, str(tmp_path / "again.tif"))
    assert (read_band(again.output_path) == read_band(expected)).all()
    assert again.pixels_per_class == {c.value: int((read_band(expected) == c.value).sum())
                                      for c in plain.classes}
    assert not [p.name for p in tmp_path.iterdir() if "unclean" in p.name]
