"""Classifying a whole raster: tiled with a halo, batched, memory bounded, written atomically.

The raster is read one tile (plus a halo of ``window_size // 2`` pixels) at a time; the tile is
band-adapted once, and windows around its valid pixels are cut on the device in batches (the
model resizes them to its input). Memory therefore depends on the tile and batch sizes, never on
the raster's size. An optional segment vote (models.data.segments) gives each pixel the mean class
probabilities of its superpixel; tiles are then classified with a margin of three superpixels.

The output is the class map of models.stores.class_map (a paletted class GeoTIFF, its .qml style
and optionally a confidence raster of the top softmax probability), written under temporary names
and renamed only once complete; a cancelled or failed run leaves none of them.

The probabilities of a tile's windows come from models.learning.inference (window mode, and tile
mode's ``grid_probabilities``), which needs no raster library.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from osgeo import gdal

from ..data.bands import BandAdaptation
from ..data.raster import RasterReader, iter_tiles, sample_valid_pixels, tile_side_for
from ..data.regions import read_adapted_region
from ..data.samples import ClassInfo
from ..data.segments import segment_feature_scale, segment_features, segment_vote, slic_segments
from ..data.windows import extract_windows
from ..errors import HyperAdaptError, raise_if_cancelled
from ..settings import check_window_size
from ..stores.class_map import (NODATA_CONFIDENCE, companions, create_map_outputs,
                                paletted_style_qml, place_outputs, remove_quietly, style_path_for,
                                temporary_name)
from .inference import grid_probabilities, predict_probabilities
from .spectral_kernel import SpectralKernel

gdal.UseExceptions()


def _rough_duration(seconds: float) -> str:
    """'under a minute', 'about 7 min', 'about 2 h 10 min'."""
    if seconds < 60:
        return "under a minute"
    minutes = int(round(seconds / 60))
    return f"about {minutes // 60} h {minutes % 60} min" if minutes >= 60 else \
        f"about {minutes} min"


def _time_left(elapsed: float, share: float) -> str:
    """' (about 2 h 10 min left)' from the time taken for a share of the work; '' when too early
    to say (under 2 % done and under 10 s) or nothing is left."""
    if share >= 1.0 or share <= 0.0 or (share < 0.02 and elapsed < 10.0):
        return ""
    return f" ({_rough_duration(elapsed * (1.0 - share) / share)} left)"


def _estimate(elapsed: float, pixels_done: float, width: int, height: int) -> str:
    """'Estimate: ...' from the seconds taken for the first pixels of the raster (nodata among
    them included, as the rest of the raster will have its share)."""
    seconds = elapsed * width * height / max(pixels_done, 1.0)
    return (f"Estimate: {_rough_duration(seconds)} for the raster's {width} x {height} pixels, "
            f"from the first {int(pixels_done):,} pixels in {elapsed:.1f} s")


@dataclass
class SegmentVote:
    """The segment vote of classify_raster: SLIC superpixels of ``size`` pixels on features scaled
    by ``scale`` (models.data.segments); tiles are classified with a margin of ``margin`` pixels so
    that the superpixels at a tile's edge are whole and their centres settle as on the whole raster
    (three superpixels: 0.3 % of a test map differed from the whole raster's, against 2 % without
    the margin)."""

    size: int
    scale: float

    @property
    def margin(self) -> int:
        return segment_margin(self.size)


def segment_margin(size: int) -> int:
    """The margin around a tile for a segment vote of ``size``-pixel superpixels (SegmentVote)."""
    return 3 * int(size)


def fit_segment_vote(reader: RasterReader, adaptation: BandAdaptation, size: int,
                     seed: int = 0) -> SegmentVote | None:
    """The segment vote for this raster (its feature scale from a sample), or None for size 0."""
    if not size:
        return None
    sample = sample_valid_pixels(reader, max_pixels=5000, seed=seed,
                                 bands=adaptation.band_indices)
    return SegmentVote(size=int(size), scale=segment_feature_scale(adaptation.apply_pixels(sample)))


def classify_halo(window_size: int, step: int = 1, segment_size: int = 0) -> int:
    """Pixels read around a tile: half a window; in tile mode also a step, for the grid windows
    beyond the tile's last pixels; with a segment vote also its margin (SegmentVote.margin)."""
    return window_size // 2 + (step if step > 1 else 0) + segment_margin(segment_size)


