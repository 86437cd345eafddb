"""Adapter files (versioned, weights_only, atomic), compatibility checks and the per-sensor library."""
from __future__ import annotations

import datetime as dt

import pytest
import torch

from hyperadapt.models.data.raster import RasterInfo
from hyperadapt.models.data.samples import ClassInfo
from hyperadapt.models.errors import HyperAdaptError
from hyperadapt.models.network.identity import BackboneIdentity
from hyperadapt.models.stores.adapter_file import (ADAPTER_FORMAT_VERSION, AdapterRecord,
                                                   check_compatible,
                                                   compatibility_problem, load_adapter_file,
                                                   save_adapter_file)
from hyperadapt.models.stores.library import (add_to_library, library_adapter_path, library_root,
                                              list_adapters, remove_from_library)

ENMAP_WAVES = [420.0 + 9.0 * i for i in range(224)]
OFFICIAL = {"kind": "official", "name": "SpectralGPT+.pth", "sha256": "ab" * 32}


def make_record(name="roofs", band_count=224, wavelengths=ENMAP_WAVES, sensor="EnMAP",
                weights=OFFICIAL) -> AdapterRecord:
    generator = torch.Generator().manual_seed(0)
    return AdapterRecord(
        name=name,
        trainable_state={"blocks.0.attn.q.adapter_a": torch.randn(4, 4, generator=generator),
                         "head.weight": torch.randn(3, 8, generator=generator),
                         "head.bias": torch.zeros(3)},
        adapter_config={"method": "krona_plus", "targets": ["attn.q", "attn.v"]},
        band_adaptation={"method": "pca", "band_indices": list(range(band_count))},
        window_size=9, input_size=32,
        classes=[ClassInfo(1, "roof", (255, 0, 0)), ClassInfo(2, "tree", (0, 128, 0)),
                 ClassInfo(3, "water", (0, 0, 255))],
        sensor={"name": sensor, "band_count": band_count, "wavelengths_nm": wavelengths},
        backbone={"config": {"embed_dim": 8, "depth": 1}, "weights": weights},
        metrics={"overall_accuracy": 0.9, "kappa": 0.85, "classes": []},
        training={"epochs": 3, "history": [{"epoch": 1, "loss": 0.5, "val_accuracy": None}]})


def raster_info(band_count=224, wavelengths=ENMAP_WAVES) -> RasterInfo:
    return RasterInfo(path="scene.tif", width=10, height=10, band_count=band_count,
                      geotransform=(0, 30, 0, 0, 0, -30), crs_wkt="", wavelengths_nm=wavelengths,
                      fwhm_nm=None, good_bands=list(range(band_count)), nodata=[None] * band_count,
                      sensor="EnMAP")


def test_round_trip_is_weights_only_loadable_and_complete(tmp_path):
    record = make_record()
    path = tmp_path / "a.pt"
    size = save_adapter_file(record, path)
    assert size == path.stat().st_size and size < 100_000
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "hyperadapt-adapter"
    assert payload["format_version"] == ADAPTER_FORMAT_VERSION
    assert dt.datetime.fromisoformat(payload["created"]).tzinfo is not None
    loaded = load_adapter_file(path)
    assert loaded.classes == record.classes
    assert loaded.sensor == record.sensor and loaded.backbone == record.backbone
    assert loaded.training == record.training and loaded.metrics == record.metrics
    for name, tensor in record.trainable_state.items():
        assert torch.equal(loaded.trainable_state[name], tensor)


def test_unloadable_payload_is_not_written_and_old_file_survives(tmp_path):
    path = tmp_path / "a.pt"
    save_adapter_file(make_record(), path)
    before = path.read_bytes()
    broken = make_record()
    broken.metrics = {"value": object()}
    with pytest.raises(ValueError):
        save_adapter_file(broken, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]


