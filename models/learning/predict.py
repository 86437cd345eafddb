"""Classifying a whole raster: tiled with a halo, batched, memory bounded, written atomically.

The raster is read one tile (plus a halo of ``window_size // 2`` pixels) at a time; the tile is
band-adapted once, and windows around its valid pixels are cut on the device in batches (the
model resizes them to its input). Memory therefore depends on the tile and batch sizes, never on
the raster's size. An optional segment vote (models.data.segments) gives each pixel the mean class
probabilities of its superpixel; tiles are then classified with a margin of three superpixels.

The output is the class map of models.stores.class_map (a paletted class GeoTIFF, its .qml style
and optionally a confidence raster of the top softmax probability), written under temporary names
and renamed only once complete; a cancelled or failed run leaves none of them.

The module is a little over this project's usual 400 lines: window mode and tile mode
(``grid_probabilities``) share the batching, the halo and the writing of each tile, so they stay
together.
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
from ..data.samples import ClassInfo
from ..data.segments import segment_feature_scale, segment_features, segment_vote, slic_segments
from ..data.windows import check_window_size, extract_windows, read_adapted_region
from ..errors import HyperAdaptError, raise_if_cancelled
from ..stores.class_map import (NODATA_CONFIDENCE, companions, create_map_outputs,
                                paletted_style_qml, place_outputs, remove_quietly, style_path_for,
                                temporary_name)
from .device import autocast_dtype, is_out_of_memory, release_cached_memory

gdal.UseExceptions()

OUT_OF_MEMORY = ("The GPU ran out of memory even for a single window; close other GPU programs "
                 "or choose the CPU.")


def _run_batches(forward, inputs: torch.Tensor, model, *, device: torch.device,
                 batch_size: int, cancel=None, on_batch=None) -> np.ndarray:
    """``forward(batch on device)`` over ``inputs`` in batches, in evaluation and inference mode,
    under the device's inference autocast; float32 (N, ...) on the CPU. ``on_batch(fraction)``
    hears the share done after each batch.

    After a CUDA out-of-memory error the batch is halved and retried.
    """
    chunks: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    dtype = autocast_dtype(device, cpu_bf16=True)
    start = 0
    try:
        with torch.inference_mode():
            while start < len(inputs):
                raise_if_cancelled(cancel)
                stop = min(start + batch_size, len(inputs))
                batch = inputs[start:stop].to(device, non_blocking=True)
                try:
                    if dtype is not None:
                        with torch.autocast(device_type=device.type, dtype=dtype):
                            out = forward(batch)
                    else:
                        out = forward(batch)
                except RuntimeError as error:
                    if not is_out_of_memory(error):
                        raise
                    if stop - start == 1:
                        raise HyperAdaptError(OUT_OF_MEMORY) from error
                    release_cached_memory(device)
                    batch_size = max(1, (stop - start) // 2)
                    continue
                chunks.append(out.float().cpu().numpy())
                start = stop
                if on_batch is not None:
                    on_batch(stop / len(inputs))
    finally:
        model.train(was_training)
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def predict_probabilities(model, windows, *, device: torch.device, batch_size: int = 256,
                          cancel=None) -> np.ndarray:
    """Class probabilities (N, K) float32 of windows (N, 12, w, w), in batches.

    ``windows`` may be a CPU tensor or already on ``device``. After a CUDA out-of-memory error
    the batch is halved and retried.
    """
    return _run_batches(lambda x: torch.softmax(model(x.float()).float(), dim=1),
                        torch.as_tensor(windows), model, device=device, batch_size=batch_size,
                        cancel=cancel)


def predict_windows(model, windows, *, device: torch.device,
                    batch_size: int = 256, cancel=None) -> tuple[np.ndarray, np.ndarray]:
    """(class index (N,), top probability (N,)) for windows (N, 12, w, w), in batches."""
    probs = predict_probabilities(model, windows, device=device, batch_size=batch_size,
                                  cancel=cancel)
    if probs.size == 0:
        return np.zeros(len(windows), dtype=np.int64), np.zeros(len(windows), dtype=np.float32)
    return probs.argmax(axis=1).astype(np.int64), probs.max(axis=1)


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


def grid_probabilities(model, region: torch.Tensor, rows: np.ndarray, cols: np.ndarray, *,
                       origin: tuple[int, int], window_size: int, halo: int, step: int,
                       device: torch.device, batch_size: int, cancel=None,
                       on_chunk=None) -> np.ndarray:
    """Tile mode: class probabilities (N, K) of the pixels (rows, cols) of a region, from windows
    every ``step`` pixels.

    The backbone sees one window per grid point (rows and columns at multiples of ``step`` in
    raster coordinates, so neighbouring tiles compute the same windows and no seam shows); each
    pixel's pooled features are the bilinear mix of its four surrounding grid points', and the
    head classifies them with the pixel's own inputs (``SpectralGPT.classify_pooled``). Windows
    ``step`` pixels apart share most of their pixels, so their features change slowly; the
    pixel's own spectrum, which does change from pixel to pixel, still reaches the head.

    Args:
        region: (C, H + 2 halo, W + 2 halo) band-adapted region; ``halo`` must be at least
            ``window_size // 2 + step`` so that the grid points around every pixel have windows.
        rows, cols: pixels of the region without its halo.
        origin: the region's (row, column) in the raster, which places the grid.
    """
    y0, x0 = origin
    radius = window_size // 2
    if halo < radius + step:
        raise ValueError(f"tile mode needs a halo of {radius + step} pixels, got {halo}")
    first_row, first_col = (y0 + int(rows.min())) // step, (x0 + int(cols.min())) // step
    grid_rows = np.arange(first_row, (y0 + int(rows.max())) // step + 2) * step - y0
    grid_cols = np.arange(first_col, (x0 + int(cols.max())) // step + 2) * step - x0
    points_r, points_c = np.meshgrid(grid_rows, grid_cols, indexing="ij")
    windows = extract_windows(region, points_r.ravel(), points_c.ravel(), window_size, halo)
    # The backbone's share of the work: the head over the pixels is the last few per cent.
    features = torch.from_numpy(_run_batches(
        model.pooled_features, windows, model, device=device, batch_size=batch_size,
        cancel=cancel, on_batch=(lambda done: on_chunk(0.9 * done)) if on_chunk else None,
    )).reshape(len(grid_rows), len(grid_cols), -1)
    # Grid cell of each pixel and its place in the cell.
    global_r, global_c = y0 + rows.astype(np.int64), x0 + cols.astype(np.int64)
    cell_r, cell_c = global_r // step - first_row, global_c // step - first_col
    frac_r = torch.from_numpy((global_r % step) / step).float()
    frac_c = torch.from_numpy((global_c % step) / step).float()
    pixels = region[:, torch.as_tensor(rows + halo), torch.as_tensor(cols + halo)].T
    features = features.to(device)

    def classify(index: torch.Tensor) -> torch.Tensor:
        index = index.cpu()
        r = torch.from_numpy(cell_r[index.numpy()]).to(device)
        c = torch.from_numpy(cell_c[index.numpy()]).to(device)
        fr, fc = frac_r[index].to(device)[:, None], frac_c[index].to(device)[:, None]
        pooled = ((1 - fr) * (1 - fc) * features[r, c] + (1 - fr) * fc * features[r, c + 1]
                  + fr * (1 - fc) * features[r + 1, c] + fr * fc * features[r + 1, c + 1])
        scores = model.classify_pooled(pooled, pixels[index].to(device).float())
        return torch.softmax(scores.float(), dim=1)

    return _run_batches(classify, torch.arange(len(rows)), model, device=device,
                        batch_size=max(batch_size, 4096), cancel=cancel)


def classify_halo(window_size: int, step: int = 1, segment_size: int = 0) -> int:
    """Pixels read around a tile: half a window; in tile mode also a step, for the grid windows
    beyond the tile's last pixels; with a segment vote also its margin (SegmentVote.margin)."""
    return window_size // 2 + (step if step > 1 else 0) + segment_margin(segment_size)