def tile_probabilities(reader: RasterReader, model, adaptation: BandAdaptation,
                       box: tuple[int, int, int, int], *, window_size: int, num_classes: int,
                       device: torch.device, batch_size: int, vote: SegmentVote | None = None,
                       step: int = 1, spectral: SpectralKernel | None = None, cancel=None,
                       on_chunk=None) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (K, h, w) float32 and validity (h, w) of the tile ``box`` (x, y, w, h).

    ``step`` 1 is window mode (one window per pixel); above 1, tile mode (``grid_probabilities``:
    a window every ``step`` pixels). With a ``spectral`` classifier, each pixel's probabilities
    are mixed with its (before the vote, so that the vote counts the mixed ones).

    With a ``vote``, the tile and a margin around it are classified, and each pixel gets the mean
    probabilities of its superpixel. ``on_chunk(fraction)`` hears how much of the tile's valid
    pixels is done.
    """
    unvoted, voted, valid = _tile_both(reader, model, adaptation, box, window_size=window_size,
                                       num_classes=num_classes, device=device,
                                       batch_size=batch_size, vote=vote, step=step,
                                       spectral=spectral, cancel=cancel, on_chunk=on_chunk)
    return (unvoted if voted is None else voted), valid


def _tile_both(reader: RasterReader, model, adaptation: BandAdaptation,
               box: tuple[int, int, int, int], *, window_size: int, num_classes: int,
               device: torch.device, batch_size: int, vote: SegmentVote | None, step: int,
               spectral: SpectralKernel | None, cancel, on_chunk=None):
    """tile_probabilities' (before the vote, after it or None without one, validity)."""
    x, y, w, h = box
    margin = vote.margin if vote is not None else 0
    x0, y0 = max(0, x - margin), max(0, y - margin)
    x1, y1 = min(reader.width, x + w + margin), min(reader.height, y + h + margin)
    halo = classify_halo(window_size, step)
    region, valid = read_adapted_region(reader, adaptation, x0, y0, x1 - x0, y1 - y0, halo)
    probs = np.zeros((num_classes, y1 - y0, x1 - x0), dtype=np.float32)
    rows, cols = np.nonzero(valid)
    if len(rows) and step > 1:
        probs[:, rows, cols] = grid_probabilities(
            model, torch.from_numpy(region), rows, cols, origin=(y0, x0),
            window_size=window_size, halo=halo, step=step, device=device,
            batch_size=batch_size, cancel=cancel, on_chunk=on_chunk).T
        if on_chunk is not None:
            on_chunk(1.0)
    elif len(rows):
        region_t = torch.from_numpy(region).to(device)
        chunk = batch_size * 16
        for start in range(0, len(rows), chunk):
            stop = min(start + chunk, len(rows))
            windows = extract_windows(region_t, rows[start:stop], cols[start:stop], window_size,
                                      halo)
            probs[:, rows[start:stop], cols[start:stop]] = predict_probabilities(
                model, windows, device=device, batch_size=batch_size, cancel=cancel).T
            if on_chunk is not None:
                on_chunk(stop / len(rows))
    if len(rows) and spectral is not None:
        # GDAL's block cache still holds these blocks: the spectra need no second read from disk.
        probs[:, rows, cols] = spectral.mix_block(probs[:, rows, cols].T, reader,
                                                  (x0, y0, x1 - x0, y1 - y0), rows, cols).T
    voted = None
    if vote is not None:
        voted = probs
        if len(rows):
            core = region[:, halo:halo + (y1 - y0), halo:halo + (x1 - x0)]
            segments = slic_segments(segment_features(core, vote.scale), valid, size=vote.size,
                                     origin=(y0, x0))
            voted = segment_vote(probs, segments)
            total = voted.sum(axis=0)
            voted /= np.where(total > 0, total, 1.0)
    top, left = y - y0, x - x0
    crop = (slice(top, top + h), slice(left, left + w))
    return (probs[(slice(None), *crop)], None if voted is None else voted[(slice(None), *crop)],
            valid[crop])


def classify_tiles(reader: RasterReader, adaptation: BandAdaptation, window_size: int,
                   step: int, segment_size: int) -> list[tuple[int, int, int, int]]:
    """The tiles (x, y, w, h) classify_raster classifies the raster in."""
    halo = classify_halo(window_size, step, segment_size)
    tile = tile_side_for(adaptation.num_inputs, halo=halo, maximum=256)
    return list(iter_tiles(reader.width, reader.height, tile))


