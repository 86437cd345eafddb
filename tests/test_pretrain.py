"""Self-supervised pretraining of the backbone on a sensor's own scenes (models/jobs/pretraining.py,
models/stores/backbone_file.py, models/data/scene_pixels.py, models/network/mae.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from osgeo import gdal, ogr, osr

from engine_data import spectralgpt_small
from hyperadapt.models import options
from hyperadapt.models.errors import HyperAdaptError, JobCancelled
from hyperadapt.models.jobs.pretraining import PretrainSettings, pretrain_backbone, resume_path_for
from hyperadapt.models.network.mae import MaskedAutoencoder, patchify, random_masking, unpatchify
from hyperadapt.models.stores.backbone_file import (BACKBONE_FORMAT, load_backbone_file,
                                                    save_backbone_file)


NUM_BANDS = 24
SIZE = 40
NODATA = -9999.0
MICRO_BACKBONE = {"embed_dim": 32, "depth": 1, "num_heads": 2}
MICRO_DECODER = {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}


def write_scene(path, *, bands: int = NUM_BANDS, size: int = SIZE, seed: int = 0) -> str:
    """A GeoTIFF of smoothly varying mixtures of four spectra, with a nodata strip along one edge."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    spectra = np.cumsum(rng.random((4, bands)), axis=1) / bands
    weights = np.exp(2 * np.stack([np.sin(6 * xx + k) + np.cos(5 * k * yy + 1) for k in range(4)]))
    weights /= weights.sum(axis=0)
    cube = np.einsum("khw,kb->bhw", weights, spectra)
    cube += 0.01 * rng.standard_normal(cube.shape)
    cube[:, :, :3] = NODATA
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), size, size, bands, gdal.GDT_Float32)
    dataset.SetGeoTransform((500000.0, 30.0, 0.0, 4000000.0, 0.0, -30.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    dataset.SetProjection(srs.ExportToWkt())
    for index in range(bands):
        band = dataset.GetRasterBand(index + 1)
        band.WriteArray(cube[index].astype(np.float32))
        band.SetNoDataValue(NODATA)
    dataset = None
    return str(path)


def micro_settings(**overrides) -> PretrainSettings:
    values = {"epochs": 4, "samples_per_epoch": 256, "batch_size": 32, "device": "cpu",
              "backbone_overrides": MICRO_BACKBONE, "decoder_overrides": MICRO_DECODER}
    return PretrainSettings(**{**values, **overrides})


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("scene") / "scene.tif")


@pytest.fixture(scope="module")
def pretrained(scene, tmp_path_factory):
    """One micro backbone pretrained for 8 epochs on the scene, shared by the tests that read it."""
    path = tmp_path_factory.mktemp("backbones") / "micro.pt"
    messages = []
    result = pretrain_backbone([scene], path, settings=micro_settings(epochs=8), sensor="Synthetic",
                               progress=lambda fraction, message: messages.append((fraction, message)))
    return result, messages


# -- masking and the autoencoder ------------------------------------------------------------------
def test_random_masking_hides_the_given_share_and_restores_token_order():
    generator = torch.Generator().manual_seed(0)
    ids_keep, mask, ids_restore = random_masking(5, 16, 0.75, generator=generator)
    assert ids_keep.shape == (5, 4)
    assert mask.sum(dim=1).tolist() == [12] * 5
    assert not torch.gather(mask, 1, ids_keep).any()
    order = torch.cat([ids_keep, torch.nonzero(mask)[:, 1].view(5, 12)], dim=1)
    assert torch.equal(torch.gather(order, 1, ids_restore), torch.arange(16).expand(5, 16))


def test_encoder_gets_only_the_visible_tokens_and_never_the_masked_pixels():
    torch.manual_seed(0)
    model = MaskedAutoencoder(encoder=spectralgpt_small(img_size=16), **MICRO_DECODER).eval()
    x = torch.rand(3, 12, 16, 16)
    ids_keep, mask, _ = random_masking(3, model.num_tokens, 0.75,
                                       generator=torch.Generator().manual_seed(1))
    seen = []
    hook = model.encoder.blocks[0].register_forward_pre_hook(
        lambda module, args: seen.append(tuple(args[0].shape)))
    try:
        with torch.no_grad():
            reference = model.forward_encoder(x, ids_keep)
            tokens = patchify(x, tubelet_bands=3, patch_size=8)
            tokens[mask] = torch.rand_like(tokens[mask]) * 100
            changed_masked = unpatchify(tokens, tubelet_bands=3, patch_size=8,
                                        num_spectral_groups=4, grid_size=2)
            after_masked_change = model.forward_encoder(changed_masked, ids_keep)
            tokens = patchify(x, tubelet_bands=3, patch_size=8)
            tokens[0, ids_keep[0, 0]] += 1.0
            changed_visible = unpatchify(tokens, tubelet_bands=3, patch_size=8,
                                         num_spectral_groups=4, grid_size=2)
            after_visible_change = model.forward_encoder(changed_visible, ids_keep)
    finally:
        hook.remove()
    assert seen == [(3, 4, 64)] * 3
    assert torch.equal(reference, after_masked_change)
    assert not torch.allclose(reference[0], after_visible_change[0])


def test_loss_counts_only_the_masked_tubelets():
    torch.manual_seed(0)
    model = MaskedAutoencoder(encoder=spectralgpt_small(img_size=16), **MICRO_DECODER)
    x = torch.rand(2, 12, 16, 16)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, :5] = True
    pred = model.target_tokens(x).clone()
    assert model.reconstruction_loss(x, pred, mask).item() == 0.0
    pred[:, 5:] += 3.0           # errors on visible tokens cost nothing
    assert model.reconstruction_loss(x, pred, mask).item() == 0.0
    pred[:, 0] += 1.0
    assert model.reconstruction_loss(x, pred, mask).item() == pytest.approx(1.0 / 5)
    model.spectral_loss_weight = 1.0
    assert model.reconstruction_loss(x, pred, mask).item() > 1.0 / 5


