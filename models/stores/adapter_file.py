"""The adapter file: everything needed to classify a new scene of the same sensor, in one small file.

A versioned dict saved with ``torch.save`` that holds only tensors, plain dicts, lists, strings
and numbers, so ``torch.load(..., weights_only=True)`` reads it without running pickled code:

- ``trainable_state``: the adapter tensors and the head
  (models.network.adapters.trainable_state_dict);
- ``adapter_config`` (AdapterConfig.to_dict), ``training`` (hyper-parameters, best epoch);
- ``band_adaptation`` (BandAdaptation.to_state), ``window_size``, ``input_size``;
- ``classes`` (value, name, colour), ``sensor`` (name, band count, wavelengths);
- ``backbone``: the backbone's ``config`` and which ``weights`` it started from (an official
  file's name and sha256, a backbone file's id, or a seeded random start);
- ``metrics`` (validation), ``created`` (ISO time), ``software`` versions;
- ``postprocess``: how classifying applies the model (``classify_mode``, tile or window, and
  ``tile_step``, the grid step in pixels; absent before it was a setting) and what
  it does after it (``segment_size`` of the segment vote, ``majority_size`` and ``sieve_pixels``
  of the clean-up); absent in older files, which classify window by window without them;
- ``spectral_kernel``: the kernel classifier on each pixel's spectrum, or its neighbourhood's
  mean spectrum, or both (``inputs``, ``context_size``; a kernel saved without them saw the
  spectrum), whose probabilities are mixed with the network's (models.learning.spectral_kernel);
  absent in older files and where its weight was 0, which classify with the network alone.

Files are written to a temporary name in the same folder and renamed, so a reader never sees half
a file.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import options
from ..data.raster import RasterInfo
from ..data.samples import ClassInfo
from ..errors import HyperAdaptError
from ..learning.spectral_kernel import SpectralKernel
from ..network.identity import BackboneIdentity
from .files import atomic_write

ADAPTER_FORMAT = "hyperadapt-adapter"
ADAPTER_FORMAT_VERSION = 1
ADAPTER_SUFFIX = ".pt"
# Centre wavelengths further apart than this belong to another sensor or product.
WAVELENGTH_TOLERANCE_NM = 5.0


def to_plain(value):
    """Turn numpy scalars/arrays and tuples into Python numbers and lists (safe for weights_only)."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (Path, str)):
        # str subclasses (torch.__version__ is one) would need their class to unpickle.
        return str(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def state_fingerprint(state: dict) -> str:
    """sha256 over tensor names, types, shapes and values: tells two sets of weights apart."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


@dataclass
class AdapterRecord:
    """The content of an adapter file."""

    name: str
    trainable_state: dict
    adapter_config: dict
    band_adaptation: dict
    window_size: int
    input_size: int
    classes: list[ClassInfo]
    sensor: dict
    backbone: dict
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    created: str = field(default_factory=now_iso)
    software: dict = field(default_factory=dict)
    postprocess: dict = field(default_factory=dict)
    spectral: dict = field(default_factory=dict)      # SpectralKernel.to_state(), or empty
    format_version: int = ADAPTER_FORMAT_VERSION

    @property
    def classify_mode(self) -> str:
        return str(self.postprocess.get("classify_mode") or options.LEGACY_CLASSIFY_MODE)

    @property
    def tile_step(self) -> int:
        """Tile mode's grid step in pixels: as recorded (a model trained in tile mode learned
        that grid), or in older files the engine's share of the window."""
        return int(self.postprocess.get("tile_step")
                   or options.classify_step("tile", self.window_size))

    def classify_step(self, mode: str | None = None) -> int:
        """Pixels between the windows the backbone sees in ``mode`` (default: the file's own)."""
        return self.tile_step if (mode or self.classify_mode) == "tile" else 1

    @property
    def segment_size(self) -> int:
        return int(self.postprocess.get("segment_size") or 0)

    @property
    def majority_size(self) -> int:
        return int(self.postprocess.get("majority_size") or 0)

    @property
    def sieve_pixels(self) -> int:
        return int(self.postprocess.get("sieve_pixels") or 0)

    @property
    def spectral_kernel(self) -> SpectralKernel | None:
        """The kernel classifier mixed into the map, or None (the network alone)."""
        if not self.spectral:
            return None
        try:
            return SpectralKernel.from_state(self.spectral)
        except (KeyError, TypeError, ValueError) as error:
            raise HyperAdaptError("The spectral classifier stored in the adapter file is "
                                  "damaged.") from error

    @property
    def band_count(self) -> int:
        return int(self.sensor.get("band_count", 0))

    @property
    def sensor_name(self) -> str:
        return str(self.sensor.get("name") or "unknown")

    @property
    def method(self) -> str:
        return str(self.adapter_config.get("method", ""))

    @property
    def weights_identity(self) -> BackboneIdentity:
        return BackboneIdentity.from_dict(self.backbone.get("weights"))

    def to_payload(self) -> dict:
        state = {str(k): v.detach().cpu().contiguous().clone()
                 for k, v in self.trainable_state.items()}
        return {"format": ADAPTER_FORMAT, "format_version": int(self.format_version),
                "name": str(self.name), "created": str(self.created),
                "trainable_state": state,
                "adapter_config": to_plain(self.adapter_config),
                "band_adaptation": to_plain(self.band_adaptation),
                "window_size": int(self.window_size), "input_size": int(self.input_size),
                "classes": [c.to_dict() for c in self.classes],
                "sensor": to_plain(self.sensor), "backbone": to_plain(self.backbone),
                "training": to_plain(self.training), "metrics": to_plain(self.metrics),
                "software": to_plain(self.software), "postprocess": to_plain(self.postprocess),
                "spectral_kernel": {str(k): v if isinstance(v, torch.Tensor) else to_plain(v)
                                    for k, v in self.spectral.items()}}

    @classmethod
    def from_payload(cls, payload: dict, source: str = "The adapter file") -> AdapterRecord:
        if not isinstance(payload, dict) or payload.get("format") != ADAPTER_FORMAT:
            raise HyperAdaptError(f"{source} is not a HyperAdapt adapter file.")
        version = payload.get("format_version")
        if not isinstance(version, int) or version > ADAPTER_FORMAT_VERSION:
            raise HyperAdaptError(f"{source} has format version {version}, but this HyperAdapt "
                                  f"reads versions up to {ADAPTER_FORMAT_VERSION}; update the "
                                  f"plugin.")
        try:
            return cls(name=str(payload["name"]), trainable_state=dict(payload["trainable_state"]),
                       adapter_config=dict(payload["adapter_config"]),
                       band_adaptation=dict(payload["band_adaptation"]),
                       window_size=int(payload["window_size"]),
                       input_size=int(payload["input_size"]),
                       classes=[ClassInfo.from_dict(c) for c in payload["classes"]],
                       sensor=dict(payload["sensor"]), backbone=dict(payload["backbone"]),
                       training=dict(payload.get("training") or {}),
                       metrics=dict(payload.get("metrics") or {}),
                       created=str(payload.get("created", "")),
                       software=dict(payload.get("software") or {}),
                       postprocess=dict(payload.get("postprocess") or {}),
                       spectral=dict(payload.get("spectral_kernel") or {}),
                       format_version=version)
        except (KeyError, TypeError, ValueError) as error:
            raise HyperAdaptError(f"{source} is incomplete: '{error}' is missing or "
                                  f"damaged.") from error

    def summary(self) -> dict:
        """The record without tensors: what a library view or a log shows."""
        return {"name": self.name, "created": self.created, "method": self.method,
                "sensor": self.sensor_name, "band_count": self.band_count,
                "classes": [c.to_dict() for c in self.classes],
                "band_adaptation": self.band_adaptation.get("method"),
                "window_size": self.window_size, "input_size": self.input_size,
                "backbone": self.weights_identity.to_dict(), "metrics": self.metrics}


