"""The kernel classifier on each pixel's spectrum (models.learning.spectral_kernel): its
leave-out selection, its probabilities, its saved state and its share of the map."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from hyperadapt.models.learning.spectral_kernel import (SpectralKernel, _balanced_subsample,
                                                        _fit_inputs, _squared_distances,
                                                        fit_spectral_kernel, left_out_scores)


def spectra_of_classes(rng, counts, bands=30, noise=0.3):
    """Spectra of classes with their own smooth mean shape, and Gaussian noise."""
    x = np.linspace(0, 1, bands)
    spectra, labels = [], []
    for cls, count in enumerate(counts):
        shape = 1.0 + 0.5 * np.sin(2 * np.pi * (x + 0.2 * cls)) + 0.3 * cls * x
        spectra.append(shape + noise * rng.standard_normal((count, bands)))
        labels.append(np.full(count, cls))
    return np.concatenate(spectra).astype(np.float32), np.concatenate(labels)


def test_balanced_weights_fit_weighted_least_squares_and_leave_groups_out_exactly():
    """Each pixel's squared error weighs the inverse of its class's share: the coefficients solve
    the weighted normal equations, and each left-out score is that of a weighted fit without the
    pixel's group."""
    rng = np.random.default_rng(4)
    spectra, labels = spectra_of_classes(rng, [12, 4, 2], bands=8, noise=0.6)
    groups = np.arange(len(labels)) // 2
    index = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    weights = (len(labels) / (3 * np.bincount(labels)))[labels]
    targets = np.eye(3)[labels]
    found = _fit_inputs(spectra.astype(np.float64), targets, labels, index, weights)
    kernel = np.exp(-found["gamma"] * _squared_distances(found["support"], found["support"]))
    ridge = found["ridge"]
    assert np.allclose(found["coefficients"], np.linalg.solve(
        weights[:, None] * kernel + ridge * np.eye(len(labels)), weights[:, None] * targets))
    for held in index:
        kept = np.setdiff1d(np.arange(len(labels)), held)
        dual = np.linalg.solve(weights[kept, None] * kernel[np.ix_(kept, kept)]
                               + ridge * np.eye(len(kept)), weights[kept, None] * targets[kept])
        assert np.allclose(found["scores"][held], kernel[np.ix_(held, kept)] @ dual, atol=1e-6)
    # With as many pixels in every class, balanced is the plain fit, to the bit.
    even, even_labels = spectra_of_classes(rng, [6, 6, 6], bands=8)
    plain = fit_spectral_kernel(even, even_labels, np.arange(18), 3, range(8),
                                class_weighting="none")
    balanced = fit_spectral_kernel(even, even_labels, np.arange(18), 3, range(8),
                                   class_weighting="balanced")
    assert np.array_equal(plain.coefficients, balanced.coefficients)
    assert plain.temperature == balanced.temperature


def test_classifies_new_spectra_and_its_probabilities_are_distributions():
    rng = np.random.default_rng(0)
    train, train_y = spectra_of_classes(rng, [12, 12, 12])
    test, test_y = spectra_of_classes(rng, [200, 200, 200])
    kernel = fit_spectral_kernel(train, train_y, np.arange(len(train_y)), 3, range(30), weight=0.5)
    probabilities = kernel.probabilities(test)
    assert probabilities.shape == (600, 3) and probabilities.dtype == np.float32
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities >= 0).all()
    assert np.mean(probabilities.argmax(axis=1) == test_y) > 0.9
    assert kernel.left_out_accuracy > 0.9
    # Calibrated on left-out scores, the classifier is neither certain of everything nor flat.
    assert 0.5 < probabilities.max(axis=1).mean() < 0.999


def test_the_grouped_left_out_scores_are_those_of_a_fit_without_the_group():
    rng = np.random.default_rng(1)
    spectra, labels = spectra_of_classes(rng, [7, 6, 5], bands=8)
    support = (spectra - spectra.mean(0)) / spectra.std(0)
    targets = np.eye(3)[labels]
    groups = rng.integers(0, 5, size=len(labels))
    gamma, ridge = 0.1, 0.05
    kernel = np.exp(-gamma * _squared_distances(support.astype(np.float64),
                                                support.astype(np.float64)))
    eigenvalues, eigenvectors = np.linalg.eigh(kernel)
    index = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    scores = left_out_scores(eigenvalues, eigenvectors, targets, ridge, index)
    for held in index:
        kept = np.setdiff1d(np.arange(len(labels)), held)
        dual = np.linalg.solve(kernel[np.ix_(kept, kept)] + ridge * np.eye(len(kept)),
                               targets[kept])
        assert np.allclose(scores[held], kernel[np.ix_(held, kept)] @ dual, atol=1e-6)


