"""Accuracy of the fine-tuned SpectralGPT against classical classifiers on the same training pixels.

Scenes:
- Indian Pines (AVIRIS, 145 x 145 x 200, 16 classes; Baumgardner, Biehl and Landgrebe 2015,
  doi:10.4231/R7RX991C, CC BY 3.0), the copy inside ``tensorly``, written as a GeoTIFF with its
  wavelengths by bench/indian_pines.py;
- EnMAP Potsdam (real EnMAP L2A tiles of the EnMAP-Box test data, 224 bands, 6 land-cover classes
  whose names are unverified), the 18 tiles mosaicked as a VRT, labels from the label tiles.

For each number of training pixels per class (10 and 50; a class with fewer than twice that many
labelled pixels gives half of them) and each seed, training pixels are drawn at random per class
and written as a point layer; every other labelled pixel is the test set. On the same pixels:

- the deep model through the product's path: ``models.jobs.fine_tune`` (no validation hold-out,
  a fixed number of epochs), then the engine's prediction (``rebuild_model``, merged adapter,
  ``collect_windows``, ``predict_windows``) on the test pixels; methods x band adaptation
  (PCA to 12 components, resampling to the Sentinel-2 bands);
- an RBF SVM (C and gamma by 3-fold cross-validation) and a Random Forest (scikit-learn), each on
  the spectra alone and on spectral-spatial features (15 principal components and their means
  over the same window the deep model sees).

Scores are overall accuracy (OA), average accuracy (AA) and Cohen's kappa, mean and standard
deviation over the seeds. A window-size sweep (KronA+, Indian Pines, PCA) picks the default window.

The backbone, labelled in every result: the official SpectralGPT weights with ``--weights``
(a ``.pth``), or a HyperAdapt backbone file; otherwise a tiny SpectralGPT-shaped backbone
pretrained without labels on each scene (``models.pretrain``, ``--pretrain-minutes`` each;
``--backbone random`` for a random start instead).

    python -m bench.accuracy [--quick] [--weights PATH] [--backbone pretrained|random]
        [--methods krona_plus lora fft head] [--pixels-per-class 10 50] [--seeds 0 1 2]

Writes bench/results/accuracy.json, accuracy.md and accuracy.png. With ``--work DIR`` the inputs,
backbones and finished runs are kept there and a rerun skips the runs already done.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from .common import (RESULTS, log, machine_info, markdown_table, mean_std, publish, pyplot,
                     run_in_work_folder, save_figure, set_threads, write_markdown,
                     write_point_layer)

import numpy as np  # noqa: E402
import torch  # noqa: E402  (after .common, which sets the OpenMP waiting policy)

ROOT = Path(__file__).resolve().parents[1]
ENMAP_DIR = ROOT.parent / "shared" / "datasets" / "enmap_potsdam"
# Label ids of the EnMAP-Box example land cover (level 3); the dataset notes call them unverified.
ENMAP_CLASS_NAMES = {1: "roof", 2: "pavement", 3: "low vegetation", 4: "tree", 5: "soil",
                     6: "water"}
BAND_LABELS = {"pca": "PCA", "s2": "S2 resampling"}
PCA_COMPONENTS = 15
SVM_GRID_C = (1.0, 10.0, 100.0, 1000.0)
SVM_GRID_GAMMA_FACTORS = (0.1, 1.0, 10.0)      # x 1 / num_features (features are standardised)
RF_TREES = 300
DEFAULT_WINDOW = 9
CLASSICAL = {
    "svm_spectra": "SVM (RBF), spectra",
    "svm_spatial": "SVM (RBF), PCA + window means",
    "rf_spectra": "Random Forest, spectra",
    "rf_spatial": "Random Forest, PCA + window means",
}


@dataclass
class Scene:
    name: str
    title: str
    raster: str
    labels: np.ndarray              # (H, W) class values, 0 = unlabelled or no image data
    class_names: dict[int, str]
    sensor: str


# -- scenes ---------------------------------------------------------------------------------------
def prepare_indian_pines(work: Path) -> Scene:
    from .indian_pines import CLASS_NAMES, load_indian_pines, write_image

    raster = work / "indian_pines.tif"
    image, labels, wavelengths = load_indian_pines()
    if not raster.exists():
        write_image(raster, image, wavelengths)
    return Scene("indian_pines", "Indian Pines (AVIRIS, 145 x 145 x 200, 16 classes)", str(raster),
                 labels.astype(np.int64), {i + 1: n for i, n in enumerate(CLASS_NAMES)}, "AVIRIS")


def prepare_enmap_potsdam(work: Path) -> Scene:
    from osgeo import gdal

    from hyperadapt.models.raster import RasterReader

    gdal.UseExceptions()
    images = sorted(glob.glob(str(ENMAP_DIR / "images" / "*.tif")))
    label_tiles = sorted(glob.glob(str(ENMAP_DIR / "labels" / "*.tif")))
    if not images or len(images) != len(label_tiles):
        raise FileNotFoundError(f"EnMAP Potsdam tiles not found under {ENMAP_DIR}")
    raster = work / "enmap_potsdam.vrt"
    if not raster.exists():
        gdal.BuildVRT(str(raster), images).FlushCache()
    image = gdal.Open(str(raster))
    label_vrt = gdal.BuildVRT("", label_tiles, outputBounds=_bounds(image),
                              xRes=image.GetGeoTransform()[1],
                              yRes=abs(image.GetGeoTransform()[5]))
    labels = np.nan_to_num(label_vrt.ReadAsArray()).astype(np.int64)
    with RasterReader(str(raster)) as reader:
        _, valid = reader.read(0, 0, reader.width, reader.height)
    labels[~valid] = 0
    return Scene("enmap_potsdam", f"EnMAP Potsdam (EnMAP L2A, {image.RasterYSize} x "
                 f"{image.RasterXSize} mosaic of 18 tiles, 224 bands, 6 classes)", str(raster),
                 labels, dict(ENMAP_CLASS_NAMES), "EnMAP")


def _bounds(dataset) -> tuple[float, float, float, float]:
    x0, dx, _, y0, _, dy = dataset.GetGeoTransform()
    x1, y1 = x0 + dx * dataset.RasterXSize, y0 + dy * dataset.RasterYSize
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


SCENES = {"indian_pines": prepare_indian_pines, "enmap_potsdam": prepare_enmap_potsdam}


# -- training and test pixels ---------------------------------------------------------------------
def split_pixels(labels: np.ndarray, per_class: int, seed: int) -> dict:
    """Random training pixels per class (at most half a class), every other labelled pixel tests."""
    rng = np.random.default_rng([seed, per_class])
    train_rows, train_cols, test_rows, test_cols = [], [], [], []
    counts = {}
    for value in sorted(int(v) for v in np.unique(labels) if v > 0):
        rows, cols = np.nonzero(labels == value)
        take = min(per_class, len(rows) // 2)
        chosen = np.zeros(len(rows), dtype=bool)
        chosen[rng.choice(len(rows), size=take, replace=False)] = True
        train_rows.append(rows[chosen])
        train_cols.append(cols[chosen])
        test_rows.append(rows[~chosen])
        test_cols.append(cols[~chosen])
        counts[value] = int(take)
    train = (np.concatenate(train_rows), np.concatenate(train_cols))
    test = (np.concatenate(test_rows), np.concatenate(test_cols))
    return {"train": train, "test": test, "train_per_class": counts,
            "train_values": labels[train], "test_values": labels[test]}


def score(scene: Scene, reference: np.ndarray, predicted: np.ndarray) -> dict:
    """OA and AA in per cent, kappa, from class values, with the engine's metrics."""
    from hyperadapt.models.metrics import metrics_from_labels
    from hyperadapt.models.samples import ClassInfo

    values = sorted(scene.class_names)
    classes = [ClassInfo(value=v, name=scene.class_names[v], color=(0, 0, 0)) for v in values]
    lookup = np.full(max(values) + 1, -1, dtype=np.int64)
    lookup[values] = np.arange(len(values))
    metrics = metrics_from_labels(lookup[reference], lookup[predicted], classes)
    return {"oa": 100.0 * metrics["overall_accuracy"], "aa": 100.0 * metrics["average_accuracy"],
            "kappa": metrics["kappa"]}