# -- pretraining on a raster ----------------------------------------------------------------------
def test_masked_loss_decreases_on_a_small_raster(pretrained):
    result, messages = pretrained
    assert result.epochs == 8 and len(result.losses) == 8 and not result.resumed
    assert result.steps == 8 * 8
    assert result.mask_ratio == 0.75          # chosen for 16 tokens
    assert result.losses[-1] < 0.85 * result.losses[0]
    assert all(np.isfinite(result.losses))
    loss_lines = [m for _, m in messages if "masked loss" in m]
    assert loss_lines and loss_lines[-1].startswith("Epoch 8/8")
    fractions = [f for f, _ in messages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_backbone_file_holds_plain_types_and_loads_with_its_band_adaptation(pretrained, scene):
    result, _ = pretrained
    payload = torch.load(result.backbone_path, map_location="cpu", weights_only=True)
    assert payload["format"] == BACKBONE_FORMAT and payload["id"] == result.backbone_id
    # The pretraining defaults of models.options.
    assert payload["window_size"] == options.PRETRAIN_WINDOW_SIZE and payload["input_size"] == 16
    assert payload["sensor"]["name"] == "Synthetic" and payload["sensor"]["band_count"] == NUM_BANDS
    assert payload["pretraining"]["epochs"] == 8 and payload["pretraining"]["rasters"] == ["scene.tif"]
    assert not any(name.startswith(("decoder_", "mask_token", "head.")) for name in payload["state_dict"])

    model, adaptation, info = load_backbone_file(result.backbone_path)
    assert info["id"] == result.backbone_id and info["kind"] == "backbone-file"
    assert model.config == {**payload["config"]} and model.img_size == 16
    assert adaptation.method == options.PRETRAIN_BAND_ADAPTATION
    assert adaptation.num_inputs == NUM_BANDS
    pixels = np.random.default_rng(0).random((5, NUM_BANDS)).astype(np.float32)
    assert adaptation.apply_pixels(pixels).shape == (5, 12)


def test_saved_backbone_gives_the_same_outputs_after_loading(tmp_path, pretrained):
    _, adaptation, _ = load_backbone_file(pretrained[0].backbone_path)
    torch.manual_seed(3)
    model = spectralgpt_small(img_size=16).eval()
    path = tmp_path / "round.pt"
    backbone_id, size = save_backbone_file(path, model=model, band_adaptation=adaptation,
                                           window_size=9, input_size=16, sensor={"name": "X"},
                                           pretraining={"epochs": 0})
    loaded, loaded_adaptation, info = load_backbone_file(path)
    x = torch.rand(2, 12, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.forward_features(x), loaded.forward_features(x))
    assert info["id"] == backbone_id and size == path.stat().st_size
    assert loaded_adaptation.to_state() == adaptation.to_state()


def test_damaged_backbone_file_is_refused_with_one_sentence(tmp_path, pretrained):
    payload = torch.load(pretrained[0].backbone_path, map_location="cpu", weights_only=True)
    payload["state_dict"]["blocks.0.attn.q.weight"].add_(0.01)
    path = tmp_path / "damaged.pt"
    torch.save(payload, path)
    with pytest.raises(HyperAdaptError, match="damaged"):
        load_backbone_file(path)


def test_cancel_keeps_a_resumable_state_and_resume_counts_epochs_on(scene, tmp_path):
    path = tmp_path / "backbones" / "resumable.pt"
    steps_done = []

    def count_steps(fraction, message):
        if "masked loss" in message:
            steps_done.append(fraction)

    def cancel_in_second_epoch():
        return len(steps_done) >= 8 + 4          # before the 5th batch of epoch 2

    with pytest.raises(JobCancelled, match="resumable.pt.resume"):
        pretrain_backbone([scene], path, settings=micro_settings(epochs=3), progress=count_steps,
                          cancel=cancel_in_second_epoch)
    state_path = resume_path_for(path)
    assert not path.exists() and state_path.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ["resumable.pt.resume"]
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    assert state["counters"]["epoch"] == 1 and state["counters"]["step_in_epoch"] == 4
    assert state["counters"]["global_step"] == 12 and len(state["losses"]) == 1

    result = pretrain_backbone([scene], path, settings=micro_settings(epochs=3), resume=True)
    assert result.resumed and result.epochs == 3 and len(result.losses) == 3
    assert result.steps == 3 * 8                 # the 12 steps before the cancel are not redone
    assert path.exists() and not state_path.exists()

    uninterrupted = pretrain_backbone([scene], tmp_path / "straight.pt",
                                      settings=micro_settings(epochs=3))
    # Sampling and masking are seeded per step, so the resumed run sees the same batches.
    assert result.losses[0] == pytest.approx(uninterrupted.losses[0], rel=1e-5)
    assert result.losses[-1] == pytest.approx(uninterrupted.losses[-1], rel=1e-3)


def test_out_of_gpu_memory_stops_pretraining_with_a_sentence_and_no_file(scene, tmp_path,
                                                                         monkeypatch):
    def out_of_memory(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(MaskedAutoencoder, "forward", out_of_memory)
    path = tmp_path / "backbones" / "big.pt"
    with pytest.raises(HyperAdaptError, match="ran out of memory during pretraining; lower the "
                                              "batch size"):
        pretrain_backbone([scene], path, settings=micro_settings(epochs=1))
    assert not path.exists() and not resume_path_for(path).exists()


def write_training_polygons(path) -> str:
    """Two classes, two 3 x 3-pixel squares each, over the scene (EPSG:32633, 30 m pixels)."""
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = source.CreateLayer("training", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("class_name", ogr.OFTString))
    for name, (col, row) in (("meadow", (8, 5)), ("meadow", (30, 6)), ("field", (8, 30)),
                             ("field", (30, 32))):
        x0, y0 = 500000.0 + 30 * col, 4000000.0 - 30 * row
        ring = f"{x0} {y0}, {x0 + 90} {y0}, {x0 + 90} {y0 - 90}, {x0} {y0 - 90}, {x0} {y0}"
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("class_name", name)
        feature.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON(({ring}))"))
        layer.CreateFeature(feature)
    source = None
    return str(path)


def test_adapter_trained_on_one_backbone_is_refused_on_another(scene, pretrained, tmp_path):
    from hyperadapt.models.jobs import FineTuneSettings, classify, fine_tune

    backbone_x = pretrained[0].backbone_path
    backbone_y = pretrain_backbone([scene], tmp_path / "other_backbone.pt",
                                   settings=micro_settings(epochs=1, seed=1)).backbone_path
    training = write_training_polygons(tmp_path / "training.gpkg")
    adapter = tmp_path / "adapter.pt"
    result = fine_tune(scene, training, "class_name", str(adapter),
                       settings=FineTuneSettings(weights=backbone_x, epochs=2, device="cpu"))
    assert result.backbone.key == pretrained[0].backbone_id

    classify(scene, str(adapter), str(tmp_path / "same.tif"), weights=backbone_x, device="cpu")
    assert (tmp_path / "same.tif").exists()
    refused = tmp_path / "refused.tif"
    with pytest.raises(HyperAdaptError, match="micro.pt") as error:
        classify(scene, str(adapter), str(refused), weights=backbone_y, device="cpu")
    assert "other_backbone.pt" in str(error.value) or "id" in str(error.value)
    assert str(error.value).count(". ") == 0          # one sentence
    assert not refused.exists()


def test_continuing_from_an_official_checkpoint_loads_its_encoder_and_decoder(scene, tmp_path):
    """A checkpoint laid out like SpectralGPT+.pth (model/encoder + decoder keys, larger grid)."""
    torch.manual_seed(5)
    source = MaskedAutoencoder(encoder=spectralgpt_small(img_size=32, **MICRO_BACKBONE),
                               **MICRO_DECODER)
    checkpoint = tmp_path / "official.pth"
    encoder_state = {name: tensor for name, tensor in source.encoder.state_dict().items()
                     if not name.startswith("head.")}
    torch.save({"model": {**encoder_state, **source.decoder_state_dict()}, "epoch": 199}, checkpoint)
    settings = micro_settings(preset="base", weights=str(checkpoint), epochs=1,
                              samples_per_epoch=32, learning_rate=1e-12)
    result = pretrain_backbone([scene], tmp_path / "continued.pt", settings=settings)
    model, _, info = load_backbone_file(result.backbone_path)
    continued = info["pretraining"]["continued_from"]
    assert continued["name"] == "official.pth" and continued["decoder_loaded"] is True
    # A vanishing learning rate leaves the loaded weights where they were.
    assert torch.allclose(model.blocks[0].attn.q.weight, source.encoder.blocks[0].attn.q.weight,
                          atol=1e-6)
    assert model.pos_embed_spatial.shape == (1, 4, 32)   # 16 x 16 input: the grid was resized


def test_rasters_of_two_sensors_or_no_budget_are_refused(scene, tmp_path):
    other = write_scene(tmp_path / "other.tif", bands=NUM_BANDS + 2)
    with pytest.raises(HyperAdaptError, match="one sensor"):
        pretrain_backbone([scene, other], tmp_path / "x.pt", settings=micro_settings())
    with pytest.raises(HyperAdaptError, match="budget"):
        pretrain_backbone([scene], tmp_path / "x.pt", settings=micro_settings(epochs=None))
    with pytest.raises(HyperAdaptError, match="base"):
        PretrainSettings(preset="tiny", weights="SpectralGPT+.pth")
    assert not (tmp_path / "x.pt").exists()


# -- the Processing algorithm ---------------------------------------------------------------------
def test_processing_pretrain_writes_a_backbone_into_the_library(qgis_processing, iface, scene,
                                                                 library_dir):
    import processing
    from qgis.core import QgsProcessingFeedback, QgsRasterLayer

    import hyperadapt

    plugin = hyperadapt.classFactory(iface)
    plugin.initProcessing()
    try:
        layer = QgsRasterLayer(scene, "scene")
        assert layer.isValid()

        class Feedback(QgsProcessingFeedback):
            def __init__(self):
                super().__init__()
                self.lines = []

            def pushInfo(self, info):  # noqa: N802 (QGIS's name)
                self.lines.append(info)
                super().pushInfo(info)

        feedback = Feedback()
        result = processing.run("hyperadapt:pretrain", {
            "RASTERS": [layer], "SENSOR": "Synthetic sensor", "PRESET": 0, "EPOCHS": 0,
            "TIME_BUDGET": 0.05, "BATCH_SIZE": 16}, feedback=feedback)
    finally:
        plugin.unload()
    expected = library_dir / "backbones" / "Synthetic_sensor" / "tiny.pt"
    assert result["OUTPUT"] == str(expected) and expected.exists()
    assert result["EPOCHS_RUN"] >= 1 and np.isfinite(result["FINAL_LOSS"])
    _, _, info = load_backbone_file(expected)
    assert info["id"] == result["BACKBONE_ID"] and info["config"]["embed_dim"] == 128
    assert any("masked loss" in line for line in feedback.lines)
