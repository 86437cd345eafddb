"""The HyperAdapt algorithms through qgis_process, processing.run and a batch, on a small scene.

The scene is 24 x 24 pixels with 24 bands and three classes in vertical strips; the model is the
tiny backbone from a random start, trained for 2 epochs at input size 16, so only the plumbing is
under test here (files, classes, names, colours, styles, errors), not accuracy.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

REPO = Path(__file__).resolve().parents[1]
CLASSES = {"water": (20, 90, 200), "forest": (10, 120, 30), "field": (230, 200, 40)}
CLASS_CODES = {"water": 10, "forest": 20, "field": 30}
SIZE, NUM_BANDS, PIXEL_M = 24, 24, 30.0
ORIGIN = (400_000.0, 5_800_000.0)
# Tiny and quick: what every fine-tuning run in this file uses.
QUICK_FINETUNE = {"BACKBONE": 1, "RANDOM_START": 1, "EPOCHS": 2, "INPUT_SIZE": 16, "WINDOW_SIZE": 5,
                  "BATCH_SIZE": 16, "DEVICE": 2}

gdal.UseExceptions()
ogr.UseExceptions()


# -- the scene ------------------------------------------------------------------------------------
def _srs() -> osr.SpatialReference:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def _write_scene(path: Path, seed: int) -> None:
    """Three classes in vertical strips of 8 columns, each with its own spectrum, plus noise."""
    rng = np.random.default_rng(seed)
    wavelengths = np.linspace(450.0, 2400.0, NUM_BANDS)
    spectra = np.stack([3000 * np.exp(-((wavelengths - centre) / 300.0) ** 2) + 500
                        for centre in (500.0, 900.0, 1700.0)])
    strip = np.repeat(np.arange(3), SIZE // 3)
    cube = spectra[strip][None, :, :] + rng.normal(0, 60, (SIZE, SIZE, NUM_BANDS))
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), SIZE, SIZE, NUM_BANDS, gdal.GDT_Int16)
    dataset.SetGeoTransform((ORIGIN[0], PIXEL_M, 0, ORIGIN[1], 0, -PIXEL_M))
    dataset.SetProjection(_srs().ExportToWkt())
    for index in range(NUM_BANDS):
        band = dataset.GetRasterBand(index + 1)
        band.WriteArray(np.rint(cube[:, :, index]).astype(np.int16))
        band.SetMetadataItem("wavelength", f"{wavelengths[index]:.1f}")
        band.SetMetadataItem("wavelength_units", "nm")
    dataset = None


def _write_polygons(path: Path, layer_name: str, rows: list[int], *, shift_m: float = 0.0) -> None:
    """A 3 x 3-pixel square per class and starting row, inside that class's strip.

    Each square has the class's name and its code (CLASS_CODES) in two fields.
    """
    _polygon_layer(path, [(name, row, 8 * index + 2, 3) for index, name in enumerate(CLASSES)
                          for row in rows], layer_name=layer_name, shift_m=shift_m)


def _polygon_layer(path: Path, squares: list[tuple[str | None, int, int, int]], *,
                   layer_name: str = "training", srs: bool = True, shift_m: float = 0.0) -> str:
    """Squares (class name or None, row, col, side in pixels) as a GeoPackage layer, each with
    its class's name and code (CLASS_CODES; null where it has none)."""
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = source.CreateLayer(layer_name, _srs() if srs else None, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("class_name", ogr.OFTString))
    layer.CreateField(ogr.FieldDefn("class_code", ogr.OFTInteger))
    for name, row, col, side in squares:
        x0, y0 = ORIGIN[0] + col * PIXEL_M + 1 + shift_m, ORIGIN[1] - row * PIXEL_M - 1
        x1, y1 = x0 + side * PIXEL_M - 2, y0 - side * PIXEL_M + 2
        ring = ogr.Geometry(ogr.wkbLinearRing)
        for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)):
            ring.AddPoint_2D(x, y)
        polygon = ogr.Geometry(ogr.wkbPolygon)
        polygon.AddGeometry(ring)
        feature = ogr.Feature(layer.GetLayerDefn())
        for field, value in (("class_name", name), ("class_code", CLASS_CODES.get(name))):
            if value is None:
                feature.SetFieldNull(field)
            else:
                feature.SetField(field, value)
        feature.SetGeometry(polygon)
        layer.CreateFeature(feature)
    source = None
    return str(path)


def _store_categorized_style(path: Path, layer_name: str, field: str = "class_name") -> None:
    """The layer's default style: categories on `field` (names or codes) labelled by name."""
    from qgis.core import (QgsCategorizedSymbolRenderer, QgsFillSymbol, QgsRendererCategory,
                           QgsVectorLayer)

    layer = QgsVectorLayer(f"{path}|layername={layer_name}", layer_name, "ogr")
    categories = []
    for name, (r, g, b) in CLASSES.items():
        symbol = QgsFillSymbol.createSimple({"color": f"{r},{g},{b},255"})
        value = CLASS_CODES[name] if field == "class_code" else name
        categories.append(QgsRendererCategory(value, symbol, name))
    layer.setRenderer(QgsCategorizedSymbolRenderer(field, categories))
    assert layer.saveStyleToDatabase("default", "", True, "") == ""


