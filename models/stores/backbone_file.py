"""Backbone files: a SpectralGPT encoder pretrained on a sensor's own scenes (pretrain_backbone in
models.jobs.pretraining), with the band adaptation it was pretrained after, its window and input
sizes and the sensor, so that fine-tuning reuses all of them unchanged.

A backbone file holds tensors and plain values only and is read with ``weights_only`` loading; its
id is the fingerprint of the encoder's weights, checked on every read. A sensor's backbones go to
the adapter library by default, under ``backbones/<sensor>/``.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..data.bands import BandAdaptation
from ..errors import HyperAdaptError
from ..learning.seeding import seeded
from ..network.spectralgpt import SpectralGPT, build_backbone
from ..network.identity import BACKBONE_FILE, BackboneIdentity
from .adapter_file import (atomic_torch_save, load_weights_only, now_iso, state_fingerprint,
                           to_plain)
from .library import library_root, safe_name

BACKBONE_FORMAT = "hyperadapt-backbone"
BACKBONE_VERSION = 1
BACKBONE_SUFFIX = ".pt"


# -- library --------------------------------------------------------------------------------------
def backbone_library_dir(sensor: str) -> Path:
    """Folder of a sensor's backbones in the adapter library: ``<library root>/backbones/<sensor>``."""
    return library_root() / "backbones" / safe_name(sensor, "unknown-sensor")


def default_backbone_path(sensor: str, preset: str = "tiny") -> Path:
    """Where a sensor's pretrained backbone goes by default: ``backbones/<sensor>/<preset>.pt``."""
    return backbone_library_dir(sensor) / f"{preset}{BACKBONE_SUFFIX}"


# -- backbone files -------------------------------------------------------------------------------
def _load_weights_only(path: Path, what: str) -> dict:
    payload = load_weights_only(
        path, missing=f"The {what} {path} does not exist.",
        unreadable=f"The file {path.name} could not be read as a {what}; it may be incomplete, "
                   f"damaged or of another kind.")
    if not isinstance(payload, dict):
        raise HyperAdaptError(f"The file {path.name} is not a {what}.")
    return payload


def is_backbone_file(path) -> bool:
    """True when ``path`` is a HyperAdapt backbone file (not an official checkpoint)."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return isinstance(payload, dict) and payload.get("format") == BACKBONE_FORMAT


def read_backbone_file(path) -> dict:
    """The checked contents of a backbone file (weights_only loading; the id is verified)."""
    path = Path(path)
    payload = _load_weights_only(path, "HyperAdapt backbone file")
    if payload.get("format") != BACKBONE_FORMAT:
        raise HyperAdaptError(f"The file {path.name} is not a HyperAdapt backbone file.")
    if int(payload.get("version", 0)) > BACKBONE_VERSION:
        raise HyperAdaptError(f"The backbone file {path.name} was written by a newer HyperAdapt "
                              f"(format version {payload.get('version')}); update the plugin.")
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HyperAdaptError(f"The backbone file {path.name} holds no encoder weights.")
    if state_fingerprint(state) != payload.get("id"):
        raise HyperAdaptError(f"The backbone file {path.name} is damaged: its weights do not "
                              f"match its recorded id.")
    return payload


def load_backbone_file(path) -> tuple[SpectralGPT, BandAdaptation, dict]:
    """The encoder, its band adaptation and the file's description (everything but the weights).

    The description holds "id", "config", "window_size", "input_size", "sensor", "pretraining",
    "created", "path", "name" and "kind": "backbone-file".
    """
    return backbone_from_payload(read_backbone_file(path), path)


def backbone_from_payload(payload: dict, path) -> tuple[SpectralGPT, BandAdaptation, dict]:
    """load_backbone_file for contents read before (read_backbone_file), so that a job reads and
    checks a backbone file once however many models it builds from it."""
    path = Path(path)
    model = seeded(0, lambda: build_backbone(dict(payload["config"])))
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as error:
        raise HyperAdaptError(f"The backbone file {path.name} does not match its own "
                              f"configuration.") from error
    model.eval()
    adaptation = BandAdaptation.from_state(payload["band_adaptation"])
    info = {key: value for key, value in payload.items()
            if key not in ("state_dict", "band_adaptation")}
    info.update({"path": str(path), "name": path.name, "kind": BACKBONE_FILE})
    return model, adaptation, info


def backbone_identity(info: dict, path=None) -> BackboneIdentity:
    """The identity of a backbone file from its contents (``info``: backbone_from_payload's, or the
    payload with its file's ``name``)."""
    return BackboneIdentity.backbone_file(str(info.get("name") or ""), str(info["id"]),
                                          (info.get("sensor") or {}).get("name"), path)


def save_backbone_file(path, *, model: SpectralGPT, band_adaptation: BandAdaptation,
                       window_size: int, input_size: int, sensor: dict,
                       pretraining: dict) -> tuple[str, int]:
    """Write a backbone file atomically; returns (id, size in bytes)."""
    state = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()
             if not name.startswith("head.")}
    backbone_id = state_fingerprint(state)
    config = {**model.config, "num_classes": 0}
    payload = {"format": BACKBONE_FORMAT, "version": BACKBONE_VERSION, "id": backbone_id,
               "config": config, "state_dict": state,
               "band_adaptation": band_adaptation.to_state(), "window_size": int(window_size),
               "input_size": int(input_size), "sensor": to_plain(sensor),
               "pretraining": to_plain(pretraining),
               "created": now_iso()}
    size = atomic_torch_save(payload, Path(path))
    return backbone_id, size
