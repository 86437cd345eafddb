"""Loading the official SpectralGPT weights (``SpectralGPT+.pth``, ``SpectralGPT.pth``) into the encoder.

The official files (Hong et al., IEEE TPAMI 2024; Zenodo record 8412455) are masked-autoencoder
training checkpoints: a dict with ``model`` (encoder + decoder tensors), ``optimizer``, ``epoch``,
``scaler`` and ``args`` (an ``argparse.Namespace``). Only the encoder is kept; its layout is checked
against the model it goes into, and the positional embeddings are resized to the model's input
size and spectral group count.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

from ..errors import HyperAdaptError
from .identity import BackboneIdentity
from .spectralgpt import SpectralGPT

log = logging.getLogger(__name__)

SPATIAL_POS_KEY = "pos_embed_spatial"
SPECTRAL_POS_KEY = "pos_embed_temporal"
# Masked-autoencoder parts that classification never uses; a fine-tuned file may carry a head.
DROPPED_PREFIXES = ("decoder_", "mask_token", "head.")
# Only the head is absent from a pretraining checkpoint; adapters are applied after loading.
MODEL_ONLY_PREFIXES = ("head.",)


def resample_pos_embed(pos: torch.Tensor, new_len: int) -> torch.Tensor:
    """Resize a square-grid spatial embedding (1, L, D) to (1, new_len, D), bicubic, in float32."""
    old_len = pos.shape[1]
    if old_len == new_len:
        return pos
    old_side, new_side = math.isqrt(old_len), math.isqrt(new_len)
    if old_side ** 2 != old_len or new_side ** 2 != new_len:
        raise HyperAdaptError(f"Spatial positional embeddings can only be resized between square "
                              f"grids, not from {old_len} to {new_len} tokens.")
    grid = rearrange(pos.float(), "1 (h w) d -> 1 d h w", h=old_side)
    grid = F.interpolate(grid, size=(new_side, new_side), mode="bicubic", align_corners=False)
    return rearrange(grid, "1 d h w -> 1 (h w) d").to(pos.dtype)


def resample_spectral_pos_embed(pos: torch.Tensor, new_len: int) -> torch.Tensor:
    """Resize a spectral-group embedding (1, T, D) to (1, new_len, D), linear, in float32."""
    if pos.shape[1] == new_len:
        return pos
    line = rearrange(pos.float(), "1 t d -> 1 d t")
    line = F.interpolate(line, size=new_len, mode="linear", align_corners=False)
    return rearrange(line, "1 d t -> 1 t d").to(pos.dtype)


def _unwrap_state_dict(checkpoint, source: str) -> dict:
    if not isinstance(checkpoint, dict):
        raise HyperAdaptError(f"{source} does not hold a dictionary of tensors, so it is not a "
                              f"SpectralGPT checkpoint.")
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, dict) or not state or not all(
            isinstance(value, torch.Tensor) for value in state.values()):
        raise HyperAdaptError(f"{source} has no 'model' dictionary of tensors, so it is not a "
                              f"SpectralGPT checkpoint.")
    return state


def _shape(shape) -> str:
    return "x".join(str(size) for size in shape)


def expected_encoder_layout(model: SpectralGPT) -> dict[str, tuple[int, ...]]:
    """Names and shapes the model's encoder takes from a checkpoint (everything but the head)."""
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()
            if not name.startswith(MODEL_ONLY_PREFIXES)}


def filter_checkpoint(checkpoint: dict, model: SpectralGPT, *, file_name: str | None = None) -> dict:
    """The encoder tensors of a SpectralGPT checkpoint, checked and fitted to ``model``.

    Unwraps ``model``, drops decoder keys, ``mask_token`` and any head, verifies every remaining
    name and shape against the model's encoder (a HyperAdaptError names the first mismatch) and
    resizes the positional embeddings to the model's spatial grid and spectral group count.
    ``file_name`` only names the file in error messages.
    """
    source = f"The weights file {file_name}" if file_name else "The weights file"
    state = _unwrap_state_dict(checkpoint, source)
    kept = {name: tensor for name, tensor in state.items() if not name.startswith(DROPPED_PREFIXES)}
    expected = expected_encoder_layout(model)
    unexpected = [name for name in kept if name not in expected]
    found_instead = f" (it has '{unexpected[0]}' instead)" if unexpected else ""
    for name, shape in expected.items():
        if name not in kept:
            raise HyperAdaptError(f"{source} is not a SpectralGPT encoder checkpoint: "
                                  f"'{name}' is missing{found_instead}.")
        got = tuple(kept[name].shape)
        if name in (SPATIAL_POS_KEY, SPECTRAL_POS_KEY):
            fits = len(got) == 3 and got[0] == 1 and got[2] == shape[2]
            if name == SPATIAL_POS_KEY:
                fits = fits and math.isqrt(got[1]) ** 2 == got[1]
        else:
            fits = got == shape
        if not fits:
            raise HyperAdaptError(f"{source} does not fit this SpectralGPT model: '{name}' "
                                  f"has shape {_shape(got)} where {_shape(shape)} is expected.")
    if unexpected:
        raise HyperAdaptError(f"{source} is not a SpectralGPT encoder checkpoint of this "
                              f"size: it has an unexpected tensor '{unexpected[0]}'.")
    filtered = {name: kept[name] for name in expected}
    for name, resize in ((SPATIAL_POS_KEY, resample_pos_embed),
                         (SPECTRAL_POS_KEY, resample_spectral_pos_embed)):
        old_len, new_len = filtered[name].shape[1], expected[name][1]
        if old_len != new_len:
            log.info("Resizing %s from %d to %d tokens.", name, old_len, new_len)
            filtered[name] = resize(filtered[name], new_len)
    return filtered


def load_checkpoint_file(path) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``, allowing ``argparse.Namespace``.

    The official files pickle their training arguments as a Namespace; allow-listing that one
    class keeps the safe loader, which refuses anything else that could run code.
    """
    path = Path(path)
    if not path.is_file():
        raise HyperAdaptError(f"The weights file {path} does not exist.")
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            # Memory-mapping leaves the optimizer state of the official files on disk.
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:
            try:
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:
                log.info("Could not read %s: %s", path, error)
                raise HyperAdaptError(f"The file {path.name} could not be read as a PyTorch "
                                      f"checkpoint; it may be incomplete, damaged or of another "
                                      f"kind.") from error
    if not isinstance(checkpoint, dict):
        raise HyperAdaptError(f"The file {path.name} holds no dictionary of tensors, so it is not "
                              f"a SpectralGPT checkpoint.")
    return checkpoint


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_pretrained(model: SpectralGPT, path) -> BackboneIdentity:
    """Load an official SpectralGPT checkpoint's encoder into ``model`` (before any adapter).

    Returns the identity of the weights (their file's name and sha256), which adapter files record
    so they are only applied on the backbone they were trained on.
    """
    if any(".base_layer." in name for name in model.state_dict()):
        raise ValueError("Pretrained weights must be loaded before an adapter is applied.")
    path = Path(path)
    checkpoint = load_checkpoint_file(path)
    state = filter_checkpoint(checkpoint, model, file_name=path.name)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # filter_checkpoint already matched every encoder name, so only the head can be left out.
    assert not unexpected and all(name.startswith(MODEL_ONLY_PREFIXES) for name in missing)
    return BackboneIdentity.official(path.name, file_sha256(path), path)
