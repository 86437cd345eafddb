"""Pixel-centred windows of band-adapted data, the samples the model sees.

A window of ``window_size`` x ``window_size`` pixels (odd, so one pixel is its centre) is cut
around each pixel and resized to the model's ``input_size``, as in Ligan et al. (2025), where
pixel-centred patches are resized to 32 x 32. Regions are read with a halo of
``window_size // 2`` pixels; beyond the raster's edge the nearest edge pixels are repeated, and
nodata pixels inside a window are set to ``fill_value``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import raise_if_cancelled
from ..settings import check_window_size
from .bands import NUM_MODEL_BANDS, BandAdaptation
from .raster import RasterReader, group_pixels_by_tile, tile_side_for

FILL_VALUE = 0.0


def read_adapted_region(reader: RasterReader, adaptation: BandAdaptation, x: int, y: int,
                        width: int, height: int, halo: int, *,
                        fill_value: float = FILL_VALUE) -> tuple[np.ndarray, np.ndarray]:
    """Band-adapted region around a tile: (12, height + 2 halo, width + 2 halo) float32, and the
    tile's own validity (height, width).

    Only the part inside the raster is read; edge pixels are repeated outside it.
    """
    info = reader.info
    x0, y0 = max(0, x - halo), max(0, y - halo)
    x1, y1 = min(info.width, x + width + halo), min(info.height, y + height + halo)
    data, valid = reader.read(x0, y0, x1 - x0, y1 - y0, adaptation.band_indices)
    adapted = np.full((NUM_MODEL_BANDS, y1 - y0, x1 - x0), fill_value, dtype=np.float32)
    if valid.any():
        adapted[:, valid] = adaptation.apply_pixels(data[:, valid].T).T
    padding = ((0, 0), (y0 - (y - halo), (y + height + halo) - y1),
               (x0 - (x - halo), (x + width + halo) - x1))
    if any(p for pair in padding for p in pair):
        adapted = np.pad(adapted, padding, mode="edge")
    tile_valid = valid[y - y0:y - y0 + height, x - x0:x - x0 + width]
    return adapted, tile_valid


def extract_windows(region, rows, cols, window_size: int, halo: int):
    """Windows (N, C, window_size, window_size) centred on tile pixels (rows, cols).

    ``region`` is (C, H + 2 halo, W + 2 halo), a numpy array or a torch tensor (the result is of
    the same kind and device); rows and cols index the tile without its halo.
    """
    radius = window_size // 2
    if isinstance(region, torch.Tensor):
        offsets = torch.arange(-radius, radius + 1, device=region.device)
        r = torch.as_tensor(rows, device=region.device).long() + halo
        c = torch.as_tensor(cols, device=region.device).long() + halo
        row_index = (r[:, None] + offsets[None, :])[:, :, None]
        col_index = (c[:, None] + offsets[None, :])[:, None, :]
        return region[:, row_index, col_index].permute(1, 0, 2, 3)
    offsets = np.arange(-radius, radius + 1)
    r = np.asarray(rows, dtype=np.int64) + halo
    c = np.asarray(cols, dtype=np.int64) + halo
    windows = region[:, (r[:, None] + offsets)[:, :, None], (c[:, None] + offsets)[:, None, :]]
    return np.ascontiguousarray(windows.transpose(1, 0, 2, 3))


def resize_windows(windows: torch.Tensor, input_size: int) -> torch.Tensor:
    """Bilinear resize of (N, C, w, w) windows to (N, C, input_size, input_size)."""
    if windows.shape[-1] == input_size and windows.shape[-2] == input_size:
        return windows
    return F.interpolate(windows, size=(input_size, input_size), mode="bilinear",
                         align_corners=False)


def collect_windows(reader: RasterReader, adaptation: BandAdaptation, rows: np.ndarray,
                    cols: np.ndarray, window_size: int, *, tile: int | None = None,
                    progress=None, cancel=None) -> tuple[np.ndarray, np.ndarray]:
    """Windows (N, 12, window_size, window_size) float32 around the given raster pixels, and
    whether each centre pixel is valid (N,). Only tiles that hold the pixels are read.
    """
    window_size = check_window_size(window_size)
    halo = window_size // 2
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    windows = np.zeros((len(rows), NUM_MODEL_BANDS, window_size, window_size), dtype=np.float32)
    valid = np.zeros(len(rows), dtype=bool)
    tile = tile or tile_side_for(adaptation.num_inputs, halo=halo, maximum=512)
    groups = list(group_pixels_by_tile(rows, cols, tile, reader.width, reader.height))
    for done, (index, (x, y, w, h)) in enumerate(groups):
        raise_if_cancelled(cancel)
        region, tile_valid = read_adapted_region(reader, adaptation, x, y, w, h, halo)
        r, c = rows[index] - y, cols[index] - x
        windows[index] = extract_windows(region, r, c, window_size, halo)
        valid[index] = tile_valid[r, c]
        if progress is not None:
            progress((done + 1) / len(groups), "Reading the training windows")
    return windows, valid
