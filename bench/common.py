"""Shared helpers of the benchmark scripts: threads, timing, machine description, result files.

Importing this module before torch matters: on a machine shared with other work, OpenMP threads
that spin while they wait slow PyTorch down many times over, and the waiting policy has to be set
before torch loads OpenMP.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

RESULTS = Path(__file__).resolve().parent / "results"


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


def set_threads(num_threads: int | None) -> int:
    """Use ``num_threads`` PyTorch threads (None: PyTorch's default); returns the count in use."""
    import torch

    if num_threads:
        torch.set_num_threads(int(num_threads))
    return torch.get_num_threads()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device=None) -> dict:
    """What the numbers were measured on: CPU, cores, threads, torch, and the GPU when used."""
    import torch

    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "load_average_1min_at_start": round(os.getloadavg()[0], 2)}
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["device"] = info.get("gpu", f"CPU {info['cpu']}")
    return info


def synchronize(device) -> None:
    import torch

    if getattr(device, "type", None) == "cuda":
        torch.cuda.synchronize(device)


def time_repeats(fn, *, repeats: int, warmup: int = 1, device=None) -> dict:
    """Wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs.

    The minimum is the figure to quote (the run least disturbed by other work on the machine);
    the median and every run are kept too.
    """
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        runs.append(time.perf_counter() - start)
    return {"min_s": min(runs), "median_s": statistics.median(runs), "runs_s": runs}


@contextlib.contextmanager
def cpu_precision(name: str):
    """The engine classifies on the CPU in ``name`` ("fp32" or "bf16", HYPERADAPT_CPU_PRECISION)
    inside the block; the setting before it comes back after."""
    from hyperadapt.models.learning.device import CPU_PRECISION_ENV

    previous = os.environ.get(CPU_PRECISION_ENV)
    os.environ[CPU_PRECISION_ENV] = name
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(CPU_PRECISION_ENV, None)
        else:
            os.environ[CPU_PRECISION_ENV] = previous


def adapted_random_model(backbone: str, input_size: int, num_classes: int, *, merged: bool):
    """The speed benches' model: a seeded random start of the tiny or the ViT-Base shape at
    ``input_size``, with the centre-pixel head (two views) and a KronA+ adapter on q and v, merged
    as ``jobs.classify`` merges it or not (training). Speed does not depend on the weights'
    values. Needs no GDAL: bench/gpu.py runs where there is none."""
    import torch

    from hyperadapt.models import options
    from hyperadapt.models.network.adapters import AdapterConfig, apply_adapter, merge_adapters
    from hyperadapt.models.network.spectralgpt import BASE_CONFIG, TINY_CONFIG, build_backbone

    torch.manual_seed(0)
    shape = {**BASE_CONFIG, **(TINY_CONFIG if backbone == "tiny" else {})}
    model = build_backbone({**shape, "img_size": input_size, "num_classes": num_classes,
                            "pixel_dim": options.DEFAULT_PIXEL_DIM, "two_views": True})
    model = apply_adapter(model, AdapterConfig(method="krona_plus", init_weights=False,
                                               lr_ratio=options.DEFAULT_LR_RATIO))
    if merged:
        merge_adapters(model)
    return model


def mean_std(values) -> dict:
    values = [float(v) for v in values]
    return {"mean": statistics.fmean(values) if values else math.nan,
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "runs": values}


def proc_memory_bytes(field: str, pid: int | str = "self") -> int:
    """A memory figure of /proc/PID/status (e.g. "VmRSS", "VmHWM") in bytes; 0 where unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def current_rss_bytes() -> int:
    """Resident memory of this process now."""
    return proc_memory_bytes("VmRSS")


def peak_rss_bytes() -> int:
    """Peak resident memory of this process's own program image (Linux VmHWM).

    Not ``getrusage(...).ru_maxrss``: Linux carries the parent's high-water mark over fork and exec
    into that figure, so a child started by a big parent would report the parent's peak.
    """
    return proc_memory_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write_json(path: Path, data) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return path


def publish(report: dict, out: Path, name: str, write_report, plot) -> dict:
    """Write ``<name>.json``, the markdown (``write_report``) and ``<name>.png`` into ``out``; print the table."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{name}.json", report)
    write_report(report, out)
    plot(report, out / f"{name}.png")
    log(f"wrote {out / f'{name}.md'} in {report['seconds'] / 60:.1f} min")
    print((out / f"{name}.md").read_text())
    return report


def write_markdown(path: Path, lines: list[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def markdown_table(headers: list[str], rows: list[list], *, align: str | None = None) -> list[str]:
    """Lines of a markdown table; ``align``: one 'l' or 'r' per column (default: first left)."""
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(figure)
    return path


def run_in_work_folder(run, args, name: str):
    """``run(args, folder)`` in ``args.work`` when given (kept for reuse), else in a temporary
    folder that goes away with everything in it (rasters of gigabytes, backbones)."""
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        return run(args, args.work)
    with tempfile.TemporaryDirectory(prefix=f"hyperadapt_bench_{name}_") as folder:
        return run(args, Path(folder))


def write_point_layer(path: Path, raster, rows, cols, values) -> Path:
    """Points at the pixel centres, integer field ``class_id``, in the raster's CRS."""
    from osgeo import gdal, ogr

    ogr.UseExceptions()
    dataset = gdal.Open(str(raster))
    x0, dx, _, y0, _, dy = dataset.GetGeoTransform()
    if path.exists():
        path.unlink()
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = source.CreateLayer("training", dataset.GetSpatialRef(), ogr.wkbPoint)
    layer.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
    layer.StartTransaction()
    for row, col, value in zip(rows, cols, values):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("class_id", int(value))
        point = ogr.Geometry(ogr.wkbPoint)
        point.AddPoint_2D(x0 + (col + 0.5) * dx, y0 + (row + 0.5) * dy)
        feature.SetGeometry(point)
        layer.CreateFeature(feature)
    layer.CommitTransaction()
    source = None
    return path
