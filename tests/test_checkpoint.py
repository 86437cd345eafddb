"""Loading official SpectralGPT checkpoints: layout checks, safe unpickling, positional resizing.

The official files cannot be downloaded in tests, so a file with exactly their layout is built
from ../shared/spectralgpt/checkpoint_keys.json: all 271 tensors (encoder and decoder) at full
size with random values, plus optimizer, epoch, scaler and an argparse.Namespace of arguments.
"""
import argparse
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from engine_data import spectralgpt_small
from hyperadapt.models.errors import HyperAdaptError
from hyperadapt.models.network.adapters import AdapterConfig, apply_adapter
from hyperadapt.models.network.checkpoint import (filter_checkpoint, load_checkpoint_file,
                                                  load_pretrained, resample_pos_embed,
                                                  resample_spectral_pos_embed)
from hyperadapt.models.network.identity import BackboneIdentity
from hyperadapt.models.network.spectralgpt import spectralgpt_base

SHARED = Path(__file__).resolve().parents[2] / "shared"
LAYOUT = json.loads((SHARED / "spectralgpt" / "checkpoint_keys.json").read_text())




def official_state(generator, spatial_tokens=256):
    shapes = {**LAYOUT["encoder_keys"], **LAYOUT["decoder_key_shapes"]}
    shapes["pos_embed_spatial"] = [1, spatial_tokens, 768]
    shapes["decoder_pos_embed_spatial"] = [1, spatial_tokens, 512]
    return {name: torch.empty(shape).normal_(0.0, 0.02, generator=generator)
            for name, shape in shapes.items()}


def wrap_like_official(model_state):
    first = next(iter(model_state.values()))
    optimizer = {"state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros_like(first),
                               "exp_avg_sq": torch.zeros_like(first)}},
                 "param_groups": [{"lr": 1e-4, "weight_decay": 0.05, "params": [0]}]}
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
              "growth_interval": 2000, "_growth_tracker": 0}
    args = argparse.Namespace(model="mae_vit_base_patch8_128", batch_size=16, mask_ratio=0.9,
                              input_size=128, lr=None, data_path="/data/bigearthnet")
    return {"model": model_state, "optimizer": optimizer, "epoch": 199, "scaler": scaler,
            "args": args}


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    """A SpectralGPT+.pth with the official layout at full size (about 400 MB), built once."""
    generator = torch.Generator().manual_seed(0)
    state = official_state(generator)
    assert len(state) == LAYOUT["counts"]["total_keys"] == 271
    path = tmp_path_factory.mktemp("weights") / "SpectralGPT+.pth"
    torch.save(wrap_like_official(state), path)
    return path


@pytest.fixture(scope="module")
def official_checkpoint(official_file):
    return load_checkpoint_file(official_file)


def meta_model(**overrides):
    # Layout checks only need names and shapes, so no memory is spent on a ViT-B here.
    with torch.device("meta"):
        return spectralgpt_base(**overrides)


def test_official_layout_loads_into_vit_base(official_file, official_checkpoint):
    # Allocated without initialising: every encoder tensor is overwritten by the load, and the
    # head, which the load must leave alone, gets a real initialisation.
    model = meta_model().to_empty(device="cpu")
    model.reset_classifier(16)
    head_before = model.head.weight.detach().clone()
    info = load_pretrained(model, official_file)
    assert info == BackboneIdentity.official(
        "SpectralGPT+.pth", hashlib.sha256(official_file.read_bytes()).hexdigest(), official_file)
    weights = official_checkpoint["model"]
    state = model.state_dict()
    for name in LAYOUT["encoder_keys"]:
        assert torch.equal(state[name], weights[name]), name
    assert torch.equal(model.head.weight, head_before)
    assert isinstance(official_checkpoint["args"], argparse.Namespace)
    assert official_checkpoint["args"].input_size == 128
    assert official_checkpoint["epoch"] == 199


