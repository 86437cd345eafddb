"""bfloat16 against float32 on the CPU: the labels it changes and the time it saves.

The default fine-tuning (the accuracy bench's polygons, seed 0, its scene-pretrained tiny
backbone) of each bench scene classifies the whole scene twice in one run, with
HYPERADAPT_CPU_PRECISION=fp32 and =bf16, through ``models.jobs.classify``; the share of valid
pixels whose class differs and the time ratio are reported. The engine classifies in bfloat16 on
a CPU that computes it natively (AVX512-BF16 or AMX) when this share stays under 0.5 %.

Fine-tuning steps (``models.learning.training.train_classifier``: KronA+ on q and v, the
centre-pixel head, batches of 32 windows of 15 x 15 at input 16) are timed the same way for the
ViT-Base and the tiny backbone; what bfloat16 training does to accuracy is the accuracy bench's
float32 row.

    python -m bench.precision [--scenes indian_pines enmap_potsdam] [--work DIR]

Writes bench/results/precision.json and precision.md.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .accuracy import (DEFAULT_SCENES, PER_CLASS, SCENES, pretrained_backbone, split_pixels,
                       write_training_layer)
from .common import (RESULTS, cpu_precision, log, machine_info, markdown_table, publish,
                     run_in_work_folder, set_threads, write_markdown)

import numpy as np  # noqa: E402

LIMIT_SHARE = 0.005


def run_benchmark(args, work: Path) -> dict:
    from osgeo import gdal

    from hyperadapt.models.jobs import FineTuneSettings, classify, fine_tune
    from hyperadapt.models.learning.device import cpu_computes_bf16

    started = time.perf_counter()
    rows = []
    for name in args.scenes:
        scene = SCENES[name](work)
        backbone, _ = pretrained_backbone(scene, "mnf", None, args, work)
        split = split_pixels(scene.labels, "polygons", PER_CLASS, 0)
        layer = write_training_layer(work / f"{scene.name}_precision.gpkg", scene, split)
        adapter = work / f"{scene.name}_precision.pt"
        with cpu_precision("fp32"):
            fine_tune(scene.raster, str(layer), "class_id", str(adapter),
                      settings=FineTuneSettings(weights=backbone, seed=0, device="cpu"),
                      layer_name="training", sensor=scene.sensor)
        maps, seconds = {}, {}
        for precision in ("fp32", "bf16", "fp32", "bf16"):     # twice each, the faster kept
            out = work / f"{scene.name}_{precision}.tif"
            with cpu_precision(precision):
                begun = time.perf_counter()
                classify(scene.raster, str(adapter), str(out), device="cpu")
                seconds[precision] = min(seconds.get(precision, np.inf),
                                         time.perf_counter() - begun)
            maps[precision] = gdal.Open(str(out)).ReadAsArray()
        valid = maps["fp32"] > 0
        changed = float((maps["fp32"] != maps["bf16"])[valid].mean())
        rows.append({"scene": scene.name, "pixels": int(valid.sum()), "changed_share": changed,
                     "fp32_seconds": seconds["fp32"], "bf16_seconds": seconds["bf16"],
                     "speedup": seconds["fp32"] / seconds["bf16"]})
        log(f"  {scene.name}: {100 * changed:.2f} % of labels changed, bf16 "
            f"{seconds['fp32'] / seconds['bf16']:.2f}x the speed of fp32")
    training = training_speed({"base": 6, "tiny": 40})
    return {"machine": machine_info(), "cpu_computes_bf16": cpu_computes_bf16(), "rows": rows,
            "training": training,
            "limit_share": LIMIT_SHARE,
            "bf16_kept": all(r["changed_share"] < LIMIT_SHARE for r in rows),
            "seconds": time.perf_counter() - started}


def training_speed(steps: dict[str, int]) -> list[dict]:
    """Seconds per fine-tuning step in float32 and bfloat16, twice each alternating (the faster
    kept), for each backbone preset named in ``steps`` (with its number of timed steps)."""
    import torch

    from hyperadapt.models.learning.training import train_classifier
    from hyperadapt.models.network.adapters import AdapterConfig, apply_adapter
    from hyperadapt.models.network.spectralgpt import spectralgpt_base, spectralgpt_tiny

    builders = {"base": spectralgpt_base, "tiny": spectralgpt_tiny}
    rows = []
    for preset, count in steps.items():
        generator = torch.Generator().manual_seed(0)
        windows = torch.rand(32 * count, 12, 15, 15, generator=generator)
        labels = torch.randint(0, 10, (32 * count,), generator=generator)
        seconds = {}
        for precision in ("fp32", "bf16", "fp32", "bf16"):
            torch.manual_seed(0)
            model = apply_adapter(builders[preset](img_size=16, num_classes=10, pixel_dim=64),
                                  AdapterConfig(method="krona_plus"))
            with cpu_precision(precision):
                outcome = train_classifier(model, windows, labels, None, None, epochs=1,
                                           learning_rate=3e-3, batch_size=32)
            seconds[precision] = min(seconds.get(precision, np.inf), outcome.seconds / count)
        rows.append({"backbone": preset, "steps": count, "fp32_step_seconds": seconds["fp32"],
                     "bf16_step_seconds": seconds["bf16"],
                     "speedup": seconds["fp32"] / seconds["bf16"]})
        log(f"  {preset} fine-tuning: {seconds['fp32']:.3f} s per step in fp32, "
            f"{seconds['bf16']:.3f} in bf16 ({seconds['fp32'] / seconds['bf16']:.2f}x)")
    return rows


def write_report(report: dict, out: Path) -> None:
    table = [[r["scene"], f"{r['pixels']:,}", f"{100 * r['changed_share']:.2f} %",
              f"{r['fp32_seconds']:.1f}", f"{r['bf16_seconds']:.1f}", f"{r['speedup']:.2f}x"]
             for r in report["rows"]]
    verdict = ("kept: every scene changes fewer labels than the limit" if report["bf16_kept"]
               else "not kept: a scene changes more labels than the limit")
    lines = ["# bfloat16 against float32 on the CPU", "",
             "## Classifying", "",
             "The accuracy bench's default fine-tuning (polygons, seed 0, scene-pretrained tiny "
             "backbone) classifies each whole scene in float32 and in bfloat16 autocast, twice "
             "each in one run (the faster of each kept).", ""]
    lines += markdown_table(["scene", "valid pixels", "labels changed", "fp32 s", "bf16 s",
                             "bf16 speed"], table)
    lines += ["", f"This CPU computes bfloat16 natively: {report['cpu_computes_bf16']}. "
              f"Limit {100 * report['limit_share']:.1f} % of labels: bfloat16 {verdict}.", "",
              "## Fine-tuning steps", "",
              "KronA+ on q and v with the centre-pixel head, batches of 32 windows of 15 x 15 at "
              "input 16, random windows; seconds per optimizer step, float32 and bfloat16 "
              "autocast alternating, twice each (the faster kept). The accuracy bench's rows in "
              "float32 and in bfloat16 show what each does to the maps; the engine fine-tunes in "
              "bfloat16 only a backbone as wide as ViT-Base (learning.device.cpu_bf16_training).",
              ""]
    lines += markdown_table(
        ["backbone", "steps timed", "fp32 s/step", "bf16 s/step", "bf16 speed"],
        [[r["backbone"], r["steps"], f"{r['fp32_step_seconds']:.3f}",
          f"{r['bf16_step_seconds']:.3f}", f"{r['speedup']:.2f}x"]
         for r in report.get("training", [])])
    lines += ["", f"Machine: {report['machine']}. Run in {report['seconds'] / 60:.1f} min."]
    write_markdown(out / "precision.md", lines)


def plot(report: dict, path: Path) -> None:
    from .common import pyplot, save_figure

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(4, 3))
    axis.bar([r["scene"] for r in report["rows"]], [r["speedup"] for r in report["rows"]])
    axis.axhline(1.0, color="grey", linewidth=0.8)
    axis.set_ylabel("bf16 speed / fp32 speed")
    save_figure(figure, path)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", nargs="+", default=list(DEFAULT_SCENES),
                        choices=list(SCENES))
    parser.add_argument("--pretrain-epochs", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    report = run_in_work_folder(run_benchmark, args, "precision")
    return publish(report, args.out, "precision", write_report, plot)


if __name__ == "__main__":
    main()
