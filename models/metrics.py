"""Accuracy of a classification: confusion matrix, OA, AA, Cohen's kappa, per-class PA, UA and F1.

Rows of the confusion matrix are the reference classes, columns the predicted ones. Producer's
accuracy (recall) is a class's diagonal over its reference total; user's accuracy (precision) the
diagonal over its predicted total (Congalton, "A review of assessing the accuracy of
classifications of remotely sensed data", Remote Sensing of Environment 37, 1991). Kappa is
Cohen's (1960) agreement beyond chance.
"""
from __future__ import annotations

import numpy as np

from .samples import ClassInfo


def confusion_matrix(reference: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts; labels are class indices 0..num_classes-1."""
    reference = np.asarray(reference, dtype=np.int64).ravel()
    predicted = np.asarray(predicted, dtype=np.int64).ravel()
    if reference.shape != predicted.shape:
        raise ValueError("reference and predicted must have the same length")
    return np.bincount(reference * num_classes + predicted,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator > 0 else None


def classification_metrics(matrix: np.ndarray, classes: list[ClassInfo]) -> dict:
    """Metrics of a confusion matrix as a plain dict (JSON-ready, and loadable with weights_only).

    Classes without reference pixels have no producer's accuracy (None) and are left out of AA.
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    total = int(matrix.sum())
    diagonal = np.diag(matrix).astype(np.float64)
    reference_totals = matrix.sum(axis=1).astype(np.float64)
    predicted_totals = matrix.sum(axis=0).astype(np.float64)
    per_class = []
    producers = []
    for index, info in enumerate(classes):
        pa = _ratio(diagonal[index], reference_totals[index])
        ua = _ratio(diagonal[index], predicted_totals[index])
        f1 = (2 * pa * ua / (pa + ua)) if pa is not None and ua is not None and pa + ua > 0 else (
            0.0 if pa is not None or ua is not None else None)
        if pa is not None:
            producers.append(pa)
        per_class.append({"value": int(info.value), "name": info.name,
                          "color": [int(c) for c in info.color],
                          "producers_accuracy": pa, "users_accuracy": ua, "f1": f1,
                          "reference_pixels": int(reference_totals[index]),
                          "predicted_pixels": int(predicted_totals[index])})
    overall = _ratio(diagonal.sum(), total)
    expected = (float((reference_totals * predicted_totals).sum()) / total ** 2) if total else None
    if overall is None or expected is None:
        kappa = None
    elif expected >= 1.0:
        kappa = 1.0 if overall >= 1.0 else 0.0
    else:
        kappa = float((overall - expected) / (1.0 - expected))
    return {"overall_accuracy": overall,
            "average_accuracy": float(np.mean(producers)) if producers else None,
            "kappa": kappa, "num_samples": total,
            "classes": per_class,
            "confusion_matrix": matrix.tolist()}


def metrics_from_labels(reference: np.ndarray, predicted: np.ndarray,
                        classes: list[ClassInfo]) -> dict:
    """Metrics from class indices of the reference and the prediction."""
    return classification_metrics(confusion_matrix(reference, predicted, len(classes)), classes)
