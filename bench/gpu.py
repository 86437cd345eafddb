"""One prepared run for a machine with a CUDA GPU: training and classification speed of the
product's own functions, and the GPU's peak memory, in a few minutes.

Rows: the ViT-Base shape (window 9 at input 16 and 32) and the tiny backbone (window 15, input 16),
each with a KronA+ adapter on q and v and the centre-pixel head, 16 classes. For each row:

- fine-tuning: ``models.learning.training.train_classifier`` (the loop fine-tuning runs) on random
  labelled windows, one epoch at the engine's default batch, in the engine's default training mode
  (tile mode: four grid windows per labelled pixel, models.learning.tile_training), under the
  engine's CUDA autocast (bfloat16 where the GPU has it, else float16 with a gradient scaler):
  labelled pixels per second;
- classifying, window mode: ``models.learning.inference.predict_probabilities`` on a window per
  pixel of an in-memory region, with the adapter merged as ``jobs.classify`` merges it;
- classifying, tile mode: ``models.learning.inference.grid_probabilities`` on a larger region,
  a window every ``options.classify_step("tile", window)`` pixels;
- the GPU's peak allocated memory in each part (``torch.cuda.max_memory_allocated``).

The region is random band-adapted data held on the CPU, as ``models.learning.predict`` holds a
tile: reading the raster with GDAL, the band adaptation and writing the GeoTIFF are not timed
(the GPU machines have no GDAL, and these modules need none). Speed does not depend on the
weights' values, so they are a seeded random start.

    python -m bench.gpu [--quick] [--device cuda] [--backbones tiny base] [--out DIR]

On a machine without this project's venv, the engine is imported as ``hyperadapt`` through a link:
``mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/hyperadapt && PYTHONPATH=/tmp/pkg python3 -m
bench.gpu``.

``--quick --device cpu`` is the small run the test suite makes, so that the script is known to
work before a GPU is at hand. Writes gpu.json and gpu.md into ``--out`` (bench/results).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import (RESULTS, adapted_random_model, log, machine_info, markdown_table,
                     synchronize, write_json, write_markdown)

import torch  # noqa: E402  (after .common, which sets the OpenMP waiting policy)

NUM_CLASSES = 16
# (backbone, window, input size): as bench/modes.py, whose CPU figures these compare with.
ROWS = [("tiny", 15, 16), ("base", 9, 16), ("base", 9, 32)]
# Per row: training windows, the window-mode region's side, the tile-mode region's side.
SIZES = {"full": (4096, 256, 1024), "quick": (64, 12, 40)}


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None


def time_training(backbone: str, window: int, input_size: int, num_windows: int,
                  device: torch.device) -> dict:
    from hyperadapt.models import options
    from hyperadapt.models.learning.tile_training import crop_window_size, grid_crops
    from hyperadapt.models.learning.training import train_classifier

    model = adapted_random_model(backbone, input_size, NUM_CLASSES, merged=False)
    generator = torch.Generator().manual_seed(1)
    step = options.training_step(options.DEFAULT_TRAINING_MODE, window)
    side = window if step == 1 else crop_window_size(window, step)
    windows = torch.rand(num_windows, 12, side, side, generator=generator)
    if step > 1:
        places = torch.randint(0, 1000, (2, num_windows), generator=generator).numpy()
        windows = torch.from_numpy(grid_crops(windows.numpy(), *places, window, step))
    labels = torch.randint(0, NUM_CLASSES, (num_windows,), generator=generator)
    batch = options.DEFAULT_BATCH_SIZE
    tile_window = window if step > 1 else None
    # A short first run compiles the kernels and fills the allocator; the second is timed.
    train_classifier(model, windows[:2 * batch], labels[:2 * batch], None, None, epochs=1,
                     learning_rate=options.DEFAULT_LEARNING_RATE, batch_size=batch,
                     device=device, tile_window=tile_window)
    _reset_peak(device)
    synchronize(device)
    started = time.perf_counter()
    train_classifier(model, windows, labels, None, None, epochs=1,
                     learning_rate=options.DEFAULT_LEARNING_RATE, batch_size=batch,
                     device=device, context_dropout=options.DEFAULT_CONTEXT_DROPOUT,
                     tile_window=tile_window)
    synchronize(device)
    seconds = time.perf_counter() - started
    return {"windows": num_windows, "batch": batch, "seconds": seconds,
            "mode": options.DEFAULT_TRAINING_MODE, "step": step,
            "windows_per_s": num_windows / seconds, "peak_mib": _peak_mib(device)}


def _region(side: int, halo: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    return torch.rand(12, side + 2 * halo, side + 2 * halo, generator=generator)


def time_window_mode(model, window: int, side: int, batch: int, device: torch.device) -> dict:
    import numpy as np

    from hyperadapt.models.data.windows import extract_windows
    from hyperadapt.models.learning.inference import predict_probabilities

    halo = window // 2
    region = _region(side, halo).to(device)
    rows, cols = (a.ravel() for a in np.indices((side, side)))

    def run():
        for start in range(0, len(rows), batch * 16):      # as predict.py cuts a tile's windows
            stop = min(start + batch * 16, len(rows))
            predict_probabilities(model, extract_windows(region, rows[start:stop],
                                                         cols[start:stop], window, halo),
                                  device=device, batch_size=batch)

    return _timed(run, side * side, device)


def time_tile_mode(model, window: int, side: int, batch: int, device: torch.device) -> dict:
    import numpy as np

    from hyperadapt.models import options
    from hyperadapt.models.learning.inference import grid_probabilities

    step = options.classify_step("tile", window)
    halo = window // 2 + step
    region = _region(side, halo)
    rows, cols = (a.ravel() for a in np.indices((side, side)))

    def run():
        grid_probabilities(model, region, rows, cols, origin=(0, 0), window_size=window,
                           halo=halo, step=step, device=device, batch_size=batch)

    return {**_timed(run, side * side, device), "step": step}


def _timed(run, pixels: int, device: torch.device) -> dict:
    run()                                                   # warm-up: kernels, allocator
    _reset_peak(device)
    synchronize(device)
    started = time.perf_counter()
    run()
    synchronize(device)
    seconds = time.perf_counter() - started
    return {"pixels": pixels, "seconds": seconds, "pixels_per_s": pixels / seconds,
            "minutes_per_mpx": 1e6 / (pixels / seconds) / 60, "peak_mib": _peak_mib(device)}


def measure(args) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("No CUDA GPU is visible to PyTorch; run with --device cpu for the "
                         "small check on this machine.")
    num_windows, window_side, tile_side = SIZES["quick" if args.quick else "full"]
    started = time.perf_counter()
    rows = []
    for backbone, window, input_size in [row for row in ROWS if row[0] in args.backbones]:
        log(f"{backbone}, window {window}, input {input_size}")
        row = {"backbone": backbone, "window_size": window, "input_size": input_size,
               "training": time_training(backbone, window, input_size, num_windows, device)}
        model = adapted_random_model(backbone, input_size, NUM_CLASSES,
                                     merged=True).to(device).eval()
        row["window"] = time_window_mode(model, window, window_side, args.batch_size, device)
        row["tile"] = time_tile_mode(model, window, tile_side, args.batch_size, device)
        rows.append(row)
        del model
    from hyperadapt.models.learning.device import autocast_dtype

    dtype = autocast_dtype(device, cpu_bf16=True)
    return {"machine": machine_info(device), "device": str(device), "quick": args.quick,
            "precision": str(dtype).replace("torch.", "") if dtype else "float32",
            "batch_size": args.batch_size, "rows": rows,
            "seconds": time.perf_counter() - started}


def verdict_lines(report: dict) -> list[str]:
    lines = []
    for row in report["rows"]:
        window, tile = row["window"], row["tile"]
        ratio = tile["pixels_per_s"] / window["pixels_per_s"]
        lines.append(f"{row['backbone']}, window {row['window_size']}, input "
                     f"{row['input_size']}: tile mode {ratio:.1f} x window mode; "
                     f"{tile['minutes_per_mpx']:.2f} min per megapixel; "
                     f"fine-tuning ({row['training']['mode']} mode) "
                     f"{row['training']['windows_per_s']:.0f} labelled pixels/s")
    return lines


def _mib(value) -> str:
    return "-" if value is None else f"{value:,.0f}"


def write_report(report: dict, out: Path) -> Path:
    machine = report["machine"]
    lines = ["# Training and classification on a GPU", "",
             f"Device: {machine['device']} (CPU {machine['cpu']}, torch {machine['torch']}); "
             f"autocast {report['precision']}; classification batch {report['batch_size']}. "
             "The product's functions on in-memory regions (no raster reading or writing); "
             f"run in {report['seconds'] / 60:.1f} min." + (" A --quick check run." if
                                                             report["quick"] else ""),
             "", "## Verdict", ""]
    lines += [f"- {line}" for line in verdict_lines(report)]
    table = []
    for row in report["rows"]:
        training, window, tile = row["training"], row["window"], row["tile"]
        table.append([row["backbone"], f"{row['window_size']} / {row['input_size']}",
                      f"{training['windows_per_s']:,.0f}", _mib(training["peak_mib"]),
                      f"{window['pixels_per_s']:,.0f}", _mib(window["peak_mib"]),
                      f"{tile['pixels_per_s']:,.0f} (step {tile['step']})",
                      f"{tile['minutes_per_mpx']:.2f}", _mib(tile["peak_mib"])])
    lines += [""] + markdown_table(
        ["backbone", "window / input", "fine-tuning px/s", "peak MiB",
         "window mode px/s", "peak MiB", "tile mode px/s", "min per Mpx", "peak MiB"],
        table, align="llrrrrrrr")
    return write_markdown(out / "gpu.md", lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small sizes (the test suite's check)")
    parser.add_argument("--backbones", nargs="+", default=["tiny", "base"],
                        choices=["tiny", "base"])
    parser.add_argument("--batch-size", type=int, default=64,
                        help="classification batch (jobs.classify's default is 64)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    report = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "gpu.json", report)
    print(write_report(report, args.out).read_text())
    return report


if __name__ == "__main__":
    main()
