"""The per-sensor adapter library: one folder per sensor under the user's data folder.

``<user data dir>/hyperadapt/adapters/<sensor>/<name>.pt`` (appdirs), or under the folder named
by ``HYPERADAPT_LIBRARY``. Listing for a raster puts the adapters that fit it (same band count
and wavelengths) first.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import appdirs

from ..data.raster import RasterInfo
from ..errors import HyperAdaptError
from ..network.identity import BackboneIdentity
from .adapter_file import ADAPTER_SUFFIX, AdapterRecord, compatibility_problem, load_adapter_file
from .files import atomic_write

LIBRARY_ENV = "HYPERADAPT_LIBRARY"


def default_library_root() -> Path:
    return Path(appdirs.user_data_dir("hyperadapt")) / "adapters"


def library_root() -> Path:
    """The library's root folder (``HYPERADAPT_LIBRARY`` overrides the per-user default)."""
    override = os.environ.get(LIBRARY_ENV)
    return Path(override) if override else default_library_root()


def safe_name(text: str, fallback: str = "adapter") -> str:
    """A file-system-safe version of a name (letters, digits, '-', '_', '.')."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text).strip()).strip("._")
    return cleaned or fallback


def sensor_folder(sensor: str) -> Path:
    return library_root() / safe_name(sensor, "unknown-sensor")


def library_adapter_path(sensor: str, name: str) -> Path:
    """Where an adapter called ``name`` for ``sensor`` lives in the library."""
    return sensor_folder(sensor) / f"{safe_name(name)}{ADAPTER_SUFFIX}"


@dataclass
class LibraryEntry:
    """An adapter file in the library, as a list view shows it."""

    path: Path
    name: str
    sensor: str
    band_count: int
    method: str
    band_adaptation: str
    classes: list[dict]
    created: str
    metrics: dict = field(default_factory=dict)
    backbone: BackboneIdentity = field(default_factory=lambda: BackboneIdentity(""))
    fits: bool | None = None          # None: no raster to compare with
    problem: str | None = None        # why it does not fit the raster

    @classmethod
    def from_record(cls, path: Path, record: AdapterRecord) -> LibraryEntry:
        return cls(path=path, name=record.name, sensor=record.sensor_name,
                   band_count=record.band_count, method=record.method,
                   band_adaptation=str(record.band_adaptation.get("method", "")),
                   classes=[c.to_dict() for c in record.classes], created=record.created,
                   metrics=dict(record.metrics), backbone=record.weights_identity)


def list_adapters(info: RasterInfo | None = None, *, sensor: str | None = None) -> list[LibraryEntry]:
    """Adapters in the library (of one sensor if given); those fitting ``info`` first, then by name.

    Files that cannot be read as adapters are skipped.
    """
    root = library_root()
    folders = [sensor_folder(sensor)] if sensor else sorted(p for p in root.glob("*") if p.is_dir())
    entries = []
    for folder in folders:
        if folder.name == "backbones" and not sensor:
            continue
        for path in sorted(folder.glob(f"*{ADAPTER_SUFFIX}")):
            try:
                record = load_adapter_file(path)
            except HyperAdaptError:
                continue
            entry = LibraryEntry.from_record(path, record)
            if info is not None:
                entry.problem = compatibility_problem(record, info)
                entry.fits = entry.problem is None
            entries.append(entry)
    entries.sort(key=lambda e: (e.fits is False, e.sensor.lower(), e.name.lower(), e.created))
    return entries


def add_to_library(adapter_path, *, name: str | None = None, overwrite: bool = False) -> Path:
    """Copy an adapter file into its sensor's folder of the library; returns the new path."""
    record = load_adapter_file(adapter_path)
    target = library_adapter_path(record.sensor_name, name or record.name)
    if Path(adapter_path).resolve() == target.resolve():
        return target
    if target.exists() and not overwrite:
        raise HyperAdaptError(f"The library already holds an adapter named '{target.stem}' for "
                              f"{record.sensor_name}; choose another name.")
    return atomic_write(target, lambda temp: shutil.copyfile(adapter_path, temp))


def remove_from_library(path) -> None:
    """Delete an adapter file of the library (nothing outside the library is touched)."""
    path = Path(path).resolve()
    root = library_root().resolve()
    if root not in path.parents:
        raise HyperAdaptError(f"{path.name} is not in the adapter library.")
    path.unlink(missing_ok=True)
