"""Accuracy of the default path against SVM and Random Forest, and what each lever is worth.

The question a user asks: is the map HyperAdapt makes from a handful of polygons better than the
one a ten-line SVM makes on the same pixels? This bench answers it on two scenes and two ways of
drawing training pixels, and measures every setting the default is made of as an ablation row.

Scenes:
- Indian Pines (AVIRIS, 145 x 145 x 200, 16 classes; Baumgardner, Biehl and Landgrebe 2015,
  doi:10.4231/R7RX991C, CC BY 3.0), the copy inside ``tensorly``, written as a GeoTIFF with its
  wavelengths by bench/indian_pines.py;
- EnMAP Potsdam (real EnMAP L2A tiles of the EnMAP-Box test data, 224 bands, 6 land-cover classes
  whose names are unverified), the 18 tiles mosaicked as a VRT, labels from the label tiles;
- asked for by name (``--scenes indian_pines_six``): six of Indian Pines' classes that differ in
  kind, an easy, spectrally separable scene (on the same pretrained backbone).

Samplings, 10 training pixels per class (half of a smaller class), a new draw per seed:
- "polygons": 2 to 4 small rectangles per class inside a field, as a person draws them
  (bench/indian_pines.py's rectangle chooser), written as polygons;
- "scattered": single pixels at random over the class (the protocol of most papers), as points;
- "polygons_uneven" and "scattered_uneven" (``--samplings``): the same, each class with its own
  count, from half to eight times the 10 (one large polygon where drawing is easy, a few pixels of
  a rare class).
Every other labelled pixel is a test pixel.

Each deep row runs the user's path: ``models.jobs.pretraining.pretrain_backbone`` once per scene and
band adaptation (the tiny backbone, masked pretraining on the unlabelled scene, a fixed number of
epochs so that every row gets the same backbone), then ``models.jobs.fine_tune`` with its
classification of the whole scene, whose class raster is scored at the test pixels. The classical
baselines (scikit-learn) get the same training pixels: an RBF SVM (C and gamma by 3-fold
cross-validation) and a Random Forest of 300 trees, each on the standardised spectra and on 15
principal components plus their means over 9 x 9 and 15 x 15 windows, both with balanced class
weights as the default path; the best of them per scene and sampling is "the strongest classical".

    python -m bench.accuracy [--quick] [--rows ...] [--seeds 0 1 2] [--pretrain-epochs 40]
                             [--per-class 10] [--name accuracy_study]

Writes bench/results/accuracy.json, accuracy.md (verdict lines against the goal, then the
ablation table) and accuracy.png; with another ``--per-class`` than 10, accuracy_<N>px.* (the
default path with more labels, where only "never worse" is a goal); ``--name`` names another
report. With ``--work DIR`` inputs, backbones and finished runs are kept and a rerun skips what
is done.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from .common import (RESULTS, cpu_precision, log, machine_info, markdown_table, mean_std, publish,
                     pyplot, run_in_work_folder, save_figure, set_threads, write_markdown,
                     write_point_layer)

import numpy as np  # noqa: E402
import torch  # noqa: E402  (after .common, which sets the OpenMP waiting policy)

ROOT = Path(__file__).resolve().parents[1]
ENMAP_DIR = ROOT.parent / "shared" / "datasets" / "enmap_potsdam"
# Label ids of the EnMAP-Box example land cover (level 3); the dataset notes call them unverified.
ENMAP_CLASS_NAMES = {1: "roof", 2: "pavement", 3: "low vegetation", 4: "tree", 5: "soil",
                     6: "water"}
SAMPLINGS = ("polygons", "scattered")
# The same two, with as many pixels per class as a person who draws what is easy to draw gives:
# from half to eight times --per-class (2 ** uniform(-1, 3) times; 5 to 80 at 10 per class).
UNEVEN_SAMPLINGS = ("polygons_uneven", "scattered_uneven")
UNEVEN_SPAN = (-1.0, 3.0)
PER_CLASS = 10
PCA_COMPONENTS = 15
CLASSICAL_WINDOWS = (9, 15)
SVM_GRID_C = (1.0, 10.0, 100.0, 1000.0)
SVM_GRID_GAMMA_FACTORS = (0.1, 1.0, 10.0)      # x 1 / num_features (features are standardised)
RF_TREES = 300
# The goal of the default path (the accuracy issue): OA points over the strongest classical.
GOAL_LEAD = {"indian_pines": 15.0, "enmap_potsdam": 10.0}
GOAL_SCATTERED_OA = {"indian_pines": 85.0}
# Tile mode, the default, against a window per pixel with the same adapters.
GOAL_MODE_GAP = 1.0
GOAL_FFT_GAP = 2.0


@dataclass
class Scene:
    name: str
    title: str
    raster: str
    labels: np.ndarray              # (H, W) class values, 0 = unlabelled or no image data
    class_names: dict[int, str]
    sensor: str
    backbone_of: str = ""           # the scene whose pretrained backbone it shares (same raster)


@dataclass
class Row:
    """One line of the ablation: a backbone band adaptation and fine-tuning settings."""

    name: str
    label: str
    band_adaptation: str = "mnf"
    settings: dict = field(default_factory=dict)
    window_size: int | None = None     # the backbone's window; None: the pretraining default
    cpu_precision: str | None = None   # "fp32" or "bf16" forced on a CPU; None: the engine's

    @property
    def backbone_key(self) -> tuple[str, int | None]:
        return self.band_adaptation, self.window_size


# The default path is the settings models.options holds (FineTuneSettings() unchanged) on a
# backbone pretrained with options.PRETRAIN_BAND_ADAPTATION. Every other row changes one thing
# from it, or (the "before" rows) rebuilds the path this project had before these levers.
BEFORE = {"epochs": 30, "learning_rate": 1e-3, "pixel_dim": 0, "context_dropout": 0.0,
          "segment_size": 0, "spectral_weight": 0.0}
ROWS = {row.name: row for row in (
    Row("default", "Default path (models.options)"),
    Row("before", "Before: PCA backbone, 30 epochs at lr 1e-3, linear head, no vote, no spectral "
        "classifier", "pca",
        BEFORE),
    Row("before_mnf", "Before, on the MNF backbone", "mnf", BEFORE),
    Row("steps", "Before + MNF + 300 steps at lr 3e-3", "mnf",
        {**BEFORE, "epochs": None, "learning_rate": 3e-3}),
    Row("pixel_head", "... + centre-pixel head", "mnf",
        {**BEFORE, "epochs": None, "learning_rate": 3e-3, "pixel_dim": 64}),
    Row("no_vote", "Default without the segment vote", settings={"segment_size": 0}),
    Row("vote8", "Default, segment vote with 8-pixel superpixels", settings={"segment_size": 8}),
    Row("no_context_dropout", "Default without context dropout", settings={"context_dropout": 0.0}),
    Row("pca_backbone", "Default on the PCA backbone", "pca"),
    Row("all_layers", "Default, KronA+ on all six linear layers",
        settings={"targets": ("attn.q", "attn.k", "attn.v", "attn.proj", "mlp.fc1", "mlp.fc2")}),
    Row("fft", "Default, full fine-tuning (lr 1e-3)",
        settings={"method": "fft", "learning_rate": 1e-3}),
    Row("window9", "Default on a backbone pretrained on 9 x 9 windows", window_size=9),
    Row("self_training", "Default + 2 rounds of self-training",
        settings={"self_training_rounds": 2}),
    Row("validate_small", "Default, holding a quarter out for validation in small classes too",
        settings={"min_validation_pixels": 0}),
    Row("context_dropout_quarter", "Default, context dropout 0.25",
        settings={"context_dropout": 0.25}),
    Row("pixel_head_128", "Default, centre-pixel head 128 wide", settings={"pixel_dim": 128}),
    Row("lambda16", "Default, KronA+ lambda 16", settings={"lr_ratio": 16.0}),
    Row("window_mode", "Default, classifying a window per pixel (window mode)",
        settings={"classify_mode": "window"}),
    Row("window_training", "Default, trained window by window (each window centred on its pixel)",
        settings={"training_mode": "window"}),
    Row("sampled_training", "Default, trained in tile mode sending one of the four grid windows "
        "per pixel and step", settings={"training_mode": "sampled"}),
    Row("previous_default", "Previous default: trained window by window, tile step 6 (0.4 of the "
        "window)", settings={"training_mode": "window", "tile_step": 6}),
    Row("fp32_cpu", "Default in float32 on the CPU (fine-tuning and classifying)",
        cpu_precision="fp32"),
    Row("bf16_cpu", "Default in bfloat16 on the CPU (fine-tuning and classifying)",
        cpu_precision="bf16"),
    Row("steps_only", "Default with the steps alone (no least number of epochs)",
        settings={"min_passes": 0}),
    Row("no_validation", "Default, training on every pixel (no polygons held out for validation)",
        settings={"val_fraction": 0.0}),
    Row("refit", "Default, trained again on every pixel for the epochs the validation chose",
        settings={"refit": True}),
    Row("no_spectral", "Default without the spectral classifier (the network alone)",
        settings={"spectral_weight": 0.0}),
    Row("spectral_pixel", "Default, the spectral classifier on the pixel's spectrum alone",
        settings={"spectral_context": 0}),
    Row("spectral_standardised", "Default, the spectral classifier on each band standardised "
        "(not in units of the scene's noise)", settings={"spectral_whitening": False}),
    Row("spectral_quarter", "Default, spectral classifier weight 0.25",
        settings={"spectral_weight": 0.25}),
    Row("spectral_three_quarters", "Default, spectral classifier weight 0.75",
        settings={"spectral_weight": 0.75}),
    Row("vote_always", "Default, keeping the segment vote without checking it on the held-out "
        "polygons", settings={"validate_vote": False}),
    Row("no_class_weighting", "Default without class weights (every pixel weighing the same in "
        "training)", settings={"class_weighting": "none"}),
)}
DEFAULT_ROWS = list(ROWS)


# -- scenes ---------------------------------------------------------------------------------------
def prepare_indian_pines(work: Path) -> Scene:
    from .indian_pines import CLASS_NAMES, load_indian_pines, write_image

    raster = work / "indian_pines.tif"
    image, labels, wavelengths = load_indian_pines()
    if not raster.exists():
        write_image(raster, image, wavelengths)
    return Scene("indian_pines", "Indian Pines (AVIRIS, 145 x 145 x 200, 16 classes)", str(raster),
                 labels.astype(np.int64), {i + 1: n for i, n in enumerate(CLASS_NAMES)}, "AVIRIS")


# An easy, spectrally separable scene like those where an SVM on the spectra is hard to beat: six
# of Indian Pines' classes that differ in kind (pasture, trees, hay, a soybean field, wheat,
# woods); the other classes' pixels are neither trained on nor tested.
EASY_INDIAN_PINES_CLASSES = ("Grass-pasture", "Grass-trees", "Hay-windrowed", "Soybean-mintill",
                             "Wheat", "Woods")


def prepare_indian_pines_six(work: Path) -> Scene:
    scene = prepare_indian_pines(work)
    kept = [value for value, name in scene.class_names.items()
            if name in EASY_INDIAN_PINES_CLASSES]
    labels = np.where(np.isin(scene.labels, kept), scene.labels, 0)
    title = f"Indian Pines, six classes ({', '.join(EASY_INDIAN_PINES_CLASSES)})"
    return Scene("indian_pines_six", title, scene.raster, labels,
                 {value: scene.class_names[value] for value in kept}, scene.sensor,
                 backbone_of=scene.name)


def prepare_enmap_potsdam(work: Path) -> Scene:
    from osgeo import gdal

    from hyperadapt.models.data.raster import RasterReader

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


SCENES = {"indian_pines": prepare_indian_pines, "enmap_potsdam": prepare_enmap_potsdam,
          "indian_pines_six": prepare_indian_pines_six}
# What a plain invocation runs; indian_pines_six is asked for by name (--scenes).
DEFAULT_SCENES = ("indian_pines", "enmap_potsdam")


# -- training and test pixels ---------------------------------------------------------------------
def split_pixels(labels: np.ndarray, sampling: str, per_class: int, seed: int) -> dict:
    """Training pixels per class (rectangles or scattered pixels), every other labelled pixel tests;
    an "_uneven" sampling draws each class's count (UNEVEN_SPAN) instead of ``per_class``.

    Returns {"train": (rows, cols), "test": (rows, cols), "train_values", "test_values",
    "rectangles": {value: [(row, col, rows, cols)]} (polygons only)}.
    """
    from .indian_pines import choose_rectangles

    chosen = np.zeros(labels.shape, dtype=bool)
    rectangles = {}
    values = sorted(int(v) for v in np.unique(labels) if v > 0)
    wanted = {value: per_class for value in values}
    if sampling in UNEVEN_SAMPLINGS:
        factors = 2.0 ** np.random.default_rng([seed, per_class, 7]).uniform(*UNEVEN_SPAN,
                                                                           len(values))
        wanted = {value: max(1, int(round(per_class * f))) for value, f in zip(values, factors)}
        sampling = sampling.removesuffix("_uneven")
    if sampling == "polygons":
        rectangles = choose_rectangles(labels, per_class=wanted, seed=seed)
        for rects in rectangles.values():
            for row, col, rows, cols in rects:
                chosen[row:row + rows, col:col + cols] = True
    elif sampling == "scattered":
        rng = np.random.default_rng([seed, per_class])
        for value in values:
            rows, cols = np.nonzero(labels == value)
            take = min(wanted[value], len(rows) // 2)
            pick = rng.choice(len(rows), size=take, replace=False)
            chosen[rows[pick], cols[pick]] = True
    else:
        raise ValueError(f"unknown sampling {sampling!r}")
    train = np.nonzero(chosen)
    test = np.nonzero((labels > 0) & ~chosen)
    return {"train": train, "test": test, "train_values": labels[train],
            "test_values": labels[test], "rectangles": rectangles}


def write_training_layer(path: Path, scene: Scene, split: dict) -> Path:
    """The training pixels as a user's layer: rectangles as polygons, or points."""
    if split["rectangles"]:
        from .indian_pines import write_rectangle_polygons

        return write_rectangle_polygons(path, scene.raster, split["rectangles"])
    return write_point_layer(path, scene.raster, *split["train"], split["train_values"])