# -- classical baselines --------------------------------------------------------------------------
def classical_features(scene: Scene, window_size: int) -> dict:
    """Per-pixel features of the whole scene: spectra (good bands) and PCA + window means."""
    from scipy.ndimage import uniform_filter
    from sklearn.decomposition import PCA

    from hyperadapt.models.raster import RasterReader

    with RasterReader(scene.raster) as reader:
        cube, valid = reader.read(0, 0, reader.width, reader.height)
    bands, height, width = cube.shape
    spectra = cube.reshape(bands, -1).T.astype(np.float64)
    pca = PCA(n_components=PCA_COMPONENTS, random_state=0).fit(spectra[valid.ravel()])
    components = pca.transform(spectra).T.reshape(PCA_COMPONENTS, height, width)
    weight = uniform_filter(valid.astype(np.float64), size=window_size, mode="nearest")
    means = np.stack([uniform_filter(np.where(valid, c, 0.0), size=window_size, mode="nearest")
                      / np.maximum(weight, 1e-9) for c in components])
    spatial = np.concatenate([components, means]).reshape(2 * PCA_COMPONENTS, -1).T
    return {"spectra": spectra, "spatial": spatial, "width": width}


def classical_scores(scene: Scene, features: dict, split: dict, seed: int, threads: int) -> dict:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    width = features["width"]
    train_index = split["train"][0] * width + split["train"][1]
    test_index = split["test"][0] * width + split["test"][1]
    y = split["train_values"]
    folds = max(2, min(3, int(np.bincount(y)[np.bincount(y) > 0].min())))
    results = {}
    for kind in ("spectra", "spatial"):
        x_train, x_test = features[kind][train_index], features[kind][test_index]
        started = time.perf_counter()
        num_features = x_train.shape[1]
        search = GridSearchCV(
            make_pipeline(StandardScaler(), SVC(kernel="rbf")),
            {"svc__C": list(SVM_GRID_C),
             "svc__gamma": [f / num_features for f in SVM_GRID_GAMMA_FACTORS]},
            cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed), n_jobs=1)
        search.fit(x_train, y)
        predicted = search.predict(x_test)
        results[f"svm_{kind}"] = {**score(scene, split["test_values"], predicted),
                                  "train_seconds": time.perf_counter() - started,
                                  "chosen": {k.replace("svc__", ""): v
                                             for k, v in search.best_params_.items()}}
        started = time.perf_counter()
        forest = RandomForestClassifier(n_estimators=RF_TREES, random_state=seed, n_jobs=threads)
        forest.fit(x_train, y)
        predicted = forest.predict(x_test)
        results[f"rf_{kind}"] = {**score(scene, split["test_values"], predicted),
                                 "train_seconds": time.perf_counter() - started}
    return results


