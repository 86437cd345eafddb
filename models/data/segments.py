"""Spatial clean-up of a class map: superpixels of the scene and a vote of the classes inside them.

A per-pixel classifier leaves isolated wrong pixels inside fields; neighbouring pixels that look
alike usually share a class. The scene is cut into superpixels with SLIC (Achanta et al., "SLIC
superpixels compared to state-of-the-art superpixel methods", IEEE TPAMI 2012) on the first
band-adapted components, and every pixel takes the class with the most probability summed over
its superpixel. Superpixel voting is an established spectral-spatial step in hyperspectral
classification (e.g. Jiang et al., "SuperPCA", IEEE TGRS 2018; Fang et al., "Classification of
hyperspectral images by exploiting spectral-spatial information of superpixel via multiple kernels",
IEEE TGRS 2015).

The SLIC here assigns each pixel to the nearest of the nine centres of its own and the
neighbouring grid cells (the usual SLIC search window), written with whole-array numpy operations,
so it runs tile by tile: the grid is anchored at the raster's origin, and a tile read with a halo
of a few cells gets the same superpixels in its middle as the whole raster would.
"""
from __future__ import annotations

import numpy as np

# SLIC's balance of spectral against spatial distance, for features at a unit scale per component
# group (see slic_segments): larger gives squarer superpixels.
DEFAULT_COMPACTNESS = 0.3
DEFAULT_ITERATIONS = 5
# Components of the band-adapted data the superpixels are cut on (the first carry the signal).
SEGMENT_COMPONENTS = 6
_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def segment_feature_scale(adapted_pixels: np.ndarray,
                          num_components: int = SEGMENT_COMPONENTS) -> float:
    """One factor for the whole raster that gives its first components unit mean variance, so
    spectral distances read alike on every scene (from a sample of band-adapted pixels (N, 12))."""
    sample = np.asarray(adapted_pixels, dtype=np.float64)[:, :num_components]
    spread = float(np.sqrt(sample.var(axis=0).mean())) if len(sample) > 1 else 0.0
    return 1.0 / spread if spread > 1e-12 else 1.0


def segment_features(adapted: np.ndarray, scale: float,
                     num_components: int = SEGMENT_COMPONENTS) -> np.ndarray:
    """The first components of band-adapted data (12, H, W), times the raster's scale."""
    return np.asarray(adapted[:num_components], dtype=np.float32) * np.float32(scale)