def score(scene: Scene, reference: np.ndarray, predicted: np.ndarray) -> dict:
    """OA and AA in per cent, and kappa, over every test pixel."""
    from hyperadapt.models.data.samples import ClassInfo
    from hyperadapt.models.learning.metrics import metrics_from_labels

    values = sorted(scene.class_names)
    classes = [ClassInfo(value=v, name=scene.class_names[v], color=(0, 0, 0)) for v in values]
    lookup = np.full(max(max(values), int(predicted.max(initial=0))) + 1, -1, dtype=np.int64)
    lookup[values] = np.arange(len(values))
    predicted_index = lookup[predicted]
    # Test pixels are valid image pixels, which the classification always covers; a figure over
    # part of them would look right and not be.
    if (predicted_index < 0).any():
        raise RuntimeError(f"{int((predicted_index < 0).sum())} test pixels are unclassified")
    metrics = metrics_from_labels(lookup[reference], predicted_index, classes)
    return {"oa": 100.0 * metrics["overall_accuracy"], "aa": 100.0 * metrics["average_accuracy"],
            "kappa": metrics["kappa"]}


# -- classical baselines --------------------------------------------------------------------------
def classical_features(scene: Scene) -> dict:
    """Per-pixel features of the whole scene: spectra, and PCA + window means per window size."""
    from scipy.ndimage import uniform_filter
    from sklearn.decomposition import PCA

    from hyperadapt.models.data.raster import RasterReader

    with RasterReader(scene.raster) as reader:
        cube, valid = reader.read(0, 0, reader.width, reader.height)
    bands, height, width = cube.shape
    spectra = cube.reshape(bands, -1).T.astype(np.float64)
    pca = PCA(n_components=PCA_COMPONENTS, random_state=0).fit(spectra[valid.ravel()])
    components = pca.transform(spectra).T.reshape(PCA_COMPONENTS, height, width)
    features = {"spectra": spectra, "width": width}
    for window in CLASSICAL_WINDOWS:
        weight = uniform_filter(valid.astype(np.float64), size=window, mode="nearest")
        means = np.stack([uniform_filter(np.where(valid, c, 0.0), size=window, mode="nearest")
                          / np.maximum(weight, 1e-9) for c in components])
        features[f"pca_w{window}"] = np.concatenate([components, means]).reshape(
            2 * PCA_COMPONENTS, -1).T
    return features


