"""Band-adapted regions read from a raster, and the windows around given pixels.

A region is a tile plus a halo of ``window_size // 2`` pixels, read and band-adapted once;
beyond the raster's edge the nearest edge pixels are repeated, and nodata pixels are set to
``fill_value``. The windows themselves are cut by models.data.windows, which needs no raster.
"""
from __future__ import annotations

import numpy as np

from ..errors import raise_if_cancelled
from ..settings import check_window_size
from .bands import NUM_MODEL_BANDS, BandAdaptation
from .raster import RasterReader, group_pixels_by_tile, tile_side_for
from .windows import extract_windows

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