# -- backbones ------------------------------------------------------------------------------------
class Backbones:
    """Which backbone each deep run uses, pretraining (and caching) tiny ones when asked to."""

    def __init__(self, *, weights: str | None, kind: str, input_size: int, pretrain_minutes: float,
                 work: Path, device: str):
        """Args:
            weights: official checkpoint or HyperAdapt backbone file, or None.
            kind: "pretrained" (tiny, self-supervised on the scene) or "random" without weights.
            input_size: model input side.
            pretrain_minutes: wall-clock budget of each tiny pretraining.
            work: folder where pretrained backbones are kept.
            device: "auto", "cpu" or "cuda".
        """
        self.weights, self.kind, self.input_size = weights, kind, input_size
        self.pretrain_minutes, self.work, self.device = pretrain_minutes, work, device
        self.file_info = None
        if weights:
            from hyperadapt.models.pretrain import is_backbone_file, read_backbone_file

            if is_backbone_file(weights):
                self.file_info = read_backbone_file(weights)
        self.pretrainings: dict[str, dict] = {}

    def label(self) -> str:
        if self.weights and self.file_info is None:
            return f"official SpectralGPT weights ({Path(self.weights).name}), ViT-B"
        if self.file_info is not None:
            return f"HyperAdapt backbone file {Path(self.weights).name}"
        if self.kind == "random":
            return ("tiny SpectralGPT-shaped backbone (embed 128, depth 4) from a RANDOM START "
                    "(no pretraining)")
        return (f"tiny SpectralGPT-shaped backbone (embed 128, depth 4) pretrained without labels "
                f"on each scene for {self.pretrain_minutes:g} min (models.pretrain), NOT the "
                f"official SpectralGPT weights")

    def kind_label(self) -> str:
        """How the grid's backbone is named in run keys: "weights", "pretrained" or "random"."""
        return "weights" if self.weights else self.kind

    def fixed_window(self) -> int | None:
        """The window a backbone file imposes, or None when the window is free."""
        return int(self.file_info["window_size"]) if self.file_info is not None else None

    def fixed_band_adaptation(self) -> str | None:
        if self.file_info is None:
            return None
        return self.file_info["band_adaptation"].get("method")

    def settings(self, scene: Scene, band_adaptation: str, window_size: int,
                 kind: str | None = None) -> dict:
        """FineTuneSettings keyword arguments for the backbone of one run."""
        from hyperadapt.models.pretrain import PRETRAIN_PRESETS

        kind = kind or self.kind_label()
        if self.weights and kind == "weights":
            extra = {} if self.file_info is not None else {"backbone": "base"}
            return {"weights": self.weights, "window_size": window_size,
                    "input_size": self.input_size, **extra}
        if kind == "random":
            return {"random_start": True, "backbone": "tiny", "window_size": window_size,
                    "input_size": self.input_size,
                    "backbone_overrides": dict(PRETRAIN_PRESETS["tiny"])}
        return {"weights": self.pretrained(scene, band_adaptation, window_size)}

    def pretrained(self, scene: Scene, band_adaptation: str, window_size: int) -> str:
        from hyperadapt.models.pretrain import PretrainSettings, pretrain_backbone

        name = f"{scene.name}_{band_adaptation}_w{window_size}_i{self.input_size}"
        path = self.work / "backbones" / f"{name}.pt"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            log(f"  pretraining the tiny backbone {name} for {self.pretrain_minutes:g} min")
            result = pretrain_backbone(
                [scene.raster], path, settings=PretrainSettings(
                    preset="tiny", band_adaptation=band_adaptation, window_size=window_size,
                    input_size=self.input_size, time_budget_s=60 * self.pretrain_minutes,
                    device=self.device), sensor=scene.sensor, resume=False)
            info = {"epochs": result.epochs, "steps": result.steps, "seconds": result.seconds,
                    "first_loss": result.losses[0], "final_loss": result.losses[-1],
                    "mask_ratio": result.mask_ratio}
            (path.with_suffix(".json")).write_text(json.dumps(info))
            log(f"  pretrained {name}: {result.steps} steps, loss {result.losses[0]:.3f} -> "
                f"{result.losses[-1]:.3f}")
        if name not in self.pretrainings and path.with_suffix(".json").exists():
            self.pretrainings[name] = json.loads(path.with_suffix(".json").read_text())
        return str(path)