def slic_segments(features: np.ndarray, valid: np.ndarray, *, size: int,
                  compactness: float = DEFAULT_COMPACTNESS,
                  iterations: int = DEFAULT_ITERATIONS, origin: tuple[int, int] = (0, 0)
                  ) -> np.ndarray:
    """Superpixel labels (H, W) int64 of a (C, H, W) feature block; -1 where not valid.

    Args:
        features: per-pixel features, e.g. from segment_features.
        valid: pixels that take part (nodata is never assigned, and never moves a centre).
        size: grid step S in pixels; superpixels hold about S x S pixels.
        compactness: weight m of the spatial distance: D^2 = d_features^2 + (m d_xy / S)^2.
        iterations: assignment and update rounds.
        origin: (row, col) of the block's first pixel in the raster, so blocks of one raster
            share one grid and one label numbering.

    Labels are grid-cell numbers of the raster (row-major, cells of the grid anchored at pixel
    (0, 0)), so the same superpixel has the same label in every block that holds it.
    """
    size = max(1, int(size))
    channels, height, width = features.shape
    row0, col0 = origin
    rows = np.arange(height)[:, None] + row0
    cols = np.arange(width)[None, :] + col0
    cell_row0, cell_col0 = row0 // size, col0 // size
    cell_rows = (row0 + height - 1) // size - cell_row0 + 1
    cell_cols = (col0 + width - 1) // size - cell_col0 + 1
    cells_across = 10 ** 9       # wide enough that labels never collide across a raster row
    own_row = rows // size - cell_row0
    own_col = cols // size - cell_col0
    own_row = np.broadcast_to(own_row, (height, width))
    own_col = np.broadcast_to(own_col, (height, width))
    flat_valid = valid.ravel()
    flat_features = features.reshape(channels, -1)
    grid_rows, grid_cols = np.meshgrid(np.arange(cell_rows), np.arange(cell_cols), indexing="ij")
    # Centres start at the middle of their cell, with the mean features of the cell's valid pixels.
    centre_y = ((grid_rows + cell_row0 + 0.5) * size).astype(np.float32).ravel()
    centre_x = ((grid_cols + cell_col0 + 0.5) * size).astype(np.float32).ravel()
    assigned = (own_row * cell_cols + own_col).ravel()
    centre_f, alive = _centre_means(flat_features, assigned, flat_valid, cell_rows * cell_cols)
    spatial_weight = (float(compactness) / size) ** 2
    ys = np.broadcast_to(rows, (height, width)).ravel().astype(np.float32)
    xs = np.broadcast_to(cols, (height, width)).ravel().astype(np.float32)
    for _ in range(max(1, int(iterations))):
        best = np.full(height * width, np.inf, dtype=np.float32)
        choice = assigned.copy()
        for dy, dx in _OFFSETS:
            cand_row = own_row.ravel() + dy
            cand_col = own_col.ravel() + dx
            inside = (cand_row >= 0) & (cand_row < cell_rows) & (cand_col >= 0) & (cand_col < cell_cols)
            cand = np.where(inside, cand_row * cell_cols + cand_col, 0)
            usable = inside & alive[cand]
            spectral = ((flat_features - centre_f[:, cand]) ** 2).sum(axis=0)
            spatial = (ys - centre_y[cand]) ** 2 + (xs - centre_x[cand]) ** 2
            distance = np.where(usable, spectral + spatial_weight * spatial, np.inf)
            better = distance < best
            best = np.where(better, distance, best)
            choice = np.where(better, cand, choice)
        assigned = choice
        centre_f, alive_now = _centre_means(flat_features, assigned, flat_valid,
                                            cell_rows * cell_cols, previous=centre_f)
        counts = np.bincount(assigned[flat_valid], minlength=cell_rows * cell_cols)
        has = counts > 0
        centre_y[has] = (np.bincount(assigned[flat_valid], weights=ys[flat_valid],
                                     minlength=len(counts))[has] / counts[has])
        centre_x[has] = (np.bincount(assigned[flat_valid], weights=xs[flat_valid],
                                     minlength=len(counts))[has] / counts[has])
        alive = alive | alive_now
    cell_r, cell_c = np.divmod(assigned, cell_cols)
    labels = (cell_r + cell_row0).astype(np.int64) * cells_across + (cell_c + cell_col0)
    labels[~flat_valid] = -1
    return labels.reshape(height, width)


def _centre_means(flat_features, assigned, valid, num_cells, previous=None):
    counts = np.bincount(assigned[valid], minlength=num_cells)
    means = np.zeros((flat_features.shape[0], num_cells), dtype=np.float32)
    if previous is not None:
        means[:] = previous
    has = counts > 0
    for channel in range(flat_features.shape[0]):
        sums = np.bincount(assigned[valid], weights=flat_features[channel][valid],
                           minlength=num_cells)
        means[channel, has] = sums[has] / counts[has]
    return means, has


def segment_vote(scores: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Class scores (K, H, W) summed over each segment and given back to its pixels.

    ``segments`` is (H, W) with -1 where a pixel takes no part (its scores are kept as they are).
    """
    num_classes = scores.shape[0]
    inside = segments >= 0
    _, compact = np.unique(segments[inside], return_inverse=True)
    count = int(compact.max()) + 1 if compact.size else 0
    voted = np.array(scores, dtype=np.float32, copy=True)
    for k in range(num_classes):
        sums = np.bincount(compact, weights=scores[k][inside], minlength=count)
        voted[k][inside] = sums[compact]
    return voted
