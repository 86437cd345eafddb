"""Band adaptation: PCA to 12 components, Gaussian resampling to Sentinel-2, scaling to [0, 1]."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch

from engine_data import SHARED
from hyperadapt.models.bands import (NUM_MODEL_BANDS, S2_BAND_NAMES, S2_CENTER_NM, S2_FWHM_NM,
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
