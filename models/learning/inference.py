"""Class probabilities of windows held in memory: window mode (one window per pixel) and tile
mode (a window every few pixels, features resampled to the pixels between them).

Batched, in inference mode, under the device's inference autocast (bfloat16 where a CPU computes
it natively, models.learning.device); a CUDA out-of-memory error halves the batch. No raster
library is needed here: models.learning.predict reads the raster's tiles and writes the map
around these functions, and bench/gpu.py times them on a GPU machine without GDAL.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.windows import extract_windows
from ..errors import HyperAdaptError, raise_if_cancelled
from .device import OUT_OF_MEMORY, autocast_dtype, is_out_of_memory, release_cached_memory


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
