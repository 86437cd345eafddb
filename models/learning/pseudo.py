"""Self-training: confident, class-balanced pseudo-labels from the scene's unlabelled pixels.

After a first fine-tuning, the model classifies a random sample of the scene's other pixels; of
those it is confident about (top probability at least a threshold), each class contributes at
most a fixed multiple of its own training pixels, drawn at random so that the additions spread
over the scene rather than crowding around the training polygons; the model is then trained again
on the user's pixels and these. Pseudo-labelling (Lee, "Pseudo-Label: The simple and efficient
semi-supervised learning method for deep neural networks", ICML workshops 2013) with class
balance and a confidence threshold, as self-training is used for hyperspectral classification
with few labels (Tuia et al., IEEE JSTSP 2011, review the semi-supervised family).

The user's own pixels are never relabelled: every labelled pixel is left out of the candidates.
"""
from __future__ import annotations

import numpy as np

from ..data.raster import RasterReader


def candidate_pixels(reader: RasterReader, band_indices: list[int], *, count: int, seed: int,
                     exclude_rows: np.ndarray, exclude_cols: np.ndarray,
                     cancel=None) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` distinct valid pixels (rows, cols) at random, none of the excluded ones.

    Draws positions over the whole raster (four times ``count``, so nodata and excluded pixels
    leave enough), keeps the valid ones; the cost follows ``count``, not the raster's size.
    """
    width, height = reader.width, reader.height
    rng = np.random.default_rng([seed, 3])
    draw = min(width * height, 4 * int(count))
    flat = rng.choice(width * height, size=draw, replace=False)
    excluded = np.asarray(exclude_rows, dtype=np.int64) * width + np.asarray(exclude_cols,
                                                                            dtype=np.int64)
    flat = flat[~np.isin(flat, excluded)]
    rows, cols = np.divmod(flat, width)
    valid = reader.valid_at(rows, cols, band_indices, cancel=cancel)
    rows, cols = rows[valid][:count], cols[valid][:count]
    return rows.astype(np.int64), cols.astype(np.int64)


def select_pseudo_labels(probabilities: np.ndarray, training_counts: np.ndarray, *,
                         threshold: float, factor: float, seed: int
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(candidate indices, class indices) of the pseudo-labels.

    A candidate qualifies for its most probable class when that probability is at least
    ``threshold``; class k keeps at most ``factor * training_counts[k]`` of its qualifying
    candidates, drawn at random (seeded).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    best = probabilities.argmax(axis=1)
    confident = probabilities.max(axis=1) >= threshold
    rng = np.random.default_rng([seed, 4])
    chosen, classes = [], []
    for k, count in enumerate(np.asarray(training_counts)):
        members = np.flatnonzero(confident & (best == k))
        keep = min(len(members), int(factor * count))
        if keep:
            picked = np.sort(rng.choice(members, size=keep, replace=False))
            chosen.append(picked)
            classes.append(np.full(keep, k, dtype=np.int64))
    if not chosen:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(chosen), np.concatenate(classes)
