"""Whole-raster classification speed, window mode against tile mode, side by side in one run.

Each row times ``models.learning.predict.classify_raster`` (the product's path: tiles read and
band-adapted, windows cut, the backbone in batches, the head, the GeoTIFF written) on a synthetic
200-band raster (bench.memory's), for a backbone shape x model input x precision, in both modes:

- window mode: one window per pixel through the backbone;
- tile mode: a window every ``options.classify_step`` pixels (0.4 of a window), each pixel's pooled
  features resampled from the four windows around it, the head given the pixel's own inputs.

The two modes of a row run one after the other: window mode on a raster sized so that it takes
tens of seconds, tile mode on 0.26 Mpx (minutes for ViT-Base; the whole run took 36 minutes);
the pixels each timed are in the table, and minutes per megapixel are extrapolated from them (the
work per pixel does not depend on the raster's size: tiles are read one at a time).
Weights are a seeded random start with a merged KronA+ adapter and a centre-pixel head: speed does
not depend on the weights' values.

    python -m bench.modes [--quick] [--threads 2]

Writes bench/results/modes.json, modes.md and modes.png.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from .common import (RESULTS, adapted_random_model, cpu_precision, log, machine_info,
                     markdown_table, publish, pyplot, save_figure, set_threads, write_markdown)
from .memory import write_synthetic_raster

import torch  # noqa: E402  (after .common, which sets the OpenMP waiting policy)

# (backbone, window, input size): the scene-pretrained tiny backbone as the accuracy bench and the
# demo use it, and the official ViT-Base shape at the fast preset's and the paper's input.
CONFIGS = [("tiny", 15, 16), ("base", 9, 16), ("base", 9, 32)]
# Raster sides timed per (backbone, input, mode). Tile mode on 0.26 Mpx: from a raster of a few
# tiles, the windows of the grid around its edges weigh on the extrapolated minutes per megapixel.
SIDES = {("tiny", 16, "window"): 96, ("tiny", 16, "tile"): 512,
         ("base", 16, "window"): 24, ("base", 16, "tile"): 512,
         ("base", 32, "window"): 12, ("base", 32, "tile"): 512}
NUM_CLASSES = 16


def time_mode(model, raster: Path, adaptation, *, window: int, mode: str, precision: str,
              out: Path) -> dict:
    from hyperadapt.models import options
    from hyperadapt.models.data.raster import RasterReader, read_raster_info
    from hyperadapt.models.data.samples import ClassInfo
    from hyperadapt.models.learning.predict import classify_raster

    classes = [ClassInfo(value=i + 1, name=f"class {i + 1}", color=(i * 15, 80, 160))
               for i in range(NUM_CLASSES)]
    info = read_raster_info(raster)
    with cpu_precision(precision), RasterReader(info) as reader:
        started = time.perf_counter()
        classify_raster(reader=reader, model=model, adaptation=adaptation, classes=classes,
                        output_path=out, window_size=window, device=torch.device("cpu"),
                        step=options.classify_step(mode, window), batch_size=64)
        seconds = time.perf_counter() - started
    pixels = info.width * info.height
    return {"mode": mode, "pixels": pixels, "seconds": seconds, "pixels_per_s": pixels / seconds,
            "minutes_per_mpx": 1e6 / (pixels / seconds) / 60,
            "step": options.classify_step(mode, window)}


def write_report(report: dict, out: Path) -> None:
    lines = ["# Whole-raster classification: window mode against tile mode", "",
             f"Machine: {report['machine']['cpu']}, {report['threads']} threads, shared with "
             f"other work. Path: `models.learning.predict.classify_raster` on synthetic 200-band "
             f"rasters (PCA to 12 components), batch 64, a merged KronA+ adapter and the "
             f"centre-pixel head, {NUM_CLASSES} classes. Minutes per megapixel are extrapolated "
             f"from the pixels timed. Run in {report['seconds'] / 60:.1f} min.", "", "## Verdict",
             ""]
    lines += [f"- {line}" for line in report["verdict"]]
    rows = []
    for row in report["rows"]:
        window, tile = row["window"], row["tile"]
        rows.append([row["backbone"], f"{row['window_size']} / {row['input_size']}",
                     row["precision"], f"{window['pixels']:,}",
                     f"{window['pixels_per_s']:.1f}", f"{window['minutes_per_mpx']:.1f}",
                     f"{tile['pixels']:,} (step {tile['step']})", f"{tile['pixels_per_s']:.1f}",
                     f"{tile['minutes_per_mpx']:.2f}",
                     f"{tile['pixels_per_s'] / window['pixels_per_s']:.1f}"])
    lines += ["", "## Pixels per second", ""]
    lines += markdown_table(["backbone", "window / input", "precision", "window mode: px timed",
                             "px/s", "min per Mpx", "tile mode: px timed", "px/s",
                             "min per Mpx", "tile / window"], rows, align="lllrrrrrrr")
    lines += ["", "![modes](modes.png)"]
    write_markdown(out / "modes.md", lines)


def plot(report: dict, path: Path) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(8, 3.6))
    labels = [f"{r['backbone']} {r['input_size']}px {r['precision']}" for r in report["rows"]]
    x = range(len(labels))
    axis.bar([i - 0.2 for i in x], [r["window"]["minutes_per_mpx"] for r in report["rows"]],
             width=0.4, label="window mode")
    axis.bar([i + 0.2 for i in x], [r["tile"]["minutes_per_mpx"] for r in report["rows"]],
             width=0.4, label="tile mode")
    axis.set_yscale("log")
    axis.set_ylabel("minutes per megapixel (log)")
    axis.set_xticks(list(x))
    axis.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    axis.legend()
    save_figure(figure, path)


def verdict_lines(rows: list[dict]) -> list[str]:
    lines = []
    for row in rows:
        ratio = row["tile"]["pixels_per_s"] / row["window"]["pixels_per_s"]
        lines.append(f"{row['backbone']}, window {row['window_size']}, input "
                     f"{row['input_size']}, {row['precision']}: tile mode {ratio:.1f} x window "
                     f"mode; {row['tile']['minutes_per_mpx']:.1f} min per megapixel against "
                     f"{row['window']['minutes_per_mpx']:.0f}")
    return lines


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny, small rasters")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    from hyperadapt.models.data.bands import fit_band_adaptation
    from hyperadapt.models.data.raster import read_raster_info

    configs = CONFIGS[:1] if args.quick else CONFIGS
    started = time.perf_counter()
    report = {"machine": machine_info(torch.device("cpu")), "threads": args.threads, "rows": []}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        rasters = {}
        for (backbone, input_size, mode), side in SIDES.items():
            side = max(8, side // 4) if args.quick else side
            if side not in rasters:
                rasters[side] = folder / f"synthetic_{side}.tif"
                write_synthetic_raster(rasters[side], side)
        adaptation = fit_band_adaptation([read_raster_info(next(iter(rasters.values())))], "pca",
                                         max_pixels=2000)
        for backbone, window, input_size in configs:
            model = adapted_random_model(backbone, input_size, NUM_CLASSES,
                                         merged=True).eval()
            for precision in args.precisions:
                row = {"backbone": backbone, "window_size": window, "input_size": input_size,
                       "precision": precision}
                for mode in ("window", "tile"):
                    side = SIDES[(backbone, input_size, mode)]
                    side = max(8, side // 4) if args.quick else side
                    row[mode] = time_mode(model, rasters[side], adaptation, window=window,
                                          mode=mode, precision=precision,
                                          out=folder / f"{mode}.tif")
                    log(f"{backbone} {input_size} {precision} {mode}: "
                        f"{row[mode]['pixels_per_s']:.1f} px/s on {row[mode]['pixels']:,} px")
                report["rows"].append(row)
    report["verdict"] = verdict_lines(report["rows"])
    report["seconds"] = time.perf_counter() - started
    return publish(report, args.out, "modes", write_report, plot)


if __name__ == "__main__":
    main()
