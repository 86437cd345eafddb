"""The cross-validation job: fine-tuning with the same settings judged by polygon-grouped k-fold
cross-validation, each fold classified by a model fine-tuned on the others.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import options
from ..data.samples import grouped_folds
from ..errors import HyperAdaptError
from ..learning.device import choose_device
from ..learning.metrics import classification_metrics, confusion_matrix
from ..progress import report as _report
from ..progress import scaled as _scaled
from ..settings import FineTuneSettings
from ..stores.guard import check_job_files, layer_files
from .evaluation import write_reports
from .fine_tuning import _train_model, _training_samples, held_out_predictions


def _single_feature_notes(pixels) -> list[str]:
    """A note naming the classes drawn as one polygon or point: the model of the fold that holds
    it out never saw the class, so its pixels count as errors there."""
    single = [pixels.classes[c].name for c in np.unique(pixels.class_index)
              if len(np.unique(pixels.feature_index[pixels.class_index == c])) == 1]
    if not single:
        return []
    names = ", ".join(f"'{name}'" for name in single)
    return [f"Drawn as a single polygon or point, {names} cannot be learnt by the model of the "
            f"fold that holds it out, so its pixels count as errors there; draw a second one to "
            f"validate it."]


def cross_validate(raster_path: str, vector_path: str, class_field: str, *, folds: int = 5,
                   settings: FineTuneSettings = FineTuneSettings(), layer_name: str | None = None,
                   class_colors: dict | None = None, class_names: dict | None = None,
                   html_path: str | None = None, json_path: str | None = None, progress=None,
                   cancel=None) -> dict:
    """Polygon-grouped k-fold cross-validation of fine-tuning with ``settings``.

    The training layer's features are dealt to ``folds`` folds by whole feature, stratified by class
    (models.data.samples.grouped_folds); each fold is classified by a model fine-tuned on the
    others, pixel by pixel (without the segment vote, which needs a whole map), its probabilities
    mixed with a spectral classifier's fitted on the same other folds, as the map mixes them.
    Returns the pooled metrics (models.learning.metrics) with "folds" (each fold's OA, AA, kappa
    and pixels), also written as JSON and/or HTML.
    """
    settings = (settings or FineTuneSettings()).resolved()
    if (isinstance(folds, bool) or not isinstance(folds, int)
            or not 2 <= folds <= options.MAX_FOLDS):
        raise HyperAdaptError(f"Cross-validation needs from 2 to {options.MAX_FOLDS} folds "
                              f"(got {folds!r}).")
    check_job_files({"report": html_path, "figures (JSON)": json_path},
                    {"input raster": raster_path, "training layer": layer_files(vector_path)})
    samples = _training_samples(raster_path, vector_path, class_field, settings,
                                layer_name=layer_name, class_colors=class_colors,
                                class_names=class_names, progress=_scaled(progress, 0.0, 0.1),
                                cancel=cancel)
    pixels, classes = samples.pixels, samples.pixels.classes
    fold_of = grouped_folds(pixels.feature_index, pixels.class_index, folds, settings.seed)
    if len(np.unique(fold_of)) < 2:
        raise HyperAdaptError("Cross-validation needs at least two features (polygons or points) "
                              "to hold out one at a time.")
    labels = torch.from_numpy(pixels.class_index)
    device = choose_device(settings.device)
    pooled = np.zeros((len(classes), len(classes)), dtype=np.int64)
    per_fold = []
    for fold in range(folds):
        held = fold_of == fold
        if not held.any():
            continue
        start = 0.1 + 0.9 * fold / folds
        model, _, _ = _train_model(
            samples.source, settings, len(classes), samples.input_size,
            samples.windows[torch.from_numpy(~held)], labels[torch.from_numpy(~held)], None, None,
            device=device, progress=_scaled(progress, start, start + 0.85 / folds),
            cancel=cancel, tile_window=samples.tile_window,
            sample_corners=samples.sample_corners)
        predicted = held_out_predictions(model, samples, settings, np.flatnonzero(~held),
                                         np.flatnonzero(held), device, cancel)
        matrix = confusion_matrix(pixels.class_index[held], predicted, len(classes))
        pooled += matrix
        found = classification_metrics(matrix, classes)
        per_fold.append({"fold": fold + 1, "pixels": int(held.sum()),
                         "features": int(len(np.unique(pixels.feature_index[held]))),
                         **{key: found[key] for key in ("overall_accuracy", "average_accuracy",
                                                        "kappa")}})
    metrics = classification_metrics(pooled, classes)
    spread = [f["overall_accuracy"] for f in per_fold if f["overall_accuracy"] is not None]
    notes = list(samples.notes) + _single_feature_notes(pixels) + [
        f"{len(per_fold)} folds by whole polygon, stratified by class; each fold classified by a "
        f"model fine-tuned on the others, pixel by pixel (no segment vote). OA per fold from "
        f"{100 * min(spread):.1f} to {100 * max(spread):.1f} %."]
    metrics.update({"kind": "cross-validation", "folds": per_fold, "notes": notes,
                    "settings": settings.to_dict()})
    write_reports(metrics, html_path, json_path,
                   title="HyperAdapt cross-validation (pooled over the folds)",
                   details={f"fold {f['fold']}": (
                       f"OA {100 * f['overall_accuracy']:.1f} %, {f['pixels']} pixels of "
                       f"{f['features']} features") for f in per_fold
                       if f["overall_accuracy"] is not None})
    _report(progress, 1.0, "Done")
    return metrics