def classical_label(model: str) -> str:
    kind, features = model.split("/", 1)
    name = "SVM (RBF)" if kind == "svm" else "Random Forest"
    if features == "spectra":
        return f"{name}, spectra"
    window = features.split("_w")[1]
    return f"{name}, PCA + {window} x {window} means"


def classical_scores(scene: Scene, features: dict, split: dict, seed: int, threads: int) -> dict:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from hyperadapt.models.learning.class_balance import class_weights

    width = features["width"]
    train_index = split["train"][0] * width + split["train"][1]
    test_index = split["test"][0] * width + split["test"][1]
    y = split["train_values"]
    counts = np.bincount(y)
    folds = max(2, min(3, int(counts[counts > 0].min())))
    # Balanced class weights, as the default path trains with (all 1 where the classes have as
    # many pixels), from the whole training set, so the cross-validation's folds share them.
    per_class = class_weights(y, "balanced")
    weights = {int(c): float(per_class[c]) for c in np.unique(y)}
    results = {}
    for kind in ["spectra"] + [f"pca_w{w}" for w in CLASSICAL_WINDOWS]:
        x_train, x_test = features[kind][train_index], features[kind][test_index]
        started = time.perf_counter()
        num_features = x_train.shape[1]
        search = GridSearchCV(
            make_pipeline(StandardScaler(), SVC(kernel="rbf", class_weight=weights)),
            {"svc__C": list(SVM_GRID_C),
             "svc__gamma": [f / num_features for f in SVM_GRID_GAMMA_FACTORS]},
            cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed), n_jobs=1)
        search.fit(x_train, y)
        results[f"svm/{kind}"] = {**score(scene, split["test_values"], search.predict(x_test)),
                                  "seconds": time.perf_counter() - started}
        started = time.perf_counter()
        forest = RandomForestClassifier(n_estimators=RF_TREES, random_state=seed, n_jobs=threads,
                                        class_weight=weights)
        forest.fit(x_train, y)
        results[f"rf/{kind}"] = {**score(scene, split["test_values"], forest.predict(x_test)),
                                 "seconds": time.perf_counter() - started}
    return results