# -- deep runs ------------------------------------------------------------------------------------
def deep_run(scene: Scene, split: dict, points: Path, work: Path, *, method: str,
             band_adaptation: str, window_size: int, backbone_settings: dict, args,
             seed: int) -> dict:
    from hyperadapt.models import adapters
    from hyperadapt.models.adapter_file import load_adapter_file
    from hyperadapt.models.bands import BandAdaptation
    from hyperadapt.models.device import choose_device
    from hyperadapt.models.jobs import FineTuneSettings, fine_tune, rebuild_model
    from hyperadapt.models.predict import predict_windows
    from hyperadapt.models.raster import RasterReader
    from hyperadapt.models.windows import collect_windows

    adapter = work / f"{scene.name}_{method}_{band_adaptation}_w{window_size}_{seed}.pt"
    learning_rate = args.fft_lr if method == "fft" else args.lr
    # A fixed number of optimizer steps (not epochs), so that 10 and 50 pixels per class get the
    # same training effort; --epochs overrides it.
    epochs = args.epochs or max(1, math.ceil(args.steps * args.batch_size / len(split["train"][0])))
    settings = FineTuneSettings(method=method, epochs=epochs, learning_rate=learning_rate,
                                band_adaptation=band_adaptation, val_fraction=0.0, seed=seed,
                                device=args.device, batch_size=args.batch_size,
                                **backbone_settings)
    result = fine_tune(scene.raster, str(points), "class_id", str(adapter), settings=settings,
                       layer_name="training", sensor=scene.sensor)
    started = time.perf_counter()
    record = load_adapter_file(adapter)
    model, _ = rebuild_model(record)
    device = choose_device(args.device)
    model.to(device)
    adapters.merge_adapters(model)
    adaptation = BandAdaptation.from_state(record.band_adaptation)
    rows, cols = split["test"]
    with RasterReader(scene.raster) as reader:
        windows, _ = collect_windows(reader, adaptation, rows, cols, record.window_size)
    index, _ = predict_windows(model, torch.from_numpy(windows), device=device, batch_size=256)
    values = np.array([c.value for c in record.classes], dtype=np.int64)[index]
    found = score(scene, split["test_values"], values)
    adapter.unlink(missing_ok=True)
    return {**found, "train_seconds": result.seconds,
            "predict_seconds": time.perf_counter() - started,
            "adapter_bytes": result.adapter_bytes, "window_size": record.window_size,
            "input_size": record.input_size, "epochs_run": result.metrics.get("epochs_run"),
            "backbone": result.backbone.get("kind")}


# -- the grid -------------------------------------------------------------------------------------
class RunStore:
    """Finished runs by key, kept in the work folder so a rerun continues where it stopped."""

    def __init__(self, *, path: Path):
        """Args:
            path: the JSON file the runs are kept in.
        """
        self.path = path
        self.runs = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str):
        return self.runs.get(key)

    def put(self, key: str, value: dict) -> None:
        self.runs[key] = value
        self.path.write_text(json.dumps(self.runs, indent=1))


def run_grid(args, work: Path, backbones: Backbones, store: RunStore) -> tuple[list[dict], dict]:
    """Every run as a row {scene, per_class, seed, model, band_adaptation, window, oa, ...}, and
    the scenes' titles."""
    rows, titles = [], {}
    grid_kind = backbones.kind_label()
    sweep_kind = grid_kind if args.sweep_backbone == "same" else args.sweep_backbone
    fixed_band = backbones.fixed_band_adaptation()
    band_adaptations = [fixed_band] if fixed_band else args.band_adaptations
    grid_window = backbones.fixed_window() or args.window_size
    for scene_name in args.scenes:
        scene = SCENES[scene_name](work)
        titles[scene.name] = scene.title
        seeds = args.seeds if scene_name == args.scenes[0] else args.seeds[:args.other_scene_seeds]
        methods = args.methods if scene_name == args.scenes[0] else args.other_scene_methods
        bands = band_adaptations if scene_name == args.scenes[0] else band_adaptations[:1]
        log(f"{scene.title}: {int((scene.labels > 0).sum())} labelled pixels")
        features = None
        for per_class in args.pixels_per_class:
            for seed in seeds:
                split = split_pixels(scene.labels, per_class, seed)
                points = write_point_layer(work / f"{scene.name}_{per_class}_{seed}.gpkg",
                                               scene.raster, *split["train"],
                                               split["train_values"])
                base = {"scene": scene.name, "per_class": per_class, "seed": seed,
                        "train_pixels": int(len(split["train"][0])),
                        "test_pixels": int(len(split["test"][0]))}
                key = f"{scene.name}/{per_class}/{seed}/classical/w{grid_window}"
                classical = store.get(key)
                if classical is None:
                    if features is None:
                        features = classical_features(scene, grid_window)
                    classical = classical_scores(scene, features, split, seed, args.threads)
                    store.put(key, classical)
                for name, found in classical.items():
                    rows.append({**base, "model": name, "family": "classical",
                                 "band_adaptation": "-", "window_size": grid_window, **found})
                    log(f"  {scene.name} {per_class}/class seed {seed} {CLASSICAL[name]}: "
                        f"OA {found['oa']:.1f}")
                jobs = [(m, bands[0], grid_window, grid_kind) for m in methods]
                if scene_name == args.scenes[0]:
                    jobs += [(m, b, grid_window, grid_kind) for b in bands[1:]
                             for m in args.band_methods]
                if scene_name == args.scenes[0] and per_class == args.pixels_per_class[0]:
                    jobs += [("krona_plus", bands[0], w, sweep_kind) for w in args.window_sizes
                             if (w, sweep_kind) != (grid_window, grid_kind)]
                for method, band, window, label in jobs:
                    key = f"{scene.name}/{per_class}/{seed}/{method}/{band}/w{window}/{label}"
                    found = store.get(key)
                    if found is None:
                        found = deep_run(scene, split, points, work, method=method,
                                         band_adaptation=band, window_size=window,
                                         backbone_settings=backbones.settings(scene, band, window,
                                                                              label),
                                         args=args, seed=seed)
                        store.put(key, found)
                    rows.append({**base, "model": method, "family": "deep",
                                 "band_adaptation": band, "backbone_kind": label, **found})
                    log(f"  {scene.name} {per_class}/class seed {seed} {method} {band} w{window}"
                        f" ({label}): OA {found['oa']:.1f} ({found['train_seconds']:.0f} s)")
    return rows, titles