def test_other_files_and_newer_versions_are_refused_with_a_sentence(tmp_path):
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(HyperAdaptError) as caught:
        load_adapter_file(tmp_path / "other.pt")
    assert str(caught.value) == "The file other.pt is not a HyperAdapt adapter file."
    payload = make_record().to_payload()
    payload["format_version"] = ADAPTER_FORMAT_VERSION + 1
    torch.save(payload, tmp_path / "newer.pt")
    with pytest.raises(HyperAdaptError, match="update the plugin"):
        load_adapter_file(tmp_path / "newer.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(HyperAdaptError, match="could not be read"):
        load_adapter_file(tmp_path / "junk.pt")
    with pytest.raises(HyperAdaptError, match="does not exist"):
        load_adapter_file(tmp_path / "none.pt")


def test_the_spectral_classifier_travels_in_the_file_and_a_damaged_one_is_a_sentence(tmp_path):
    import numpy as np

    from hyperadapt.models.learning.spectral_kernel import fit_spectral_kernel

    rng = np.random.default_rng(0)
    spectra = np.concatenate([rng.normal(0, 1, (6, 224)), rng.normal(2, 1, (6, 224)),
                              rng.normal(4, 1, (6, 224))]).astype(np.float32)
    labels = np.repeat([0, 1, 2], 6)
    kernel = fit_spectral_kernel(spectra, labels, np.arange(18), 3, range(224), weight=0.5)
    record = make_record()
    # An adapter without one (older files, or weight 0) classifies with the network alone.
    assert record.spectral_kernel is None
    record.spectral = kernel.to_state()
    save_adapter_file(record, tmp_path / "a.pt")
    loaded = load_adapter_file(tmp_path / "a.pt").spectral_kernel
    assert loaded.weight == 0.5 and loaded.band_indices == list(range(224))
    assert np.array_equal(loaded.probabilities(spectra).argmax(axis=1),
                          kernel.probabilities(spectra).argmax(axis=1))
    payload = record.to_payload()
    payload["spectral_kernel"]["coefficients"] = torch.zeros(5, 3)
    torch.save(payload, tmp_path / "damaged.pt")
    with pytest.raises(HyperAdaptError, match="spectral classifier stored in the adapter file is "
                                              "damaged"):
        load_adapter_file(tmp_path / "damaged.pt").spectral_kernel


def test_band_count_and_wavelength_mismatches_are_one_sentence():
    record = make_record()
    assert compatibility_problem(record, raster_info()) is None
    assert compatibility_problem(record, raster_info(wavelengths=None)) is None
    with pytest.raises(HyperAdaptError) as caught:
        check_compatible(record, raster_info(band_count=200, wavelengths=ENMAP_WAVES[:200]))
    assert str(caught.value) == "This adapter was trained on 224 bands, but the raster has 200."
    shifted = [w + 12.0 for w in ENMAP_WAVES]
    assert compatibility_problem(record, raster_info(wavelengths=shifted)) == (
        "This adapter was trained on bands at other wavelengths than the raster's (up to 12 nm "
        "apart).")


def test_a_different_backbone_is_refused():
    official = BackboneIdentity.from_dict(OFFICIAL)
    other = BackboneIdentity.official("SpectralGPT+.pth", "cd" * 32)
    assert make_record().weights_identity == official
    assert official.mismatch(BackboneIdentity.from_dict(dict(OFFICIAL))) is None
    assert official.mismatch(other) == (
        "This adapter was trained on the weights SpectralGPT+.pth (sha256 abababababab…), but the "
        "given weights file SpectralGPT+.pth has sha256 cdcdcdcdcdcd….")
    random = BackboneIdentity.random_start(0, "f")
    assert random.mismatch(official).startswith(
        "This adapter was trained on a random start (seed 0), not pretrained weights, but")
    assert random.mismatch(BackboneIdentity.random_start(0, "g")).startswith(
        "The random-start backbone this adapter was trained on could not be rebuilt")
    with pytest.raises(HyperAdaptError, match="sha256 cdcdcdcdcdcd"):
        check_compatible(make_record(), raster_info(), backbone_identity=other)


def test_backbone_identity_reads_and_writes_the_dicts_adapter_files_hold():
    file_identity = {"kind": "backbone-file", "name": "enmap.pt", "id": "12" * 32,
                     "sensor": "EnMAP", "path": "/data/enmap.pt"}
    random = {"kind": "random", "seed": 3, "fingerprint": "ef" * 32, "random_start": True}
    for recorded in (OFFICIAL, file_identity, random):
        assert BackboneIdentity.from_dict(recorded).to_dict() == recorded
    assert BackboneIdentity.from_dict(file_identity).key == "12" * 32
    assert BackboneIdentity.from_dict(random).is_random_start
    assert not BackboneIdentity.from_dict(OFFICIAL).is_random_start
    assert BackboneIdentity.from_dict({}).kind == ""


def test_library_lists_fitting_adapters_first_and_copies_and_removes(tmp_path, library_dir):
    assert library_root() == library_dir
    enmap = tmp_path / "enmap.pt"
    aviris = tmp_path / "aviris.pt"
    save_adapter_file(make_record(name="zz enmap"), enmap)
    save_adapter_file(make_record(name="aa aviris", band_count=200, wavelengths=None,
                                  sensor="AVIRIS"), aviris)
    first = add_to_library(enmap)
    second = add_to_library(aviris)
    assert first == library_dir / "EnMAP" / "zz_enmap.pt"
    assert second == library_adapter_path("AVIRIS", "aa aviris")
    (library_dir / "EnMAP" / "broken.pt").write_bytes(b"not torch")
    entries = list_adapters(raster_info())
    assert [(e.name, e.fits) for e in entries] == [("zz enmap", True), ("aa aviris", False)]
    assert entries[1].problem == "This adapter was trained on 200 bands, but the raster has 224."
    assert entries[0].classes[0] == {"value": 1, "name": "roof", "color": [255, 0, 0]}
    assert [e.name for e in list_adapters(sensor="AVIRIS")] == ["aa aviris"]
    assert list_adapters()[0].fits is None
    with pytest.raises(HyperAdaptError, match="already holds an adapter named 'zz_enmap'"):
        add_to_library(enmap)
    remove_from_library(first)
    assert not first.exists()
    with pytest.raises(HyperAdaptError, match="not in the adapter library"):
        remove_from_library(enmap)