# -- backbones ------------------------------------------------------------------------------------
def pretrained_backbone(scene: Scene, band_adaptation: str, window_size: int | None, args,
                        work: Path) -> tuple[str, dict]:
    """The tiny backbone pretrained on the scene (kept in the work folder) and its description."""
    from hyperadapt.models import options
    from hyperadapt.models.jobs.pretraining import PretrainSettings, pretrain_backbone

    window_size = window_size or options.PRETRAIN_WINDOW_SIZE
    path = (work / "backbones" /
            f"{scene.backbone_of or scene.name}_{band_adaptation}_w{window_size}_"
            f"e{args.pretrain_epochs}.pt")
    info_path = path.with_suffix(".json")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        log(f"  pretraining the tiny backbone on {scene.name} ({band_adaptation}, "
            f"{args.pretrain_epochs} epochs)")
        result = pretrain_backbone(
            [scene.raster], path, settings=PretrainSettings(
                preset="tiny", band_adaptation=band_adaptation, window_size=window_size,
                epochs=args.pretrain_epochs, device=args.device, seed=0),
            sensor=scene.sensor, resume=False)
        info_path.write_text(json.dumps(
            {"steps": result.steps, "seconds": result.seconds, "first_loss": result.losses[0],
             "final_loss": result.losses[-1], "mask_ratio": result.mask_ratio}))
        log(f"  pretrained: {result.steps} steps in {result.seconds / 60:.1f} min, loss "
            f"{result.losses[0]:.3f} -> {result.losses[-1]:.3f}")
    return str(path), json.loads(info_path.read_text())


