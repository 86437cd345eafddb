"""Class weights that make every class count the same in training, however many pixels it has.

People draw what is easy to draw: one large polygon over a lake, a few pixels of a rare crop.
Unweighted, the network's loss and the spectral classifier's least squares are then mostly about
the large class, and the map gives the rare ones away. Weighing each pixel by the inverse of its
class's share (King and Zeng, "Logistic regression in rare events data", Political Analysis 2001;
scikit-learn's class_weight="balanced") gives every class the same total weight. The weights'
mean over the pixels is 1, so a loss keeps its scale and a learning rate its meaning; with as many
pixels in every class they are all 1, and training is what it was without them.
"""
from __future__ import annotations

import numpy as np


def class_weights(class_index, weighting: str, num_classes: int | None = None) -> np.ndarray | None:
    """Per-class weights (K,) float64 for the training pixels' class indices, or None for "none".

    "balanced": n / (k n_c) for a class of n_c of the n pixels among the k classes present; 0 for
    a class without pixels. K is ``num_classes``, or the highest index plus one without it: a
    model's loss needs a weight for every class it outputs, also for a class whose pixels are all
    held out (a cross-validation fold holding a class's only polygon).
    """
    if weighting == "none":
        return None
    if weighting != "balanced":
        raise ValueError(f"unknown class weighting {weighting!r}")
    counts = np.bincount(np.asarray(class_index, dtype=np.int64),
                         minlength=num_classes or 0).astype(np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (int(present.sum()) * counts[present])
    return weights