def test_polygons_are_left_out_whole_so_a_polygon_cannot_vouch_for_itself():
    """Polygons whose pixels repeat one spectrum: left out pixel by pixel, each pixel's twins
    classify it perfectly; left out polygon by polygon, the classifier has to generalise."""
    rng = np.random.default_rng(2)
    spectra, labels = spectra_of_classes(rng, [4, 4, 4], noise=1.5)
    polygons = np.arange(len(labels))
    repeated = np.repeat(spectra, 5, axis=0)
    repeated_labels, repeated_polygons = np.repeat(labels, 5), np.repeat(polygons, 5)
    by_pixel = fit_spectral_kernel(repeated, repeated_labels, np.arange(len(repeated_labels)), 3,
                                   range(30))
    by_polygon = fit_spectral_kernel(repeated, repeated_labels, repeated_polygons, 3, range(30))
    assert by_pixel.left_out_accuracy == 1.0
    assert by_polygon.left_out_accuracy < 1.0


def test_a_band_constant_over_the_training_pixels_gives_finite_probabilities():
    rng = np.random.default_rng(3)
    spectra, labels = spectra_of_classes(rng, [6, 6])
    spectra[:, 4] = 7.0
    kernel = fit_spectral_kernel(spectra, labels, np.arange(len(labels)), 2, range(30))
    other = spectra.copy()
    other[:, 4] = 9.0           # a scene where that band varies after all
    assert np.isfinite(kernel.probabilities(other)).all()
    assert np.isfinite(kernel.support).all()


def test_the_support_is_a_class_balanced_subsample_within_the_limit():
    labels = np.repeat([0, 1, 2], [1000, 30, 400])
    kept = _balanced_subsample(labels, 300, np.random.default_rng(0))
    counts = np.bincount(labels[kept], minlength=3)
    assert counts.sum() <= 300
    # The small class keeps every pixel; the others share what is left equally.
    assert counts[1] == 30 and counts[0] == counts[2] == 135
    assert len(np.unique(kept)) == len(kept)
    rng = np.random.default_rng(4)
    spectra, labels = spectra_of_classes(rng, [80, 20])
    kernel = fit_spectral_kernel(spectra, labels, np.arange(100), 2, range(30), max_pixels=40)
    assert len(kernel.support) == 40


def test_its_state_survives_a_weights_only_file_and_classifies_the_same():
    rng = np.random.default_rng(5)
    spectra, labels = spectra_of_classes(rng, [10, 10, 10])
    kernel = fit_spectral_kernel(spectra, labels, np.arange(30), 3, [3, 5, 7] + list(range(8, 35)),
                                 weight=0.25)
    buffer = io.BytesIO()
    torch.save(kernel.to_state(), buffer)
    buffer.seek(0)
    again = SpectralKernel.from_state(torch.load(buffer, weights_only=True))
    assert again.band_indices == kernel.band_indices and again.weight == 0.25
    test, _ = spectra_of_classes(rng, [50, 50, 50])
    # The support is kept in float16: the probabilities move by far less than a class decision.
    assert np.abs(again.probabilities(test) - kernel.probabilities(test)).max() < 1e-2
    broken = kernel.to_state()
    broken["mean"] = broken["mean"][:-1]
    with pytest.raises(ValueError):
        SpectralKernel.from_state(broken)


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_the_mix_gives_the_network_and_the_spectra_their_shares(weight):
    rng = np.random.default_rng(6)
    spectra, labels = spectra_of_classes(rng, [8, 8])
    kernel = fit_spectral_kernel(spectra, labels, np.arange(16), 2, range(30), weight=weight)
    network = np.tile(np.array([[0.9, 0.1]], dtype=np.float32), (16, 1))
    mixed = kernel.mix(network, spectra)
    assert np.allclose(mixed, (1 - weight) * network + weight * kernel.probabilities(spectra),
                       atol=1e-6)
    assert np.allclose(mixed.sum(axis=1), 1.0, atol=1e-5)