# -- summary and report ---------------------------------------------------------------------------
def model_label(row: dict) -> str:
    from hyperadapt.models.adapters import METHODS

    if row["family"] == "classical":
        return CLASSICAL[row["model"]]
    return METHODS[row["model"]]


def summarise(rows: list[dict], grid_window: int, grid_kind: str) -> list[dict]:
    """Mean and spread per (scene, per_class, model, band adaptation) at the grid's window."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["family"] == "deep" and (row["window_size"] != grid_window
                                        or row.get("backbone_kind") != grid_kind):
            continue
        key = (row["scene"], row["per_class"], row["family"], row["model"], row["band_adaptation"])
        groups.setdefault(key, []).append(row)
    summary = []
    for (scene, per_class, family, model, band), members in groups.items():
        summary.append({"scene": scene, "per_class": per_class, "family": family, "model": model,
                        "label": model_label(members[0]), "band_adaptation": band,
                        "seeds": [m["seed"] for m in members],
                        **{k: mean_std([m[k] for m in members])
                           for k in ("oa", "aa", "kappa", "train_seconds")}})
    return summary


def window_sweep(rows: list[dict], scene: str, per_class: int, band: str, kind: str) -> list[dict]:
    groups: dict[int, list[dict]] = {}
    for row in rows:
        if (row["family"] == "deep" and row["model"] == "krona_plus" and row["scene"] == scene
                and row["per_class"] == per_class and row["band_adaptation"] == band
                and row.get("backbone_kind") == kind):
            groups.setdefault(row["window_size"], []).append(row)
    return [{"window_size": w, "seeds": [m["seed"] for m in members],
             **{k: mean_std([m[k] for m in members]) for k in ("oa", "aa", "kappa",
                                                                 "train_seconds")}}
            for w, members in sorted(groups.items())]


def choose_window(sweep: list[dict], current: int) -> dict:
    """The best mean OA; the current default stays unless another window beats it by more than
    the larger of the two seed spreads (a smaller gain is within the noise of 3 seeds)."""
    if not sweep:
        return {"window": current, "reason": "no sweep was run"}
    if min(len(s["seeds"]) for s in sweep) < 2:
        return {"window": current, "reason": "a single seed gives no spread to judge a "
                                             f"difference by; {current} is kept"}
    best = max(sweep, key=lambda s: s["oa"]["mean"])
    here = next((s for s in sweep if s["window_size"] == current), None)
    if here is None:
        return {"window": best["window_size"],
                "reason": f"window {best['window_size']} had the best mean OA "
                          f"({best['oa']['mean']:.1f} %)"}
    gain = best["oa"]["mean"] - here["oa"]["mean"]
    spread = max(best["oa"]["std"], here["oa"]["std"])
    worst = min(sweep, key=lambda s: s["oa"]["mean"])
    behind = (f"; window {worst['window_size']} was {here['oa']['mean'] - worst['oa']['mean']:.1f} "
              f"points behind {current}" if worst["window_size"] != current else "")
    if best["window_size"] != current and gain > spread:
        return {"window": best["window_size"], "gain": gain, "spread": spread,
                "reason": f"window {best['window_size']} beat {current} by {gain:.1f} OA points, "
                          f"more than the seed spread ({spread:.1f}){behind}"}
    if best["window_size"] == current:
        reason = f"window {current} had the best mean OA ({here['oa']['mean']:.1f} %)"
    else:
        reason = (f"window {best['window_size']} was ahead by only {gain:.1f} OA points, within "
                  f"the seed spread ({spread:.1f}); {current} is kept")
    reason += behind
    return {"window": current, "gain": gain, "spread": spread, "reason": reason}


def verdicts(summary: list[dict]) -> list[str]:
    lines = []
    scenes = list(dict.fromkeys(s["scene"] for s in summary))
    for scene, per_class in sorted({(s["scene"], s["per_class"]) for s in summary},
                                   key=lambda p: (scenes.index(p[0]), p[1])):
        members = [s for s in summary if s["scene"] == scene and s["per_class"] == per_class]
        deep = [s for s in members if s["family"] == "deep"]
        classical = [s for s in members if s["family"] == "classical"]
        if not deep or not classical:
            continue
        best_deep = max(deep, key=lambda s: s["oa"]["mean"])
        best_classical = max(classical, key=lambda s: s["oa"]["mean"])
        svm = [s for s in classical if s["model"].startswith("svm")]
        best_svm = max(svm, key=lambda s: s["oa"]["mean"]) if svm else best_classical
        gap = best_deep["oa"]["mean"] - best_svm["oa"]["mean"]
        head = f"{scene}, {per_class} px/class: best deep model {best_deep['label']} " \
               f"({BAND_LABELS.get(best_deep['band_adaptation'], '-')}) OA " \
               f"{best_deep['oa']['mean']:.1f} ± {best_deep['oa']['std']:.1f}"
        if gap < 0:
            lines.append(f"{head} LOSES to the {best_svm['label']} "
                         f"({best_svm['oa']['mean']:.1f} ± {best_svm['oa']['std']:.1f}) by "
                         f"{-gap:.1f} OA points.")
        else:
            lines.append(f"{head} beats the {best_svm['label']} "
                         f"({best_svm['oa']['mean']:.1f} ± {best_svm['oa']['std']:.1f}) by "
                         f"{gap:.1f} OA points.")
        if best_classical is not best_svm:
            lines.append(f"  (best classical overall: {best_classical['label']}, OA "
                         f"{fmt(best_classical['oa'])})")
    return lines


def fmt(stat: dict, digits: int = 1) -> str:
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def write_report(report: dict, out: Path) -> None:
    summary = report["summary"]
    settings = report["settings"]
    lines = [
        "# Accuracy against classical classifiers",
        "",
        f"**Backbone: {report['backbone']}.**",
        "",
        f"Fine-tuning: " + (f"{settings['epochs']} epochs" if settings['epochs'] else
                            f"{settings['steps']} optimizer steps (epochs = steps x batch / "
                            f"training pixels)") + f", no validation hold-out, batch "
        f"{settings['batch_size']}, learning rate {settings['lr']:g} ({settings['fft_lr']:g} for "
        f"full fine-tuning), lambda 4 for KronA+/LoRA+, window {settings['window_size']} resized "
        f"to {settings['input_size']} x {settings['input_size']}, adapters on attn.q and attn.v. "
        f"Training pixels drawn at random per class (at most half of a class), every other "
        f"labelled pixel is a test pixel. Seeds: {settings['seeds']} on the first scene, "
        f"{settings['seeds'][:settings['other_scene_seeds']]} on the others. "
        f"Machine: {report['machine']['device']}, {report['machine']['threads']} threads, shared "
        f"with other work. Fine-tuning, prediction and classical fits took "
        f"{report['runs_seconds'] / 60:.0f} min in all.",
        "",
        "Classical baselines (scikit-learn, same training pixels): RBF SVM with C and gamma chosen "
        "by stratified 3-fold cross-validation, and a Random Forest of "
        f"{RF_TREES} trees; each on the spectra alone (standardised) and on {PCA_COMPONENTS} "
        f"principal components plus their means over the same {settings['window_size']} x "
        f"{settings['window_size']} window the deep model sees.",
        "",
    ]
    if report.get("pretrainings"):
        lines += ["Pretraining runs (masked-autoencoder loss, first -> last epoch):", ""]
        lines += [f"- {name}: {p['steps']} steps in {p['seconds'] / 60:.1f} min, loss "
                  f"{p['first_loss']:.3f} -> {p['final_loss']:.3f}"
                  for name, p in report["pretrainings"].items()]
        lines += [""]
    if report.get("backbone_note"):
        lines += [report["backbone_note"], ""]
    lines += ["## Verdict", ""]
    lines += [f"- {line}" if not line.startswith("  ") else f"  - {line.strip()}"
              for line in report["verdicts"]]
    for scene in dict.fromkeys(s["scene"] for s in summary):
        for per_class in sorted({s["per_class"] for s in summary if s["scene"] == scene}):
            members = [s for s in summary if s["scene"] == scene and s["per_class"] == per_class]
            members.sort(key=lambda s: -s["oa"]["mean"])
            title = report["scene_titles"][scene]
            lines += ["", f"## {title}: {per_class} training pixels per class", ""]
            lines += markdown_table(
                ["Model", "Band adaptation", "OA (%)", "AA (%)", "kappa", "train s", "seeds"],
                [[s["label"], BAND_LABELS.get(s["band_adaptation"], "-"), fmt(s["oa"]),
                  fmt(s["aa"]), fmt(s["kappa"], 3), f"{s['train_seconds']['mean']:.0f}",
                  len(s["seeds"])] for s in members], align="llrrrrr")
    sweep = report["window_sweep"]
    choice = report["window_choice"]
    lines += ["", "## Window size", "",
              f"KronA+ on {report['scene_titles'].get(report['sweep_scene'], '')}, "
              f"{report['sweep_per_class']} px/class, {BAND_LABELS.get(report['sweep_band'], '')}, "
              f"backbone: {report['sweep_backbone_label']}.", ""]
    if sweep:
        lines += markdown_table(["Window", "OA (%)", "AA (%)", "kappa", "train s", "seeds"],
                                [[f"{s['window_size']} x {s['window_size']}", fmt(s["oa"]),
                                  fmt(s["aa"]), fmt(s["kappa"], 3),
                                  f"{s['train_seconds']['mean']:.0f}", len(s["seeds"])]
                                 for s in sweep])
    lines += ["", f"**Default window: {choice['window']}** -- {choice['reason']}."]
    if report.get("window_note"):
        lines += ["", report["window_note"]]
    lines += ["", "## What was cut", ""] + [f"- {c}" for c in report["cuts"]]
    lines += ["", "![accuracy](accuracy.png)", ""]
    write_markdown(out / "accuracy.md", lines)


def plot(report: dict, path: Path) -> None:
    plt = pyplot()
    summary = report["summary"]
    panels = sorted({(s["scene"], s["per_class"]) for s in summary},
                    key=lambda p: (list(report["scene_titles"]).index(p[0]), p[1]))
    count = len(panels) + (1 if report["window_sweep"] else 0)
    columns = min(3, count)
    grid_rows = math.ceil(count / columns)
    figure, axes = plt.subplots(grid_rows, columns, figsize=(5.4 * columns, 4.4 * grid_rows),
                                squeeze=False)
    flat_axes = list(axes.flat)
    for axis in flat_axes[count:]:
        axis.set_visible(False)
    for axis, (scene, per_class) in zip(flat_axes, panels):
        members = sorted([s for s in summary
                          if s["scene"] == scene and s["per_class"] == per_class],
                         key=lambda s: s["oa"]["mean"])
        labels = [s["label"] if s["family"] == "classical"
                  else f"{s['label']} ({BAND_LABELS[s['band_adaptation']]})" for s in members]
        colors = ["#bbbbbb" if s["family"] == "classical" else "#4477aa" for s in members]
        axis.barh(range(len(members)), [s["oa"]["mean"] for s in members],
                  xerr=[s["oa"]["std"] for s in members], color=colors, capsize=2)
        axis.set_yticks(range(len(members)))
        axis.set_yticklabels(labels, fontsize=7)
        axis.set_xlabel("overall accuracy (%)")
        axis.set_xlim(0, 100)
        axis.set_title(f"{scene}, {per_class} px/class", fontsize=9)
    if report["window_sweep"]:
        axis = flat_axes[count - 1]
        sweep = report["window_sweep"]
        axis.errorbar([s["window_size"] for s in sweep], [s["oa"]["mean"] for s in sweep],
                      yerr=[s["oa"]["std"] for s in sweep], marker="o", capsize=3)
        axis.set_xticks([s["window_size"] for s in sweep])
        axis.set_xlabel("window size (pixels)")
        axis.set_ylabel("overall accuracy (%)")
        axis.set_title(f"KronA+ window sweep ({report['sweep_scene']}, "
                       f"{report['sweep_per_class']} px/class)", fontsize=9)
    figure.suptitle(f"Deep (blue) vs classical (grey); backbone: {report['backbone_short']}",
                    fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: minutes, not an hour")
    parser.add_argument("--scenes", nargs="+", default=list(SCENES), choices=list(SCENES))
    parser.add_argument("--pixels-per-class", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["krona_plus", "lora", "fft", "head"])
    parser.add_argument("--band-adaptations", nargs="+", default=["pca", "s2"],
                        choices=["pca", "s2"])
    parser.add_argument("--band-methods", nargs="+", default=["krona_plus"],
                        help="methods also run with the band adaptations after the first")
    parser.add_argument("--other-scene-methods", nargs="+", default=["krona_plus"],
                        help="methods on scenes after the first (band adaptation: the first one)")
    parser.add_argument("--other-scene-seeds", type=int, default=3,
                        help="how many of the seeds the scenes after the first get")
    parser.add_argument("--window-sizes", type=int, nargs="*", default=[5, 9, 15],
                        help="KronA+ window sweep on the first scene and pixel count")
    parser.add_argument("--sweep-backbone", choices=["same", "random"], default="same",
                        help="'random': sweep on a random start (no pretraining per window)")
    parser.add_argument("--window-size", type=int, default=DEFAULT_WINDOW)
    parser.add_argument("--input-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=300,
                        help="optimizer steps per fine-tuning (epochs follow from the pixels)")
    parser.add_argument("--epochs", type=int, default=None, help="fixed epochs instead of --steps")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--fft-lr", type=float, default=3e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--weights", default=None,
                        help="official SpectralGPT checkpoint (.pth) or a HyperAdapt backbone file")
    parser.add_argument("--backbone", choices=["pretrained", "random"], default="random",
                        help="without --weights: tiny backbone pretrained on each scene, or random")
    parser.add_argument("--pretrain-minutes", type=float, default=3.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.pixels_per_class, args.seeds, args.steps = [10], [0], 15
        args.methods, args.band_adaptations = ["krona_plus", "head"], ["pca"]
        args.window_sizes, args.pretrain_minutes, args.other_scene_seeds = [5, 9], 0.3, 1

    return run_in_work_folder(run_benchmark, args, "accuracy")


def run_benchmark(args, work: Path) -> dict:
    set_threads(args.threads)
    started = time.perf_counter()
    log(f"work folder {work}")
    backbones = Backbones(weights=args.weights, kind=args.backbone, input_size=args.input_size,
                          pretrain_minutes=args.pretrain_minutes, work=work, device=args.device)
    if backbones.fixed_window() and args.window_sizes:
        args.window_sizes = []
    grid_window = backbones.fixed_window() or args.window_size
    args.window_size = grid_window      # the report names the window that ran, the file's if fixed
    # Finished runs are reused only under the same training settings.
    store = RunStore(path=work / (f"runs_s{args.steps}_e{args.epochs}_i{args.input_size}"
                                  f"_b{args.batch_size}_lr{args.lr:g}_{args.fft_lr:g}.json"))
    rows, titles = run_grid(args, work, backbones, store)

    summary = summarise(rows, grid_window, backbones.kind_label())
    sweep_kind = backbones.kind_label() if args.sweep_backbone == "same" else args.sweep_backbone
    sweep_band = (backbones.fixed_band_adaptation() or args.band_adaptations[0])
    sweep = window_sweep(rows, args.scenes[0], args.pixels_per_class[0], sweep_band, sweep_kind)
    choice = choose_window(sweep, DEFAULT_WINDOW)
    all_methods = ("krona_plus", "krona", "lora_plus", "lora", "lokr", "fft", "head")
    left_out = [m for m in all_methods if m not in args.methods]
    bands = args.band_adaptations
    cuts = [f"Methods on the first scene with {bands[0].upper()}: {', '.join(args.methods)}"
            + (f"; with {', '.join(b.upper() for b in bands[1:])} only "
               f"{', '.join(args.band_methods)}" if len(bands) > 1 else "")
            + f". Left out: {', '.join(left_out) or 'none'} (their cost per step is in "
              f"methods.md; `--methods` and `--band-methods` add them).",
            f"Scenes after the first: {', '.join(args.other_scene_methods)} with "
            f"{bands[0].upper()} only, {args.other_scene_seeds} seed(s).",
            f"Tiny backbone, input {args.input_size} x {args.input_size}, {args.steps} steps and "
            f"no early stopping, to fit about 40 minutes on 2 shared CPU cores; a GPU user should "
            f"run `--weights SpectralGPT+.pth --input-size 32 --steps 1000`."]
    if backbones.weights:
        cuts[-1] = "Run with the given weights; see the backbone line above."
    backbone_note = None
    if not args.weights:
        backbone_note = (
            "Without the official weights the backbone holds no Sentinel-2 knowledge for an "
            "adapter to steer: these numbers say what a user without the weights gets from each "
            "method, not how KronA+ does on SpectralGPT. Rerun with `--weights` where the weights "
            "are at hand.")
    window_note = None
    if backbones.fixed_window():
        window_note = (f"The backbone file fixes the window ({grid_window}), so no sweep was run.")
    elif not args.weights and sweep:
        window_note = ("The sweep ran without the official weights; the spatial context a window "
                       "brings may count differently on SpectralGPT's features, so rerun it with "
                       "`--weights` before changing the default on its evidence.")
    report = {
        "machine": machine_info(torch.device("cuda") if args.device != "cpu"
                                and torch.cuda.is_available() else None),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "backbone": backbones.label(),
        "backbone_short": ("official weights" if args.weights and backbones.file_info is None
                           else "backbone file" if args.weights else
                           "random start (tiny)" if args.backbone == "random" else
                           f"tiny, self-supervised on the scene ({args.pretrain_minutes:g} min)"),
        "pretrainings": backbones.pretrainings,
        "scene_titles": titles,
        "summary": summary, "verdicts": verdicts(summary), "window_sweep": sweep,
        "window_choice": choice, "window_note": window_note,
        "sweep_scene": args.scenes[0], "sweep_per_class": args.pixels_per_class[0],
        "sweep_band": sweep_band,
        "sweep_backbone_label": ("the same as the grid" if args.sweep_backbone == "same"
                                 else "tiny, random start (each window would need its own "
                                      "pretraining)"),
        "cuts": cuts, "runs": rows, "seconds": time.perf_counter() - started,
        "runs_seconds": sum(r.get("train_seconds", 0.0) + r.get("predict_seconds", 0.0)
                            for r in rows),
        "backbone_note": backbone_note,
    }
    return publish(report, args.out, "accuracy", write_report, plot)


if __name__ == "__main__":
    main()
