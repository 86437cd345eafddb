"""Scenes per minute on Ray with 1 and 2 workers, side by side, and what 8 GPUs would give.

An archive of identical scenes (crops of Indian Pines, written as GeoTIFFs) is classified with one
adapter by ``hyperadapt.archive.classify_archive``, first with one worker and then with two, each
into a fresh folder, in one run on this machine. The adapter is the default fine-tuning on a
randomly started tiny backbone (the speed does not depend on the weights) or ``--adapter``.

The projection to 8 GPUs is arithmetic, not a measurement: a scene costs one window per pixel at
the ViT-Base pixels per second bench/results/speed.json measured on a GPU; where no GPU was
measured, at the floating-point operations of one ViT-Base window at the default input size
(counted as the speed bench counts them, ``speed.model_flops_per_window``) over an H100's dense bfloat16 peak (989 TFLOP/s, NVIDIA
H100 SXM datasheet) at an assumed 40 % of it. The bytes read per scene are the raster's size. The
archive's rate is the smaller of the GPUs' rate and the storage's (at the stated bandwidth), for
the bench's scenes and for an EnMAP L2A scene (1,000 x 1,000 pixels, 224 bands of int16).

    python -m bench.scale [--scenes 8] [--size 96] [--bandwidth-mb-s 500]

Writes bench/results/scale.json and scale.md.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .common import (RESULTS, log, machine_info, markdown_table, publish, run_in_work_folder,
                     set_threads, write_markdown)

import numpy as np  # noqa: E402


def write_scenes(work: Path, count: int, size: int) -> list[str]:
    from .indian_pines import load_indian_pines, write_image

    image, _, wavelengths = load_indian_pines()
    paths = []
    for number in range(count):
        # Scene 0 is the top-left crop (the adapter's training pixels); the others shift.
        row, col = (number * 7) % (image.shape[0] - size), (number * 13) % (image.shape[1] - size)
        path = work / f"scene_{number:02d}.tif"
        if not path.exists():
            write_image(path, image[row:row + size, col:col + size], wavelengths)
        paths.append(str(path))
    return paths


def train_adapter(work: Path, raster: str, size: int) -> str:
    """A default fine-tuning on a random-start tiny backbone (what is timed is classifying);
    ``raster`` is the first scene, Indian Pines' top-left ``size`` x ``size`` crop."""
    from hyperadapt.models.jobs import FineTuneSettings, fine_tune

    from .common import write_point_layer
    from .indian_pines import load_indian_pines

    adapter = work / "adapter.pt"
    if adapter.exists():
        return str(adapter)
    _, labels, _ = load_indian_pines()
    rows, cols = np.nonzero(labels[:size, :size] > 0)
    pick = np.random.default_rng(0).choice(len(rows), size=min(200, len(rows)), replace=False)
    layer = write_point_layer(work / "points.gpkg", raster, rows[pick], cols[pick],
                              labels[rows[pick], cols[pick]])
    fine_tune(raster, str(layer), "class_id", str(adapter),
              settings=FineTuneSettings(backbone="tiny", random_start=True, steps=50),
              layer_name="training")
    return str(adapter)


def run_benchmark(args, work: Path) -> dict:
    from hyperadapt.archive import classify_archive

    started = time.perf_counter()
    rasters = write_scenes(work, args.scenes, args.size)
    adapter = args.adapter or train_adapter(work, rasters[0], args.size)
    runs = []
    for workers in (1, 2):
        out = work / f"maps_{workers}"
        for old in out.glob("*") if out.exists() else []:
            old.unlink()
        log(f"classifying {len(rasters)} scenes with {workers} worker(s)")
        begun = time.perf_counter()
        report = classify_archive(adapter, rasters, out, workers=workers, say=log)
        seconds = time.perf_counter() - begun
        pixels = sum(d["pixels"] for d in report["done"])
        runs.append({"workers": workers, "seconds": seconds,
                     "scenes_per_minute": 60 * len(report["done"]) / seconds,
                     "pixels_per_second": pixels / seconds, "failed": len(report["failed"])})
    bytes_per_scene = int(np.mean([Path(r).stat().st_size for r in rasters]))
    pixels_per_scene = args.size * args.size
    projection = project_gpus(pixels_per_scene, bytes_per_scene, args.bandwidth_mb_s)
    return {"machine": machine_info(), "scenes": len(rasters), "scene_size": args.size,
            "bytes_per_scene": bytes_per_scene, "runs": runs,
            "ratio_2_to_1": runs[1]["scenes_per_minute"] / runs[0]["scenes_per_minute"],
            "projection": projection, "seconds": time.perf_counter() - started}


H100_BF16_FLOPS = 989e12          # dense, NVIDIA H100 SXM datasheet
ASSUMED_SHARE_OF_PEAK = 0.4
ENMAP_SCENE = {"pixels": 1000 * 1000, "bytes": 1000 * 1000 * 224 * 2}