def test_positional_embeddings_are_resized_to_the_model_input(official_checkpoint):
    model = meta_model(img_size=32, in_bands=6)
    state = filter_checkpoint(official_checkpoint, model)
    assert set(state) == set(LAYOUT["encoder_keys"])
    weights = official_checkpoint["model"]
    assert state["pos_embed_spatial"].shape == (1, 16, 768)
    torch.testing.assert_close(state["pos_embed_spatial"],
                               resample_pos_embed(weights["pos_embed_spatial"], 16))
    assert state["pos_embed_temporal"].shape == (1, 2, 768)
    assert state["blocks.3.attn.v.weight"] is weights["blocks.3.attn.v.weight"]


def test_spectralgpt_96px_variant_loads_with_its_144_token_grid(official_checkpoint):
    weights = dict(official_checkpoint["model"])
    generator = torch.Generator().manual_seed(1)
    weights["pos_embed_spatial"] = torch.randn(1, 144, 768, generator=generator)
    weights["decoder_pos_embed_spatial"] = torch.randn(1, 144, 512, generator=generator)
    same = filter_checkpoint({"model": weights}, meta_model(img_size=96))
    assert same["pos_embed_spatial"] is weights["pos_embed_spatial"]
    resized = filter_checkpoint({"model": weights}, meta_model(img_size=128))
    assert resized["pos_embed_spatial"].shape == (1, 256, 768)


def test_fused_qkv_layout_is_refused_naming_the_first_mismatch(official_checkpoint):
    weights = dict(official_checkpoint["model"])
    for kind in ("weight", "bias"):
        parts = [weights.pop(f"blocks.0.attn.{p}.{kind}") for p in "qkv"]
        weights[f"blocks.0.attn.qkv.{kind}"] = torch.cat(parts)
    with pytest.raises(HyperAdaptError) as error:
        filter_checkpoint({"model": weights}, meta_model(), file_name="fused.pth")
    assert str(error.value) == ("The weights file fused.pth is not a SpectralGPT encoder "
                                "checkpoint: 'blocks.0.attn.q.weight' is missing (it has "
                                "'blocks.0.attn.qkv.weight' instead).")


def test_other_models_are_refused_naming_the_first_mismatch(official_checkpoint):
    large = meta_model(embed_dim=1024, num_heads=16).state_dict()
    with pytest.raises(HyperAdaptError, match=r"'pos_embed_spatial' has shape 1x256x1024 where "
                                              r"1x256x768 is expected"):
        filter_checkpoint({"model": large}, meta_model())
    deeper = dict(official_checkpoint["model"])
    deeper["blocks.12.norm1.weight"] = torch.ones(768)
    with pytest.raises(HyperAdaptError, match="unexpected tensor 'blocks.12.norm1.weight'"):
        filter_checkpoint({"model": deeper}, meta_model())
    narrow_mlp = dict(official_checkpoint["model"])
    narrow_mlp["blocks.5.mlp.fc1.weight"] = torch.zeros(1536, 768)
    with pytest.raises(HyperAdaptError, match=r"'blocks.5.mlp.fc1.weight' has shape 1536x768 "
                                              r"where 3072x768 is expected"):
        filter_checkpoint({"model": narrow_mlp}, meta_model())
    resnet = {"model": {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}}
    with pytest.raises(HyperAdaptError, match="'pos_embed_spatial' is missing .*'conv1.weight'"):
        filter_checkpoint(resnet, meta_model())
    with pytest.raises(HyperAdaptError, match="no 'model' dictionary of tensors"):
        filter_checkpoint({"state_dict": resnet["model"], "epoch": 3}, meta_model())


def test_a_fine_tuned_head_and_the_decoder_are_dropped(official_checkpoint):
    weights = dict(official_checkpoint["model"], **{"head.weight": torch.zeros(10, 768),
                                                     "head.bias": torch.zeros(10)})
    state = filter_checkpoint(weights, meta_model(num_classes=4))
    assert len(state) == LAYOUT["counts"]["encoder_keys"] == 198
    assert not any(name.startswith(("decoder", "mask_token", "head")) for name in state)