# -- deep runs ------------------------------------------------------------------------------------
def deep_run(scene: Scene, split: dict, layer: Path, work: Path, *, row: Row, backbone: str,
             args, seed: int) -> dict:
    """Fine-tune with the row's settings, classify the scene, score the map at the test pixels."""
    from osgeo import gdal

    from hyperadapt.models.jobs import FineTuneSettings, fine_tune

    stem = f"{scene.name}_{row.name}_{seed}"
    adapter, classification = work / f"{stem}.pt", work / f"{stem}.tif"
    settings = FineTuneSettings(**{"weights": backbone, "seed": seed, "device": args.device,
                                   **row.settings})
    with cpu_precision(row.cpu_precision) if row.cpu_precision else contextlib.nullcontext():
        result = fine_tune(scene.raster, str(layer), "class_id", str(adapter), settings=settings,
                           layer_name="training", sensor=scene.sensor,
                           classification_path=str(classification))
    predicted = gdal.Open(str(classification)).ReadAsArray()[split["test"]].astype(np.int64)
    found = score(scene, split["test_values"], predicted)
    for path in (adapter, classification, classification.with_suffix(".qml"),
                 Path(f"{classification}.aux.xml")):
        path.unlink(missing_ok=True)
    return {**found, "seconds": result.seconds, "adapter_bytes": result.adapter_bytes,
            "epochs_run": result.metrics.get("epochs_run")}


# -- the grid -------------------------------------------------------------------------------------
class RunStore:
    """Finished runs by key, kept in the work folder so a rerun continues where it stopped."""

    def __init__(self, *, path: Path):
        """Args:
            path: the JSON file the runs are kept in.
        """
        self.path = path
        self.runs = json.loads(path.read_text()) if path.exists() else {}
        self.kept = len(self.runs)   # finished by an earlier invocation

    def get(self, key: str):
        return self.runs.get(key)

    def put(self, key: str, value: dict) -> None:
        self.runs[key] = value
        self.path.write_text(json.dumps(self.runs, indent=1))


def run_grid(args, work: Path, store: RunStore) -> tuple[list[dict], dict, dict]:
    """Every run as a row dict, the scenes' titles and the pretraining descriptions."""
    runs, titles, pretrainings = [], {}, {}
    for scene_name in args.scenes:
        scene = SCENES[scene_name](work)
        titles[scene.name] = scene.title
        log(f"{scene.title}: {int((scene.labels > 0).sum())} labelled pixels")
        backbones = {}
        for key in dict.fromkeys(ROWS[name].backbone_key for name in args.rows):
            band, window = key
            backbones[key], pretrainings[f"{scene.name}/{band}/w{window or 'default'}"] = \
                pretrained_backbone(scene, band, window, args, work)
        features = None
        for sampling in args.samplings:
            for seed in args.seeds:
                split = split_pixels(scene.labels, sampling, args.per_class, seed)
                # Runs with 10 pixels per class keep the keys they always had in the work folder.
                draw = f"{scene.name}/{sampling}/{seed}" + (
                    f"/{args.per_class}px" if args.per_class != PER_CLASS else "")
                layer = write_training_layer(work / f"{draw.replace('/', '_')}.gpkg", scene,
                                             split)
                base = {"scene": scene.name, "sampling": sampling, "seed": seed,
                        "train_pixels": int(len(split["train"][0])),
                        "test_pixels": int(len(split["test"][0]))}
                key = f"{draw}/classical"
                classical = store.get(key)
                if classical is None:
                    features = features or classical_features(scene)
                    classical = classical_scores(scene, features, split, seed, args.threads)
                    store.put(key, classical)
                for model, found in classical.items():
                    runs.append({**base, "family": "classical", "model": model, **found})
                best = max(classical.values(), key=lambda f: f["oa"])["oa"]
                log(f"  {scene.name} {sampling} seed {seed}: strongest classical OA {best:.1f}")
                for name in args.rows:
                    row = ROWS[name]
                    key = f"{draw}/{name}"
                    found = store.get(key)
                    if found is None:
                        found = deep_run(scene, split, layer, work, row=row,
                                         backbone=backbones[row.backbone_key], args=args,
                                         seed=seed)
                        store.put(key, found)
                    runs.append({**base, "family": "deep", "model": name, **found})
                    log(f"  {scene.name} {sampling} seed {seed} {name}: OA {found['oa']:.1f} "
                        f"({found['seconds']:.0f} s)")
    return runs, titles, pretrainings