def tile_probabilities(reader: RasterReader, model, adaptation: BandAdaptation,
                       box: tuple[int, int, int, int], *, window_size: int, num_classes: int,
                       device: torch.device, batch_size: int, vote: SegmentVote | None = None,
                       step: int = 1, cancel=None, on_chunk=None) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (K, h, w) float32 and validity (h, w) of the tile ``box`` (x, y, w, h).

    ``step`` 1 is window mode (one window per pixel); above 1, tile mode (``grid_probabilities``:
    a window every ``step`` pixels).

    With a ``vote``, the tile and a margin around it are classified, and each pixel gets the mean
    probabilities of its superpixel. ``on_chunk(fraction)`` hears how much of the tile's valid
    pixels is done.
    """
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
    if len(rows) and vote is not None:
        core = region[:, halo:halo + (y1 - y0), halo:halo + (x1 - x0)]
        segments = slic_segments(segment_features(core, vote.scale), valid, size=vote.size,
                                 origin=(y0, x0))
        probs = segment_vote(probs, segments)
        total = probs.sum(axis=0)
        probs /= np.where(total > 0, total, 1.0)
    top, left = y - y0, x - x0
    return (probs[:, top:top + h, left:left + w], valid[top:top + h, left:left + w])


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
                    progress=None, cancel=None) -> dict:
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
        progress: ``progress(fraction, message)``.
        cancel: ``cancel() -> bool``, checked between batches.

    Returns {"pixels_per_class": {value: count}, "valid_pixels": int, "seconds": float}.
    """
    window_size = check_window_size(window_size)
    step = int(step)
    halo = classify_halo(window_size, step, segment_size)
    output_path = Path(output_path)
    confidence_path = Path(confidence_path) if confidence_path else None
    if confidence_path is not None and confidence_path.resolve() == output_path.resolve():
        raise HyperAdaptError("The confidence raster needs a file name of its own.")
    lookup = np.array([info.value for info in classes], dtype=np.uint8)
    tile = tile or tile_side_for(adaptation.num_inputs, halo=halo, maximum=256)
    tiles = list(iter_tiles(reader.width, reader.height, tile))

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
                step=step, cancel=cancel,
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
            raise HyperAdaptError(f"The raster {Path(reader.info.path).name} has no valid pixel "
                                  f"to classify: every pixel is nodata or masked.")
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

