"""The classify job: an adapter file applied to a raster (models.learning.predict.classify_raster,
then the clean-up the adapter records), and an adapter loaded once for many rasters (an archive).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .. import options
from ..data.bands import BandAdaptation
from ..data.raster import RasterInfo, RasterReader, read_raster_info
from ..data.samples import ClassInfo
from ..errors import HyperAdaptError, raise_if_cancelled
from ..learning.device import choose_device
from ..learning.spectral_kernel import SpectralKernel
from ..network import adapters
from ..network.backbones import rebuild_model
from ..progress import report as _report
from ..progress import scaled as _scaled
from ..stores.adapter_file import AdapterRecord, compatibility_problem, load_adapter_file
from ..stores.guard import check_job_files, map_bytes, raster_files
from .postprocessing import classify_and_clean


@dataclass
class ClassifyResult:
    output_path: str
    confidence_path: str | None
    classes: list[ClassInfo]
    seconds: float
    pixels_per_class: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)



def classify(raster_path: str, adapter_path: str, output_path: str, *,
             confidence_path: str | None = None, weights: str | None = None,
             device: str = "auto", batch_size: int = 64, mode: str | None = None, progress=None,
             cancel=None) -> ClassifyResult:
    """Classify a raster with an adapter file; writes the class GeoTIFF (+ .qml, + confidence).

    ``mode`` ("tile" or "window", options.CLASSIFY_MODES) overrides the adapter's own. An adapter
    made for another band layout or another backbone is refused with one sentence.
    """
    started = time.perf_counter()
    _check_classify_files(raster_path, output_path, confidence_path,
                          {"adapter file": adapter_path, "weights file": weights}, batch_size,
                          mode)
    _report(progress, 0.0, "Reading the adapter")
    record = load_adapter_file(adapter_path)
    # The sensor is checked before the backbone is rebuilt (seconds, for the official weights).
    info = compatible_raster(record, raster_path)
    loaded = load_adapter(adapter_path, weights=weights, device=device, record=record)
    raise_if_cancelled(cancel)
    return _classify_loaded(loaded, info, output_path, confidence_path=confidence_path,
                            batch_size=batch_size, mode=mode,
                            progress=_scaled(progress, 0.05, 1.0), cancel=cancel,
                            started=started)


@dataclass
class LoadedAdapter:
    """An adapter file's model, rebuilt and merged on its device, ready for many rasters."""

    record: AdapterRecord
    model: torch.nn.Module
    adaptation: BandAdaptation
    device: torch.device
    notes: list[str]
    path: str = ""
    spectral: SpectralKernel | None = None


def load_adapter(adapter_path, *, weights=None, device: str = "auto",
                 record: AdapterRecord | None = None) -> LoadedAdapter:
    """Read an adapter file (unless its ``record`` is given) and rebuild its model once: an
    archive classifies many rasters with it."""
    record = record or load_adapter_file(adapter_path)
    model, notes = rebuild_model(record, weights=weights)
    torch_device = choose_device(device)
    model.to(torch_device)
    adapters.merge_adapters(model)
    return LoadedAdapter(record=record, model=model, device=torch_device, notes=notes,
                         adaptation=BandAdaptation.from_state(record.band_adaptation),
                         path=str(adapter_path), spectral=record.spectral_kernel)


def classify_with(loaded: LoadedAdapter, raster_path: str, output_path: str, *,
                  confidence_path: str | None = None, batch_size: int = 64,
                  mode: str | None = None, progress=None, cancel=None) -> ClassifyResult:
    """classify() with an adapter loaded before (load_adapter)."""
    started = time.perf_counter()
    _check_classify_files(raster_path, output_path, confidence_path,
                          {"adapter file": loaded.path or None}, batch_size, mode)
    info = compatible_raster(loaded.record, raster_path)
    return _classify_loaded(loaded, info, output_path, confidence_path=confidence_path,
                            batch_size=batch_size, mode=mode, progress=progress, cancel=cancel,
                            started=started)


def compatible_raster(record: AdapterRecord, raster_path) -> RasterInfo:
    """The raster's info, or the sentence saying why the adapter does not fit it."""
    info = read_raster_info(raster_path)
    problem = compatibility_problem(record, info)
    if problem:
        raise HyperAdaptError(problem)
    return info


def _classify_loaded(loaded: LoadedAdapter, info: RasterInfo, output_path, *, confidence_path,
                     batch_size: int, mode: str | None, progress, cancel,
                     started: float) -> ClassifyResult:
    """The classification itself, once the files and the raster have been checked."""
    record = loaded.record
    with RasterReader(info) as reader:
        stats = classify_and_clean(reader=reader, model=loaded.model,
                                   adaptation=loaded.adaptation, classes=record.classes,
                                   output_path=output_path, window_size=record.window_size,
                                   step=record.classify_step(mode),
                                   segment_size=record.segment_size,
                                   majority_size=record.majority_size,
                                   sieve_pixels=record.sieve_pixels, device=loaded.device,
                                   batch_size=batch_size, spectral=loaded.spectral,
                                   confidence_path=confidence_path, progress=progress,
                                   cancel=cancel)
    return ClassifyResult(output_path=str(output_path),
                          confidence_path=str(confidence_path) if confidence_path else None,
                          classes=record.classes, seconds=time.perf_counter() - started,
                          pixels_per_class=stats["pixels_per_class"], notes=list(loaded.notes))


def _check_classify_files(raster_path, output_path, confidence_path, inputs: dict,
                          batch_size: int, mode: str | None = None) -> None:
    if not output_path:
        raise HyperAdaptError("No output file name was given.")
    problem = options.batch_size_problem(batch_size) or (
        options.classify_mode_problem(mode) if mode is not None else None)
    if problem:
        raise HyperAdaptError(problem)
    check_job_files({"classification": raster_files(output_path),
                     "confidence raster": raster_files(confidence_path)[::2]},
                    {"input raster": raster_path, **inputs},
                    needed_bytes=map_bytes(raster_path, output_path, confidence_path))
