"""Evaluate a classification against reference polygons, points or a class raster.

The simple pixel counts (OA, AA, kappa, per-class user's and producer's accuracy) and, from the
map's own class areas, the area-adjusted estimates with 95 % intervals (Olofsson et al., "Good
practices for estimating area and assessing accuracy of land change", RSE 2014). A reference
mostly of classes the map does not have is refused rather than scored on the part that matched.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import options
from ..data.raster import RasterInfo, RasterReader, iter_tiles, open_raster, read_raster_info
from ..data.samples import ClassInfo, read_labelled_pixels
from ..errors import HyperAdaptError, raise_if_cancelled
from ..learning.metrics import classification_metrics, confusion_matrix
from ..progress import report as _report
from ..stores.class_map import category_names, embedded_classes
from ..stores.files import StagedFiles
from ..stores.guard import check_job_files, layer_files, raster_files
from ..stores.report import write_html_report, write_metrics_json


def read_class_raster_classes(path) -> list[ClassInfo]:
    """Classes of a classification raster: values with a category name, and their colours.

    Without category names, the distinct non-zero values found (read in blocks) are the classes.
    A raster that cannot be a classification (several bands, decimal values, values above 255) is
    refused with one sentence.
    """
    from osgeo import gdal

    not_classification = (f"{Path(path).name} is not a classification: a classification has one "
                          f"band of whole class values from 1 to 255, as HyperAdapt writes them")
    dataset = open_raster(path)
    band = dataset.GetRasterBand(1)
    try:
        if dataset.RasterCount != 1:
            problem = f"{not_classification} (it has {dataset.RasterCount} bands)."
        elif band.DataType not in (gdal.GDT_Byte, gdal.GDT_UInt16, gdal.GDT_Int16,
                                   gdal.GDT_UInt32, gdal.GDT_Int32):
            problem = f"{not_classification} (its values are decimal numbers)."
        else:
            problem = None
            nodata = band.GetNoDataValue()   # also makes GTiff load the category names
            names = band.GetCategoryNames() or []
            table = band.GetColorTable()
            table = None if table is None else [tuple(table.GetColorEntry(i)[:3])
                                                for i in range(table.GetCount())]
            if not any(names):               # a copy without its .aux.xml
                embedded = embedded_classes(dataset)
                if embedded:
                    names = category_names(embedded)
            values = [v for v, name in enumerate(names) if name and v != 0 and v != nodata]
            if not values:
                found = set()
                for x, y, w, h in iter_tiles(dataset.RasterXSize, dataset.RasterYSize, 1024):
                    block = band.ReadAsArray(x, y, w, h)
                    found |= set(np.unique(block[np.isfinite(block)]).astype(np.int64).tolist())
                values = sorted(v for v in found if v != 0 and v != nodata)
            outside = [v for v in values if not 1 <= v <= 255]
            if outside:
                problem = f"{not_classification} (it holds the value {outside[-1]})."
    finally:
        # A band must go before its dataset (GDAL frees bands with it), also when this raises.
        band = dataset = None
    if problem:
        raise HyperAdaptError(problem)
    classes = []
    for value in values:
        color = table[value] if table is not None and value < len(table) else (128, 128, 128)
        name = names[value] if value < len(names) and names[value] else str(value)
        classes.append(ClassInfo(value=int(value), name=name, color=color))
    if not classes:
        raise HyperAdaptError(f"The classification {Path(path).name} holds no classes.")
    return classes


def _reference_on_grid(reference_path, info: RasterInfo):
    """The reference raster, warped (nearest neighbour, virtually) onto the classification grid."""
    from osgeo import gdal
    dataset = open_raster(reference_path)
    same_grid = (dataset.RasterXSize == info.width and dataset.RasterYSize == info.height and
                 np.allclose(dataset.GetGeoTransform(), info.geotransform))
    if same_grid:
        return dataset
    x0, dx, _, y0, _, dy = info.geotransform
    bounds = (min(x0, x0 + dx * info.width), min(y0, y0 + dy * info.height),
              max(x0, x0 + dx * info.width), max(y0, y0 + dy * info.height))
    return gdal.Warp("", dataset, format="VRT", outputBounds=bounds, width=info.width,
                     height=info.height, dstSRS=info.crs_wkt or None, resampleAlg="near",
                     dstNodata=0)


def _compare_with_reference_raster(reference_path, info: RasterInfo, classes: list[ClassInfo], *,
                                   progress, cancel) -> tuple[np.ndarray, int, dict[str, int]]:
    """(confusion matrix, reference pixels the classification leaves unclassified, reference
    pixels per class code the classification does not have) against a reference raster, matched
    by category name when the names agree, else by value."""
    value_to_index = {c.value: i for i, c in enumerate(classes)}
    name_to_index = {c.name: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    unclassified, unmatched = 0, {}
    predicted_lookup = np.full(256, -1, dtype=np.int64)
    for value, index in value_to_index.items():
        predicted_lookup[value] = index
    reference_ds = _reference_on_grid(reference_path, info)
    ref_band = reference_ds.GetRasterBand(1)
    try:
        ref_nodata = ref_band.GetNoDataValue()
        ref_names = ref_band.GetCategoryNames() or []
        by_name = any(name in name_to_index for name in ref_names if name)
        lookup_size = 65536
        lookup = np.full(lookup_size, -1, dtype=np.int64)
        if by_name:
            for value, name in enumerate(ref_names[:lookup_size]):
                lookup[value] = name_to_index.get(name, -1) if name else -1
        else:
            for value, index in value_to_index.items():
                lookup[value] = index
        with RasterReader(info) as reader:
            tiles = list(iter_tiles(info.width, info.height, 512))
            for done, (x, y, w, h) in enumerate(tiles):
                raise_if_cancelled(cancel)
                predicted, valid = reader.read(x, y, w, h, bands=[0])
                reference = ref_band.ReadAsArray(x, y, w, h).astype(np.float64)
                labelled = np.isfinite(reference) & (reference > 0)
                if ref_nodata is not None:
                    labelled &= reference != ref_nodata
                fractional = labelled & (reference != np.round(reference))
                if fractional.any():
                    raise HyperAdaptError(
                        f"The reference raster {Path(reference_path).name} holds values that are "
                        f"not whole class values, such as {reference[fractional][0]:g}; give it "
                        f"whole numbers (0 = unlabelled).")
                ref_values = np.clip(np.where(labelled, reference, 0).astype(np.int64), 0,
                                     lookup_size - 1)
                ref_index = np.where(labelled, lookup[ref_values], -1)
                pred_values = np.clip(predicted[0].astype(np.int64), 0, 255)
                pred_index = np.where(valid, predicted_lookup[pred_values], -1)
                codes, numbers = np.unique(ref_values[labelled & (ref_index < 0)],
                                           return_counts=True)
                for code, number in zip(codes.tolist(), numbers.tolist()):
                    key = (f"'{ref_names[code]}'" if by_name and code < len(ref_names)
                           and ref_names[code] else str(code))
                    unmatched[key] = unmatched.get(key, 0) + int(number)
                unclassified += int(((ref_index >= 0) & (pred_index < 0)).sum())
                usable = (ref_index >= 0) & (pred_index >= 0)
                matrix += confusion_matrix(ref_index[usable], pred_index[usable], len(classes))
                _report(progress, (done + 1) / len(tiles), "Comparing with the reference")
    finally:
        # A band must go before its dataset (GDAL frees bands with it).
        ref_band = reference_ds = None
    return matrix, unclassified, unmatched


def _class_pixel_counts(path, info: RasterInfo, classes: list[ClassInfo], cancel) -> np.ndarray:
    """Pixels of each class in the whole classification raster, read in blocks."""
    lookup = np.full(256, -1, dtype=np.int64)
    for index, info_class in enumerate(classes):
        lookup[info_class.value] = index
    counts = np.zeros(len(classes), dtype=np.int64)
    with RasterReader(info) as reader:
        for x, y, w, h in iter_tiles(info.width, info.height, 1024):
            raise_if_cancelled(cancel)
            values, valid = reader.read(x, y, w, h, bands=[0])
            index = lookup[np.clip(values[0][valid].astype(np.int64), 0, 255)]
            counts += np.bincount(index[index >= 0], minlength=len(classes))
    return counts


def _area_adjusted(matrix: np.ndarray, info: RasterInfo, path, classes: list[ClassInfo],
                   cancel) -> dict:
    """Olofsson et al.'s (2014) estimates from the map's class areas (models.learning.metrics), in
    hectares where the raster's CRS counts in metres, else in pixels."""
    from osgeo import osr

    from ..learning.metrics import area_adjusted_accuracy

    pixel_area, unit = 1.0, "pixels"
    if info.crs_wkt:
        srs = osr.SpatialReference()
        srs.ImportFromWkt(info.crs_wkt)
        if srs.IsProjected():
            metres = srs.GetLinearUnits()
            _, dx, _, _, _, dy = info.geotransform
            pixel_area, unit = abs(dx * dy) * metres ** 2 / 10_000.0, "ha"
    adjusted = area_adjusted_accuracy(matrix, _class_pixel_counts(path, info, classes, cancel),
                                      pixel_area=pixel_area)
    adjusted.update({"area_unit": unit, "note": (
        "Estimated as Olofsson et al. (2014) recommend, from each class's share of the map and "
        "the reference pixels that fall in it, with 95 % confidence intervals. The estimates "
        "hold when the reference is a random sample within each mapped class; reference "
        "polygons drawn by hand are not, so read them as indicative. The accuracies above are "
        "the simple pixel counts of the reference.")})
    return adjusted


