"""Indian Pines as a QGIS user would have it: a georeferenced raster, drawn training polygons, reference.

The scene is the AVIRIS Indian Pines image (Baumgardner, Biehl and Landgrebe, 2015, "220 Band AVIRIS
Hyperspectral Image Data Set: June 12, 1992 Indian Pine Test Site 3", Purdue University Research
Repository, doi:10.4231/R7RX991C, CC BY 3.0) in its 200-band corrected form with the 16-class ground
truth, as shipped inside the PyPI package ``tensorly`` (``tensorly.datasets.load_indian_pines()``),
so it needs no download.

``make_indian_pines_inputs`` writes:
- ``indian_pines.tif``: 145 x 145 x 200 int16, per-band ``wavelength``/``wavelength_units`` metadata;
- ``indian_pines_training.gpkg``: a few small polygons per class over homogeneous ground truth, field
  ``class_name``, with a categorized style stored as the GeoPackage's default style (or, with
  ``sampling="scattered"``, one-pixel polygons at random pixels of each class, as in most papers);
- ``indian_pines_reference.gpkg``: the rest of the ground truth (pixels not under a training polygon),
  polygonized, same fields and style;
- ``indian_pines_reference.tif`` (that rest as a raster) and ``indian_pines_ground_truth.tif`` (all
  labels), both with a colour table and category names, 0 = unlabelled.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr, osr

gdal.UseExceptions()
ogr.UseExceptions()

CLASS_NAMES = [
    "Alfalfa", "Corn-notill", "Corn-mintill", "Corn", "Grass-pasture", "Grass-trees",
    "Grass-pasture-mowed", "Hay-windrowed", "Oats", "Soybean-notill", "Soybean-mintill",
    "Soybean-clean", "Wheat", "Woods", "Buildings-Grass-Trees-Drives", "Stone-Steel-Towers",
]
# Distinct colours, roughly grouped so that related crops get related hues.
CLASS_COLORS = [
    (255, 210, 0), (230, 25, 75), (245, 130, 48), (170, 110, 40), (60, 180, 75), (0, 110, 40),
    (170, 255, 195), (255, 250, 130), (220, 190, 255), (0, 130, 200), (70, 40, 160),
    (70, 240, 240), (250, 190, 212), (0, 70, 0), (128, 128, 128), (240, 50, 230),
]
CLASS_FIELD = "class_name"

# The package holds no georeference. The scene lies near the Purdue Agronomy farm, West Lafayette,
# Indiana, so the rasters are placed in UTM zone 16N at an approximate location with AVIRIS's
# nominal 20 m pixels; the coordinates are illustrative, not the survey's.
EPSG = 32616
PIXEL_SIZE_M = 20.0
ORIGIN_XY = (499_000.0, 4_482_000.0)

# How training pixels are drawn: small polygons inside fields, or single pixels at random.
SAMPLINGS = ("polygons", "scattered")
# Rectangle shapes (rows, cols) a person might draw over a field, largest first.
_POLYGON_SHAPES = [(3, 4), (4, 3), (3, 3), (2, 4), (4, 2), (2, 3), (3, 2), (2, 2), (1, 3), (3, 1),
                   (1, 2), (2, 1), (1, 1)]


def load_indian_pines() -> tuple[np.ndarray, np.ndarray, list[float]]:
    """The image (145, 145, 200), the labels (145, 145; 0 = unlabelled) and the band centres in nm."""
    from tensorly.datasets import load_indian_pines as load

    bunch = load()
    labels, wavelengths = bunch["ticks"][0], bunch["ticks"][1]
    wavelengths = [float(w) for w in wavelengths]
    return np.asarray(bunch["tensor"]), np.asarray(labels, dtype=np.uint8), wavelengths


def _geotransform() -> tuple[float, ...]:
    return (ORIGIN_XY[0], PIXEL_SIZE_M, 0.0, ORIGIN_XY[1], 0.0, -PIXEL_SIZE_M)


def _srs() -> osr.SpatialReference:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def write_image(path: Path, image: np.ndarray, wavelengths: list[float]) -> None:
    height, width, num_bands = image.shape
    driver = gdal.GetDriverByName("GTiff")
    dataset = driver.Create(str(path), width, height, num_bands, gdal.GDT_Int16,
                            options=["TILED=YES", "COMPRESS=DEFLATE", "PREDICTOR=2"])
    dataset.SetGeoTransform(_geotransform())
    dataset.SetProjection(_srs().ExportToWkt())
    dataset.SetMetadata({"SENSOR": "AVIRIS", "SOURCE": "Indian Pine Test Site 3, 12 June 1992, "
                         "doi:10.4231/R7RX991C (CC BY 3.0)"})
    pixels = np.rint(image).astype(np.int16)
    for index, wavelength in enumerate(wavelengths):
        band = dataset.GetRasterBand(index + 1)
        band.WriteArray(pixels[:, :, index])
        band.SetDescription(f"{wavelength:.2f} nm")
        band.SetMetadataItem("wavelength", f"{wavelength:.2f}")
        band.SetMetadataItem("wavelength_units", "nm")
    dataset.FlushCache()
    dataset = None


def write_labels(path: Path, labels: np.ndarray) -> None:
    """A class raster as the engine writes one: colour table, category names, 0 = no data."""
    height, width = labels.shape
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), width, height, 1, gdal.GDT_Byte,
                                                   options=["COMPRESS=DEFLATE"])
    dataset.SetGeoTransform(_geotransform())
    dataset.SetProjection(_srs().ExportToWkt())
    band = dataset.GetRasterBand(1)
    band.WriteArray(labels)
    band.SetNoDataValue(0)
    table = gdal.ColorTable()
    table.SetColorEntry(0, (0, 0, 0, 0))
    for value, rgb in enumerate(CLASS_COLORS, start=1):
        table.SetColorEntry(value, (*rgb, 255))
    band.SetRasterColorTable(table)
    band.SetRasterCategoryNames(["unlabelled"] + CLASS_NAMES)
    dataset.FlushCache()
    dataset = None


def _window_sums(mask: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Sum of `mask` over every rows x cols window, indexed by the window's top-left pixel."""
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    integral[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    return (integral[rows:, cols:] - integral[:-rows, cols:] - integral[rows:, :-cols]
            + integral[:-rows, :-cols])


def _dilate(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    grown = np.zeros_like(mask)
    for dr in range(3):
        for dc in range(3):
            grown |= padded[dr:dr + mask.shape[0], dc:dc + mask.shape[1]]
    return grown


def _choose_rectangles(class_mask: np.ndarray, target: int, rng: np.random.Generator,
                       *, margin: bool, separate: bool) -> list[tuple[int, int, int, int]] | None:
    """Non-overlapping rectangles (row, col, rows, cols) inside the class, covering `target` pixels.

    With `margin`, the ring of pixels around each rectangle is the same class too (a person draws well
    inside a field, away from its edges); with `separate`, rectangles do not touch each other.
    """
    chosen = np.zeros_like(class_mask, dtype=bool)
    rectangles = []
    covered = 0
    while covered < target:
        remaining = target - covered
        blocked = _dilate(chosen) if separate else chosen
        placed = False
        shapes = [s for s in _POLYGON_SHAPES if s[0] * s[1] <= remaining]
        # Large shapes first, in random order among equal sizes, so a class gets a few polygons.
        rng.shuffle(shapes)
        shapes.sort(key=lambda s: -s[0] * s[1])
        for rows, cols in shapes:
            inside = _window_sums(class_mask, rows, cols) == rows * cols
            free = _window_sums(blocked, rows, cols) == 0
            ok = inside & free
            if margin:
                # Window (r, c) of the padded mask is the rectangle at (r, c) with its ring.
                ok &= _window_sums(np.pad(class_mask, 1), rows + 2, cols + 2) == (rows + 2) * (cols + 2)
            candidates = np.argwhere(ok)
            if len(candidates):
                row, col = candidates[rng.integers(len(candidates))]
                chosen[row:row + rows, col:col + cols] = True
                rectangles.append((int(row), int(col), rows, cols))
                covered += rows * cols
                placed = True
                break
        if not placed:
            return None
    return rectangles


def choose_training_rectangles(labels: np.ndarray, *, pixels_per_class=(10, 30), seed=0,
                               sampling: str = "polygons"
                               ) -> dict[int, list[tuple[int, int, int, int]]]:
    """Per class value, the rectangles a person would draw: {value: [(row, col, rows, cols), ...]}.

    ``sampling="scattered"`` draws single pixels at random over the whole class instead (1 x 1
    rectangles), the usual protocol of hyperspectral classification papers; training pixels drawn
    as polygons sit in a few fields and are much harder to generalize from.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, not {sampling!r}")
    low, high = pixels_per_class
    rng = np.random.default_rng(seed)
    chosen = {}
    for value in range(1, len(CLASS_NAMES) + 1):
        class_mask = labels == value
        # Keep at least half of a small class for the reference, but never go below `low`.
        target = int(min(rng.integers(low, high + 1), max(low, int(class_mask.sum()) // 2)))
        if sampling == "scattered":
            pixels = np.argwhere(class_mask)
            picked = pixels[rng.choice(len(pixels), size=target, replace=False)]
            chosen[value] = [(int(row), int(col), 1, 1) for row, col in picked]
            continue
        chosen[value] = _rectangles_for_class(class_mask, target, rng, CLASS_NAMES[value - 1])
    return chosen


def _rectangles_for_class(class_mask: np.ndarray, target: int, rng: np.random.Generator,
                          name: str) -> list[tuple[int, int, int, int]]:
    """Rectangles over ``target`` pixels of the class: well inside fields and apart if possible."""
    for margin, separate in ((True, True), (False, True), (False, False)):
        rectangles = _choose_rectangles(class_mask, target, rng, margin=margin, separate=separate)
        if rectangles is not None:
            return rectangles
    raise ValueError(f"cannot place {target} training pixels in class {name}")


def choose_rectangles(labels: np.ndarray, *, per_class: dict[int, int], seed: int = 0
                      ) -> dict[int, list[tuple[int, int, int, int]]]:
    """Rectangles a person would draw over any label raster: ``per_class`` {value: pixels} (half
    of a smaller class), {value: [(row, col, rows, cols), ...]}."""
    rng = np.random.default_rng(seed)
    chosen = {}
    for value in sorted(int(v) for v in np.unique(labels) if v > 0):
        class_mask = labels == value
        target = int(min(per_class[value], max(1, int(class_mask.sum()) // 2)))
        chosen[value] = _rectangles_for_class(class_mask, target, rng, f"value {value}")
    return chosen


def write_rectangle_polygons(path: Path, raster, rectangles: dict[int, list[tuple]]) -> Path:
    """Rectangles of pixels as polygons on ``raster``'s grid, integer field ``class_id``, layer
    ``training``; each outline sits inside its pixel block, as a hand-drawn one would."""
    dataset = gdal.Open(str(raster))
    x0, dx, _, y0, _, dy = dataset.GetGeoTransform()
    inset_x, inset_y = 0.2 * abs(dx), 0.2 * abs(dy)
    path = Path(path)
    if path.exists():
        path.unlink()
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = source.CreateLayer("training", dataset.GetSpatialRef(), ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
    layer.StartTransaction()
    for value, rects in rectangles.items():
        for row, col, rows, cols in rects:
            left, right = x0 + col * dx + inset_x, x0 + (col + cols) * dx - inset_x
            top, bottom = y0 + row * dy - inset_y, y0 + (row + rows) * dy + inset_y
            ring = ogr.Geometry(ogr.wkbLinearRing)
            for x, y in ((left, top), (right, top), (right, bottom), (left, bottom), (left, top)):
                ring.AddPoint_2D(float(x), float(y))
            polygon = ogr.Geometry(ogr.wkbPolygon)
            polygon.AddGeometry(ring)
            feature = ogr.Feature(layer.GetLayerDefn())
            feature.SetField("class_id", int(value))
            feature.SetGeometry(polygon)
            layer.CreateFeature(feature)
    layer.CommitTransaction()
    del source                          # closing the data source writes the layer
    return path


def _new_vector_layer(path: Path, layer_name: str) -> tuple[ogr.DataSource, ogr.Layer]:
    if path.exists():
        path.unlink()
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = source.CreateLayer(layer_name, _srs(), ogr.wkbPolygon)
    name_field = ogr.FieldDefn(CLASS_FIELD, ogr.OFTString)
    name_field.SetWidth(40)
    layer.CreateField(name_field)
    layer.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
    return source, layer


def write_training_polygons(path: Path, rectangles: dict[int, list[tuple[int, int, int, int]]],
                            rng: np.random.Generator) -> None:
    source, layer = _new_vector_layer(path, "training")
    x0, y0 = ORIGIN_XY
    for value, rects in rectangles.items():
        for row, col, rows, cols in rects:
            # Corners sit 1 to 5 m inside the pixel block, as a hand-drawn outline would: every pixel
            # centre of the block (10 m from its edges) stays inside, every neighbour's stays outside.
            inset = rng.uniform(1.0, 5.0, size=(4, 2))
            left, right = x0 + col * PIXEL_SIZE_M, x0 + (col + cols) * PIXEL_SIZE_M
            top, bottom = y0 - row * PIXEL_SIZE_M, y0 - (row + rows) * PIXEL_SIZE_M
            corners = [(left + inset[0, 0], top - inset[0, 1]),
                       (right - inset[1, 0], top - inset[1, 1]),
                       (right - inset[2, 0], bottom + inset[2, 1]),
                       (left + inset[3, 0], bottom + inset[3, 1])]
            ring = ogr.Geometry(ogr.wkbLinearRing)
            for x, y in corners + corners[:1]:
                ring.AddPoint_2D(float(x), float(y))
            polygon = ogr.Geometry(ogr.wkbPolygon)
            polygon.AddGeometry(ring)
            feature = ogr.Feature(layer.GetLayerDefn())
            feature.SetField(CLASS_FIELD, CLASS_NAMES[value - 1])
            feature.SetField("class_id", value)
            feature.SetGeometry(polygon)
            layer.CreateFeature(feature)
    del source                          # closing the data source writes the layer


def write_reference_polygons(path: Path, reference_raster: Path) -> None:
    source, layer = _new_vector_layer(path, "reference")
    raster = gdal.Open(str(reference_raster))
    band = raster.GetRasterBand(1)
    class_id_index = layer.GetLayerDefn().GetFieldIndex("class_id")
    gdal.Polygonize(band, band.GetMaskBand(), layer, class_id_index, [])
    raster = None
    layer.StartTransaction()
    for feature in layer:
        feature.SetField(CLASS_FIELD, CLASS_NAMES[feature.GetField("class_id") - 1])
        layer.SetFeature(feature)
    layer.CommitTransaction()
    del source                          # closing the data source writes the layer


_QGIS_APP = None


def _ensure_qgis_application():
    """A QgsApplication for the style calls; reuses the running one (QGIS, tests) when there is one."""
    global _QGIS_APP
    from qgis.core import QgsApplication

    if QgsApplication.instance() is None:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        _QGIS_APP = QgsApplication([], False)
        _QGIS_APP.initQgis()


def save_categorized_default_style(path: Path, layer_name: str, *, outline_width_mm: float) -> None:
    """Stores a categorized renderer on `class_name` as the layer's default style in the GeoPackage."""
    _ensure_qgis_application()
    from qgis.core import (QgsCategorizedSymbolRenderer, QgsFillSymbol, QgsRendererCategory,
                           QgsVectorLayer)

    layer = QgsVectorLayer(f"{path}|layername={layer_name}", layer_name, "ogr")
    if not layer.isValid():
        raise RuntimeError(f"QGIS cannot open {path} layer {layer_name}")
    categories = []
    for name, (r, g, b) in zip(CLASS_NAMES, CLASS_COLORS):
        symbol = QgsFillSymbol.createSimple({"color": f"{r},{g},{b},255",
                                             "outline_color": "35,35,35,255",
                                             "outline_width": str(outline_width_mm)})
        categories.append(QgsRendererCategory(name, symbol, name))
    layer.setRenderer(QgsCategorizedSymbolRenderer(CLASS_FIELD, categories))
    error = layer.saveStyleToDatabase("default", "Indian Pines classes", True, "")
    if error:
        raise RuntimeError(f"cannot store the style in {path}: {error}")


def make_indian_pines_inputs(out_dir, *, pixels_per_class=(10, 30), seed=0,
                             sampling: str = "polygons") -> dict:
    """Writes the demo inputs into `out_dir` and returns their paths and the class names.

    ``sampling``: "polygons" (a few small rectangles per class, as a person draws them) or
    "scattered" (one-pixel polygons at random pixels of the class); see choose_training_rectangles.

    Returns:
        dict with ``raster``, ``training``, ``reference`` (GeoPackages, field ``class_name``),
        ``reference_raster``, ``ground_truth`` (paths as str), ``class_field``, ``class_names``
        (the 16 names, value 1 first) and ``class_colors`` (name -> rgb).
    """
    image, labels, wavelengths = load_indian_pines()
    rectangles = choose_training_rectangles(labels, pixels_per_class=pixels_per_class, seed=seed,
                                            sampling=sampling)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raster = out / "indian_pines.tif"
    write_image(raster, image, wavelengths)
    ground_truth = out / "indian_pines_ground_truth.tif"
    write_labels(ground_truth, labels)

    training = out / "indian_pines_training.gpkg"
    write_training_polygons(training, rectangles, np.random.default_rng(seed + 1))

    remaining = labels.copy()
    for rects in rectangles.values():
        for row, col, rows, cols in rects:
            remaining[row:row + rows, col:col + cols] = 0
    reference_raster = out / "indian_pines_reference.tif"
    write_labels(reference_raster, remaining)
    reference = out / "indian_pines_reference.gpkg"
    write_reference_polygons(reference, reference_raster)

    save_categorized_default_style(training, "training", outline_width_mm=0.6)
    save_categorized_default_style(reference, "reference", outline_width_mm=0.0)
    return {
        "raster": str(raster),
        "training": str(training),
        "reference": str(reference),
        "reference_raster": str(reference_raster),
        "ground_truth": str(ground_truth),
        "class_field": CLASS_FIELD,
        "class_names": list(CLASS_NAMES),
        "class_colors": dict(zip(CLASS_NAMES, CLASS_COLORS)),
    }


if __name__ == "__main__":
    import sys

    paths = make_indian_pines_inputs(sys.argv[1] if len(sys.argv) > 1 else "demo_output/inputs")
    for key in ("raster", "training", "reference", "reference_raster", "ground_truth"):
        print(f"{key}: {paths[key]}")
