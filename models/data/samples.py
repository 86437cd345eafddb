"""Training samples: polygons or points from any OGR source, burnt onto the raster's pixel grid.

The layer is reprojected to the raster's CRS and rasterised tile by tile (pixel centre inside a
polygon, the pixel holding a point), so memory follows the tile, not the raster. Each labelled
pixel keeps the feature it came from: the validation split takes whole features, so validation
pixels never sit beside training pixels of the same polygon.

The module is longer than this project's usually are (about 550 lines) because reading a layer's
classes, burning its features tile by tile, settling pixels that two classes claim and splitting
by feature all work on the same ``LabelledPixels`` and ``ClassInfo``; each step is a function.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
from osgeo import gdal, ogr, osr

from ..errors import HyperAdaptError, raise_if_cancelled
from .raster import RasterInfo

ogr.UseExceptions()
gdal.UseExceptions()
osr.UseExceptions()

_FEATURE_FIELD = "hyperadapt_feature"
_CLASS_FIELD = "hyperadapt_class"
_RASTERIZE_TILE = 2048

# Distinct, print-friendly colours for classes the caller gives no colour for.
DEFAULT_CLASS_COLORS = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)


# Features of a class that always stay in training when some are held out for validation.
MIN_TRAINING_FEATURES = 2


@dataclass
class ClassInfo:
    """A class of the classification: its pixel value in the output, its name and RGB colour."""

    value: int
    name: str
    color: tuple[int, int, int]

    def to_dict(self) -> dict:
        return {"value": int(self.value), "name": str(self.name),
                "color": [int(c) for c in self.color]}

    @classmethod
    def from_dict(cls, data: dict) -> ClassInfo:
        return cls(value=int(data["value"]), name=str(data["name"]),
                   color=tuple(int(c) for c in data["color"]))


def describe_class_pixels(classes: list[ClassInfo], pixels_per_class: dict) -> str:
    """'Corn: 1,204 px, Soybean: none, ...' for a summary: a class the map never took stands out."""
    return ", ".join(f"{c.name}: {pixels_per_class.get(c.value, 0):,} px"
                     if pixels_per_class.get(c.value, 0) else f"{c.name}: none"
                     for c in classes)


@dataclass
class LabelledPixels:
    """Labelled pixels of the raster grid, each with its class index and source feature."""

    rows: np.ndarray
    cols: np.ndarray
    class_index: np.ndarray        # 0..K-1, into ``classes``
    feature_index: np.ndarray      # 0..F-1, the feature each pixel came from
    classes: list[ClassInfo]
    feature_class: np.ndarray      # class index of each feature
    notes: list[str] = field(default_factory=list)
    # Pixels of each class left out because features of another class cover them too.
    contested: dict[int, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, keep: np.ndarray) -> LabelledPixels:
        return LabelledPixels(rows=self.rows[keep], cols=self.cols[keep],
                              class_index=self.class_index[keep],
                              feature_index=self.feature_index[keep], classes=self.classes,
                              feature_class=self.feature_class, notes=list(self.notes),
                              contested=dict(self.contested))

    def pixels_per_class(self) -> np.ndarray:
        return np.bincount(self.class_index, minlength=len(self.classes))


@dataclass
class FeatureSplit:
    """Pixel indices for training and validation, split by whole features."""

    train: np.ndarray
    validation: np.ndarray
    training_only_classes: list[int]      # class indices with too few features to validate
    train_features: int = 0
    validation_features: int = 0


def open_vector_layer(vector_path, layer_name: str | None = None, *, role: str = "training layer"):
    """(data source, layer): the named layer, or the first layer that has geometries."""
    path = str(vector_path)
    if not path:
        raise HyperAdaptError(f"No {role} was given.")
    try:
        source = ogr.Open(path, 0)
    except RuntimeError as error:
        if not os.path.exists(path.split("|")[0]):
            raise HyperAdaptError(f"The {role} {path} does not exist.") from error
        raise HyperAdaptError(f"OGR cannot read {os.path.basename(path)} as a vector "
                              f"layer.") from error
    if source is None:
        if not os.path.exists(path.split("|")[0]):
            raise HyperAdaptError(f"The {role} {path} does not exist.")
        raise HyperAdaptError(f"OGR cannot read {os.path.basename(path)} as a vector layer.")
    if layer_name:
        layer = source.GetLayerByName(layer_name)
        if layer is None:
            raise HyperAdaptError(f"{os.path.basename(path)} has no layer named '{layer_name}'.")
        return source, layer
    for index in range(source.GetLayerCount()):
        layer = source.GetLayer(index)
        if layer.GetGeomType() != ogr.wkbNone:
            return source, layer
    raise HyperAdaptError(f"{os.path.basename(path)} has no layer with geometries.")


def _field_kind(layer, class_field: str) -> tuple[int, str]:
    if not class_field:
        raise HyperAdaptError("No class field was given.")
    definition = layer.GetLayerDefn()
    index = definition.GetFieldIndex(class_field)
    if index < 0:
        raise HyperAdaptError(f"The layer '{layer.GetName()}' has no field named "
                              f"'{class_field}'.")
    field_type = definition.GetFieldDefn(index).GetType()
    if field_type in (ogr.OFTInteger, ogr.OFTInteger64):
        return index, "integer"
    if field_type == ogr.OFTReal:
        return index, "real"
    if field_type == ogr.OFTString:
        return index, "text"
    raise HyperAdaptError(f"The class field '{class_field}' is neither text nor a whole number; "
                          f"choose a text or integer field.")


def _spatial_ref(wkt: str) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def _raster_extent(info: RasterInfo) -> tuple[float, float, float, float]:
    """(min_x, max_x, min_y, max_y) of a north-up raster."""
    x0, dx, _, y0, _, dy = info.geotransform
    xs = (x0, x0 + dx * info.width)
    ys = (y0, y0 + dy * info.height)
    return min(xs), max(xs), min(ys), max(ys)


def _class_key(feature, index: int, kind: str, class_field: str):
    if not feature.IsFieldSetAndNotNull(index):
        return None
    if kind == "text":
        text = feature.GetFieldAsString(index).strip()
        return text or None
    if kind == "integer":
        return int(feature.GetFieldAsInteger64(index))
    value = feature.GetFieldAsDouble(index)
    if not math.isfinite(value) or value != round(value):
        raise HyperAdaptError(f"The class field '{class_field}' holds decimal numbers such as "
                              f"{value}; use a text or integer field.")
    return int(round(value))


def build_classes(keys_in_order: list, kind: str, class_colors: dict | None = None,
                  class_names: dict | None = None) -> tuple[list[ClassInfo], dict]:
    """ClassInfo list and key -> class index.

    Text classes get values 1..K in the order they first appear in the layer; integer classes keep
    their own numbers when all lie in 1..255 (the output is a Byte raster), else get 1..K in
    numerical order. Colours and names are looked up by the key as text. A name from
    ``class_names`` (a style's category label) replaces an integer code only: a text value is
    already a name, and keeping it lets a reference layer with the same field match by name. Two
    codes given the same name keep their codes in brackets, so every class stays distinguishable.
    """
    if kind == "text":
        keys = list(dict.fromkeys(keys_in_order))
        values = list(range(1, len(keys) + 1))
    else:
        keys = sorted(set(keys_in_order))
        values = keys if all(1 <= k <= 255 for k in keys) else list(range(1, len(keys) + 1))
    if len(keys) > 255:
        raise HyperAdaptError(f"The class field has {len(keys)} different classes; at most 255 fit "
                              f"in a classification.")
    colors = {str(key): tuple(int(c) for c in rgb[:3]) for key, rgb in (class_colors or {}).items()}
    labels = {} if kind == "text" else {
        str(key): str(name).strip() for key, name in (class_names or {}).items()
        if str(name).strip()}
    names = [labels.get(str(key), str(key)) for key in keys]
    repeated = {name for name in names if names.count(name) > 1}
    classes = []
    for position, (key, value, name) in enumerate(zip(keys, values, names)):
        if name in repeated and name != str(key):
            name = f"{name} ({key})"
        color = colors.get(str(key), DEFAULT_CLASS_COLORS[position % len(DEFAULT_CLASS_COLORS)])
        classes.append(ClassInfo(value=int(value), name=name, color=color))
    return classes, {key: position for position, key in enumerate(keys)}


def read_labelled_pixels(info: RasterInfo, vector_path, class_field: str, *,
                         layer_name: str | None = None, class_colors: dict | None = None,
                         class_names: dict | None = None, cancel=None, min_classes: int = 2,
                         role: str = "training layer") -> LabelledPixels:
    """Rasterise a training layer on the raster's grid: every labelled pixel with its class and feature.

    Args:
        info: the raster the samples are for.
        vector_path: any OGR source (GeoPackage, Shapefile, GeoJSON, ...).
        class_field: a text or integer field naming each feature's class.
        layer_name: the layer inside the source; the first layer with geometries by default.
        class_colors: optional class value (as text) -> (r, g, b), e.g. from the layer's QGIS
            style.
        class_names: optional class value (as text) -> name for integer class codes, e.g. the
            category labels of the layer's QGIS style.
        cancel: optional ``cancel() -> bool``.
        min_classes: fewer classes is an error (training needs two; a reference may have one).
        role: what the layer is called in error messages ("training layer", "reference layer").
    """
    source, layer = open_vector_layer(vector_path, layer_name, role=role)
    try:
        return _burn_features(info, layer, class_field, class_colors=class_colors,
                              class_names=class_names, cancel=cancel, min_classes=min_classes,
                              role=role)
    except HyperAdaptError as error:
        # Without the frames that hold the layer: GDAL objects kept alive by a traceback are
        # collected after GDAL has shut down, which crashes Python on exit.
        raise error.with_traceback(None)
    finally:
        del layer, source


def _layer_to_raster(info: RasterInfo, layer, role: str):
    """(the raster's SRS, the transformation from the layer's, or None when they are the same);
    a layer or raster without a CRS is one sentence."""
    layer_srs = layer.GetSpatialRef()
    # GeoPackages store "no CRS" as an undefined geographic or Cartesian SRS.
    if layer_srs is None or (layer_srs.GetName() or "").startswith("Undefined"):
        raise HyperAdaptError(f"The {role} '{layer.GetName()}' has no coordinate reference "
                              f"system; set one and save the layer.")
    if not info.crs_wkt:
        raise HyperAdaptError(f"The raster {os.path.basename(info.path)} has no coordinate "
                              f"reference system, so the {role} cannot be placed on it.")
    layer_srs = layer_srs.Clone()
    layer_srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    raster_srs = _spatial_ref(info.crs_wkt)
    transform = None if layer_srs.IsSame(raster_srs) else osr.CoordinateTransformation(
        layer_srs, raster_srs)
    return raster_srs, transform


def _add_small_polygons(info: RasterInfo, geometries, rows, cols, ids, contested_cells):
    """Polygons smaller than a pixel hold no pixel centre; they still mark the pixel they sit in
    (unless another feature or a contested pixel has it). Points are burnt as they are."""
    hit = np.zeros(len(geometries), dtype=bool)
    hit[ids] = True
    if hit.all():
        return rows, cols, ids
    x0, dx, _, y0, _, dy = info.geotransform
    extra = []
    taken = set((rows * info.width + cols).tolist())
    for number in np.flatnonzero(~hit):
        geometry = geometries[number]
        if ogr.GT_Flatten(geometry.GetGeometryType()) in (ogr.wkbPoint, ogr.wkbMultiPoint):
            continue
        point = geometry.PointOnSurface()
        if point is None or point.IsEmpty():
            continue
        col = int(math.floor((point.GetX() - x0) / dx))
        row = int(math.floor((point.GetY() - y0) / dy))
        cell = row * info.width + col
        if (0 <= row < info.height and 0 <= col < info.width and cell not in taken
                and cell not in contested_cells):
            taken.add(cell)
            extra.append((row, col, number))
    if not extra:
        return rows, cols, ids
    extra_arr = np.array(extra, dtype=np.int64)
    return (np.concatenate([rows, extra_arr[:, 0]]), np.concatenate([cols, extra_arr[:, 1]]),
            np.concatenate([ids, extra_arr[:, 2]]))


def _burn_notes(classes, key_to_class: dict, contested_sets: dict, class_field: str, *,
                skipped_no_class: int, skipped_no_geometry: int) -> list[str]:
    """What reading the layer left out or renamed, one sentence each."""
    notes = []
    if contested_sets:
        listed = "; ".join(f"{' and '.join(classes[i].name for i in key)}: {count}"
                           for key, count in sorted(contested_sets.items(),
                                                    key=lambda item: -item[1]))
        notes.append(f"{sum(contested_sets.values())} pixel(s) lie under features of more than "
                     f"one class and were left out ({listed}).")
    if skipped_no_class:
        notes.append(f"{skipped_no_class} feature(s) without a value in '{class_field}' were "
                     f"left out.")
    if skipped_no_geometry:
        notes.append(f"{skipped_no_geometry} feature(s) without a usable geometry were left out.")
    renamed = [f"{key} = {classes[index].name}" for key, index in key_to_class.items()
               if classes[index].name != str(key)]
    if renamed:
        notes.append(f"Class names from the labels of the layer's style: {', '.join(renamed)}.")
    return notes


def _burn_features(info: RasterInfo, layer, class_field: str, *, class_colors, class_names,
                   cancel, min_classes: int, role: str) -> LabelledPixels:
    field_index, kind = _field_kind(layer, class_field)
    raster_srs, transform = _layer_to_raster(info, layer, role)
    memory = ogr.GetDriverByName("Memory").CreateDataSource("")
    burn_layer = memory.CreateLayer("samples", srs=raster_srs, geom_type=ogr.wkbUnknown)
    burn_layer.CreateField(ogr.FieldDefn(_FEATURE_FIELD, ogr.OFTInteger))
    burn_layer.CreateField(ogr.FieldDefn(_CLASS_FIELD, ogr.OFTInteger))
    keys, geometries = [], []
    skipped_no_class = skipped_no_geometry = with_class = 0
    layer.ResetReading()
    for feature in layer:
        key = _class_key(feature, field_index, kind, class_field)
        geometry = feature.GetGeometryRef()
        if key is None:
            skipped_no_class += 1
            continue
        with_class += 1
        if geometry is None or geometry.IsEmpty():
            skipped_no_geometry += 1
            continue
        geometry = geometry.Clone()
        if transform is not None:
            try:
                geometry.Transform(transform)
            except RuntimeError:
                skipped_no_geometry += 1
                continue
        keys.append(key)
        geometries.append(geometry)
    if layer.GetFeatureCount() == 0:
        raise HyperAdaptError(f"The {role} '{layer.GetName()}' has no features.")
    if not with_class:
        raise HyperAdaptError(f"The class field '{class_field}' is empty in every feature of the "
                              f"layer '{layer.GetName()}'.")
    no_overlap = HyperAdaptError(f"The {role} '{layer.GetName()}' does not overlap the "
                                 f"raster {os.path.basename(info.path)}.")
    if not keys:
        raise no_overlap
    classes, key_to_class = build_classes(keys, kind, class_colors, class_names)
    if len(classes) < min_classes:
        raise HyperAdaptError(f"Training needs at least two classes, but the field '{class_field}' "
                              f"has only one: '{classes[0].name}'.")
    feature_class = np.array([key_to_class[key] for key in keys], dtype=np.int64)

    envelope = [math.inf, -math.inf, math.inf, -math.inf]
    for number, geometry in enumerate(geometries):
        out = ogr.Feature(burn_layer.GetLayerDefn())
        out.SetField(_FEATURE_FIELD, number + 1)
        out.SetField(_CLASS_FIELD, int(feature_class[number]))
        out.SetGeometry(geometry)
        burn_layer.CreateFeature(out)
        min_x, max_x, min_y, max_y = geometry.GetEnvelope()
        envelope = [min(envelope[0], min_x), max(envelope[1], max_x),
                    min(envelope[2], min_y), max(envelope[3], max_y)]
    r_min_x, r_max_x, r_min_y, r_max_y = _raster_extent(info)
    if (envelope[0] > r_max_x or envelope[1] < r_min_x or envelope[2] > r_max_y
            or envelope[3] < r_min_y):
        raise no_overlap

    rows, cols, ids, contested_sets, contested_cells = _rasterize(info, burn_layer, envelope,
                                                                  len(classes), cancel)

    rows, cols, ids = _add_small_polygons(info, geometries, rows, cols, ids, contested_cells)
    contested: dict[int, int] = {}
    for key, count in contested_sets.items():
        for index in key:
            contested[index] = contested.get(index, 0) + count
    if len(rows) == 0 and not contested:
        raise no_overlap

    notes = _burn_notes(classes, key_to_class, contested_sets, class_field,
                        skipped_no_class=skipped_no_class,
                        skipped_no_geometry=skipped_no_geometry)
    return LabelledPixels(rows=rows.astype(np.int64), cols=cols.astype(np.int64),
                          class_index=feature_class[ids], feature_index=ids, classes=classes,
                          feature_class=feature_class, notes=notes, contested=contested)


def _rasterize(info: RasterInfo, burn_layer, envelope, num_classes: int, cancel):
    """(rows, cols, feature ids) of the pixels the features cover, tile by tile over their
    envelope, and the pixels features of different classes share: ({class indices: pixels},
    {row * width + col}), left out of the first three."""
    x0, dx, _, y0, _, dy = info.geotransform
    cols_span = sorted(((envelope[0] - x0) / dx, (envelope[1] - x0) / dx))
    rows_span = sorted(((envelope[2] - y0) / dy, (envelope[3] - y0) / dy))
    col_start = max(0, int(math.floor(cols_span[0])) - 1)
    col_stop = min(info.width, int(math.ceil(cols_span[1])) + 1)
    row_start = max(0, int(math.floor(rows_span[0])) - 1)
    row_stop = min(info.height, int(math.ceil(rows_span[1])) + 1)

    found_rows, found_cols, found_ids = [], [], []
    contested_sets: dict[tuple[int, ...], int] = {}
    contested_cells: set[int] = set()
    mem_driver = gdal.GetDriverByName("MEM")
    for ty in range(row_start, row_stop, _RASTERIZE_TILE):
        for tx in range(col_start, col_stop, _RASTERIZE_TILE):
            raise_if_cancelled(cancel)
            tw, th = min(_RASTERIZE_TILE, col_stop - tx), min(_RASTERIZE_TILE, row_stop - ty)
            target = mem_driver.Create("", tw, th, 2, gdal.GDT_Int32)
            target.SetGeoTransform((x0 + tx * dx, dx, 0.0, y0 + ty * dy, 0.0, dy))
            target.SetProjection(info.crs_wkt)
            gdal.RasterizeLayer(target, [1], burn_layer, options=[f"ATTRIBUTE={_FEATURE_FIELD}"])
            gdal.RasterizeLayer(target, [2], burn_layer, burn_values=[1],
                                options=["MERGE_ALG=ADD"])
            burnt = target.GetRasterBand(1).ReadAsArray()
            covers = target.GetRasterBand(2).ReadAsArray()
            if (covers > 1).any():
                # The last feature drawn would win such a pixel; where the features covering it
                # are of different classes, nobody can say which is meant, so it is left out.
                mixed, sets = _contested_pixels(target, burn_layer, covers > 1, num_classes)
                burnt[mixed] = 0
                mr, mc = np.nonzero(mixed)
                contested_cells.update(((mr + ty) * info.width + mc + tx).tolist())
                for key, count in sets.items():
                    contested_sets[key] = contested_sets.get(key, 0) + count
            r, c = np.nonzero(burnt)
            found_rows.append(r + ty)
            found_cols.append(c + tx)
            found_ids.append(burnt[r, c].astype(np.int64) - 1)
    rows = np.concatenate(found_rows) if found_rows else np.zeros(0, np.int64)
    cols = np.concatenate(found_cols) if found_cols else np.zeros(0, np.int64)
    ids = np.concatenate(found_ids) if found_ids else np.zeros(0, np.int64)
    return rows, cols, ids, contested_sets, contested_cells



def _contested_pixels(target, burn_layer, overlapped: np.ndarray, num_classes: int):
    """(mask of pixels covered by features of two or more classes, {class index tuple: pixels}).

    Only called where features overlap at all; each class is burnt on its own into the tile's
    second band to see which classes cover each overlapped pixel.
    """
    band = target.GetRasterBand(2)
    present = np.zeros((num_classes, int(overlapped.sum())), dtype=bool)
    for index in range(num_classes):
        band.Fill(0)
        burn_layer.SetAttributeFilter(f"{_CLASS_FIELD} = {index}")
        gdal.RasterizeLayer(target, [2], burn_layer, burn_values=[1])
        present[index] = band.ReadAsArray()[overlapped] > 0
    burn_layer.SetAttributeFilter(None)
    several = present.sum(axis=0) > 1
    mixed = np.zeros_like(overlapped)
    mixed[overlapped] = several
    sets: dict[tuple[int, ...], int] = {}
    for column in present[:, several].T:
        key = tuple(int(i) for i in np.flatnonzero(column))
        sets[key] = sets.get(key, 0) + 1
    return mixed, sets


def check_class_pixels(pixels: LabelledPixels, min_pixels: int = 1) -> None:
    """A HyperAdaptError naming the first class with fewer than ``min_pixels`` usable pixels."""
    counts = pixels.pixels_per_class()
    needed = max(1, int(min_pixels))
    for index, (info, count) in enumerate(zip(pixels.classes, counts)):
        if count < needed:
            lost = pixels.contested.get(index, 0)
            if count == 0 and lost:
                raise HyperAdaptError(f"The class '{info.name}' has no usable pixels: its {lost} "
                                      f"pixel(s) all lie under features of another class too; "
                                      f"fix the overlapping polygons and run again.")
            if count == 0:
                raise HyperAdaptError(f"The class '{info.name}' has no usable pixels on the raster "
                                      f"(its features lie outside it or on nodata); at least "
                                      f"{needed} {'is' if needed == 1 else 'are'} needed.")
            raise HyperAdaptError(f"The class '{info.name}' has only {count} usable "
                                  f"pixel{'s' if count != 1 else ''} on the raster; at least "
                                  f"{needed} are needed.")


def split_by_feature(feature_index: np.ndarray, class_index: np.ndarray, *,
                     val_fraction: float = 0.25, seed: int = 0,
                     min_class_pixels: int = 0) -> FeatureSplit:
    """Stratified, seeded split of pixels into training and validation by whole features.

    In each class about ``val_fraction`` of the features (at least one) go to validation, as long
    as ``MIN_TRAINING_FEATURES`` stay for training and the class has at least
    ``min_class_pixels`` pixels. A class with fewer cannot spare any: all its pixels train, and
    the class is listed in ``training_only_classes``. (Holding out one of two polygons halves a
    class's training data and leaves it one place in the scene to learn from; on Indian Pines with
    two polygons per class that cost far more than validation gave.)
    """
    feature_index = np.asarray(feature_index, dtype=np.int64)
    class_index = np.asarray(class_index, dtype=np.int64)
    rng = np.random.default_rng(seed)
    validation_features = []
    training_only = []
    train_feature_count = 0
    for cls in np.unique(class_index):
        members = class_index == cls
        features = np.unique(feature_index[members])
        if (val_fraction <= 0 or len(features) <= MIN_TRAINING_FEATURES
                or int(members.sum()) < min_class_pixels):
            training_only.append(int(cls))
            train_feature_count += len(features)
            continue
        count = min(len(features) - MIN_TRAINING_FEATURES,
                    max(1, int(round(len(features) * val_fraction))))
        chosen = rng.permutation(features)[:count]
        validation_features.append(chosen)
        train_feature_count += len(features) - count
    chosen = (np.concatenate(validation_features) if validation_features
              else np.zeros(0, np.int64))
    is_validation = np.isin(feature_index, chosen)
    return FeatureSplit(train=np.flatnonzero(~is_validation),
                        validation=np.flatnonzero(is_validation),
                        training_only_classes=training_only, train_features=train_feature_count,
                        validation_features=len(chosen))


def cap_per_class(indices: np.ndarray, class_index: np.ndarray, cap: int,
                  rng: np.random.Generator) -> np.ndarray:
    """At most ``cap`` of the given pixel indices per class (a seeded subsample), sorted."""
    if cap is None or cap <= 0:
        return indices
    kept = []
    for cls in np.unique(class_index[indices]):
        members = indices[class_index[indices] == cls]
        if len(members) > cap:
            members = np.sort(rng.choice(members, size=cap, replace=False))
        kept.append(members)
    return np.sort(np.concatenate(kept)) if kept else indices


def grouped_folds(feature_index: np.ndarray, class_index: np.ndarray, folds: int,
                  seed: int = 0) -> np.ndarray:
    """Fold number (0..folds-1) of every pixel, by whole features and stratified by class.

    Each class's features are shuffled (seeded) and dealt to the folds in turn, starting where the
    previous class stopped, so folds get about equal shares of every class and of the features
    (dzetsaka's and scikit-learn's grouped, stratified folds, in a few lines). A pixel's fold is
    its feature's: no polygon ever lies on both sides of a fold.
    """
    feature_index = np.asarray(feature_index, dtype=np.int64)
    class_index = np.asarray(class_index, dtype=np.int64)
    rng = np.random.default_rng([seed, 5])
    fold_of_feature = {}
    turn = 0
    for cls in np.unique(class_index):
        for feature in rng.permutation(np.unique(feature_index[class_index == cls])):
            fold_of_feature[int(feature)] = turn % folds
            turn += 1
    return np.array([fold_of_feature[int(f)] for f in feature_index], dtype=np.int64)
