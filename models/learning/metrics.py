"""Accuracy of a classification: confusion matrix, OA, AA, Cohen's kappa, per-class PA, UA and F1.

Rows of the confusion matrix are the reference classes, columns the predicted ones. Producer's
accuracy (recall) is a class's diagonal over its reference total; user's accuracy (precision) the
diagonal over its predicted total (Congalton, "A review of assessing the accuracy of
classifications of remotely sensed data", Remote Sensing of Environment 37, 1991). Kappa is
Cohen's (1960) agreement beyond chance.
"""
from __future__ import annotations

import numpy as np

from ..data.samples import ClassInfo


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


# Two-sided 95 % normal quantile of the confidence intervals.
Z_95 = 1.959964


def area_adjusted_accuracy(matrix: np.ndarray, map_pixels: np.ndarray, *,
                           pixel_area: float = 1.0) -> dict:
    """Accuracy and class areas estimated from the map's class areas and a reference sample, as
    Olofsson et al. recommend ("Good practices for estimating area and assessing accuracy of land
    change", Remote Sensing of Environment 148, 2014; the stratified estimators of their
    equations 2 to 11, with 95 % confidence intervals).

    The map classes are the strata: the reference sample is taken to be random within each map
    class, whatever its size, and each class weighs by its share of the map, not of the sample.

    Args:
        matrix: (K, K) counts of the sample, rows the reference classes and columns the map
            classes (the orientation of ``confusion_matrix``).
        map_pixels: (K,) pixels of each class in the whole map.
        pixel_area: area of one pixel, in the unit the areas are given in.

    Returns a dict with the error matrix in area proportions (rows reference, columns map),
    "overall_accuracy" and its "overall_accuracy_ci", and per class "users_accuracy",
    "producers_accuracy", "area" (estimated from the reference) and "map_area", each accuracy and
    area with its 95 % confidence half-width (``*_ci``; None where the sample leaves it undefined).
    """
    counts = np.asarray(matrix, dtype=np.float64).T          # rows: map classes (strata)
    map_pixels = np.asarray(map_pixels, dtype=np.float64)
    total_pixels = float(map_pixels.sum())
    if total_pixels <= 0:
        raise ValueError("the map has no classified pixels")
    weights = map_pixels / total_pixels
    sampled = counts.sum(axis=1)
    share = np.divide(counts, sampled[:, None], out=np.zeros_like(counts),
                      where=sampled[:, None] > 0)
    proportions = weights[:, None] * share                    # p_ij, rows map, columns reference
    reference_proportion = proportions.sum(axis=0)            # p_.j
    # Variance terms of the within-stratum proportions (eq. 10): zero where a stratum has at most
    # one sample unit, which leaves its uncertainty out rather than dividing by zero.
    spread = np.divide(share * (1.0 - share), (sampled - 1.0)[:, None],
                       out=np.zeros_like(share), where=(sampled - 1.0)[:, None] > 0)
    users = np.diag(share).copy()
    overall = float((weights * users).sum())
    overall_var = float((weights ** 2 * np.diag(spread)).sum())
    area_se = np.sqrt(((weights ** 2)[:, None] * spread).sum(axis=0))
    estimated_totals = (map_pixels / np.where(sampled > 0, sampled, 1.0))[:, None] * counts
    reference_totals = estimated_totals.sum(axis=0)           # N_.j
    per_class = []
    for j in range(len(map_pixels)):
        has_sample = sampled[j] > 0
        producers = (float(proportions[j, j] / reference_proportion[j])
                     if reference_proportion[j] > 0 else None)
        producers_ci = None
        if producers is not None and reference_totals[j] > 0:
            own = map_pixels[j] ** 2 * (1 - producers) ** 2 * spread[j, j]
            others = sum(map_pixels[i] ** 2 * spread[i, j] for i in range(len(map_pixels))
                         if i != j)
            producers_ci = Z_95 * float(np.sqrt(own + producers ** 2 * others)
                                        / reference_totals[j])
        per_class.append({
            "users_accuracy": float(users[j]) if has_sample else None,
            "users_accuracy_ci": Z_95 * float(np.sqrt(spread[j, j])) if sampled[j] > 1 else None,
            "producers_accuracy": producers, "producers_accuracy_ci": producers_ci,
            "area": float(reference_proportion[j] * total_pixels * pixel_area),
            "area_ci": Z_95 * float(area_se[j] * total_pixels * pixel_area),
            "map_area": float(map_pixels[j] * pixel_area), "sample_pixels": int(sampled[j])})
    return {"overall_accuracy": overall, "overall_accuracy_ci": Z_95 * float(np.sqrt(overall_var)),
            "error_matrix_proportions": proportions.T.tolist(), "classes": per_class,
            "total_area": total_pixels * pixel_area}