def test_neighbourhood_means_average_the_valid_pixels_inside_the_raster(tmp_path):
    """Each pixel's mean is that of the valid pixels of its square, clipped at the raster's edge;
    a tile read with its halo gives the whole raster's means, and so do the training pixels'."""
    from engine_data import make_test_raster
    from hyperadapt.models.data.neighbourhood import (box_means, read_with_means,
                                                          read_with_means_at)
    from hyperadapt.models.data.raster import RasterReader

    raster = make_test_raster(tmp_path / "scene.tif", noise=0.3, nodata_box=(3, 5, 4, 6))
    with RasterReader(str(raster.path)) as reader:
        data, valid = reader.read(0, 0, reader.width, reader.height)
        bands = list(range(data.shape[0]))
        whole = box_means(data, valid, 5)
        for row, col in [(0, 0), (5, 11), (8, 7), (29, 35)]:
            box = valid[max(0, row - 2):row + 3, max(0, col - 2):col + 3]
            pixels = data[:, max(0, row - 2):row + 3, max(0, col - 2):col + 3][:, box]
            assert np.allclose(whole[:, row, col], pixels.mean(axis=1), atol=1e-5)
        spectra, means = read_with_means(reader, 10, 6, 12, 9, bands, 5)
        assert np.array_equal(spectra, data[:, 6:15, 10:22])
        assert np.allclose(means, whole[:, 6:15, 10:22], atol=1e-5)
        assert read_with_means(reader, 10, 6, 12, 9, bands, 0)[1] is None
        rows, cols = np.array([0, 29, 12, 7]), np.array([35, 0, 20, 4])
        (spectra_5, found_5), (spectra_9, found_9) = (
            read_with_means_at(reader, rows, cols, bands, size) for size in (5, 9))
        assert read_with_means_at(reader, rows, cols, bands, 0)[1] is None
    assert np.allclose(found_5, whole[:, rows, cols].T, atol=1e-5)
    assert np.allclose(found_9, box_means(data, valid, 9)[:, rows, cols].T, atol=1e-5)
    assert np.array_equal(spectra_5, data[:, rows, cols].T)
    assert np.array_equal(spectra_9, data[:, rows, cols].T)


