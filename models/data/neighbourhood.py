"""Mean spectra of each pixel's neighbourhood: the context the spectral classifier may add to a
pixel's own spectrum (models.learning.spectral_kernel).

A pixel's mean is that of the valid pixels in the ``size`` x ``size`` square around it, inside the
raster. A block read with a halo of ``size // 2`` therefore gives the same means as the whole
raster would: tiles show no seams, and a pixel next to nodata or the raster's edge averages the
pixels it has. Plain numpy (an integral image), as the engine runs in QGIS's own Python.
"""
from __future__ import annotations

import numpy as np

from ..errors import raise_if_cancelled
from .raster import RasterReader, group_pixels_by_tile, tile_side_for


# Bands summed at a time: bounds the float64 integral images to a few tens of MB per tile.
_BAND_CHUNK = 16


def box_means(data: np.ndarray, valid: np.ndarray, size: int, rows=None,
              cols=None) -> np.ndarray:
    """Each pixel's mean over the valid pixels of its ``size`` square in the block (zero where the
    square holds none): (B, H, W) float32, or (B, N) at the pixels ``rows``, ``cols`` alone."""
    bands, height, width = data.shape
    radius = int(size) // 2
    if rows is None:
        rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    r0, r1 = np.clip(rows - radius, 0, height), np.clip(rows + radius + 1, 0, height)
    c0, c1 = np.clip(cols - radius, 0, width), np.clip(cols + radius + 1, 0, width)

    def box_sums(values: np.ndarray) -> np.ndarray:
        # An integral image with a leading row and column of zeros: a box sum is four look-ups.
        sums = np.zeros(values.shape[:1] + (height + 1, width + 1))
        np.cumsum(np.cumsum(values, axis=1), axis=2, out=sums[:, 1:, 1:])
        return sums[:, r1, c1] - sums[:, r0, c1] - sums[:, r1, c0] + sums[:, r0, c0]

    weights = valid.astype(np.float64)
    counts = box_sums(weights[None])[0]
    scale = 1.0 / np.where(counts > 0.5, counts, np.inf)
    out = np.empty((bands,) + counts.shape, dtype=np.float32)
    for start in range(0, bands, _BAND_CHUNK):
        out[start:start + _BAND_CHUNK] = box_sums(data[start:start + _BAND_CHUNK] * weights) * scale
    return out


def _read_around(reader: RasterReader, x: int, y: int, width: int, height: int,
                 bands: list[int], radius: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """A block read with ``radius`` pixels of its neighbours inside the raster: (data, valid,
    x0, y0), the read's top-left corner."""
    x0, y0 = max(0, x - radius), max(0, y - radius)
    x1, y1 = min(reader.width, x + width + radius), min(reader.height, y + height + radius)
    data, valid = reader.read(x0, y0, x1 - x0, y1 - y0, bands)
    return data, valid, x0, y0


def read_with_means(reader: RasterReader, x: int, y: int, width: int, height: int,
                    bands: list[int], size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Spectra (B, height, width) of a block and, for a ``size`` above 1, its pixels' neighbourhood
    means (B, height, width); None for 0 or 1 (the pixel alone). The block's neighbours are read
    too."""
    size = int(size) if size and size > 1 else 0
    data, valid, x0, y0 = _read_around(reader, x, y, width, height, bands, size // 2)
    top, left = y - y0, x - x0
    spectra = data[:, top:top + height, left:left + width]
    if not size:
        return spectra, None
    return spectra, box_means(data, valid, size)[:, top:top + height, left:left + width]


def read_with_means_at(reader: RasterReader, rows: np.ndarray, cols: np.ndarray,
                       bands: list[int], size: int, *,
                       cancel=None) -> tuple[np.ndarray, np.ndarray | None]:
    """``read_with_means`` at the given pixels: spectra (N, B) and, for a ``size`` above 1, their
    neighbourhood means (N, B); each tile that holds some of them is read once, with its halo."""
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    size = int(size) if size and size > 1 else 0
    radius = size // 2
    spectra = np.zeros((len(rows), len(bands)), dtype=np.float32)
    means = np.zeros_like(spectra) if size else None
    for index, (tx, ty, tw, th) in group_pixels_by_tile(
            rows, cols, tile_side_for(len(bands), halo=radius), reader.width, reader.height):
        raise_if_cancelled(cancel)
        data, valid, x0, y0 = _read_around(reader, tx, ty, tw, th, bands, radius)
        r, c = rows[index] - y0, cols[index] - x0
        spectra[index] = data[:, r, c].T
        if size:
            means[index] = box_means(data, valid, size, r, c).T
    return spectra, means
