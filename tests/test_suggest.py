"""Where to draw next: uncertain pixels, spread out, away from nodata and the training polygons."""
from __future__ import annotations

import numpy as np
import pytest
from osgeo import ogr

from engine_data import make_polygons, make_test_raster, tiny_settings
from hyperadapt.models.data.neighbourhood import read_with_means_at
from hyperadapt.models.data.raster import RasterReader, read_raster_info
from hyperadapt.models.data.samples import read_labelled_pixels
from hyperadapt.models.errors import HyperAdaptError
from hyperadapt.models.jobs import fine_tune, suggest
from hyperadapt.models.jobs.suggestion import choose_suggestions, score_candidates
from hyperadapt.models.stores.adapter_file import load_adapter_file


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("suggest")
    raster = make_test_raster(folder / "scene.tif", width=40, height=36, noise=0.2,
                              nodata_box=(20, 0, 10, 12))
    layer = make_polygons(folder / "training.gpkg", raster)
    result = fine_tune(str(raster.path), str(layer), "class", str(folder / "adapter.pt"),
                       settings=tiny_settings(epochs=2))
    return raster, layer, result


def test_the_margin_scores_undecided_pixels_highest():
    probabilities = np.array([[0.5, 0.5, 0.0], [0.9, 0.05, 0.05], [0.4, 0.35, 0.25]])
    assert score_candidates(probabilities).tolist() == pytest.approx([1.0, 0.15, 0.95])