def _field_scene(rng, size=60, block=10, bands=20, noise=2.0):
    """Square fields of random classes: each pixel's spectrum is its class shape under heavy
    noise, so only a neighbourhood's mean tells the class."""
    from hyperadapt.models.data.neighbourhood import box_means

    fields = rng.integers(0, 3, size=(size // block, size // block))
    labels = np.kron(fields, np.ones((block, block), dtype=np.int64))
    shapes = spectra_of_classes(rng, [1, 1, 1], bands=bands, noise=0.0)[0]
    cube = shapes[labels].transpose(2, 0, 1) + noise * rng.standard_normal((bands, size, size))
    return cube.astype(np.float32), labels, box_means(cube, np.ones(labels.shape, bool), 5)


def test_the_leave_out_accuracy_chooses_the_neighbourhood_where_it_tells_the_classes_apart():
    rng = np.random.default_rng(7)
    cube, labels, means = _field_scene(rng)
    # Scattered pixels away from the fields' edges.
    rows, cols = np.nonzero((np.arange(60)[:, None] % 10 == 5) & (np.arange(60) % 10 == 5))
    spectra, near = cube[:, rows, cols].T, means[:, rows, cols].T
    kernel = fit_spectral_kernel(spectra, labels[rows, cols], np.arange(len(rows)), 3, range(20),
                                 means=near, context_size=5)
    assert kernel.inputs in ("context", "both") and kernel.context_size == 5
    assert kernel.left_out_accuracy > 0.9
    assert kernel.mean.shape == (20 if kernel.inputs == "context" else 40,)
    alone = fit_spectral_kernel(spectra, labels[rows, cols], np.arange(len(rows)), 3, range(20))
    assert alone.inputs == "spectrum" and alone.context_size == 0
    assert alone.left_out_accuracy < kernel.left_out_accuracy
    # Classified from its features, the whole scene follows the fields.
    everything = kernel.features(cube.reshape(20, -1).T, means.reshape(20, -1).T)
    assert np.mean(kernel.probabilities(everything).argmax(axis=1) == labels.ravel()) > 0.85
    with pytest.raises(ValueError):
        kernel.features(spectra, None)


def test_pixels_whose_neighbours_belong_to_other_classes_keep_their_own_spectrum():
    """Salt and pepper: the neighbourhood's mean carries no class, the pixel's spectrum does."""
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 3, size=(40, 40))
    shapes = spectra_of_classes(rng, [1, 1, 1], bands=20, noise=0.0)[0]
    cube = (shapes[labels].transpose(2, 0, 1)
            + 0.3 * rng.standard_normal((20, 40, 40))).astype(np.float32)
    from hyperadapt.models.data.neighbourhood import box_means

    means = box_means(cube, np.ones(labels.shape, bool), 9)
    rows, cols = rng.integers(0, 40, 90), rng.integers(0, 40, 90)
    kernel = fit_spectral_kernel(cube[:, rows, cols].T, labels[rows, cols], np.arange(90), 3,
                                 range(20), means=means[:, rows, cols].T, context_size=9)
    assert kernel.inputs == "spectrum" and kernel.context_size == 0
    assert kernel.mean.shape == (20,)


@pytest.mark.parametrize("inputs", ["both", "context"])
def test_a_neighbourhood_classifier_survives_its_state_and_older_states_read_as_spectra(inputs):
    rng = np.random.default_rng(9)
    cube, labels, means = _field_scene(rng)
    rows, cols = rng.integers(0, 60, 60), rng.integers(0, 60, 60)
    kernel = fit_spectral_kernel(cube[:, rows, cols].T, labels[rows, cols], np.arange(60), 3,
                                 range(20), means=means[:, rows, cols].T, context_size=5)
    kernel.inputs = inputs     # either way, as a fit may choose
    kernel.mean = np.resize(kernel.mean, 40 if inputs == "both" else 20)
    kernel.scale = np.resize(kernel.scale, 40 if inputs == "both" else 20)
    kernel.support = np.resize(kernel.support, (len(kernel.support), len(kernel.mean)))
    buffer = io.BytesIO()
    torch.save(kernel.to_state(), buffer)
    buffer.seek(0)
    again = SpectralKernel.from_state(torch.load(buffer, weights_only=True))
    assert (again.inputs, again.context_size) == (inputs, 5)
    assert "5 x 5 neighbourhood" in again.describe()
    # Saved before the neighbourhood inputs, a state is a classifier of the spectrum alone.
    spectral = fit_spectral_kernel(cube[:, rows, cols].T, labels[rows, cols], np.arange(60), 3,
                                   range(20))
    older = spectral.to_state()
    del older["inputs"], older["context_size"]
    assert SpectralKernel.from_state(older).inputs == "spectrum"
    mismatched = {**kernel.to_state(), "context_size": 0}
    with pytest.raises(ValueError):
        SpectralKernel.from_state(mismatched)


def test_in_units_of_the_noise_the_noisy_bands_no_longer_drown_the_clean_ones():
    """Classes told apart by 5 clean bands beside 55 bands of loud noise: standardising each band
    gives the noise eleven times the clean bands' weight; whitened by the noise (here known,
    per band), the classifier sees the classes, and keeps the whitening in its saved state."""
    rng = np.random.default_rng(11)

    def draw(count):
        labels = np.repeat(np.arange(3), count)
        clean = np.linspace(0.0, 1.0, 3)[labels, None] + 0.2 * rng.standard_normal((len(labels), 5))
        loud = 3.0 * rng.standard_normal((len(labels), 55))
        return np.concatenate([clean, loud], axis=1).astype(np.float32), labels

    train, train_y = draw(15)
    test, test_y = draw(300)
    whitening = np.diag(1.0 / np.r_[np.full(5, 0.2), np.full(55, 3.0)]).astype(np.float32)
    standardised = fit_spectral_kernel(train, train_y, np.arange(45), 3, range(60))
    whitened = fit_spectral_kernel(train, train_y, np.arange(45), 3, range(60),
                                   whitening=whitening)
    accuracy = {name: np.mean(kernel.probabilities(kernel.features(test, None)).argmax(1)
                              == test_y)
                for name, kernel in (("standardised", standardised), ("whitened", whitened))}
    assert accuracy["whitened"] > 0.95 and accuracy["standardised"] < 0.8, accuracy
    assert "units of the scene's noise" in whitened.describe()
    # One common scale: the whitened features keep their relative sizes.
    assert np.all(whitened.scale == whitened.scale[0])
    buffer = io.BytesIO()
    torch.save(whitened.to_state(), buffer)
    buffer.seek(0)
    again = SpectralKernel.from_state(torch.load(buffer, weights_only=True))
    np.testing.assert_array_equal(again.whitening, whitening)
    np.testing.assert_allclose(again.probabilities(again.features(test[:50], None)),
                               whitened.probabilities(whitened.features(test[:50], None)),
                               atol=1e-3)     # the support is saved in float16
    # Saved before the whitening, a state standardises each band.
    older = standardised.to_state()
    del older["whitening"]
    assert SpectralKernel.from_state(older).whitening is None
    with pytest.raises(ValueError):
        SpectralKernel.from_state({**whitened.to_state(),
                                   "whitening": torch.eye(59, dtype=torch.float32)})
