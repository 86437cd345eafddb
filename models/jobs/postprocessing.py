"""Cleaning a class map after classifying: a segment vote, a majority filter and a sieve.

What remote-sensing tools offer after a per-pixel classification (SCP's sieve and majority, the
EnMAP-Box's majority filter), as one job on a class raster HyperAdapt wrote:

1. segment vote: SLIC superpixels of the scene (models.data.segments) and each pixel taking the
   class most of its superpixel's pixels have (needs the scene raster);
2. majority filter: each pixel taking the most frequent class of the square around it;
3. sieve: patches smaller than a number of pixels merged into their largest neighbour (GDAL's
   SieveFilter, 8-connected).

Each step runs tile by tile with a halo, so memory follows the tile, not the raster. Nodata (0)
stays nodata and takes no part in any vote; the colour table, the class names and the ``.qml``
style are kept. Steps write to temporary files; the output appears under its name only when all
are done, and a failure or cancel leaves nothing.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from osgeo import gdal

from ..data.raster import iter_tiles
from ..data.samples import ClassInfo
from ..data.segments import segment_feature_scale, segment_features, segment_vote, slic_segments
from ..errors import HyperAdaptError, raise_if_cancelled
from ..learning.predict import classify_raster
from ..stores.class_map import (GTIFF_OPTIONS, companions, embed_classes, paletted_style_qml,
                                place_outputs, remove_quietly, style_path_for, temporary_name)
from ..stores.guard import check_job_files, map_bytes, raster_files
from .evaluation import read_class_raster_classes

gdal.UseExceptions()

TILE = 512


def majority_vote(values: np.ndarray, size: int, num_values: int = 256) -> np.ndarray:
    """The most frequent non-zero value in the ``size`` x ``size`` square around each pixel of a
    (H, W) integer block; 0 stays 0, and ties go to the pixel's own value, then the lowest."""
    half = size // 2
    present = np.unique(values[values > 0])
    if len(present) == 0:
        return values.copy()
    height, width = values.shape
    best = np.zeros(values.shape, dtype=np.int64)
    winner = values.astype(np.int64).copy()
    padded = np.pad(values, half, mode="constant")
    for value in present:
        indicator = (padded == value).astype(np.int32)
        integral = np.zeros((indicator.shape[0] + 1, indicator.shape[1] + 1), dtype=np.int64)
        integral[1:, 1:] = indicator.cumsum(0).cumsum(1)
        count = (integral[size:size + height, size:size + width] - integral[:height, size:size + width]
                 - integral[size:size + height, :width] + integral[:height, :width])
        better = (count > best) | ((count == best) & (values == value))
        best = np.where(better, count, best)
        winner = np.where(better, value, winner)
    return np.where(values > 0, winner, 0).astype(values.dtype)


def _class_values(classes: list[ClassInfo]) -> list[int]:
    return [int(c.value) for c in classes]


def _tiled_step(source: Path, target: Path, halo: int, transform, cancel) -> None:
    """Write ``transform(block, (x0, y0))`` of every tile (read with a halo) into ``target``."""
    src = dst = src_band = dst_band = None
    try:
        src = gdal.Open(str(source))
        dst = gdal.Open(str(target), gdal.GA_Update)
        src_band, dst_band = src.GetRasterBand(1), dst.GetRasterBand(1)
        width, height = src.RasterXSize, src.RasterYSize
        for x, y, w, h in iter_tiles(width, height, TILE):
            raise_if_cancelled(cancel)
            x0, y0 = max(0, x - halo), max(0, y - halo)
            x1, y1 = min(width, x + w + halo), min(height, y + h + halo)
            block = src_band.ReadAsArray(x0, y0, x1 - x0, y1 - y0)
            result = transform(block, (x0, y0))
            dst_band.WriteArray(result[y - y0:y - y0 + h, x - x0:x - x0 + w], x, y)
        dst_band.FlushCache()
    finally:
        # Bands go before their datasets (GDAL frees bands with them).
        src_band = dst_band = None
        src = dst = None