# -- summary, verdicts and report ----------------------------------------------------------------
def summarise(runs: list[dict]) -> list[dict]:
    """Mean and spread per (scene, sampling, model)."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["scene"], run["sampling"], run["family"], run["model"]),
                          []).append(run)
    return [{"scene": scene, "sampling": sampling, "family": family, "model": model,
             "seeds": [m["seed"] for m in members],
             **{k: mean_std([m[k] for m in members]) for k in ("oa", "aa", "kappa", "seconds")}}
            for (scene, sampling, family, model), members in groups.items()]


def _find(summary, scene, sampling, family, model=None):
    members = [s for s in summary if s["scene"] == scene and s["sampling"] == sampling
               and s["family"] == family and (model is None or s["model"] == model)]
    return members


def verdicts(summary: list[dict], scenes: list[str], samplings: list[str],
             per_class: int = PER_CLASS) -> list[str]:
    """One line per goal of the default path, each saying met or NOT met with the numbers (the
    leads and the least OA are goals at 10 pixels per class only)."""
    lines = []
    for scene in scenes:
        for sampling in samplings:
            default = _find(summary, scene, sampling, "deep", "default")
            classical = _find(summary, scene, sampling, "classical")
            if not default or not classical:
                continue
            default = default[0]
            best = max(classical, key=lambda s: s["oa"]["mean"])
            lead = default["oa"]["mean"] - best["oa"]["mean"]
            spread = max(default["oa"]["std"], best["oa"]["std"])
            never_worse = lead >= -spread
            goal = GOAL_LEAD.get(scene) if per_class == PER_CLASS else None
            text = (f"{scene}, {sampling}: default OA {fmt(default['oa'])} against the strongest "
                    f"classical, {classical_label(best['model'])}, {fmt(best['oa'])}: "
                    f"{lead:+.1f} points. ")
            text += ("Never worse than it beyond the seed spread: met. " if never_worse else
                     f"Never worse than it beyond the seed spread ({spread:.1f}): NOT met. ")
            if goal is not None:
                text += (f"Lead of at least {goal:g}: {'met' if lead >= goal else 'NOT met'}.")
            lines.append(text)
            target = (GOAL_SCATTERED_OA.get(scene)
                      if sampling == "scattered" and per_class == PER_CLASS else None)
            if target is not None:
                reached = default["oa"]["mean"] >= target
                lines.append(f"{scene}, {sampling}: OA of at least {target:g} %: "
                             f"{'met' if reached else 'NOT met'} ({default['oa']['mean']:.1f}).")
            fft = _find(summary, scene, sampling, "deep", "fft")
            if fft:
                gap = fft[0]["oa"]["mean"] - default["oa"]["mean"]
                lines.append(f"{scene}, {sampling}: KronA+ within {GOAL_FFT_GAP:g} points of full "
                             f"fine-tuning on the same backbone: "
                             f"{'met' if gap <= GOAL_FFT_GAP else 'NOT met'} (full fine-tuning "
                             f"{fmt(fft[0]['oa'])}, {gap:+.1f}).")
            window = _find(summary, scene, sampling, "deep", "window_mode")
            if window:
                gap = default["oa"]["mean"] - window[0]["oa"]["mean"]
                lines.append(f"{scene}, {sampling}: the default's tile mode within "
                             f"{GOAL_MODE_GAP:g} point of a window per pixel or "
                             f"better: {'met' if gap >= -GOAL_MODE_GAP else 'NOT met'} (window "
                             f"mode {fmt(window[0]['oa'])}, {gap:+.1f}).")
    return lines


def fmt(stat: dict, digits: int = 1) -> str:
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _uneven_note(samplings) -> str:
    low, high = (2.0 ** bound for bound in UNEVEN_SPAN)
    return (f" (in the uneven samplings, {low:g} to {high:g} times as many, drawn per class)"
            if set(samplings) & set(UNEVEN_SAMPLINGS) else "")


def write_report(report: dict, out: Path) -> None:
    summary, settings = report["summary"], report["settings"]
    scenes, samplings = settings["scenes"], settings["samplings"]
    columns = [(scene, sampling) for scene in scenes for sampling in samplings]
    lines = [
        "# Accuracy of the default path against SVM and Random Forest",
        "",
        f"Scenes {', '.join(scenes)} x samplings {', '.join(samplings)} x seeds "
        f"{settings['seeds']}, {settings.get('per_class', PER_CLASS)} training pixels per class"
        f"{_uneven_note(samplings)}; every other labelled pixel is a test pixel. Backbone: the "
        f"tiny SpectralGPT-shaped backbone pretrained without labels on each scene for "
        f"{settings['pretrain_epochs']} epochs (no official weights on this machine). Machine: "
        f"{report['machine']['device']}, {report['machine']['threads']} threads, shared with "
        f"other work. {_took(report)}",
        "",
        "## Verdict", ""]
    lines += [f"- {line}" for line in report["verdicts"]]
    time_note = ("Time: \"s per run\" is fine-tuning and classifying the whole scene; \"user "
                 "path, min\" adds the pretraining of the row's backbone on the scene (listed "
                 "below), the whole path a user without official weights runs on these 2 cores.")
    if settings["name"] == "accuracy":
        time_note += (" The levers measured while the default was the network alone, before the "
                      "spectral classifier, are in [accuracy_network_alone.md]"
                      "(accuracy_network_alone.md).")
    lines += ["", "## Ablation: OA (%) per row, mean ± sd over the seeds", "", time_note, ""]
    header = ["Row"] + [f"{scene.replace('_', ' ')}, {sampling}" for scene, sampling in columns]
    header += ["s per run", "user path, min"]
    table = []
    for name in settings["rows"]:
        row = ROWS[name]
        cells = [row.label]
        seconds, path = [], []
        for scene, sampling in columns:
            found = _find(summary, scene, sampling, "deep", name)
            cells.append(fmt(found[0]["oa"]) if found else "-")
            if found:
                seconds.append(found[0]["seconds"]["mean"])
                pretraining = report["pretrainings"].get(
                    f"{scene}/{row.band_adaptation}/w{row.window_size or 'default'}", {})
                path.append(pretraining.get("seconds", 0.0) + found[0]["seconds"]["mean"])
        cells.append(f"{np.mean(seconds):.0f}" if seconds else "-")
        cells.append(f"{np.mean(path) / 60:.1f}" if path else "-")
        table.append(cells)
    models = sorted({s["model"] for s in summary if s["family"] == "classical"})
    for model in models:
        cells = [classical_label(model)]
        seconds = []
        for scene, sampling in columns:
            found = _find(summary, scene, sampling, "classical", model)
            cells.append(fmt(found[0]["oa"]) if found else "-")
            if found:
                seconds.append(found[0]["seconds"]["mean"])
        cells += [f"{np.mean(seconds):.0f}" if seconds else "-", "-"]
        table.append(cells)
    lines += markdown_table(header, table, align="l" + "r" * (len(header) - 1))
    lines += ["", "Rows: " + "; ".join(f"**{ROWS[n].label}**: {describe_row(ROWS[n])}"
                                       for n in settings["rows"]) + ".", ""]
    lines += ["## Pretraining", ""]
    lines += [f"- {name}: {p['steps']} steps in {p['seconds'] / 60:.1f} min, masked loss "
              f"{p['first_loss']:.3f} -> {p['final_loss']:.3f}"
              for name, p in report["pretrainings"].items()]
    name = settings["name"]
    lines += ["", f"![accuracy]({name}.png)", ""]
    write_markdown(out / f"{name}.md", lines)


def report_name(per_class: int) -> str:
    return "accuracy" if per_class == PER_CLASS else f"accuracy_{per_class}px"


def _took(report: dict) -> str:
    """How long the bench took, and which runs an earlier invocation had made (kept in --work)."""
    minutes = f"{report['seconds'] / 60:.0f} min"
    kept = report.get("runs_kept", 0)
    if not kept:
        return f"The whole bench took {minutes}."
    return (f"This invocation made {report['runs_new']} runs in {minutes}; the other runs come "
            f"from earlier invocations kept in the work folder (`--work`), made with the code of "
            f"their time.")


WHITENED = ", in units of the scene's noise where neighbouring pixels measure it"


def describe_row(row: Row) -> str:
    """The row's backbone and the settings it changes, or the defaults it runs."""
    from hyperadapt.models import options
    from hyperadapt.models.settings import FineTuneSettings

    if row.cpu_precision:
        return (f"{row.band_adaptation.upper()} backbone, the defaults, {row.cpu_precision} on "
                f"the CPU")
    if not row.settings:
        defaults = FineTuneSettings()
        checked = (" (left out where the held-out polygons do better without it)"
                   if defaults.validate_vote else "")
        return (f"{row.band_adaptation.upper()} backbone, method {defaults.method} on "
                f"{', '.join(defaults.targets)}, {defaults.steps} steps of {defaults.batch_size} "
                f"(at least {defaults.min_passes} epochs, within "
                f"{options.MAX_SCHEDULED_STEPS} steps) at lr {defaults.learning_rate:g} "
                f"(lambda {defaults.lr_ratio:g}), centre-pixel head "
                f"{defaults.pixel_dim}, context dropout {defaults.context_dropout:g}, "
                f"{defaults.class_weighting} class weights, "
                f"classifying in {defaults.classify_mode} mode (windows "
                f"{options.TILE_STEP_SHARE:g} of a window apart), training in "
                f"{defaults.training_mode} mode, spectral classifier weight "
                f"{defaults.spectral_weight:g} (pixel, {defaults.spectral_context} x "
                f"{defaults.spectral_context} neighbourhood or both"
                f"{WHITENED if defaults.spectral_whitening else ''}), "
                f"segment vote "
                f"{defaults.segment_size}{checked}, bfloat16 "
                f"where a CPU computes it (classifying; fine-tuning too for a ViT-Base-wide "
                f"backbone)")
    return (f"{row.band_adaptation.upper()} backbone, "
            + ", ".join(f"{k} = {list(v) if isinstance(v, tuple) else v}"
                        for k, v in row.settings.items()))