@pytest.fixture(scope="module")
def scene(tmp_path_factory, qgis_app):
    folder = tmp_path_factory.mktemp("scene")
    paths = {"raster_a": folder / "scene_a.tif", "raster_b": folder / "scene_b.tif",
             "training": folder / "training.gpkg", "far_training": folder / "far_training.gpkg",
             "coded_training": folder / "coded_training.gpkg",
             "reference": folder / "reference.gpkg", "reference_raster": folder / "reference.tif"}
    _write_scene(paths["raster_a"], seed=0)
    _write_scene(paths["raster_b"], seed=1)
    _write_polygons(paths["training"], "training", rows=[2, 5, 14])
    _store_categorized_style(paths["training"], "training")
    _write_polygons(paths["coded_training"], "training", rows=[2, 5, 14])
    _store_categorized_style(paths["coded_training"], "training", field="class_code")
    _write_polygons(paths["far_training"], "training", rows=[2, 14], shift_m=500_000.0)
    _write_polygons(paths["reference"], "reference", rows=[8, 19])
    labels = np.zeros((SIZE, SIZE), dtype=np.uint8)
    labels[5:7, :] = np.repeat(np.arange(1, 4), SIZE // 3)
    reference = gdal.GetDriverByName("GTiff").Create(str(paths["reference_raster"]), SIZE, SIZE, 1,
                                                     gdal.GDT_Byte)
    reference.SetGeoTransform((ORIGIN[0], PIXEL_M, 0, ORIGIN[1], 0, -PIXEL_M))
    reference.SetProjection(_srs().ExportToWkt())
    reference.GetRasterBand(1).WriteArray(labels)
    reference.GetRasterBand(1).SetRasterCategoryNames([""] + list(CLASSES))
    reference = None
    return {key: str(value) for key, value in paths.items()}


# -- qgis_process ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    """A scratch QGIS configuration whose default profile has this checkout as plugin `hyperadapt`."""
    root = tmp_path_factory.mktemp("qgis-config")
    plugins = root / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "hyperadapt").symlink_to(REPO, target_is_directory=True)
    env = _process_env(root, tmp_path_factory.mktemp("empty-cache"))
    subprocess.run(["qgis_process.bin", "plugins", "enable", "hyperadapt"], env=env, check=True,
                   capture_output=True, text=True)
    return env


def _process_env(config_root: Path, cache_dir: Path) -> dict:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(config_root),
               HYPERADAPT_CACHE_DIR=str(cache_dir), HYPERADAPT_LIBRARY=str(cache_dir / "library"))
    return env


def qgis_process(env: dict, algorithm: str, **parameters) -> tuple[int, dict | None, str]:
    """(exit code, parsed --json result or None, all text the command printed)."""
    arguments = [f"{key}={item}" for key, value in parameters.items()
                 for item in (value if isinstance(value, list) else [value])]
    done = subprocess.run(["qgis_process.bin", "run", f"hyperadapt:{algorithm}", "--json", "--",
                           *arguments], env=env, capture_output=True, text=True, timeout=600)
    try:
        result = json.loads(done.stdout)
    except json.JSONDecodeError:
        result = None
    return done.returncode, result, done.stdout + done.stderr