def project_gpus(pixels_per_scene: int, bytes_per_scene: int, bandwidth_mb_s: float) -> dict:
    """8 GPUs' scenes per minute from a GPU's measured pixels/s (speed.json) or, unmeasured, from
    the FLOPs of a window at an assumed share of an H100's peak; and the storage's."""
    from hyperadapt.models import options
    from hyperadapt.models.network.spectralgpt import BASE_CONFIG

    from .speed import model_flops_per_window

    speed = RESULTS / "speed.json"
    gpu_pixels_per_second, source = None, "measured"
    if speed.exists():
        measured = json.loads(speed.read_text())
        if "cuda" in str(measured.get("machine", {}).get("device", "")).lower():
            gpu_pixels_per_second = max(run["results"]["merged"]["pixels_per_s"]
                                        for run in measured.get("runs", []))
    # 16 classes, as Indian Pines: the head is a rounding error beside the blocks.
    flops = model_flops_per_window(BASE_CONFIG, options.DEFAULT_INPUT_SIZE, 16)["total"]
    if gpu_pixels_per_second is None:
        gpu_pixels_per_second = ASSUMED_SHARE_OF_PEAK * H100_BF16_FLOPS / flops
        source = "estimated"
    result = {"bandwidth_mb_s": bandwidth_mb_s, "gpu_pixels_per_second": gpu_pixels_per_second,
              "gpu_source": source, "flops_per_window": flops,
              "input_size": options.DEFAULT_INPUT_SIZE, "scenes": {}}
    for name, pixels, size in (("bench", pixels_per_scene, bytes_per_scene),
                               ("enmap", ENMAP_SCENE["pixels"], ENMAP_SCENE["bytes"])):
        storage = 60 * bandwidth_mb_s * 2**20 / size
        compute = 8 * 60 * gpu_pixels_per_second / pixels
        result["scenes"][name] = {"pixels": pixels, "bytes": size,
                                  "storage_scenes_per_minute": storage,
                                  "compute_scenes_per_minute": compute,
                                  "scenes_per_minute": min(compute, storage)}
    return result


def write_report(report: dict, out: Path) -> None:
    rows = [[r["workers"], f"{r['seconds']:.1f}", f"{r['scenes_per_minute']:.2f}",
             f"{r['pixels_per_second']:,.0f}"] for r in report["runs"]]
    projection = report["projection"]
    lines = ["# Scale: an archive on Ray", "",
             f"{report['scenes']} scenes of {report['scene_size']} x {report['scene_size']} "
             f"pixels x 200 bands ({report['bytes_per_scene'] / 2**20:.1f} MB each), classified "
             f"with one adapter by `hyperadapt.archive` (tiny backbone, windows of the default "
             f"size), with 1 and then 2 workers in one run.", ""]
    lines += markdown_table(["workers", "seconds", "scenes / min", "pixels / s"], rows)
    lines += ["", f"Two workers against one: **{report['ratio_2_to_1']:.2f}x** the scenes per "
              f"minute on this machine ({report['machine']['cores']} cores, so each worker has "
              f"half of them).", "", "## 8 GPUs, on paper", ""]
    gpu = projection["gpu_pixels_per_second"]
    if projection["gpu_source"] == "measured":
        lines += [f"A GPU classified {gpu:,.0f} pixels/s in bench/results/speed.json."]
    else:
        lines += [f"No GPU has been measured here (bench/results/speed.json), so the compute side "
                  f"is estimated: one window through the ViT-Base at input "
                  f"{projection['input_size']} is {projection['flops_per_window'] / 1e9:.1f} "
                  f"GFLOP (counted as bench/speed.py counts them), and an H100 at an assumed "
                  f"{ASSUMED_SHARE_OF_PEAK:.0%} of its 989 TFLOP/s dense bfloat16 peak makes "
                  f"about {gpu:,.0f} pixels/s. An estimate, not a measurement: the share of peak "
                  f"a ViT-Base of {(projection['input_size'] // 8) ** 2 * 4} "
                  f"tokens reaches is the assumption to check on a GPU."]
    rows = []
    for name, label in (("bench", f"this bench's ({report['scene_size']} x "
                                  f"{report['scene_size']} x 200)"),
                        ("enmap", "EnMAP L2A (1,000 x 1,000 x 224, int16)")):
        scene = projection["scenes"][name]
        rows.append([label, f"{scene['bytes'] / 2**20:,.1f}",
                     f"{scene['compute_scenes_per_minute']:,.1f}",
                     f"{scene['storage_scenes_per_minute']:,.1f}",
                     f"**{scene['scenes_per_minute']:,.1f}**"])
    lines += [""] + markdown_table(
        ["scene", "MB read", "8 GPUs: scenes / min", f"storage at "
         f"{projection['bandwidth_mb_s']:.0f} MB/s: scenes / min", "the archive: scenes / min"],
        rows)
    lines += ["", f"Machine: {report['machine']}."]
    write_markdown(out / "scale.md", lines)


def plot(report: dict, path: Path) -> None:
    from .common import pyplot, save_figure

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(4, 3))
    axis.bar([str(r["workers"]) for r in report["runs"]],
             [r["scenes_per_minute"] for r in report["runs"]])
    axis.set_xlabel("Ray workers")
    axis.set_ylabel("scenes / minute")
    save_figure(figure, path)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--adapter")
    parser.add_argument("--bandwidth-mb-s", type=float, default=500.0)
    parser.add_argument("--quick", action="store_true", help="4 scenes of 48 x 48")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.scenes, args.size = 4, 48
    set_threads(args.threads)
    report = run_in_work_folder(run_benchmark, args, "scale")
    return publish(report, args.out, "scale", write_report, plot)


if __name__ == "__main__":
    main()