def probabilities_at(reader: RasterReader, model, adaptation: BandAdaptation, rows, cols, *,
                     window_size: int, num_classes: int, device: torch.device, batch_size: int,
                     vote: SegmentVote, step: int = 1, spectral: SpectralKernel | None = None,
                     cancel=None) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (N, K) at the valid pixels (rows, cols) without the segment vote and
    with it, as classify_raster computes them, for a fraction of its time where the pixels are
    few: within each of the map's tiles only the box around the pixels it holds is classified,
    with the vote's margin around it. Without the vote they are the map's to the last digit (the
    windows' grid and the neighbourhoods are fixed to the raster); with it, the superpixels are
    cut on that box and its margin instead of the whole tile, which moves a few pixels near the
    margin's edge (SegmentVote)."""
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    unvoted = np.zeros((len(rows), num_classes), dtype=np.float32)
    voted = np.zeros_like(unvoted)
    for x, y, w, h in classify_tiles(reader, adaptation, window_size, step, vote.size):
        inside = np.flatnonzero((rows >= y) & (rows < y + h) & (cols >= x) & (cols < x + w))
        if not len(inside):
            continue
        raise_if_cancelled(cancel)
        top, left = int(rows[inside].min()), int(cols[inside].min())
        box = (left, top, int(cols[inside].max()) + 1 - left, int(rows[inside].max()) + 1 - top)
        plain, both, _ = _tile_both(reader, model, adaptation, box, window_size=window_size,
                                    num_classes=num_classes, device=device,
                                    batch_size=batch_size, vote=vote, step=step,
                                    spectral=spectral, cancel=cancel)
        unvoted[inside] = plain[:, rows[inside] - top, cols[inside] - left].T
        voted[inside] = both[:, rows[inside] - top, cols[inside] - left].T
        reader.release_cache()
    return unvoted, voted


def _temporaries(output_path: Path, confidence_path: Path | None):
    """Temporary names of the map, the confidence raster (or None) and the style, and every file
    they may leave (removed after a failure)."""
    temp_out = temporary_name(output_path)
    temp_conf = temporary_name(confidence_path) if confidence_path else None
    style_temp = temporary_name(style_path_for(output_path)).with_suffix(".qml")
    created = [temp_out, *companions(temp_out), style_temp]
    if temp_conf is not None:
        created += [temp_conf, *companions(temp_conf)]
    return temp_out, temp_conf, style_temp, created


class _TileProgress:
    """classify_raster's progress: within a tile as its chunks finish (so a large raster does not
    sit at 0 % for minutes), once an estimate of the whole job from the first measured windows
    (so a user can cancel a run that would take a night), and the time left."""

    def __init__(self, progress, tiles: list, width: int, height: int):
        self.progress, self.tiles, self.width, self.height = progress, tiles, width, height
        self.started = time.perf_counter()
        self.estimated = False

    def within(self, done: int, fraction: float) -> None:
        if self.progress is None:
            return
        elapsed = time.perf_counter() - self.started
        share = (done + fraction) / len(self.tiles)
        if not self.estimated:
            self.estimated = True
            _, _, w, h = self.tiles[done]
            before = sum(tw * th for _, _, tw, th in self.tiles[:done])
            self.progress(share, _estimate(elapsed, before + fraction * w * h, self.width,
                                           self.height))
        self.progress(share, "Classifying the raster" + _time_left(elapsed, share))

    def tile_done(self, done: int) -> None:
        if self.progress is not None:
            share = (done + 1) / len(self.tiles)
            self.progress(share, "Classifying the raster" + _time_left(
                time.perf_counter() - self.started, share))


def _write_tile(probs: np.ndarray, valid: np.ndarray, lookup: np.ndarray, origin, out_band,
                conf_band) -> np.ndarray:
    """Write a tile's classes (and top probabilities) at ``origin`` (x, y); its pixels per
    class (head order)."""
    h, w = valid.shape
    class_tile = np.zeros((h, w), dtype=np.uint8)
    conf_tile = np.full((h, w), NODATA_CONFIDENCE, dtype=np.float32)
    rows, cols = np.nonzero(valid)
    counts = np.zeros(len(lookup), dtype=np.int64)
    if len(rows):
        labels = probs[:, rows, cols].argmax(axis=0)
        class_tile[rows, cols] = lookup[labels]
        conf_tile[rows, cols] = probs[:, rows, cols].max(axis=0)
        counts = np.bincount(labels, minlength=len(lookup))
    out_band.WriteArray(class_tile, *origin)
    if conf_band is not None:
        conf_band.WriteArray(conf_tile, *origin)
    return counts


def classify_raster(*, reader: RasterReader, model, adaptation: BandAdaptation,
                    classes: list[ClassInfo], output_path, window_size: int,
                    device: torch.device, batch_size: int = 64, confidence_path=None,
                    segment_size: int = 0, step: int = 1, tile: int | None = None,
                    spectral: SpectralKernel | None = None, progress=None, cancel=None) -> dict:
    """Classify every valid pixel of the raster and write the class (and confidence) GeoTIFF.

    Args:
        reader: the raster to classify.
        model: the backbone with its adapter (merged for speed) and head, on ``device``.
        adaptation: the band adaptation the model was trained with.
        classes: output value, name and colour of each head output, in head order.
        output_path: the class GeoTIFF; a ``.qml`` style is written beside it.
        window_size: the window cut around each pixel.
        device: where the model runs.
        batch_size: windows per forward pass.
        confidence_path: optional Float32 GeoTIFF of the top softmax probability (after a segment
            vote: the superpixel's mean probability of its class).
        segment_size: superpixel side of the segment vote (models.data.segments); 0: no vote.
        step: 1 for window mode (a window per pixel); above 1, tile mode: a window every ``step``
            pixels, features resampled to each pixel (``grid_probabilities``).
        tile: tile side in pixels (default from the band count).
        spectral: a kernel classifier on each pixel's spectrum whose probabilities are mixed with
            the model's (models.learning.spectral_kernel); None: the model alone.
        progress: ``progress(fraction, message)``.
        cancel: ``cancel() -> bool``, checked between batches.

    Returns {"pixels_per_class": {value: count}, "valid_pixels": int, "seconds": float}.
    """
    window_size = check_window_size(window_size)
    step = int(step)
    output_path = Path(output_path)
    confidence_path = Path(confidence_path) if confidence_path else None
    if confidence_path is not None and confidence_path.resolve() == output_path.resolve():
        raise HyperAdaptError("The confidence raster needs a file name of its own.")
    lookup = np.array([info.value for info in classes], dtype=np.uint8)
    tiles = (list(iter_tiles(reader.width, reader.height, tile)) if tile else
             classify_tiles(reader, adaptation, window_size, step, segment_size))

    temp_out, temp_conf, style_temp, created = _temporaries(output_path, confidence_path)
    counts = np.zeros(len(classes), dtype=np.int64)
    placed: list[Path] = []
    out_ds = conf_ds = out_band = conf_band = None
    try:
        out_ds, conf_ds = create_map_outputs(reader, classes, temp_out, temp_conf)
        out_band = out_ds.GetRasterBand(1)
        conf_band = conf_ds.GetRasterBand(1) if conf_ds is not None else None
        model.eval()
        vote = fit_segment_vote(reader, adaptation, segment_size)
        report = _TileProgress(progress, tiles, reader.width, reader.height)
        started = report.started
        for done, (x, y, w, h) in enumerate(tiles):
            raise_if_cancelled(cancel)
            probs, valid = tile_probabilities(
                reader, model, adaptation, (x, y, w, h), window_size=window_size,
                num_classes=len(classes), device=device, batch_size=batch_size, vote=vote,
                step=step, spectral=spectral, cancel=cancel,
                on_chunk=lambda fraction, done=done: report.within(done, fraction))
            counts += _write_tile(probs, valid, lookup, (x, y), out_band, conf_band)
            # Memory stays bounded by the tile, not the raster: the cached input and output
            # blocks go once the tile is done.
            reader.release_cache()
            out_ds.FlushCache()
            if conf_ds is not None:
                conf_ds.FlushCache()
            report.tile_done(done)
        raise_if_cancelled(cancel)
        if counts.sum() == 0:
            raise HyperAdaptError(f"The raster {Path(reader.info.path).name} has no valid "
                                  f"pixels: every pixel is nodata or masked.")
        out_band = conf_band = None
        out_ds.FlushCache()
        out_ds = None
        if conf_ds is not None:
            conf_ds.FlushCache()
            conf_ds = None
        style_temp.write_text(paletted_style_qml(classes), encoding="utf-8")
        place_outputs([(style_temp, style_path_for(output_path)), (temp_conf, confidence_path),
                        (temp_out, output_path)], placed)
    except BaseException:
        out_ds = conf_ds = out_band = conf_band = None
        remove_quietly(*created, *placed)
        raise
    return {"pixels_per_class": {int(info.value): int(n) for info, n in zip(classes, counts)},
            "valid_pixels": int(counts.sum()), "seconds": time.perf_counter() - started}