def _segment_transform(raster_path: str, segment_size: int, cancel):
    """A transform taking the superpixel majority, superpixels cut on the scene's components."""
    from ..data.bands import fit_band_adaptation
    from ..data.raster import RasterReader, read_raster_info, sample_valid_pixels
    from ..data.regions import read_adapted_region

    info = read_raster_info(raster_path)
    adaptation = fit_band_adaptation([info], "mnf", cancel=cancel)
    reader = RasterReader(info)
    sample = sample_valid_pixels(reader, max_pixels=5000, bands=adaptation.band_indices)
    scale = segment_feature_scale(adaptation.apply_pixels(sample))

    def transform(block: np.ndarray, origin) -> np.ndarray:
        x0, y0 = origin
        height, width = block.shape
        region, valid = read_adapted_region(reader, adaptation, x0, y0, width, height, 0)
        valid &= block > 0
        segments = slic_segments(segment_features(region, scale), valid, size=segment_size,
                                 origin=(y0, x0))
        present = np.unique(block[valid])
        if len(present) == 0:
            return block
        votes = (block[None] == present[:, None, None]).astype(np.float32)
        voted = segment_vote(votes, segments)
        result = present[voted.argmax(axis=0)].astype(block.dtype)
        return np.where(valid, result, block)

    return transform, reader


def _check_same_grid(classification: gdal.Dataset, raster_path) -> None:
    """The segment vote reads the scene pixel for pixel: it must be the raster classified."""
    from ..data.raster import read_raster_info

    info = read_raster_info(raster_path)
    name = Path(str(raster_path)).name
    size = (classification.RasterXSize, classification.RasterYSize)
    if (info.width, info.height) != size:
        raise HyperAdaptError(f"The scene's raster {name} is {info.width} x {info.height} pixels "
                              f"but the classification is {size[0]} x {size[1]}; give the raster "
                              f"that was classified.")
    ours, theirs = classification.GetGeoTransform(), info.geotransform
    pixel = max(abs(ours[1]), abs(ours[5]))
    if any(abs(a - b) > 0.5 * pixel for a, b in zip(ours, theirs)):
        raise HyperAdaptError(f"The scene's raster {name} does not lie on the classification's "
                              f"grid; give the raster that was classified.")


def postprocess_classification(classification_path, output_path, *, classes: list[ClassInfo],
                               sieve_pixels: int = 0, majority_size: int = 0,
                               segment_size: int = 0, raster_path=None, progress=None,
                               cancel=None) -> dict:
    """Clean a class raster: segment vote, majority filter, sieve, in that order (0 skips one).

    Args:
        classification_path: a class raster as classify writes it (one Byte band, 0 = nodata).
        output_path: the cleaned class GeoTIFF (a ``.qml`` style is written beside it).
        classes: the raster's classes (models.jobs.read_class_raster_classes).
        sieve_pixels: patches smaller than this many pixels are merged into a neighbour.
        majority_size: side of the majority filter's square (odd).
        segment_size: superpixel side of the segment vote; needs ``raster_path``.
        raster_path: the classified scene, whose bands the superpixels follow.

    Returns {"pixels_per_class": {value: count}, "changed_pixels": int}.
    """
    if majority_size and (majority_size < 3 or majority_size % 2 == 0):
        raise HyperAdaptError(f"The majority filter needs an odd window of at least 3 pixels "
                              f"(got {majority_size}).")
    if segment_size and not raster_path:
        raise HyperAdaptError("The segment vote needs the classified scene's raster, whose bands "
                              "its superpixels follow.")
    if not (sieve_pixels or majority_size or segment_size):
        raise HyperAdaptError("Choose at least one clean-up: a sieve, a majority filter or a "
                              "segment vote.")
    output_path = Path(output_path)
    source = gdal.Open(str(classification_path))
    if segment_size:
        _check_same_grid(source, raster_path)
    working = [temporary_name(output_path.with_name(f"{output_path.stem}.step{n}.tif"))
               for n in range(3)]
    final = temporary_name(output_path)
    style = temporary_name(style_path_for(output_path)).with_suffix(".qml")
    created = [*working, final, style, *(c for w in (*working, final) for c in companions(w))]
    placed: list[Path] = []
    steps = []
    reader = None
    try:
        driver = gdal.GetDriverByName("GTiff")
        current = working[0]
        output_path.parent.mkdir(parents=True, exist_ok=True)
        driver.CreateCopy(str(current), source, options=GTIFF_OPTIONS).FlushCache()
        if segment_size:
            transform, reader = _segment_transform(str(raster_path), segment_size, cancel)
            target = working[1]
            driver.CreateCopy(str(target), gdal.Open(str(current)), options=GTIFF_OPTIONS)
            _tiled_step(current, target, 3 * segment_size, transform, cancel)
            current = target
            steps.append("segment vote")
            _report(progress, 0.4, "Segment vote done")
        if majority_size:
            target = working[2] if current != working[2] else working[1]
            driver.CreateCopy(str(target), gdal.Open(str(current)), options=GTIFF_OPTIONS)
            _tiled_step(current, target, majority_size // 2,
                        lambda block, origin: majority_vote(block, majority_size), cancel)
            current = target
            steps.append("majority")
            _report(progress, 0.7, "Majority filter done")
        out = driver.CreateCopy(str(final), gdal.Open(str(current)), options=GTIFF_OPTIONS)
        embed_classes(out, classes)
        if sieve_pixels:
            band = out.GetRasterBand(1)
            gdal.SieveFilter(band, band.GetMaskBand(), band, int(sieve_pixels), 8,
                             callback=_gdal_cancel(cancel))
            steps.append("sieve")
        out.FlushCache()
        out = None
        raise_if_cancelled(cancel)
        counts, changed = _compare(classification_path, final, _class_values(classes))
        style.write_text(paletted_style_qml(classes), encoding="utf-8")
        place_outputs([(style, style_path_for(output_path)), (final, output_path)], placed)
    except BaseException:
        out = None
        remove_quietly(*created, *placed)
        raise
    finally:
        if reader is not None:
            reader.close()
        remove_quietly(*working, *(c for w in working for c in companions(w)))
        source = None
    _report(progress, 1.0, "Done")
    return {"pixels_per_class": counts, "changed_pixels": changed, "steps": steps}