def atomic_torch_save(obj, path) -> int:
    """torch.save to a temporary file in the target folder, then rename; returns the size in bytes."""
    return atomic_write(path, lambda temp: torch.save(obj, temp)).stat().st_size


def save_adapter_file(record: AdapterRecord, path) -> int:
    """Write the adapter file atomically; returns its size in bytes.

    The payload is first read back with ``weights_only=True`` in memory, so a file is only
    written when it can be loaded.
    """
    payload = record.to_payload()
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    buffer.seek(0)
    try:
        torch.load(buffer, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"adapter payload is not loadable with weights_only: {error}") from error
    return atomic_torch_save(payload, path)


def load_weights_only(path: Path, *, missing: str, unreadable: str):
    """A file of ours read on the CPU with ``weights_only=True`` (no code runs from it); the
    sentence ``missing`` or ``unreadable`` as a HyperAdaptError where it is absent or unreadable."""
    if not path.is_file():
        raise HyperAdaptError(missing)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise HyperAdaptError(unreadable) from error


def load_adapter_file(path) -> AdapterRecord:
    """Read an adapter file with ``weights_only=True``; a HyperAdaptError if it is not one."""
    path = Path(path)
    payload = load_weights_only(
        path, missing=f"The adapter file {path} does not exist.",
        unreadable=f"The adapter file {path.name} could not be read; it may be damaged or of "
                   f"another kind.")
    return AdapterRecord.from_payload(payload, source=f"The file {path.name}")


def compatibility_problem(record: AdapterRecord, info: RasterInfo) -> str | None:
    """One sentence saying why the adapter cannot classify this raster, or None when it can."""
    if record.band_count != info.band_count:
        return (f"This adapter was trained on {record.band_count} bands, but the raster has "
                f"{info.band_count}.")
    needed = record.band_adaptation.get("band_indices") or []
    if needed and max(needed) >= info.band_count:
        return "This adapter reads bands that the raster does not have."
    trained = record.sensor.get("wavelengths_nm")
    if trained and info.wavelengths_nm:
        gap = float(np.max(np.abs(np.asarray(trained) - np.asarray(info.wavelengths_nm))))
        if gap > WAVELENGTH_TOLERANCE_NM:
            return (f"This adapter was trained on bands at other wavelengths than the raster's "
                    f"(up to {gap:.0f} nm apart).")
    return None


def check_compatible(record: AdapterRecord, info: RasterInfo, *,
                     backbone_identity: BackboneIdentity | None = None) -> None:
    """Refuse, with one sentence, an adapter that does not fit the raster or the given backbone."""
    problem = compatibility_problem(record, info)
    if problem is None and backbone_identity is not None:
        problem = record.weights_identity.mismatch(backbone_identity)
    if problem:
        raise HyperAdaptError(problem)
