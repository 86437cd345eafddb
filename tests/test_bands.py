"""Band adaptation: PCA to 12 components, Gaussian resampling to Sentinel-2, scaling to [0, 1]."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch

from engine_data import SHARED
from hyperadapt.models.data.bands import (NUM_MODEL_BANDS, S2_BAND_NAMES, S2_CENTER_NM, S2_FWHM_NM,
                                          BandAdaptation, fit_pca_reduction, fit_s2_resampling,
                                          gaussian_resampling_matrix)
from hyperadapt.models.errors import HyperAdaptError


def _spectra(num_pixels=2000, num_bands=40, seed=0):
    """Pixels mixing a few smooth endmembers, plus noise: a low-rank cloud like real scenes."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, num_bands)
    endmembers = np.stack([np.sin((k + 1) * np.pi * x) + k for k in range(15)])
    abundances = rng.dirichlet(np.ones(15), size=num_pixels)
    return abundances @ endmembers + 0.001 * rng.standard_normal((num_pixels, num_bands))


def test_sentinel2_constants_match_the_shared_band_table():
    with open(SHARED / "sensors" / "sentinel2_spectralgpt_bands.csv", newline="") as stream:
        rows = sorted(csv.DictReader(stream), key=lambda row: int(row["position"]))
    assert [row["band"] for row in rows] == list(S2_BAND_NAMES)
    assert [float(row["s2a_center_nm"]) for row in rows] == pytest.approx(S2_CENTER_NM)
    assert len(S2_FWHM_NM) == NUM_MODEL_BANDS and min(S2_FWHM_NM) >= 15


def test_pca_gives_12_ordered_orthonormal_components_scaled_to_unit_range():
    pixels = _spectra()
    bands = list(range(3, 43))
    adaptation = fit_pca_reduction(pixels, bands)
    assert adaptation.method == "pca" and adaptation.band_indices == bands
    projection = adaptation.projection
    np.testing.assert_allclose(projection.T @ projection, np.eye(12), atol=1e-8)
    ratios = adaptation.explained_variance_ratio
    assert ratios == sorted(ratios, reverse=True) and sum(ratios) > 0.99
    inputs = adaptation.apply_pixels(pixels)
    assert inputs.dtype == np.float32 and inputs.shape == (2000, 12)
    assert inputs.min() == 0.0 and inputs.max() == 1.0
    # Percentile scaling: about 2 % of the values clip at each end for the informative components.
    assert 0.01 < float((inputs[:, 0] == 0.0).mean()) < 0.04
    # A refit on the same pixels is identical (eigenvector signs are fixed).
    again = fit_pca_reduction(pixels.copy(), bands)
    np.testing.assert_array_equal(again.projection, adaptation.projection)


def test_block_and_pixel_application_agree():
    pixels = _spectra(num_pixels=600)
    adaptation = fit_pca_reduction(pixels, list(range(40)))
    block = pixels[:600].T.reshape(40, 20, 30)
    out = adaptation.apply_block(block)
    assert out.shape == (12, 20, 30)
    np.testing.assert_allclose(out.reshape(12, -1).T, adaptation.apply_pixels(pixels), atol=1e-6)