def _gdal_cancel(cancel):
    """A GDAL progress callback that stops the sieve when the job is cancelled."""
    def callback(fraction, message, data):
        return 0 if cancel is not None and cancel() else 1
    return callback


def _compare(before_path, after_path, values: list[int]) -> tuple[dict, int]:
    before, after = gdal.Open(str(before_path)), gdal.Open(str(after_path))
    counts = np.zeros(256, dtype=np.int64)
    changed = 0
    for x, y, w, h in iter_tiles(after.RasterXSize, after.RasterYSize, TILE):
        old = before.GetRasterBand(1).ReadAsArray(x, y, w, h)
        new = after.GetRasterBand(1).ReadAsArray(x, y, w, h)
        counts += np.bincount(new.ravel().astype(np.int64), minlength=256)[:256]
        changed += int((old != new).sum())
    before = after = None
    return {v: int(counts[v]) for v in values}, changed


def _report(progress, fraction: float, message: str) -> None:
    if progress is not None:
        progress(fraction, message)


def classify_and_clean(*, output_path, classes: list[ClassInfo], majority_size: int = 0,
                       sieve_pixels: int = 0, progress=None, cancel=None, **classify) -> dict:
    """models.learning.predict.classify_raster, then the majority filter and the sieve an adapter
    asks for.

    ``classify`` holds classify_raster's other arguments (reader, model, adaptation, ...). The
    classification goes to a temporary file that only the cleaned map replaces, so a failure in
    either step leaves nothing.
    """
    if not (majority_size or sieve_pixels):
        return classify_raster(output_path=output_path, classes=classes, progress=progress,
                               cancel=cancel, **classify)
    output_path = Path(output_path)
    raw = output_path.with_name(f".{output_path.stem}.{os.getpid()}.unclean.tif")
    try:
        stats = classify_raster(output_path=raw, classes=classes,
                                progress=_part(progress, 0.0, 0.9), cancel=cancel, **classify)
        cleaned = postprocess_classification(raw, output_path, classes=classes,
                                             majority_size=majority_size,
                                             sieve_pixels=sieve_pixels,
                                             progress=_part(progress, 0.9, 1.0), cancel=cancel)
    finally:
        remove_quietly(raw, style_path_for(raw), *companions(raw))
    stats["pixels_per_class"] = cleaned["pixels_per_class"]
    return stats


def _part(progress, start: float, end: float):
    if progress is None:
        return None
    return lambda fraction, message: progress(start + (end - start) * fraction, message)


# -- the job --------------------------------------------------------------------------------------
def postprocess(classification_path: str, output_path: str, *, sieve_pixels: int = 0,
                majority_size: int = 0, segment_size: int = 0, raster_path: str | None = None,
                progress=None, cancel=None) -> dict:
    """The postprocess job: clean a class raster (segment vote, majority filter, sieve).

    Returns {"pixels_per_class", "changed_pixels", "steps", "classes"}.
    """
    if not output_path:
        raise HyperAdaptError("No output file name was given.")
    check_job_files({"cleaned classification": raster_files(output_path)},
                    {"input raster": raster_files(classification_path),
                     "scene's raster": raster_path},
                    needed_bytes=map_bytes(classification_path, output_path))
    classes = read_class_raster_classes(classification_path)
    result = postprocess_classification(
        classification_path, output_path, classes=classes, sieve_pixels=int(sieve_pixels),
        majority_size=int(majority_size), segment_size=int(segment_size),
        raster_path=raster_path, progress=progress, cancel=cancel)
    return {**result, "classes": classes}