def test_classes_take_turns_and_suggestions_keep_their_spacing():
    rows = np.array([0, 0, 0, 10, 20])
    cols = np.array([0, 1, 2, 10, 20])
    scores = np.array([0.99, 0.98, 0.97, 0.5, 0.4])
    # The three most uncertain are one class side by side; the other class gets a turn.
    probabilities = np.array([[0.6, 0.4], [0.6, 0.4], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    chosen = choose_suggestions(rows, cols, scores, probabilities, count=3, min_spacing=5)
    assert [(s.row, s.col, s.guess) for s in chosen] == [(0, 0, 0), (10, 10, 1), (20, 20, 1)]
    near = choose_suggestions(rows, cols, scores, probabilities, count=3, min_spacing=5,
                              avoid_rows=np.array([9]), avoid_cols=np.array([9]))
    assert (10, 10) not in [(s.row, s.col) for s in near]


def test_suggestions_avoid_nodata_and_training_pixels_and_keep_apart(trained, tmp_path):
    raster, layer, result = trained
    output = tmp_path / "next.gpkg"
    found = suggest(str(raster.path), result.adapter_path, str(output), count=8, min_spacing=3,
                    step=1, training_path=str(layer), class_field="class")
    chosen = found["suggestions"]
    assert 1 <= len(chosen) <= 8
    info = read_raster_info(raster.path)
    training = read_labelled_pixels(info, layer, "class")
    for item in chosen:
        assert 0 <= item.row < 36 and 0 <= item.col < 40
        assert not (20 <= item.row < 30 and 0 <= item.col < 12)           # the nodata box
        assert ((training.rows - item.row) ** 2 + (training.cols - item.col) ** 2 >= 9).all()
        assert 0.0 <= item.score <= 1.0
    assert all((a.row - b.row) ** 2 + (a.col - b.col) ** 2 >= 9
               for i, a in enumerate(chosen) for b in chosen[i + 1:])
    assert [s.score for s in chosen] == sorted((s.score for s in chosen), reverse=True)

    source = ogr.Open(str(output))
    layer_out = source.GetLayerByName("suggestions")
    x0, dx, _, y0, _, dy = info.geotransform
    features = [(f["rank"], f["guess"], f["score"], f.GetGeometryRef().GetX(),
                 f.GetGeometryRef().GetY()) for f in layer_out]
    assert [f[0] for f in features] == list(range(1, len(chosen) + 1))
    assert [f[1] for f in features] == [result.classes[s.guess].name for s in chosen]
    assert [(f[3], f[4]) for f in features] == pytest.approx(
        [(x0 + (s.col + 0.5) * dx, y0 + (s.row + 0.5) * dy) for s in chosen])
    assert layer_out.GetSpatialRef().GetAuthorityCode(None) == str(raster.epsg)
    source = None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["next.gpkg"]


def test_suggestions_judge_the_pixels_as_the_map_does_with_its_spectral_classifier(trained,
                                                                                   tmp_path):
    """With the spectral classifier's weight at 1 the map is its alone, and so are the guesses and
    the probabilities the suggestions report."""
    raster, layer, _ = trained
    spectral = fine_tune(str(raster.path), str(layer), "class", str(tmp_path / "spectral.pt"),
                         settings=tiny_settings(epochs=2, spectral_weight=1.0))
    kernel = load_adapter_file(spectral.adapter_path).spectral_kernel
    found = suggest(str(raster.path), spectral.adapter_path, str(tmp_path / "next.gpkg"),
                    count=6, min_spacing=3, step=1)
    chosen = found["suggestions"]
    assert chosen
    rows = np.array([s.row for s in chosen])
    cols = np.array([s.col for s in chosen])
    with RasterReader(str(raster.path)) as reader:
        spectra, means = read_with_means_at(reader, rows, cols, kernel.band_indices,
                                            kernel.context_size)
    expected = kernel.probabilities(kernel.features(spectra, means))
    assert [s.guess for s in chosen] == expected.argmax(axis=1).tolist()
    assert [s.top_probability for s in chosen] == pytest.approx(expected.max(axis=1), abs=1e-5)


def test_bad_requests_are_one_sentence_and_write_nothing(trained, tmp_path):
    raster, layer, result = trained
    cases = [
        (dict(count=0), "The number of suggestions must be a whole number from 1 to 1000000 "
                        "(got 0)."),
        (dict(training_path=str(layer)), "Name the training layer's class field, or leave the "
                                         "layer out."),
        (dict(output=str(raster.path)), "The suggestions layer would overwrite the input raster; "
                                        "choose another file name."),
        (dict(output=str(layer)), "The suggestions layer would overwrite the training layer; "
                                  "choose another file name.", ),
        (dict(min_spacing=100, training_path=str(layer), class_field="class"),
         "No pixel lies 100 pixels or more from the training layer; choose a smaller spacing."),
    ]
    for values, sentence in cases:
        output = values.pop("output", str(tmp_path / "next.gpkg"))
        if output == str(layer):
            values.update(training_path=str(layer), class_field="class")
        with pytest.raises(HyperAdaptError) as caught:
            suggest(str(raster.path), result.adapter_path, output, **values)
        assert str(caught.value) == sentence
    assert list(tmp_path.iterdir()) == []


def test_a_warm_start_continues_from_the_adapter_with_a_share_of_the_steps(trained, tmp_path):
    import torch

    from hyperadapt.models import options
    from hyperadapt.models.settings import FineTuneSettings
    from hyperadapt.models.stores.adapter_file import load_adapter_file

    raster, layer, result = trained
    earlier = load_adapter_file(result.adapter_path)
    # Training with no step at all would keep the start: a learning rate of ~0 shows what the
    # start was, the earlier adapter and its head.
    settings = tiny_settings(epochs=2, learning_rate=1e-12, warm_start=result.adapter_path)
    again = fine_tune(str(raster.path), str(layer), "class", str(tmp_path / "again.pt"),
                      settings=settings)
    continued = load_adapter_file(again.adapter_path)
    assert continued.trainable_state.keys() == earlier.trainable_state.keys()
    for name, tensor in earlier.trainable_state.items():
        assert torch.allclose(continued.trainable_state[name], tensor, atol=1e-6), name
    share = f"{options.WARM_START_STEP_SHARE:.0%}"
    assert any(note.startswith("Continued from the adapter 'adapter' (with its head), training "
                               f"{share} of the steps.") for note in again.notes)
    assert again.metrics["epochs_run"] <= 1 == round(2 * options.WARM_START_STEP_SHARE)
    assert FineTuneSettings(steps=300, batch_size=30, warm_start="a.pt").epochs_for(30) == 120
    # Its early stop waits the same share of the patience: a fresh round stops on its held-out
    # polygons, and a warm one that waited as long would take most of a fresh one's time.
    assert FineTuneSettings(patience=10, warm_start="a.pt").patience_for() == 4
    assert FineTuneSettings(patience=10).patience_for() == 10
    assert FineTuneSettings(patience=1, warm_start="a.pt").patience_for() == 1

    with pytest.raises(HyperAdaptError) as caught:
        fine_tune(str(raster.path), str(layer), "class", str(tmp_path / "other.pt"),
                  settings=tiny_settings(epochs=1, method="lora",
                                         warm_start=result.adapter_path))
    assert str(caught.value).startswith("The adapter to continue from was made with other "
                                        "fine-tuning settings (krona_plus, rank")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.pt"]


def test_each_round_of_labelling_keeps_its_accuracy_in_the_adapter_and_the_report(trained,
                                                                                    tmp_path):
    from hyperadapt.models.stores.adapter_file import load_adapter_file

    raster, layer, result = trained
    first = load_adapter_file(result.adapter_path)
    assert [r["round"] for r in first.training["rounds"]] == [1]
    # Round 2 holds a quarter of the polygons out: its accuracy is over them.
    second = fine_tune(str(raster.path), str(layer), "class", str(tmp_path / "round2.pt"),
                       settings=tiny_settings(epochs=1, warm_start=result.adapter_path,
                                              min_validation_pixels=0),
                       report_path=str(tmp_path / "round2.html"))
    rounds = second.metrics["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[0] == {**first.training["rounds"][0], "round": 1}
    split = second.metrics["split"]
    assert rounds[1]["labelled_pixels"] == split["train_pixels"] + split["validation_pixels"]
    assert rounds[1]["validation_pixels"] == second.metrics["num_samples"] > 0
    assert rounds[1]["overall_accuracy"] == second.metrics["overall_accuracy"]
    page = (tmp_path / "round2.html").read_text()
    assert "Rounds of labelling" in page
    assert f"{100 * second.metrics['overall_accuracy']:.1f} %" in page
    third = fine_tune(str(raster.path), str(layer), "class", str(tmp_path / "round3.pt"),
                      settings=tiny_settings(epochs=1, warm_start=second.adapter_path))
    assert [r["round"] for r in load_adapter_file(third.adapter_path).training["rounds"]] == [
        1, 2, 3]
    assert third.metrics["rounds"][:2] == rounds
