"""The Indian Pines demo: fine-tune, classify and evaluate through qgis_process, as a user would.

Run from the repository root (``bash scripts/dev.sh demo``). Everything goes to ``demo_output/``:
the inputs (``inputs/``, see bench/indian_pines.py), a scratch QGIS profile with this checkout as
the plugin ``hyperadapt``, the adapter, the styled classification, the accuracy reports (HTML and
JSON), ``demo_report.html`` and ``indian_pines_demo.png`` (colour composite, ground truth and
prediction side by side).

The backbone, best first: the official SpectralGPT+ weights when they are at hand
(``HYPERADAPT_WEIGHTS`` or the download cache); otherwise a tiny backbone pretrained on the scene
itself without labels (``hyperadapt:pretrain``, within a fixed time budget); otherwise a random
start, which the console and the report say loudly. Fine-tuning runs hyperadapt:finetune with its
defaults (models.options), as a user who does not open Advanced would.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .indian_pines import CLASS_FIELD, make_indian_pines_inputs

ROOT = Path(__file__).resolve().parents[1]
HEARTBEAT_S = 30.0
# The demo fine-tunes with hyperadapt:finetune's defaults; only the seed is fixed.
FINETUNE_PARAMETERS = {"SEED": 0}
METHOD_NAME = "KronA+"
# Pretraining stops at whichever comes first: the 40 epochs the accuracy bench pretrains for, or 3
# minutes. On 2 cores the 40 epochs took 2.8 minutes, and the demo 4.3 minutes of jobs (4.8 with
# the set-up; fine-tuning in tile mode 65 s of them). Before the plugin let PyTorch's idle threads
# sleep (plugin.dependencies), the same 3 minutes held 13 to 15 epochs and fresh clones gave OA
# 59.3 to 63.5 %.
PRETRAIN_EPOCHS = 40
PRETRAIN_MINUTES = 3.0


def say(text: str = "") -> None:
    print(text, flush=True)


def banner(lines: list[str]) -> None:
    width = max(len(line) for line in lines) + 4
    say("!" * width)
    for line in lines:
        say(f"! {line.ljust(width - 4)} !")
    say("!" * width)


# -- qgis_process ---------------------------------------------------------------------------------
def prepare_profile(config_root: Path) -> dict:
    """A scratch QGIS configuration with this checkout linked as the enabled plugin `hyperadapt`."""
    plugins = config_root / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "hyperadapt"
    if link.is_symlink() or link.exists():
        if link.resolve() != ROOT:
            link.unlink()
    if not link.exists():
        link.symlink_to(ROOT, target_is_directory=True)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(config_root))
    done = subprocess.run(["qgis_process.bin", "plugins", "enable", "hyperadapt"], env=env,
                          capture_output=True, text=True)
    # qgis_process 3.22 exits 1 when the plugin is already enabled: the demo run a second time.
    if done.returncode != 0 and "already enabled" not in done.stdout + done.stderr:
        raise SystemExit(f"qgis_process could not enable the plugin:\n{done.stdout}{done.stderr}")
    return env


def listed_algorithms(env: dict) -> set[str]:
    listing = subprocess.run(["qgis_process.bin", "list"], env=env, check=True, capture_output=True,
                             text=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip().startswith("hyperadapt:")}


def run_algorithm(env: dict, algorithm: str, parameters: dict, *, what: str) -> dict:
    """Runs `qgis_process.bin run <algorithm> --json`, printing a heartbeat; returns its JSON.

    Exits the demo with the algorithm's own message when it fails.
    """
    arguments = []
    for key, value in parameters.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            arguments.append(f"{key}={item}")
    command = ["qgis_process.bin", "run", algorithm, "--json", "--", *arguments]
    say(f"\n== {what}: {algorithm}")
    started = time.monotonic()
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:
        while True:
            try:
                stdout, stderr = process.communicate(timeout=HEARTBEAT_S)
                break
            except subprocess.TimeoutExpired:
                say(f"   ... {time.monotonic() - started:.0f} s")
    seconds = time.monotonic() - started
    if process.returncode != 0:
        message = "\n".join(line for line in (stdout + stderr).splitlines()
                            if line.strip() and "XDG_RUNTIME_DIR" not in line and "setapi" not in line)
        say(message)
        raise SystemExit(f"{what} failed (qgis_process exit code {process.returncode}).")
    result = json.loads(stdout)
    log = result.get("log", {})
    for line in log.get("info", []):
        say(f"   {line}")
    for line in log.get("warning", []):
        say(f"   WARNING: {line}")
    say(f"   done in {seconds:.0f} s")
    result["seconds"] = seconds
    return result


# -- backbone -------------------------------------------------------------------------------------
def official_weights() -> Path | None:
    configured = os.environ.get("HYPERADAPT_WEIGHTS")
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise SystemExit(f"HYPERADAPT_WEIGHTS names {path}, which does not exist.")
        return path
    from hyperadapt.models.network.weights import find_cached_weights

    return find_cached_weights()


def pretrain_on_scene(env: dict, raster: str, backbone_path: Path, minutes: float,
                      algorithms: set[str]) -> float:
    """Pretrains the tiny backbone on the scene without labels; returns the seconds it took."""
    if "hyperadapt:pretrain" in algorithms:
        result = run_algorithm(env, "hyperadapt:pretrain",
                               {"RASTERS": raster, "SENSOR": "AVIRIS", "PRESET": 0,
                                "EPOCHS": PRETRAIN_EPOCHS, "TIME_BUDGET": minutes,
                                "OUTPUT": backbone_path},
                               what=f"Pretraining the tiny backbone on the scene ({minutes:g} min budget)")
        return result["seconds"]
    from hyperadapt.models.jobs.pretraining import PretrainSettings, pretrain_backbone

    say(f"\n== Pretraining the tiny backbone on the scene ({minutes:g} min budget), in this process")
    started = time.monotonic()
    last = [0.0]

    def progress(fraction: float, message: str) -> None:
        if time.monotonic() - last[0] > HEARTBEAT_S:
            say(f"   {100 * fraction:.0f} %  {message}")
            last[0] = time.monotonic()

    pretrain_backbone([raster], str(backbone_path),
                      settings=PretrainSettings(preset="tiny", epochs=PRETRAIN_EPOCHS,
                                                time_budget_s=60.0 * minutes),
                      sensor="AVIRIS", progress=progress)
    return time.monotonic() - started


def pretraining_available() -> bool:
    return (ROOT / "models" / "jobs" / "pretraining.py").exists()


# -- figure and report ----------------------------------------------------------------------------
def _stretch(channel: np.ndarray) -> np.ndarray:
    low, high = np.percentile(channel, (2, 98))
    return np.clip((channel - low) / max(high - low, 1e-6), 0, 1)


def colour_composite(raster: str) -> np.ndarray:
    """Bands nearest 640, 550 and 460 nm, each stretched between its 2nd and 98th percentile."""
    from osgeo import gdal

    dataset = gdal.Open(raster)
    wavelengths = [float(dataset.GetRasterBand(i + 1).GetMetadataItem("wavelength"))
                   for i in range(dataset.RasterCount)]
    channels = []
    for target in (640.0, 550.0, 460.0):
        band = int(np.argmin(np.abs(np.asarray(wavelengths) - target))) + 1
        channels.append(_stretch(dataset.GetRasterBand(band).ReadAsArray().astype(np.float64)))
    return np.dstack(channels)


def _paint(values: np.ndarray, colours: dict[int, tuple[int, int, int]]) -> np.ndarray:
    rgb = np.ones(values.shape + (3,))  # unlabelled: white
    for value, colour in colours.items():
        if value:
            rgb[values == value] = np.asarray(colour) / 255.0
    return rgb


def write_figure(path: Path, inputs: dict, classification: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from osgeo import gdal

    from hyperadapt.models.jobs import read_class_raster_classes

    truth = gdal.Open(inputs["ground_truth"]).ReadAsArray()
    predicted = gdal.Open(classification).ReadAsArray()
    colours = {name: rgb for name, rgb in inputs["class_colors"].items()}
    truth_colours = {value: colours[name] for value, name in enumerate(inputs["class_names"], start=1)}
    # The prediction's values follow the training layer's classes; its file names them.
    predicted_colours = {c.value: tuple(c.color) for c in read_class_raster_classes(classification)}
    figure, axes = plt.subplots(1, 3, figsize=(15, 6.2))
    panels = [(colour_composite(inputs["raster"]), "Colour composite (640 / 550 / 460 nm)"),
              (_paint(truth, truth_colours), "Ground truth (all labelled pixels)"),
              (_paint(predicted, predicted_colours), "HyperAdapt prediction")]
    for axis, (image, label) in zip(axes, panels):
        axis.imshow(image, interpolation="nearest")
        axis.set_title(label)
        axis.set_axis_off()
    handles = [Patch(facecolor=np.asarray(colours[name]) / 255.0, edgecolor="black", label=name)
               for name in inputs["class_names"]]
    figure.legend(handles=handles, loc="lower center", ncol=6, fontsize=8, frameon=False)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.1, 1, 0.93))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_demo_report(path: Path, metrics: dict, details: dict, figure: Path,
                      random_start: bool) -> None:
    from hyperadapt.models.stores.report import render_html_report

    page = render_html_report(metrics, title="HyperAdapt demo: Indian Pines (AVIRIS)", details=details)
    if random_start:
        warning = ("<p style='color:#b00;font-size:1.4em;font-weight:bold'>RANDOM START: no "
                   "pretrained weights were used, so these figures say nothing about SpectralGPT.</p>")
        page = page.replace("</h1>", "</h1>" + warning, 1)
    picture = base64.b64encode(figure.read_bytes()).decode("ascii")
    maps = (f"<h2>Maps</h2><img alt='colour composite, ground truth and prediction' "
            f"style='max-width:100%' src='data:image/png;base64,{picture}'>"
            "<p>Data: AVIRIS Indian Pines, 12 June 1992 (Baumgardner, Biehl and Landgrebe, 2015, "
            "doi:10.4231/R7RX991C, CC BY 3.0), as shipped in the tensorly package; the georeference "
            "is illustrative.</p>")
    page = page.replace("</body>", maps + "</body>")
    path.write_text(page, encoding="utf-8")


# -- main -----------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "demo_output"), help="output folder")
    parser.add_argument("--pretrain-minutes", type=float, default=PRETRAIN_MINUTES,
                        help="time budget for pretraining the tiny backbone on the scene (at most "
                             f"{PRETRAIN_EPOCHS} epochs)")
    parser.add_argument("--fresh", action="store_true",
                        help="pretrain again even when a backbone from an earlier run is there")
    args = parser.parse_args(argv)
    started = time.monotonic()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    timings = {}

    say(f"HyperAdapt demo: Indian Pines through qgis_process; outputs in {out}")
    step = time.monotonic()
    inputs = make_indian_pines_inputs(out / "inputs")
    timings["inputs"] = time.monotonic() - step
    say(f"Inputs: {inputs['raster']} (145 x 145 x 200), training polygons {inputs['training']}, "
        f"reference {inputs['reference']}")
    env = prepare_profile(out / "qgis-profile")
    algorithms = listed_algorithms(env)
    missing = {"hyperadapt:finetune", "hyperadapt:classify", "hyperadapt:evaluate"} - algorithms
    if missing:
        raise SystemExit(f"qgis_process does not list {', '.join(sorted(missing))}; is the plugin "
                         f"loading? Try: QGIS_CUSTOM_CONFIG_PATH={out / 'qgis-profile'} "
                         f"qgis_process.bin list")

    finetune = {"INPUT": inputs["raster"], "TRAINING": inputs["training"], "CLASS_FIELD": CLASS_FIELD,
                **FINETUNE_PARAMETERS, "SENSOR": "AVIRIS"}
    weights = official_weights()
    random_start = False
    if weights is not None:
        say(f"Backbone: the official weights {weights} (SpectralGPT ViT-Base).")
        finetune.update({"BACKBONE": 0, "WEIGHTS": weights})
        backbone_text = f"official SpectralGPT weights {weights.name} (ViT-Base)"
    elif pretraining_available():
        backbone_path = out / "indian_pines_tiny_backbone.pt"
        backbone_text = "tiny backbone pretrained on the scene without labels"
        if backbone_path.exists() and not args.fresh:
            say(f"\nBackbone: reusing the tiny backbone pretrained on the scene in an earlier run, "
                f"{backbone_path} (--fresh pretrains again).")
        else:
            say("No official SpectralGPT weights are configured (HYPERADAPT_WEIGHTS or the download "
                "cache), so a tiny backbone is pretrained on the scene itself, without labels.")
            timings["pretraining"] = pretrain_on_scene(env, inputs["raster"], backbone_path,
                                                       args.pretrain_minutes, algorithms)
            backbone_text += f" ({args.pretrain_minutes:g} min)"
        finetune.update({"BACKBONE": 1, "WEIGHTS": backbone_path})
    else:
        random_start = True
        banner(["RANDOM START: no SpectralGPT weights and no pretraining are available.",
                "The backbone starts from random weights; accuracy says nothing about SpectralGPT."])
        finetune.update({"BACKBONE": 1, "RANDOM_START": 1})
        backbone_text = "RANDOM START (tiny backbone, not pretrained)"

    adapter = out / "indian_pines_krona_plus.pt"
    result = run_algorithm(env, "hyperadapt:finetune",
                           {**finetune, "OUTPUT_ADAPTER": adapter},
                           what=f"Fine-tuning {METHOD_NAME} (hyperadapt:finetune's defaults)")
    timings["fine-tuning"] = result["seconds"]
    backbone_used = result["results"].get("BACKBONE_USED") or backbone_text
    random_start = random_start or "random start" in backbone_used.lower()

    classification = out / "indian_pines_classification.tif"
    result = run_algorithm(env, "hyperadapt:classify",
                           {"INPUT": inputs["raster"], "ADAPTER": adapter, "OUTPUT": classification,
                            "OUTPUT_CONFIDENCE": out / "indian_pines_confidence.tif",
                            **({"WEIGHTS": finetune["WEIGHTS"]} if "WEIGHTS" in finetune else {})},
                           what="Classifying the scene with the adapter")
    timings["classification"] = result["seconds"]

    accuracy_json = out / "accuracy.json"
    result = run_algorithm(env, "hyperadapt:evaluate",
                           {"INPUT": classification, "REFERENCE": inputs["reference"],
                            "REFERENCE_FIELD": CLASS_FIELD, "OUTPUT_HTML": out / "accuracy_report.html",
                            "OUTPUT_JSON": accuracy_json},
                           what="Evaluating against the reference polygons (pixels not used for training)")
    timings["evaluation"] = result["seconds"]
    metrics = json.loads(accuracy_json.read_text())

    total = time.monotonic() - started
    oa, aa, kappa = metrics["overall_accuracy"], metrics["average_accuracy"], metrics["kappa"]
    title = (f"Indian Pines, {METHOD_NAME} (default settings): OA {100 * oa:.1f} %, "
             f"AA {100 * aa:.1f} %, kappa {kappa:.3f}\nbackbone: {backbone_text}")
    figure = out / "indian_pines_demo.png"
    write_figure(figure, inputs, str(classification), title)
    details = {"method": METHOD_NAME, "backbone": backbone_used,
               "fine-tuning": f"hyperadapt:finetune's defaults, seed {FINETUNE_PARAMETERS['SEED']}",
               "training pixels": "10 to 30 per class, in small polygons (indian_pines_training.gpkg)",
               "reference": "the rest of the ground truth, polygonized (indian_pines_reference.gpkg)",
               **{f"time: {name}": f"{seconds:.0f} s" for name, seconds in timings.items()},
               "time: total": f"{total:.0f} s", "adapter": str(adapter),
               "classification": str(classification)}
    report = out / "demo_report.html"
    write_demo_report(report, metrics, details, figure, random_start)

    say("\n== Result")
    if random_start:
        banner(["RANDOM START: these figures come from an untrained backbone."])
    say(f"Backbone: {backbone_used}")
    say(f"Method: {METHOD_NAME}, hyperadapt:finetune's defaults")
    say(f"Overall accuracy {100 * oa:.1f} %, average accuracy {100 * aa:.1f} %, kappa {kappa:.3f} "
        f"over {metrics['num_samples']} reference pixels")
    say("Time: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items())
        + f"; total {total:.0f} s ({total / 60:.1f} min)")
    say(f"Classification (styled): {classification}")
    say(f"Report: {report}")
    say(f"Figure: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