def plot(report: dict, path: Path) -> None:
    plt = pyplot()
    summary, settings = report["summary"], report["settings"]
    panels = [(s, p) for s in settings["scenes"] for p in settings["samplings"]]
    figure, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 5.2), squeeze=False)
    for axis, (scene, sampling) in zip(axes.flat, panels):
        members = [s for s in summary if s["scene"] == scene and s["sampling"] == sampling]
        members.sort(key=lambda s: s["oa"]["mean"])
        labels = [ROWS[s["model"]].name if s["family"] == "deep" else classical_label(s["model"])
                  for s in members]
        colors = ["#bbbbbb" if s["family"] == "classical" else
                  "#cc3311" if s["model"] == "default" else "#4477aa" for s in members]
        axis.barh(range(len(members)), [s["oa"]["mean"] for s in members],
                  xerr=[s["oa"]["std"] for s in members], color=colors, capsize=2)
        axis.set_yticks(range(len(members)))
        axis.set_yticklabels(labels, fontsize=7)
        axis.set_xlim(0, 100)
        axis.set_xlabel("overall accuracy (%)")
        axis.set_title(f"{scene}, {sampling}", fontsize=9)
    figure.suptitle("Default path (red), ablation rows (blue), classical (grey)", fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: a few minutes")
    parser.add_argument("--scenes", nargs="+", default=list(DEFAULT_SCENES),
                        choices=list(SCENES))
    parser.add_argument("--samplings", nargs="+", default=list(SAMPLINGS),
                        choices=SAMPLINGS + UNEVEN_SAMPLINGS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--per-class", type=int, default=PER_CLASS,
                        help="training pixels per class (half of a smaller class)")
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=list(ROWS))
    parser.add_argument("--pretrain-epochs", type=int, default=40,
                        help="masked pretraining of each scene's tiny backbone")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default=None,
                        help="report file name without suffix (default: accuracy, or "
                             "accuracy_<N>px with another --per-class), so that a study of a few "
                             "rows does not replace the main report")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.pretrain_epochs, args.rows = [0], 2, ["default", "before"]
    if "default" not in args.rows:
        args.rows = ["default"] + args.rows
    args.name = args.name or report_name(args.per_class)
    return run_in_work_folder(run_benchmark, args, "accuracy")


def run_benchmark(args, work: Path) -> dict:
    set_threads(args.threads)
    started = time.perf_counter()
    log(f"work folder {work}")
    store = RunStore(path=work / f"runs_e{args.pretrain_epochs}.json")
    runs, titles, pretrainings = run_grid(args, work, store)
    summary = summarise(runs)
    report = {
        "machine": machine_info(torch.device("cuda") if args.device != "cpu"
                                and torch.cuda.is_available() else None),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "scene_titles": titles, "pretrainings": pretrainings, "summary": summary,
        "verdicts": verdicts(summary, args.scenes, args.samplings, args.per_class),
        "runs": runs,
        "rows": {name: {"label": ROWS[name].label, "band_adaptation": ROWS[name].band_adaptation,
                        "settings": {k: list(v) if isinstance(v, tuple) else v
                                     for k, v in ROWS[name].settings.items()}}
                 for name in args.rows},
        "seconds": time.perf_counter() - started,
        "runs_new": len(store.runs) - store.kept, "runs_kept": store.kept,
    }
    return publish(report, args.out, args.name, write_report, plot)


if __name__ == "__main__":
    main()