def test_truncated_file_is_refused(official_file, tmp_path):
    truncated = tmp_path / "SpectralGPT+.pth"
    with open(official_file, "rb") as stream:
        truncated.write_bytes(stream.read(10_000_000))
    with pytest.raises(HyperAdaptError, match="could not be read as a PyTorch checkpoint"):
        load_checkpoint_file(truncated)
    model = spectralgpt_small()
    with pytest.raises(HyperAdaptError, match="SpectralGPT\\+.pth could not be read"):
        load_pretrained(model, truncated)


def test_missing_and_non_checkpoint_files_are_refused(tmp_path):
    with pytest.raises(HyperAdaptError, match="does not exist"):
        load_checkpoint_file(tmp_path / "nothing.pth")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    with pytest.raises(HyperAdaptError, match="could not be read"):
        load_checkpoint_file(text)
    tensor_only = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(HyperAdaptError, match="holds no dictionary"):
        load_checkpoint_file(tensor_only)


class Payload:
    """A class that is not on the allow-list; unpickling it must be refused."""


def test_pickled_code_other_than_namespace_is_refused(tmp_path):
    path = tmp_path / "payload.pth"
    torch.save({"model": {"norm.weight": torch.ones(2)}, "args": Payload()}, path)
    with pytest.raises(HyperAdaptError, match="could not be read"):
        load_checkpoint_file(path)


def test_wrong_file_for_load_pretrained_names_file_and_mismatch(tmp_path):
    small = spectralgpt_small()
    path = tmp_path / "tiny.pth"
    torch.save(wrap_like_official(small.state_dict()), path)
    loaded = spectralgpt_small()
    info = load_pretrained(loaded, path)
    assert info.name == "tiny.pth" and len(info.key) == 64
    with pytest.raises(HyperAdaptError, match="The weights file tiny.pth does not fit this "
                                              "SpectralGPT model: 'pos_embed_spatial' has "
                                              "shape 1x16x64 where 1x16x32"):
        load_pretrained(spectralgpt_small(embed_dim=32), path)


def test_pretrained_weights_go_in_before_the_adapter(tmp_path):
    model = spectralgpt_small()
    path = tmp_path / "tiny.pth"
    torch.save({"model": model.state_dict()}, path)
    apply_adapter(model, AdapterConfig())
    with pytest.raises(ValueError, match="before an adapter"):
        load_pretrained(model, path)


def test_resample_pos_embed_keeps_smooth_fields_and_dtype():
    rows, cols = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")
    ramp = torch.stack([torch.full_like(rows, 3.0), rows + cols], dim=-1).reshape(1, 144, 2)
    resized = resample_pos_embed(ramp, 256)
    assert resized.shape == (1, 256, 2)
    torch.testing.assert_close(resized[..., 0], torch.full((1, 256), 3.0))
    grid = resized[0, :, 1].reshape(16, 16)
    assert torch.all(grid[:, 1:] > grid[:, :-1]) and torch.all(grid[1:] > grid[:-1])
    half = resample_pos_embed(ramp.half(), 64)
    assert half.dtype == torch.float16 and half.shape == (1, 64, 2)
    assert resample_pos_embed(ramp, 144) is ramp
    with pytest.raises(HyperAdaptError, match="square grids"):
        resample_pos_embed(ramp, 150)


def test_resample_spectral_pos_embed_is_linear():
    pos = torch.tensor([0.0, 1.0, 2.0, 3.0]).reshape(1, 4, 1)
    two = resample_spectral_pos_embed(pos, 2)
    torch.testing.assert_close(two.flatten(), torch.tensor([0.5, 2.5]))
    eight = resample_spectral_pos_embed(pos, 8)
    assert eight.shape == (1, 8, 1)
    assert math.isclose(eight.mean().item(), 1.5, abs_tol=1e-6)
    assert resample_spectral_pos_embed(pos, 4) is pos