def _unmatched_problem(unmatched: dict, total: int, max_share: float) -> str | None:
    """The sentence refusing an evaluation whose reference is mostly of unknown classes, or None."""
    count = sum(unmatched.values())
    if not total or count / total <= max_share:
        return None
    largest = sorted(unmatched.items(), key=lambda item: -item[1])[:5]
    listed = ", ".join(f"{key} ({number} px)" for key, number in largest)
    more = f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
    return (f"{100 * count / total:.0f} % of the reference pixels ({count} of {total}) belong to "
            f"classes the classification does not have: {listed}{more}; match the reference's "
            f"codes or names to the classification's, or accept a larger unmatched share "
            f"(now {100 * max_share:g} %).")


def evaluate(classification_path: str, reference_path: str, *, class_field: str | None = None,
             layer_name: str | None = None, html_path: str | None = None,
             json_path: str | None = None,
             max_unmatched_share: float = options.DEFAULT_MAX_UNMATCHED_SHARE, progress=None,
             cancel=None) -> dict:
    """Accuracy of a classification against reference polygons/points (with ``class_field``) or a
    reference raster (whole class values, 0 or nodata = unlabelled).

    Reference classes are matched to the classification's by name, and by value for integer
    classes. When more than ``max_unmatched_share`` of the labelled reference pixels belong to
    classes the classification does not have, the evaluation is refused with one sentence naming
    them: the accuracy of the small part that matched would look right and not be. Returns the
    metrics dict (see models.learning.metrics), also written as JSON and/or HTML.
    """
    if not 0.0 <= max_unmatched_share <= 1.0:
        raise HyperAdaptError("The accepted unmatched share must be between 0 and 1.")
    check_job_files({"report": html_path, "figures (JSON)": json_path},
                    {"classification": raster_files(classification_path),
                     "reference": layer_files(reference_path) if class_field
                     else raster_files(reference_path)})
    _report(progress, 0.0, "Reading the classification")
    info = read_raster_info(classification_path)
    classes = read_class_raster_classes(classification_path)
    value_to_index = {c.value: i for i, c in enumerate(classes)}
    name_to_index = {c.name: i for i, c in enumerate(classes)}
    notes = []
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    unclassified = 0
    unmatched_by_class: dict[str, int] = {}
    if class_field:
        pixels = read_labelled_pixels(info, reference_path, class_field, layer_name=layer_name,
                                      cancel=cancel, min_classes=1, role="reference layer")
        mapping = np.full(len(pixels.classes), -1, dtype=np.int64)
        for i, ref in enumerate(pixels.classes):
            mapping[i] = name_to_index.get(ref.name, value_to_index.get(ref.value, -1)
                                           if ref.name == str(ref.value) else -1)
        missing = [ref.name for i, ref in enumerate(pixels.classes) if mapping[i] < 0]
        if missing:
            notes.append(f"Reference classes not in the classification were left out: "
                         f"{', '.join(missing)}.")
        with RasterReader(info) as reader:
            predicted, valid = reader.read_pixels(pixels.rows, pixels.cols, bands=[0],
                                                  cancel=cancel)
        predicted_lookup = np.full(256, -1, dtype=np.int64)
        for value, index in value_to_index.items():
            predicted_lookup[value] = index
        reference = mapping[pixels.class_index]
        predicted_index = np.where(
            valid, predicted_lookup[np.clip(predicted[:, 0], 0, 255).astype(np.int64)], -1)
        matched, has_prediction = reference >= 0, predicted_index >= 0
        usable = matched & has_prediction
        counts = np.bincount(pixels.class_index[~matched], minlength=len(pixels.classes))
        unmatched_by_class = {f"'{ref.name}'": int(counts[i])
                              for i, ref in enumerate(pixels.classes) if counts[i]}
        unclassified = int((matched & ~has_prediction).sum())
        matrix += confusion_matrix(reference[usable], predicted_index[usable], len(classes))
        source = {"reference": str(reference_path), "class_field": class_field}
    else:
        matrix, unclassified, unmatched_by_class = _compare_with_reference_raster(
            reference_path, info, classes, progress=progress, cancel=cancel)
        source = {"reference": str(reference_path)}
    unmatched = sum(unmatched_by_class.values())
    total = int(matrix.sum()) + unmatched + unclassified
    problem = _unmatched_problem(unmatched_by_class, total, max_unmatched_share)
    if problem:
        raise HyperAdaptError(problem)
    if unmatched:
        notes.append(f"{unmatched} reference pixel(s) of classes the classification does not have "
                     f"were left out.")
    if unclassified:
        notes.append(f"{unclassified} reference pixel(s) where the classification has no data "
                     f"were left out.")
    if matrix.sum() == 0:
        raise HyperAdaptError("The reference and the classification share no labelled pixels of "
                              "the same classes.")
    metrics = classification_metrics(matrix, classes)
    metrics["area_adjusted"] = _area_adjusted(matrix, info, classification_path, classes, cancel)
    metrics.update({"kind": "evaluation", "classification": str(classification_path), **source,
                    "notes": notes, "unclassified_reference_pixels": unclassified,
                    "unmatched_reference_pixels": unmatched,
                    "unmatched_reference_share": unmatched / total if total else 0.0})
    write_reports(metrics, html_path, json_path, title="HyperAdapt accuracy assessment",
                   details={"classification": str(classification_path),
                            "reference": str(reference_path)})
    _report(progress, 1.0, "Done")
    return metrics


def write_reports(metrics: dict, html_path, json_path, *, title: str, details: dict) -> None:
    """The HTML report and the JSON figures, renamed into place together (StagedFiles)."""
    staged = StagedFiles()
    try:
        if json_path:
            write_metrics_json(metrics, staged.stage(json_path))
        if html_path:
            write_html_report(metrics, staged.stage(html_path), title=title, details=details)
        staged.commit()
    except BaseException:
        staged.discard()
        raise