def test_state_round_trips_through_a_weights_only_torch_file():
    adaptation = fit_pca_reduction(_spectra(), list(range(40)))
    buffer = io.BytesIO()
    torch.save({"band_adaptation": adaptation.to_state()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["band_adaptation"]
    restored = BandAdaptation.from_state(state)
    pixels = _spectra(num_pixels=50, seed=5)
    np.testing.assert_allclose(restored.apply_pixels(pixels), adaptation.apply_pixels(pixels),
                               atol=1e-6)
    with pytest.raises(HyperAdaptError, match="incomplete"):
        BandAdaptation.from_state({"method": "pca"})


def test_pca_needs_twelve_usable_bands():
    with pytest.raises(HyperAdaptError) as caught:
        fit_pca_reduction(_spectra(num_bands=8), list(range(8)))
    assert str(caught.value) == ("PCA to 12 components needs at least 12 usable bands, but the "
                                 "raster has 8.")


def test_gaussian_resampling_recovers_a_smooth_spectrum_at_the_sentinel2_centres():
    wavelengths = np.arange(400.0, 2501.0, 10.0)
    weights, notes = gaussian_resampling_matrix(wavelengths, np.full(len(wavelengths), 10.0))
    assert notes == [] and weights.shape == (len(wavelengths), 12)
    np.testing.assert_allclose(weights.sum(axis=0), 1.0)
    # A spectrum linear in wavelength is averaged to its value at each (symmetric) band centre.
    linear = 0.1 + 1e-4 * wavelengths
    np.testing.assert_allclose(linear @ weights, 0.1 + 1e-4 * np.array(S2_CENTER_NM), rtol=2e-3)
    # Wide Sentinel-2 bands take more raster bands than narrow ones.
    active = (weights > 1e-3).sum(axis=0)
    assert active[S2_BAND_NAMES.index("B12")] > active[S2_BAND_NAMES.index("B5")]


def test_bands_beyond_the_raster_range_use_the_nearest_band_and_say_so():
    wavelengths = np.linspace(400.0, 1000.0, 61)
    weights, notes = gaussian_resampling_matrix(wavelengths)
    assert [n.split()[2] for n in notes] == ["B11", "B12"]
    assert weights[-1, S2_BAND_NAMES.index("B11")] == 1.0


def test_s2_resampling_scales_to_unit_range_and_needs_wavelengths():
    pixels = _spectra(num_bands=60)
    wavelengths = list(np.linspace(420.0, 2400.0, 60))
    adaptation = fit_s2_resampling(pixels, list(range(60)), wavelengths, [20.0] * 60)
    inputs = adaptation.apply_pixels(pixels)
    assert adaptation.method == "s2" and inputs.shape == (2000, 12)
    assert inputs.min() >= 0.0 and inputs.max() <= 1.0
    assert (inputs.max(axis=0) == 1.0).all()
    with pytest.raises(HyperAdaptError, match="needs the raster's band wavelengths"):
        fit_s2_resampling(pixels, list(range(60)), None)


def _noisy_band_scene(size=40, num_bands=30, seed=0):
    """A smooth scene (fields of 4 materials) whose last 5 bands carry strong sensor noise.

    Returns spectra (N, bands) and horizontal neighbour differences (M, bands).
    """
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, num_bands)
    materials = np.stack([np.sin((k + 1) * 2.0 * x) + k for k in range(4)])
    field = (np.arange(size)[:, None] // 10 + np.arange(size)[None, :] // 20) % 4
    cube = materials[field] + 0.01 * rng.standard_normal((size, size, num_bands))
    cube[:, :, -5:] += 1.5 * rng.standard_normal((size, size, 5))
    pixels = cube.reshape(-1, num_bands)
    differences = (cube[:, 1:] - cube[:, :-1]).reshape(-1, num_bands)
    return pixels, differences


def test_mnf_orders_components_by_signal_to_noise_at_one_common_scale():
    from hyperadapt.models.data.bands import fit_mnf_reduction

    pixels, differences = _noisy_band_scene()
    bands = list(range(pixels.shape[1]))
    mnf = fit_mnf_reduction(pixels, differences, bands)
    assert mnf.method == "mnf" and mnf.projection.shape == (30, 12)
    assert "neighbouring-pixel differences" in mnf.notes[0]
    ratios = mnf.explained_variance_ratio
    assert ratios == sorted(ratios, reverse=True)
    # One span for every component: the widest fills [0, 1], the others are narrower around 0.5.
    spans = mnf.high - mnf.low
    np.testing.assert_allclose(spans, spans[0])
    inputs = mnf.apply_pixels(pixels)
    spread = np.percentile(inputs, 98, axis=0) - np.percentile(inputs, 2, axis=0)
    assert spread.max() == pytest.approx(1.0, abs=1e-4) and spread[-1] < 0.2 * spread.max()
    # The leading component barely loads on the noisy bands; PCA's leading ones take the noise.
    assert np.abs(mnf.projection[-5:, 0]).sum() < 0.05 * np.abs(mnf.projection[:-5, 0]).sum()
    pca = fit_pca_reduction(pixels, bands)
    noise_share = np.abs(pca.projection[-5:, :3]).sum() / np.abs(pca.projection[:, :3]).sum()
    assert noise_share > 2 * 5 / 30          # over twice the noisy bands' share of the bands
    # A refit on the same data is identical (signs fixed).
    again = fit_mnf_reduction(pixels.copy(), differences.copy(), bands)
    np.testing.assert_array_equal(again.projection, mnf.projection)


def test_mnf_treats_texture_like_differences_as_equal_noise_in_standardised_bands():
    from hyperadapt.models.data.bands import fit_mnf_reduction, noise_covariance

    rng = np.random.default_rng(1)
    pixels = _spectra(num_pixels=3000, num_bands=30) * rng.uniform(0.5, 20.0, 30)
    # Differences that vary like the scene itself in every band (texture, not sensor noise).
    differences = (pixels[1:] - pixels[:-1])
    noise, note = noise_covariance(pixels, differences)
    assert "equal in every standardised band" in note
    np.testing.assert_allclose(noise, np.diag(pixels.var(axis=0)))
    mnf = fit_mnf_reduction(pixels, differences, list(range(30)))
    standardised = (pixels - pixels.mean(0)) / pixels.std(0)
    leading = np.linalg.eigh(np.cov(standardised.T))[1][:, -1]
    direction = mnf.projection[:, 0] * pixels.std(0)      # the same axis in standardised units
    cosine = abs(direction @ leading) / np.linalg.norm(direction)
    assert cosine > 0.99


def test_mnf_is_stored_and_reapplied_like_the_other_adaptations():
    from hyperadapt.models.data.bands import fit_mnf_reduction

    pixels, differences = _noisy_band_scene()
    mnf = fit_mnf_reduction(pixels, differences, list(range(30)))
    restored = BandAdaptation.from_state(mnf.to_state())
    np.testing.assert_allclose(restored.apply_pixels(pixels[:50]), mnf.apply_pixels(pixels[:50]),
                               atol=1e-6)
    assert restored.notes == mnf.notes
    with pytest.raises(HyperAdaptError, match="MNF to 12 components needs at least 12 usable "
                                              "bands"):
        fit_mnf_reduction(pixels[:, :8], differences[:, :8], list(range(8)))


def test_noise_whitening_gives_the_noise_unit_covariance_in_the_mnf_coordinates():
    """Spectra times the whitening have unit noise covariance (its ridge included): the noisy bands
    shrink to their signal-to-noise ratio, and distances are those of all the MNF's components."""
    from hyperadapt.models.data.bands import MNF_NOISE_RIDGE, fit_mnf_reduction, noise_whitening

    pixels, differences = _noisy_band_scene()
    whitening, note = noise_whitening(pixels, differences)
    assert whitening.shape == (30, 30) and "neighbouring-pixel differences" in note
    noise = differences.T @ differences / (2.0 * len(differences))
    noise += MNF_NOISE_RIDGE * np.trace(noise) / 30 * np.eye(30)
    np.testing.assert_allclose(whitening.T @ noise @ whitening, np.eye(30), atol=1e-6)
    # The five noisy bands weigh about their noise's 1.5 less than the clean ones' 0.01.
    size = np.abs(whitening).sum(axis=1)
    assert size[-5:].max() < 0.05 * size[:-5].min()
    # The MNF's 12 components are this whitening followed by a rotation: distances agree.
    mnf = fit_mnf_reduction(pixels, differences, list(range(30)))
    a, b = pixels[:200], pixels[200:400]
    rotation = np.linalg.lstsq(whitening, mnf.projection, rcond=None)[0]
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(12), atol=1e-6)
    np.testing.assert_allclose((a - b) @ mnf.projection, (a - b) @ whitening @ rotation,
                               rtol=1e-6, atol=1e-8)