@pytest.fixture(scope="module")
def trained(scene, profile, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    outputs = {"OUTPUT_ADAPTER": out / "scene.pt", "OUTPUT_CLASSIFICATION": out / "scene_classes.tif",
               "OUTPUT_CONFIDENCE": out / "scene_confidence.tif",
               "OUTPUT_REPORT": out / "validation.html"}
    # The scene's polygons are small; holding some out anyway keeps the validation figures here.
    code, result, text = qgis_process(profile, "finetune", INPUT=scene["raster_a"],
                                      TRAINING=scene["training"], CLASS_FIELD="class_name", PRESET=1,
                                      MIN_VALIDATION_PIXELS=0, CROSS_VALIDATION=2,
                                      **QUICK_FINETUNE, **outputs)
    assert code == 0, text
    return {"result": result, **{key: str(path) for key, path in outputs.items()}}


def _class_raster(path: str) -> tuple[np.ndarray, dict[int, str], dict[int, tuple]]:
    """(values, value -> category name, value -> colour) of a class GeoTIFF."""
    dataset = gdal.Open(path)
    band = dataset.GetRasterBand(1)
    band.GetMetadata()  # GDAL 3.6's GeoTIFF driver reads the .aux.xml (category names) only then
    names = band.GetRasterCategoryNames() or []
    table = band.GetRasterColorTable()
    values = band.ReadAsArray()
    named = {v: n for v, n in enumerate(names) if n and v}
    colors = {v: tuple(table.GetColorEntry(v)[:3]) for v in named}
    return values, named, colors


@pytest.mark.qgis_process
def test_finetune_writes_adapter_styled_classification_and_report(trained):
    result = trained["result"]
    assert Path(trained["OUTPUT_ADAPTER"]).stat().st_size > 1000
    values, names, colors = _class_raster(trained["OUTPUT_CLASSIFICATION"])
    assert sorted(names.values()) == sorted(CLASSES)
    # The colours come from the training layer's categorized style, class by class.
    assert {names[v]: colors[v] for v in names} == CLASSES
    assert set(np.unique(values)) <= set(names)
    qml = Path(trained["OUTPUT_CLASSIFICATION"]).with_suffix(".qml").read_text()
    assert "paletted" in qml and all(f'label="{name}"' in qml for name in CLASSES)
    confidence = gdal.Open(trained["OUTPUT_CONFIDENCE"]).ReadAsArray()
    assert confidence.shape == (SIZE, SIZE) and 0.0 <= confidence.min() and confidence.max() <= 1.0
    assert "overall accuracy" in Path(trained["OUTPUT_REPORT"]).read_text().lower()
    outputs = result["results"]
    assert 0.0 <= outputs["OVERALL_ACCURACY"] <= 1.0 and 0.0 <= outputs["AVERAGE_ACCURACY"] <= 1.0
    assert -1.0 <= outputs["KAPPA"] <= 1.0
    assert "random start" in outputs["BACKBONE_USED"]
    assert any("RANDOM START" in line for line in result["log"]["warning"])
    # One log line per epoch, not one per batch (the two cross-validation folds train first).
    epochs = [line for line in result["log"]["info"] if line.startswith("Epoch")]
    assert len(epochs) == 3 * 2 and all("validation accuracy" in line for line in epochs[-2:])
    folds = [line for line in result["log"]["info"] if line.startswith("Fold ")]
    assert len(folds) == 2 and 0.0 <= outputs["CV_OVERALL_ACCURACY"] <= 1.0
    assert any(line.startswith("Cross-validated (pooled): OA") for line in result["log"]["info"])


@pytest.mark.qgis_process
def test_classify_then_evaluate_against_polygons_and_a_raster(trained, scene, profile, tmp_path):
    classes_b = tmp_path / "scene_b_classes.tif"
    code, result, text = qgis_process(profile, "classify", INPUT=scene["raster_b"],
                                      ADAPTER=trained["OUTPUT_ADAPTER"], OUTPUT=classes_b, DEVICE=2)
    assert code == 0, text
    assert result["results"]["OUTPUT"] == str(classes_b) and result["results"]["NUM_CLASSES"] == 3
    _, names, colors = _class_raster(str(classes_b))
    assert {names[v]: colors[v] for v in names} == CLASSES
    assert classes_b.with_suffix(".qml").exists()

    html, figures = tmp_path / "accuracy.html", tmp_path / "accuracy.json"
    code, result, text = qgis_process(profile, "evaluate", INPUT=classes_b,
                                      REFERENCE=scene["reference"], REFERENCE_FIELD="class_name",
                                      OUTPUT_HTML=html, OUTPUT_JSON=figures)
    assert code == 0, text
    metrics = json.loads(figures.read_text())
    assert metrics["num_samples"] == 3 * 2 * 9  # two 3 x 3 squares per class
    assert 0.0 <= metrics["overall_accuracy"] <= 1.0 and -1.0 <= metrics["kappa"] <= 1.0
    assert result["results"]["OVERALL_ACCURACY"] == pytest.approx(metrics["overall_accuracy"])
    assert "confusion matrix" in html.read_text().lower()
    adjusted = metrics["area_adjusted"]
    assert result["results"]["ADJUSTED_OVERALL_ACCURACY"] == pytest.approx(
        adjusted["overall_accuracy"])
    assert result["results"]["ADJUSTED_OVERALL_ACCURACY_CI"] == pytest.approx(
        adjusted["overall_accuracy_ci"])
    assert result["results"]["UNMATCHED_SHARE"] == 0.0

    code, result, text = qgis_process(profile, "evaluate", INPUT=classes_b,
                                      REFERENCE=scene["reference_raster"],
                                      OUTPUT_HTML=tmp_path / "raster.html")
    assert code == 0, text
    assert result["results"]["NUM_SAMPLES"] == 2 * SIZE

    cleaned = tmp_path / "cleaned.tif"
    code, result, text = qgis_process(profile, "postprocess", INPUT=classes_b,
                                      RASTER=scene["raster_b"], SEGMENT_SIZE=4, MAJORITY_SIZE=3,
                                      SIEVE_PIXELS=2, OUTPUT=cleaned)
    assert code == 0, text
    assert result["results"]["OUTPUT"] == str(cleaned) and cleaned.with_suffix(".qml").exists()
    assert result["results"]["CHANGED_PIXELS"] == int(
        (_class_raster(str(cleaned))[0] != _class_raster(str(classes_b))[0]).sum())


def checksums(*folders) -> dict:
    import hashlib

    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# -- hostile inputs: one matrix over the five algorithms -----------------------------------------
class _RunsCode:
    """A pickle that would run a command when loaded: it would leave ``path`` behind."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.fixture(scope="module")
def hostile(scene, trained, tmp_path_factory):
    """Bad and unusual inputs a user can hand to the algorithms, next to the good ones."""
    import pickle

    folder = tmp_path_factory.mktemp("hostile")
    from engine_data import UTM33N, write_raster

    def raster(name, data, *, nodata=None, epsg=UTM33N) -> str:
        return str(write_raster(folder / name, data, nodata=nodata, epsg=epsg,
                                geotransform=(ORIGIN[0], PIXEL_M, 0, ORIGIN[1], 0, -PIXEL_M)))

    good = gdal.Open(scene["raster_a"]).ReadAsArray().astype(np.float32)
    squares = [(name, row, 8 * index + 2, 3) for index, name in enumerate(CLASSES)
               for row in (2, 14)]
    adapter = Path(trained["OUTPUT_ADAPTER"]).read_bytes()
    (folder / "notes.txt").write_text("a file, not a folder")
    (folder / "text.tif").write_text("not a raster")
    (folder / "text.pt").write_text("not an adapter")
    (folder / "half.pt").write_bytes(adapter[:len(adapter) // 2])
    (folder / "runs_code.pt").write_bytes(pickle.dumps(_RunsCode(folder / "ran")))
    (folder / "a_folder.tif").mkdir()
    paths = {
        "folder": str(folder),
        "one_band": raster("one_band.tif", good[:1]),
        "twelve_bands": raster("twelve_bands.tif", good[:12]),
        "all_nodata": raster("all_nodata.tif", np.full_like(good, -9999.0), nodata=-9999.0),
        "no_crs_raster": raster("no_crs.tif", good, epsg=None),
        "small": raster("small.tif", good[:, :12, :12]),
        "float_reference": raster("float_reference.tif",
                                  np.full((1, SIZE, SIZE), 2.7, np.float32)),
        "no_crs_layer": _polygon_layer(folder / "no_crs.gpkg", squares, srs=False),
        "one_class": _polygon_layer(folder / "one_class.gpkg",
                                    [s for s in squares if s[0] == "water"]),
        "empty_layer": _polygon_layer(folder / "empty.gpkg", []),
        "covered_class": _polygon_layer(folder / "covered.gpkg", [
            sq for sq in squares if sq[0] != "forest"] + [("forest", 2, 2, 3)]),
        "strange_reference": _polygon_layer(folder / "strange.gpkg", [
            ("x" + name, row, col, side) for name, row, col, side in squares]),
        "outside": _polygon_layer(folder / "outside.gpkg", [
            (name, row + 100, col, side) for name, row, col, side in squares]),
        "no_class_values": _polygon_layer(folder / "no_class_values.gpkg", [
            (None, row, col, side) for _, row, col, side in squares]),
        "300_classes": _polygon_layer(folder / "300_classes.gpkg", [
            (f"class {n}", n // SIZE, n % SIZE, 1) for n in range(300)]),
    }
    return {**paths, **{key: str(folder / name) for key, name in (
        ("text_raster", "text.tif"), ("text_adapter", "text.pt"), ("half_adapter", "half.pt"),
        ("pickle_adapter", "runs_code.pt"), ("a_file", "notes.txt"),
        ("a_folder", "a_folder.tif"))}}


def _tune(s, t, h, out, **changes):
    return {**dict(INPUT=s["raster_a"], TRAINING=s["training"], CLASS_FIELD="class_name",
                   OUTPUT_ADAPTER=out / "adapter.pt", **QUICK_FINETUNE), **changes}


def _apply(s, t, h, out, **changes):
    return {**dict(INPUT=s["raster_b"], ADAPTER=t["OUTPUT_ADAPTER"], OUTPUT=out / "classes.tif",
                   DEVICE=2), **changes}


def _check(s, t, h, out, **changes):
    return {**dict(INPUT=t["OUTPUT_CLASSIFICATION"], REFERENCE=s["reference"],
                   REFERENCE_FIELD="class_name", OUTPUT_HTML=out / "report.html"), **changes}


def _clean(s, t, h, out, **changes):
    return {**dict(INPUT=t["OUTPUT_CLASSIFICATION"], SIEVE_PIXELS=2, OUTPUT=out / "clean.tif"),
            **changes}


def _pretrain(s, t, h, out, **changes):
    return {**dict(RASTERS=s["raster_a"], EPOCHS=1, PRESET=1, OUTPUT=out / "backbone.pt"),
            **changes}


NOT_A_CLASSIFICATION = ("scene_a.tif is not a classification: a classification has one band of "
                        "whole class values from 1 to 255, as HyperAdapt writes them (it has 24 "
                        "bands).")
UNREADABLE_ADAPTER = "The adapter file {} could not be read; it may be damaged or of another kind."
UNREADABLE_CHECKPOINT = ("The file {} could not be read as a PyTorch checkpoint; it may be "
                         "incomplete, damaged or of another kind.")
NO_VALID_PIXEL = "The raster all_nodata.tif has no valid pixels: every pixel is nodata or masked."
IN_A_FILE = ("HyperAdapt cannot write in the folder {folder}/notes.txt (for the {}); choose "
             "another folder.")

# case: (algorithm, parameters from (scene, trained, hostile, output folder), the sentence; the
# sentence is formatted with the hostile folder as {folder}).
HOSTILE = {
    # an output over an input, one per algorithm
    "adapter over the training layer": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, OUTPUT_ADAPTER=s["training"]),
        "The adapter file would overwrite the training layer; choose another file name."),
    "map over the raster": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, OUTPUT_CLASSIFICATION=s["raster_a"]),
        "The classification would overwrite the input raster; choose another file name."),
    "classify over its raster": (
        "classify", lambda s, t, h, o: _apply(s, t, h, o, OUTPUT=s["raster_b"]),
        "The classification would overwrite the input raster; choose another file name."),
    "report over the reference": (
        "evaluate", lambda s, t, h, o: _check(s, t, h, o, OUTPUT_HTML=s["reference"]),
        "The report would overwrite the reference; choose another file name."),
    "clean-up over its input": (
        "postprocess",
        lambda s, t, h, o: _clean(s, t, h, o, OUTPUT=t["OUTPUT_CLASSIFICATION"]),
        "The cleaned classification would overwrite the input raster; choose another file "
        "name."),
    "backbone over its raster": (
        "pretrain", lambda s, t, h, o: _pretrain(s, t, h, o, OUTPUT=s["raster_a"]),
        "The backbone file would overwrite the input raster scene_a.tif; choose another file "
        "name."),
    # fine-tune: the raster
    "fine-tune a text file named .tif": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, INPUT=h["text_raster"]),
        "text.tif is not a raster that GDAL can read."),
    "fine-tune a missing raster": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, INPUT=o / "gone.tif"),
        "{out}/gone.tif does not exist."),
    "fine-tune a raster of one band": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, INPUT=h["one_band"]),
        "PCA to 12 components needs at least 12 usable bands, but the raster has 1."),
    "fine-tune an all-nodata raster": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, INPUT=h["all_nodata"]), NO_VALID_PIXEL),
    "fine-tune a raster without a CRS": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, INPUT=h["no_crs_raster"]),
        "The raster no_crs.tif has no coordinate reference system, so the training layer cannot "
        "be placed on it."),
    # fine-tune: the training layer
    "training layer without a CRS": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, TRAINING=h["no_crs_layer"]),
        "The training layer 'no_crs' has no coordinate reference system; set one and save the "
        "layer."),
    "training layer of one class": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, TRAINING=h["one_class"]),
        "Training needs at least two classes, but the field 'class_name' has only one: 'water'."),
    "training layer without features": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, TRAINING=h["empty_layer"]),
        "The training layer 'empty' has no features."),
    "training layer outside the raster": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, TRAINING=h["outside"]),
        "The training layer 'outside' does not overlap the raster 'scene_a'."),
    "a class drawn only under another": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, TRAINING=h["covered_class"]),
        "The class 'forest' has no usable pixels: its 9 pixel(s) all lie under features of "
        "another class too; fix the overlapping polygons and run again."),
    "a class field the layer lacks": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, CLASS_FIELD="land_cover"),
        "The training layer 'training' has no field named 'land_cover'."),
    "a class field empty in every feature": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, TRAINING=h["no_class_values"]),
        "The class field 'class_name' is empty in every feature of the layer 'training'."),
    "300 classes": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, TRAINING=h["300_classes"]),
        "The class field has 300 different classes; at most 255 fit in a classification."),
    "a text file as the training layer": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, TRAINING=h["a_file"]),
        "notes.txt is not a vector layer that GDAL can read."),
    # fine-tune: settings and files
    "window of 201 pixels": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, WINDOW_SIZE=201),
        "Window size (pixels, odd) must be from 1 to 63; 201 was given."),
    "batch of 100,000 windows": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, BATCH_SIZE=100000),
        "Batch size must be from 1 to 4,096; 100,000 was given."),
    "learning rate 0": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, LEARNING_RATE=0),
        "Learning rate must be from 1e-08 to 1; 0 was given."),
    "a fourth backbone": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, BACKBONE=3),
        "Backbone must be one of 0 (ViT-Base (the official SpectralGPT shape)), 1 (Tiny (quick "
        "tests; not for real maps)); 3 was given."),
    "a third classification mode": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, CLASSIFY_MODE=2),
        "Classifying the scene must be one of 0 (Tile: a window every few pixels, features "
        "resampled to each pixel (fast)), 1 (Window: one window through the backbone per "
        "pixel); 2 was given."),
    "weights that are text": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, RANDOM_START=0, WEIGHTS=h["text_adapter"]),
        UNREADABLE_CHECKPOINT.format("text.pt")),
    "weights that would run code": (
        "finetune",
        lambda s, t, h, o: _tune(s, t, h, o, RANDOM_START=0, WEIGHTS=h["pickle_adapter"]),
        UNREADABLE_CHECKPOINT.format("runs_code.pt")),
    "no weights and no random start": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, RANDOM_START=0),
        "No SpectralGPT weights were given or downloaded; download the official weights, choose "
        "a backbone file, or allow a random start."),
    "continue from a cut adapter": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, CONTINUE_FROM=h["half_adapter"]),
        UNREADABLE_ADAPTER.format("half.pt")),
    "adapter inside a file": (
        "finetune",
        lambda s, t, h, o: _tune(s, t, h, o, OUTPUT_ADAPTER=Path(h["a_file"]) / "a.pt"),
        IN_A_FILE.replace("{}", "adapter file")),
    "adapter is a folder": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, OUTPUT_ADAPTER=h["a_folder"]),
        "The adapter file {folder}/a_folder.tif is a folder; give a file name."),
    "classification named like the adapter": (
        "finetune", lambda s, t, h, o: _tune(s, t, h, o, OUTPUT_CLASSIFICATION=o / "adapter.pt"),
        "The classification is written as a GeoTIFF; give it a .tif name instead of adapter.pt."),
    # classify
    "classify with a missing adapter": (
        "classify", lambda s, t, h, o: _apply(s, t, h, o, ADAPTER=o / "gone.pt"),
        "The adapter file {out}/gone.pt does not exist."),
    "classify with a cut adapter": (
        "classify", lambda s, t, h, o: _apply(s, t, h, o, ADAPTER=h["half_adapter"]),
        UNREADABLE_ADAPTER.format("half.pt")),
    "classify in a fourth mode": (
        "classify", lambda s, t, h, o: _apply(s, t, h, o, MODE=3),
        "Classifying the scene must be one of 0 (As the adapter was made), 1 (Tile: a window "
        "every few pixels, features resampled to each pixel (fast)), 2 (Window: one window "
        "through the backbone per pixel); 3 was given."),
    "classify with a text adapter": (
        "classify", lambda s, t, h, o: _apply(s, t, h, o, ADAPTER=h["text_adapter"]),
        UNREADABLE_ADAPTER.format("text.pt")),
    "classify with an adapter that would run code": (
        "classify", lambda s, t, h, o: _apply(s, t, h, o, ADAPTER=h["pickle_adapter"]),
        UNREADABLE_ADAPTER.format("runs_code.pt")),
    "classify a raster of other bands": (
        "classify", lambda s, t, h, o: _apply(s, t, h, o, INPUT=h["twelve_bands"]),
        "This adapter was trained on 24 bands, but the raster has 12."),
    "classify an all-nodata raster": (
        "classify", lambda s, t, h, o: _apply(s, t, h, o, INPUT=h["all_nodata"]), NO_VALID_PIXEL),
    "classify a text file": (
        "classify", lambda s, t, h, o: _apply(s, t, h, o, INPUT=h["text_raster"]),
        "text.tif is not a raster that GDAL can read."),
    "classify into a folder": (
        "classify", lambda s, t, h, o: _apply(s, t, h, o, OUTPUT=h["a_folder"]),
        "The classification {folder}/a_folder.tif is a folder; give a file name."),
    "classify inside a file": (
        "classify", lambda s, t, h, o: _apply(s, t, h, o, OUTPUT=Path(h["a_file"]) / "c.tif"),
        IN_A_FILE.replace("{}", "classification")),
    "classify with a batch of 100,000": (
        "classify", lambda s, t, h, o: _apply(s, t, h, o, BATCH_SIZE=100000),
        "Batch size must be from 1 to 4,096; 100,000 was given."),
    # evaluate
    "evaluate the scene itself": (
        "evaluate", lambda s, t, h, o: _check(s, t, h, o, INPUT=s["raster_a"]),
        NOT_A_CLASSIFICATION),
    "evaluate against names that do not match": (
        "evaluate", lambda s, t, h, o: _check(s, t, h, o, REFERENCE=h["strange_reference"]),
        "100 % of the reference pixels (54 of 54) belong to classes the classification does not "
        "have: 'xwater' (18 px), 'xforest' (18 px), 'xfield' (18 px); match the reference's "
        "codes or names to the classification's, or accept a larger unmatched share (now 5 %)."),
    "evaluate against a reference of 2.7": (
        "evaluate",
        lambda s, t, h, o: _check(s, t, h, o, REFERENCE=h["float_reference"], REFERENCE_FIELD=""),
        "The reference raster float_reference.tif holds values that are not whole class values, "
        "such as 2.7; give it whole numbers (0 = unlabelled)."),
    "evaluate against a missing field": (
        "evaluate", lambda s, t, h, o: _check(s, t, h, o, REFERENCE_FIELD="land_cover"),
        "The reference layer 'reference' has no field named 'land_cover'."),
    "evaluate against a reference without a CRS": (
        "evaluate", lambda s, t, h, o: _check(s, t, h, o, REFERENCE=h["no_crs_layer"]),
        "The reference layer 'training' has no coordinate reference system; set one and save "
        "the layer."),
    "evaluate against a reference outside": (
        "evaluate", lambda s, t, h, o: _check(s, t, h, o, REFERENCE=h["outside"]),
        "The reference layer 'training' does not overlap the raster scene_classes.tif."),
    "evaluate with the report inside a file": (
        "evaluate",
        lambda s, t, h, o: _check(s, t, h, o, OUTPUT_HTML=Path(h["a_file"]) / "r.html"),
        IN_A_FILE.replace("{}", "report")),
    # clean-up
    "clean up the scene itself": (
        "postprocess", lambda s, t, h, o: _clean(s, t, h, o, INPUT=s["raster_a"]),
        NOT_A_CLASSIFICATION),
    "clean up with a segment vote and no scene": (
        "postprocess", lambda s, t, h, o: _clean(s, t, h, o, SIEVE_PIXELS=0, SEGMENT_SIZE=4),
        "The segment vote needs the classified scene's raster."),
    "clean up against a scene of another size": (
        "postprocess", lambda s, t, h, o: _clean(s, t, h, o, SEGMENT_SIZE=4, RASTER=h["small"]),
        "The scene's raster small.tif is 12 x 12 pixels but the classification is 24 x 24; give "
        "the raster that was classified."),
    "clean up into a folder": (
        "postprocess", lambda s, t, h, o: _clean(s, t, h, o, OUTPUT=h["a_folder"]),
        "The cleaned classification {folder}/a_folder.tif is a folder; give a file name."),
    "clean up nothing": (
        "postprocess",
        lambda s, t, h, o: _clean(s, t, h, o, SIEVE_PIXELS=0, MAJORITY_SIZE=0, SEGMENT_SIZE=0),
        "Choose at least one clean-up: a sieve, a majority filter or a segment vote."),
    # pretrain
    "pretrain on rasters of other bands": (
        "pretrain",
        lambda s, t, h, o: _pretrain(s, t, h, o, RASTERS=[s["raster_a"], h["twelve_bands"]]),
        "All rasters must come from one sensor, but twelve_bands.tif has 12 bands and scene_a.tif "
        "has 24."),
    "pretrain on a text file": (
        "pretrain", lambda s, t, h, o: _pretrain(s, t, h, o, RASTERS=h["text_raster"]),
        "text.tif is not a raster that GDAL can read."),
    "pretrain on an all-nodata raster": (
        "pretrain", lambda s, t, h, o: _pretrain(s, t, h, o, RASTERS=h["all_nodata"]),
        NO_VALID_PIXEL),
    "pretrain inside a file": (
        "pretrain",
        lambda s, t, h, o: _pretrain(s, t, h, o, OUTPUT=Path(h["a_file"]) / "b.pt"),
        IN_A_FILE.replace("{}", "backbone file")),
}


@pytest.mark.qgis_process
@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_input_is_one_sentence_and_changes_nothing(case, scene, trained, hostile,
                                                             profile, tmp_path):
    algorithm, parameters, sentence = HOSTILE[case]
    folders = [Path(scene["raster_a"]).parent, Path(trained["OUTPUT_ADAPTER"]).parent,
               Path(hostile["folder"])]
    before = checksums(*folders)
    code, _, text = qgis_process(profile, algorithm,
                                 **parameters(scene, trained, hostile, tmp_path))
    assert code == 1, text
    assert sentence.format(folder=hostile["folder"], out=tmp_path) in text
    assert "Traceback" not in text and "Unexpected error" not in text
    after = checksums(*folders)
    assert {path: after.get(path) for path in before} == before
    # QGIS itself keeps what it learnt of a raster it opened in a .aux.xml beside it.
    assert all(path.endswith(".tif.aux.xml") for path in set(after) - set(before))
    assert list(tmp_path.iterdir()) == []
    assert not (Path(hostile["folder"]) / "ran").exists()  # the pickle's command never ran


# -- in QGIS: processing.run and batches ----------------------------------------------------------
@pytest.fixture()
def provider(iface, qgis_processing):
    import hyperadapt
    from qgis.core import QgsApplication

    plugin = hyperadapt.classFactory(iface)
    plugin.initProcessing()
    assert QgsApplication.processingRegistry().algorithmById("hyperadapt:classify") is not None
    yield plugin.provider
    plugin.unload()


def _assert_styled_with_classes(layer) -> None:
    from qgis.core import QgsPalettedRasterRenderer

    renderer = layer.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    styled = {c.label: (c.color.red(), c.color.green(), c.color.blue()) for c in renderer.classes()}
    assert styled == CLASSES


def test_classify_in_process_by_id_then_add_styled_layer(provider, trained, scene, tmp_path):
    import processing
    from qgis.core import QgsProject

    from hyperadapt.plugin.styling import add_classification_layer

    output = tmp_path / "in_process.tif"
    result = processing.run("hyperadapt:classify", {"INPUT": scene["raster_a"], "OUTPUT": str(output),
                                                    "ADAPTER": trained["OUTPUT_ADAPTER"], "DEVICE": 2})
    assert result["OUTPUT"] == str(output) and result["NUM_CLASSES"] == 3
    layer = add_classification_layer(result["OUTPUT"], "classes")
    assert QgsProject.instance().mapLayer(layer.id()) is layer
    _assert_styled_with_classes(layer)


def test_suggest_in_process_writes_points_away_from_the_training_polygons(provider, trained,
                                                                          scene, tmp_path):
    import processing
    from qgis.core import QgsProcessingException, QgsVectorLayer

    output = tmp_path / "next.gpkg"
    result = processing.run("hyperadapt:suggest", {
        "INPUT": scene["raster_a"], "ADAPTER": trained["OUTPUT_ADAPTER"],
        "TRAINING": scene["training"], "CLASS_FIELD": "class_name", "COUNT": 5,
        "MIN_SPACING": 2, "DEVICE": 2, "OUTPUT": str(output)})
    assert result["NUM_SUGGESTIONS"] == 5
    layer = QgsVectorLayer(result["OUTPUT"], "suggestions", "ogr")
    assert layer.isValid() and layer.featureCount() == 5
    assert {f["guess"] for f in layer.getFeatures()} <= set(CLASSES)
    training = QgsVectorLayer(scene["training"], "training", "ogr")
    for point in layer.getFeatures():
        assert not any(polygon.geometry().contains(point.geometry())
                       for polygon in training.getFeatures())
    with pytest.raises(QgsProcessingException, match="give the output a .gpkg name"):
        processing.run("hyperadapt:suggest", {
            "INPUT": scene["raster_a"], "ADAPTER": trained["OUTPUT_ADAPTER"], "COUNT": 5,
            "OUTPUT": str(tmp_path / "next.shp")})


def test_batch_classify_two_rasters_loads_both_styled(provider, trained, scene, tmp_path):
    import processing
    from qgis.core import QgsProject, QgsRasterLayer

    outputs = []
    for raster in (scene["raster_a"], scene["raster_b"]):
        output = str(tmp_path / f"{Path(raster).stem}_classes.tif")
        processing.runAndLoadResults("hyperadapt:classify", {"INPUT": raster, "OUTPUT": output, "DEVICE": 2,
                                                             "ADAPTER": trained["OUTPUT_ADAPTER"]})
        outputs.append(output)
    loaded = {layer.source(): layer for layer in QgsProject.instance().mapLayers().values()
              if isinstance(layer, QgsRasterLayer)}
    assert set(outputs) <= set(loaded)
    for output in outputs:
        _assert_styled_with_classes(loaded[output])


def test_class_codes_take_the_names_of_their_style_labels(provider, scene, tmp_path):
    import processing

    classification = tmp_path / "coded_classes.tif"
    result = processing.run("hyperadapt:finetune", {
        "INPUT": scene["raster_a"], "TRAINING": scene["coded_training"],
        "CLASS_FIELD": "class_code", **QUICK_FINETUNE, "OUTPUT_ADAPTER": str(tmp_path / "coded.pt"),
        "OUTPUT_CLASSIFICATION": str(classification)})
    values, names, colors = _class_raster(result["OUTPUT_CLASSIFICATION"])
    # The codes stay the pixel values; the labels typed in the style are the class names.
    assert names == {code: name for name, code in CLASS_CODES.items()}
    assert {names[v]: colors[v] for v in names} == CLASSES
    assert set(np.unique(values)) <= set(names)
    # A reference layer with the same codes and no style is matched by value.
    evaluation = processing.run("hyperadapt:evaluate", {
        "INPUT": str(classification), "REFERENCE": scene["reference"],
        "REFERENCE_FIELD": "class_code", "OUTPUT_HTML": str(tmp_path / "coded.html"),
        "OUTPUT_JSON": str(tmp_path / "coded.json")})
    report = json.loads(Path(evaluation["OUTPUT_JSON"]).read_text())
    # Two 3 x 3 squares per class.
    compared = {c["name"]: c["reference_pixels"] for c in report["classes"]}
    assert compared == dict.fromkeys(CLASSES, 18)
    assert report["unmatched_reference_pixels"] == 0


def test_checks_refuse_bad_values_before_running(provider, scene, trained, tmp_path):
    from qgis.core import QgsApplication, QgsProcessingContext

    algorithm = QgsApplication.processingRegistry().createAlgorithmById("hyperadapt:finetune")
    context = QgsProcessingContext()
    base = {"INPUT": scene["raster_a"], "TRAINING": scene["training"], "CLASS_FIELD": "class_name",
            "OUTPUT_ADAPTER": str(tmp_path / "a.pt")}
    assert algorithm.checkParameterValues(base, context) == (True, "")
    for change, words in (({"WINDOW_SIZE": 4}, "odd"), ({"INPUT_SIZE": 20}, "multiple of 8"),
                          ({"WEIGHTS": str(tmp_path / "none.pth")}, "does not exist")):
        ok, message = algorithm.checkParameterValues({**base, **change}, context)
        assert not ok and words in message

    evaluate = QgsApplication.processingRegistry().createAlgorithmById("hyperadapt:evaluate")
    ok, message = evaluate.checkParameterValues(
        {"INPUT": trained["OUTPUT_CLASSIFICATION"], "REFERENCE": scene["reference"],
         "OUTPUT_HTML": str(tmp_path / "r.html")}, context)
    assert not ok and "class field" in message


# -- pieces ---------------------------------------------------------------------------------------
def test_engine_feedback_logs_the_last_message_of_each_step_and_cancels():
    from qgis.core import QgsProcessingFeedback

    from hyperadapt.plugin.algorithms.common import EngineFeedback

    class Recorder(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.lines = []

        def pushInfo(self, info):  # noqa: N802 (QGIS's name)
            self.lines.append(info)

    feedback = Recorder()
    with EngineFeedback(feedback=feedback) as bridge:
        for fraction, message in ((0.0, "Reading"), (0.1, "Epoch 1/2: loss 2.0"),
                                  (0.2, "Epoch 1/2: loss 1.5, validation accuracy 50.0 %"),
                                  (0.3, "Epoch 2/2: loss 1.0"), (0.5, "")):
            bridge.progress(fraction, message)
        assert feedback.progress() == pytest.approx(50.0)
        assert not bridge.cancel()
        feedback.cancel()
        assert bridge.cancel()
    assert feedback.lines == ["Reading", "Epoch 1/2: loss 1.5, validation accuracy 50.0 %",
                              "Epoch 2/2: loss 1.0"]


def test_finetune_parameters_offer_the_engines_choices_and_defaults():
    from hyperadapt.models import options
    from hyperadapt.models.settings import FineTuneSettings
    from hyperadapt.plugin.algorithms import all_algorithms
    from hyperadapt.plugin.algorithms.finetune import FineTuneAlgorithm

    algorithm = FineTuneAlgorithm()
    algorithm.initAlgorithm()

    def parameter(name):
        return algorithm.parameterDefinition(name)

    # An untouched run is the engine's default run.
    defaults = FineTuneSettings()
    method = parameter("METHOD")
    assert method.options() == list(options.METHODS.values())
    assert list(options.METHODS)[method.defaultValue()] == defaults.method
    bands = parameter("BAND_ADAPTATION")
    assert bands.options() == list(options.BAND_ADAPTATIONS.values())
    assert list(options.BAND_ADAPTATIONS)[bands.defaultValue()] == defaults.band_adaptation
    targets = parameter("TARGETS")
    assert tuple(options.TARGETS[i] for i in targets.defaultValue()) == defaults.targets
    for name, field in (("STEPS", "steps"), ("MIN_PASSES", "min_passes"),
                        ("LEARNING_RATE", "learning_rate"),
                        ("LAMBDA", "lr_ratio"), ("WINDOW_SIZE", "window_size"),
                        ("INPUT_SIZE", "input_size"), ("BATCH_SIZE", "batch_size"),
                        ("VAL_FRACTION", "val_fraction"), ("PIXEL_DIM", "pixel_dim"),
                        ("MIN_VALIDATION_PIXELS", "min_validation_pixels"),
                        ("CONTEXT_DROPOUT", "context_dropout"),
                        ("SPECTRAL_WEIGHT", "spectral_weight"),
                        ("SPECTRAL_CONTEXT", "spectral_context"), ("SEGMENT_SIZE", "segment_size"),
                        ("MAJORITY_SIZE", "majority_size"), ("SIEVE_PIXELS", "sieve_pixels"),
                        ("SELF_TRAINING", "self_training_rounds"), ("RANK", "rank"),
                        ("TILE_STEP", "tile_step"),
                        ("REFIT", "refit"), ("VALIDATE_VOTE", "validate_vote"),
                        ("SPECTRAL_WHITENING", "spectral_whitening")):
        assert parameter(name).defaultValue() == getattr(defaults, field), name
    assert parameter("EPOCHS").defaultValue() == 0 and defaults.epochs is None
    assert parameter("WINDOW_SIZE").maximum() == options.MAX_WINDOW_SIZE
    assert list(options.PRESETS)[parameter("PRESET").defaultValue()] == defaults.preset
    assert list(options.BACKBONES)[parameter("BACKBONE").defaultValue()] == defaults.backbone
    weighting = parameter("CLASS_WEIGHTING")
    assert weighting.options() == list(options.CLASS_WEIGHTINGS.values())
    assert list(options.CLASS_WEIGHTINGS)[weighting.defaultValue()] == defaults.class_weighting
    for name, choices, field in (("CLASSIFY_MODE", options.CLASSIFY_MODES, "classify_mode"),
                                 ("TRAINING_MODE", options.TRAINING_MODES, "training_mode")):
        assert parameter(name).options() == list(choices.values()), name
        assert list(choices)[parameter(name).defaultValue()] == getattr(defaults, field), name
    assert sorted(a.name() for a in all_algorithms()) == ["classify", "evaluate", "finetune",
                                                         "postprocess", "pretrain", "suggest"]


def test_class_colors_and_names_come_from_a_categorized_style_only(scene, qgis_new_project):
    from qgis.core import QgsVectorLayer

    from hyperadapt.models.errors import HyperAdaptError
    from hyperadapt.plugin.styling import add_classification_layer, class_style_from_layer

    styled = QgsVectorLayer(f"{scene['training']}|layername=training", "training", "ogr")
    # Labels equal to their values name nothing new.
    assert class_style_from_layer(styled, "class_name") == (CLASSES, {})
    assert class_style_from_layer(styled, "class_code") == ({}, {})
    coded = QgsVectorLayer(f"{scene['coded_training']}|layername=training", "training", "ogr")
    assert class_style_from_layer(coded, "class_code") == (
        {str(CLASS_CODES[name]): rgb for name, rgb in CLASSES.items()},
        {str(code): name for name, code in CLASS_CODES.items()})
    plain = QgsVectorLayer(f"{scene['reference']}|layername=reference", "reference", "ogr")
    assert class_style_from_layer(plain, "class_name") == ({}, {})
    with pytest.raises(HyperAdaptError, match="no class colours"):
        add_classification_layer(scene["raster_a"])


def test_classification_without_its_qml_is_styled_from_the_named_colour_table(trained, tmp_path,
                                                                             qgis_new_project):
    import shutil

    from hyperadapt.plugin.styling import add_classification_layer

    copy = tmp_path / "moved.tif"
    shutil.copy(trained["OUTPUT_CLASSIFICATION"], copy)
    shutil.copy(trained["OUTPUT_CLASSIFICATION"] + ".aux.xml", str(copy) + ".aux.xml")
    assert not copy.with_suffix(".qml").exists()
    _assert_styled_with_classes(add_classification_layer(str(copy)))


def test_a_job_that_fails_reads_as_one_sentence_and_a_bug_keeps_its_traceback_in_the_log(
        qgis_app):
    import errno

    from qgis.core import QgsApplication, QgsProcessingException

    from hyperadapt.plugin.algorithms.common import run_engine_job

    def full_disk():
        raise OSError(errno.ENOSPC, "No space left on device", "/data/map.tif")

    def bug():
        raise ValueError("boom")

    with pytest.raises(QgsProcessingException) as caught:
        run_engine_job(full_disk)
    assert str(caught.value) == ("The disk is full: HyperAdapt could not finish writing "
                                 "/data/map.tif; free some space and run again.")
    logged = []
    QgsApplication.messageLog().messageReceived.connect(
        lambda message, tag, level: logged.append((tag, message)))
    with pytest.raises(QgsProcessingException) as caught:
        run_engine_job(bug)
    assert str(caught.value) == ("Unexpected error (ValueError: boom); the details are in the "
                                 "HyperAdapt log.")
    assert any(tag == "HyperAdapt" and "Traceback" in message and "in bug" in message
               for tag, message in logged)
