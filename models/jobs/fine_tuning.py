"""The fine-tune job: an adapter file fine-tuned on labelled polygons or points of a raster, and
optionally that raster classified with it and a report of the validation accuracy.

fine_tune follows Ligan et al. (2025): the scene's bands are adapted to SpectralGPT's 12 inputs
(PCA, MNF, or resampling to Sentinel-2 bands), the windows tile mode classifies each training
pixel from (or, window by window, one centred on it: models.learning.tile_training) are resized
to the model's input, and a parameter-efficient adapter (KronA+ by default) on the
frozen SpectralGPT encoder (Hong et al., IEEE TPAMI 2024) is trained with a head that sees the
pooled tokens and the centre pixel (spectralgpt.PixelHead). A kernel classifier on the labelled
pixels' spectra (models.learning.spectral_kernel) is fitted beside it, and the map mixes the two.

The module is longer than this project's usually are (about 600 lines): it holds the job's steps
in the order they run (samples, hold-out, training rounds, the adapter record, the report, the
scene classified), each a function of its own that only this job calls; cross_validate reuses
three of them from here rather than a copy.
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .. import options
from ..data.bands import BandAdaptation, fit_band_adaptation, measured_noise, whitening_of
from ..data.neighbourhood import read_with_means_at
from ..data.raster import (RasterInfo, RasterReader, read_raster_info,
                           sample_neighbour_differences, sample_valid_pixels)
from ..data.samples import (MIN_TRAINING_FEATURES, ClassInfo, cap_per_class, check_class_pixels,
                            read_labelled_pixels, split_by_feature)
from ..data.regions import collect_windows
from ..errors import HyperAdaptError, raise_if_cancelled
from ..learning.device import choose_device
from ..learning.distributed import distributed_rank, wait_for_all
from ..learning.metrics import classification_metrics, metrics_from_labels
from ..learning.inference import predict_probabilities
from ..learning.pseudo import candidate_pixels, select_pseudo_labels
from ..learning.spectral_kernel import SpectralKernel, fit_spectral_kernel
from ..learning.tile_training import TileView, crop_window_size, grid_crops
from ..learning.seeding import seeded
from ..network import adapters
from ..network.backbones import (BackboneSource, backbone_source,
                                 build_backbone_for_training)
from ..network.identity import BACKBONE_FILE, BackboneIdentity
from ..progress import report as _report
from ..progress import scaled as _scaled
from ..settings import FineTuneSettings
from ..stores.adapter_file import AdapterRecord, load_adapter_file, now_iso, save_adapter_file
from ..stores.files import StagedFiles
from ..stores.guard import check_job_files, layer_files, map_bytes, raster_files, report_files
from ..stores.report import write_html_report, write_metrics_json
from .postprocessing import classify_and_clean
from .vote_choice import choose_segment_vote


@dataclass
class FineTuneResult:
    adapter_path: str
    classification_path: str | None
    confidence_path: str | None
    report_path: str | None
    metrics: dict
    classes: list[ClassInfo]
    seconds: float
    adapter_bytes: int
    backbone: BackboneIdentity
    notes: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    cross_validation: dict | None = None      # cross_validate's pooled metrics, when asked


def _describe_cleanup(settings: FineTuneSettings) -> str:
    steps = []
    if settings.majority_size:
        steps.append(f"majority filter of {settings.majority_size} x {settings.majority_size}")
    if settings.sieve_pixels:
        steps.append(f"sieve of patches under {settings.sieve_pixels} pixels")
    return ", then ".join(steps) or "none"


def _check_backbone_adaptation(adaptation: BandAdaptation, info: RasterInfo,
                               backbone_info: dict) -> None:
    sensor = backbone_info.get("sensor") or {}
    count = sensor.get("band_count")
    if count is not None and int(count) != info.band_count:
        raise HyperAdaptError(f"This backbone file was pretrained on {count} bands, but the raster "
                              f"has {info.band_count}.")
    if adaptation.band_indices and max(adaptation.band_indices) >= info.band_count:
        raise HyperAdaptError("This backbone file reads bands that the raster does not have.")


@dataclass
class _Samples:
    """The labelled pixels of a training layer on its raster, and their windows."""

    info: RasterInfo
    source: BackboneSource
    adaptation: BandAdaptation
    window_size: int
    input_size: int
    pixels: object               # samples.LabelledPixels, capped per class
    windows: torch.Tensor        # (N, 12, w, w), one per pixel; tile training: grid_crops
    spectra: np.ndarray | None   # (N, bands) of the band adaptation's bands; None at weight 0
    notes: list[str]
    means: np.ndarray | None = None  # (N, bands) neighbourhood means (settings.spectral_context)
    whitening: np.ndarray | None = None  # (bands, bands) the scene's noise whitening, or None
    tile_step: int = 1           # tile training's grid step; 1: windows centred on the pixels
    sample_corners: bool = False  # tile training sends one corner window per pixel and step

    @property
    def tile_window(self) -> int | None:
        """The window size tile training's crops hold (TileView), or None for plain windows."""
        return self.window_size if self.tile_step > 1 else None

    def network(self, model):
        """What the samples' windows go through: the model, or the model as tile mode applies
        it to grid crops."""
        return model if self.tile_step == 1 else TileView(model, self.window_size)


def _training_step(settings: FineTuneSettings, window_size: int) -> int:
    """Tile training's grid step for this window (1: windows centred on the pixels), or the
    sentence for a window too large to train in tile mode."""
    step = options.training_step(settings.training_mode, window_size, settings.tile_step)
    side = crop_window_size(window_size, step) if step > 1 else window_size
    if side > options.MAX_WINDOW_SIZE:
        largest = max(w for w in range(1, options.MAX_WINDOW_SIZE + 1, 2)
                      if crop_window_size(w, options.training_step("tile", w, settings.tile_step))
                      <= options.MAX_WINDOW_SIZE)
        raise HyperAdaptError(f"Training in tile mode reads windows of {side} pixels around each "
                              f"labelled pixel for {window_size}-pixel windows (the window and a "
                              f"grid step on each side), more than {options.MAX_WINDOW_SIZE}; "
                              f"choose windows of at most {largest} pixels, or train window by "
                              f"window.")
    return step


def _read_windows(reader, adaptation: BandAdaptation, rows, cols, window_size: int, step: int,
                  *, progress=None, cancel=None) -> np.ndarray:
    """The training windows of pixels: centred on each (step 1), or tile training's crops of the
    grid windows around each (models.learning.tile_training.grid_crops)."""
    side = window_size if step == 1 else crop_window_size(window_size, step)
    windows, _ = collect_windows(reader, adaptation, rows, cols, side, progress=progress,
                                 cancel=cancel)
    return windows if step == 1 else grid_crops(windows, rows, cols, window_size, step)


def _training_samples(raster_path, vector_path, class_field: str, settings: FineTuneSettings, *,
                      layer_name=None, class_colors=None, class_names=None, progress=None,
                      cancel=None) -> _Samples:
    """The backbone source, band adaptation and windows of the labelled pixels (capped per class)."""
    _report(progress, 0.0, "Reading the raster and the training layer")
    info = read_raster_info(raster_path)
    source = backbone_source(settings)
    window_size, input_size = settings.window_size, settings.input_size
    backbone_adaptation = None
    notes: list[str] = []
    if source.kind == BACKBONE_FILE:
        backbone_info = source.payload
        backbone_adaptation = BandAdaptation.from_state(backbone_info["band_adaptation"])
        _check_backbone_adaptation(backbone_adaptation, info, backbone_info)
        window_size = int(backbone_info.get("window_size", window_size))
        input_size = int(backbone_info.get("input_size", input_size))
        notes.append(f"The backbone file sets the window size ({window_size}), the input size "
                     f"({input_size}) and the band adaptation.")
    pixels = read_labelled_pixels(info, vector_path, class_field, layer_name=layer_name,
                                  class_colors=class_colors, class_names=class_names,
                                  cancel=cancel)
    notes += pixels.notes
    with RasterReader(info) as reader:
        _report(progress, 0.03, "Fitting the band adaptation")
        adaptation = backbone_adaptation or fit_band_adaptation(
            [info], settings.band_adaptation, max_pixels=settings.fit_pixels,
            seed=settings.seed, cancel=cancel)
        notes += adaptation.notes
        valid = reader.valid_at(pixels.rows, pixels.cols, adaptation.band_indices, cancel=cancel)
        dropped = int((~valid).sum())
        if dropped:
            notes.append(f"{dropped} labelled pixel(s) on nodata were left out.")
        pixels = pixels.subset(valid)
        check_class_pixels(pixels, settings.min_pixels_per_class)
        # A seeded subsample per class bounds the windows held in memory for large polygons.
        rng = np.random.default_rng([settings.seed, 1])
        kept = cap_per_class(np.arange(len(pixels)), pixels.class_index,
                             settings.max_pixels_per_class, rng)
        pixels = pixels.subset(kept)
        step = _training_step(settings, window_size)
        windows = _read_windows(reader, adaptation, pixels.rows, pixels.cols, window_size, step,
                                progress=_scaled(progress, 0.05, 0.1), cancel=cancel)
        # The spectral classifier's inputs; without it (weight 0) nothing reads them.
        spectra = means = whitening = None
        if settings.spectral_weight:
            spectra, means = read_with_means_at(reader, pixels.rows, pixels.cols,
                                                adaptation.band_indices,
                                                settings.spectral_context, cancel=cancel)
            if settings.spectral_whitening:
                whitening = _scene_noise_whitening(reader, adaptation.band_indices, settings,
                                                   notes, cancel)
    return _Samples(info=info, source=source, adaptation=adaptation, window_size=window_size,
                    input_size=input_size, pixels=pixels, windows=torch.from_numpy(windows),
                    spectra=spectra, notes=notes, means=means, whitening=whitening,
                    tile_step=step,
                    sample_corners=step > 1 and settings.training_mode == "sampled")


def _scene_noise_whitening(reader, bands: list[int], settings: FineTuneSettings,
                           notes: list[str], cancel) -> np.ndarray | None:
    """The spectral classifier's noise whitening, from the scene's own pixels (whatever the
    backbone's band adaptation), or None (each band standardised) where the scene's noise cannot
    be told apart: no two neighbouring pixels valid, or neighbours that differ like the scene
    itself in every band (measured_noise's test: the MNF then takes the noise as equal in every
    standardised band, and a whitening would only trade the training pixels' spread of each band
    for the scene's)."""
    try:
        differences = sample_neighbour_differences(reader, max_pairs=settings.fit_pixels,
                                                   seed=settings.seed, bands=bands, cancel=cancel)
    except HyperAdaptError:
        notes.append("The spectral classifier standardises each band: no two neighbouring pixels "
                     "are valid, so the scene's noise could not be estimated.")
        return None
    pixels = sample_valid_pixels(reader, max_pixels=settings.fit_pixels, seed=settings.seed,
                                 bands=bands, cancel=cancel)
    noise, spread = measured_noise(pixels, differences)
    if noise is None:
        notes.append(f"The spectral classifier standardises each band: neighbouring pixels differ "
                     f"like the scene itself in every band (noisiest bands {spread:.1f} x the "
                     f"median band's share), so its noise cannot be told from its texture.")
        return None
    return whitening_of(noise).astype(np.float32)


def _adapter_config(settings: FineTuneSettings) -> adapters.AdapterConfig:
    return adapters.AdapterConfig(method=settings.method, targets=settings.targets,
                                  rank=settings.rank, factor_shape=settings.factor_shape,
                                  lr_ratio=settings.lr_ratio)


def _train_model(source: BackboneSource, settings: FineTuneSettings, num_classes: int,
                 input_size: int, train_x, train_y, val_x, val_y, *, device, progress=None,
                 cancel=None, on_epoch=None, warm: AdapterRecord | None = None, classes=None,
                 epochs: int | None = None, tile_window: int | None = None,
                 sample_corners: bool = False):
    """(model, weights identity, TrainingOutcome): a fresh model, the same seeded start every time
    (or the ``warm`` adapter's state), trained on the windows and holding its best state; for
    ``epochs`` where given, else for the settings' schedule. ``tile_window``: the windows are tile
    training's crops around windows of that size (_Samples.tile_window), one corner window per
    step where ``sample_corners``."""
    from ..learning.training import train_classifier

    adapter_config = _adapter_config(settings)
    model, identity = build_backbone_for_training(source, settings, num_classes, input_size)
    seeded(settings.seed + 1, lambda: adapters.apply_adapter(model, adapter_config))
    if warm is not None:
        _continue_from(model, warm, identity, classes)
    outcome = train_classifier(
        model, train_x, train_y, val_x, val_y, epochs=epochs or settings.epochs_for(len(train_x)),
        learning_rate=settings.learning_rate, weight_decay=settings.weight_decay,
        batch_size=settings.batch_size,
        warmup_fraction=settings.warmup_fraction, patience=settings.patience_for(),
        seed=settings.seed,
        device=device, augment=settings.augment, context_dropout=settings.context_dropout,
        class_weighting=settings.class_weighting, num_classes=num_classes,
        tile_window=tile_window, sample_corners=sample_corners, progress=progress,
        cancel=cancel, on_epoch=on_epoch)
    adapters.load_trainable_state_dict(model, outcome.best_state)
    return model, identity, outcome


def _round(metrics: dict, created: str) -> dict:
    """One round of labelling as a fine-tune's figures tell it: labelled pixels (trained and
    held out), classes, and the validation accuracy where polygons were held out."""
    split = metrics.get("split") or {}
    validated = int(metrics.get("num_samples") or 0)
    return {"labelled_pixels": int(split.get("train_pixels", 0))
            + int(split.get("validation_pixels", 0)),
            "classes": len(metrics.get("classes", [])), "validation_pixels": validated,
            "overall_accuracy": metrics.get("overall_accuracy") if validated else None,
            "created": created}


def labelling_rounds(warm: AdapterRecord | None, metrics: dict) -> list:
    """The rounds of labelling an adapter grew from: those of the adapter it continued from
    (warm start; an older file without them counts as one round), then this one."""
    earlier = []
    if warm is not None:
        earlier = list(warm.training.get("rounds")
                       or [_round(warm.metrics or {}, warm.created)])
    this = _round(metrics, now_iso())
    return [{**entry, "round": number} for number, entry in enumerate([*earlier, this], 1)]


def _warm_start_record(settings: FineTuneSettings, window_size: int) -> AdapterRecord:
    """The adapter file to continue from, checked against this run's method and window."""
    record = load_adapter_file(settings.warm_start)
    made = record.adapter_config
    wanted = _adapter_config(settings).to_dict()
    if any(made.get(key) != wanted.get(key) for key in ("method", "targets", "rank")):
        raise HyperAdaptError(f"The adapter to continue from was made with other fine-tuning "
                              f"settings ({made.get('method')}, rank {made.get('rank')}); choose "
                              f"the same method, layers and rank, or start afresh.")
    if record.window_size != window_size:
        raise HyperAdaptError(f"The adapter to continue from uses {record.window_size}-pixel "
                              f"windows, this run {window_size}; start afresh.")
    return record


def _continue_from(model, record: AdapterRecord, identity: BackboneIdentity, classes) -> None:
    """Load an earlier adapter into ``model``; its head too where the classes are the same."""
    problem = record.weights_identity.mismatch(identity)
    if problem:
        raise HyperAdaptError(f"The adapter to continue from was made on another backbone: "
                              f"{problem} Continue from an adapter of this backbone, or start "
                              f"afresh.")
    same_classes = [c.name for c in record.classes] == [c.name for c in classes]
    state = dict(adapters.trainable_state_dict(model))
    state.update({name: tensor for name, tensor in record.trainable_state.items()
                  if same_classes or not name.startswith("head.")})
    adapters.load_trainable_state_dict(model, state)


def _pseudo_labels(model, samples, train_y, settings: FineTuneSettings, device,
                   round_number: int, cancel) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows and classes of the scene pixels the model is confident about
    (models.learning.pseudo)."""
    seed = settings.seed + 101 * (round_number + 1)
    pixels, adaptation = samples.pixels, samples.adaptation
    with RasterReader(samples.info) as reader:
        rows, cols = candidate_pixels(reader, adaptation.band_indices,
                                      count=options.PSEUDO_CANDIDATES, seed=seed,
                                      exclude_rows=pixels.rows, exclude_cols=pixels.cols,
                                      cancel=cancel)
        windows = _read_windows(reader, adaptation, rows, cols, samples.window_size,
                                samples.tile_step, cancel=cancel)
    probabilities = predict_probabilities(samples.network(model), torch.from_numpy(windows),
                                          device=device,
                                          batch_size=max(64, settings.batch_size), cancel=cancel)
    counts = np.bincount(train_y.numpy(), minlength=len(pixels.classes))
    chosen, classes = select_pseudo_labels(probabilities, counts,
                                           threshold=settings.pseudo_threshold,
                                           factor=options.PSEUDO_FACTOR, seed=seed)
    return torch.from_numpy(windows[chosen]), torch.from_numpy(classes)


def _warm_start(settings: FineTuneSettings, samples, notes: list[str]) -> AdapterRecord | None:
    """The adapter to continue from (warm start), checked, with a note; None without one."""
    if not settings.warm_start:
        return None
    warm = _warm_start_record(settings, samples.window_size)
    same = [c.name for c in warm.classes] == [c.name for c in samples.pixels.classes]
    head = "with its head" if same else "with a new head for the new classes"
    notes.append(f"Continued from the adapter '{warm.name}' ({head}), training "
                 f"{options.WARM_START_STEP_SHARE:.0%} of the steps.")
    return warm


def _hold_out(samples, settings: FineTuneSettings, notes: list[str]):
    """(split, train_x, train_y, val_x, val_y): whole polygons held out for validation where a
    class has enough of them (models.data.samples.split_by_feature); val_* are None without any."""
    pixels = samples.pixels
    split = split_by_feature(pixels.feature_index, pixels.class_index,
                             val_fraction=settings.val_fraction, seed=settings.seed,
                             min_class_pixels=settings.min_validation_pixels)
    # With no validation share asked for, the per-class reasons would mislead.
    if settings.val_fraction > 0 and split.training_only_classes:
        names = ", ".join(f"'{pixels.classes[c].name}'" for c in split.training_only_classes)
        notes.append(f"Classes with {MIN_TRAINING_FEATURES} features or fewer, or fewer than "
                     f"{settings.min_validation_pixels} pixels, keep them all for training and "
                     f"have no validation pixels: {names}.")
    train_idx, val_idx = split.train, split.validation
    train_x = samples.windows[torch.from_numpy(train_idx)]
    train_y = torch.from_numpy(pixels.class_index[train_idx])
    val_x = samples.windows[torch.from_numpy(val_idx)] if len(val_idx) else None
    val_y = torch.from_numpy(pixels.class_index[val_idx]) if len(val_idx) else None
    return split, train_x, train_y, val_x, val_y


def _train_rounds(samples, settings: FineTuneSettings, train_x, train_y, val_x, val_y, *,
                  device, warm, notes: list[str], progress, cancel, on_epoch, epochs=None):
    """(model, weights identity, TrainingOutcome): training on the drawn pixels, then each
    self-training round on them and the scene's confident pixels (models.learning.pseudo)."""
    classes = samples.pixels.classes
    share = 1.0 / (1 + settings.self_training_rounds)

    def train_model(windows_x, labels_y, round_number):
        start = round_number * share
        return _train_model(samples.source, settings, len(classes), samples.input_size,
                            windows_x, labels_y, val_x, val_y, device=device,
                            progress=_scaled(progress, start, start + share), cancel=cancel,
                            on_epoch=on_epoch, warm=warm, classes=classes, epochs=epochs,
                            tile_window=samples.tile_window,
                            sample_corners=samples.sample_corners)

    model, identity, outcome = train_model(train_x, train_y, 0)
    if identity.is_random_start:
        notes.append("The backbone started from random weights (no pretraining), so accuracy "
                     "is not representative of SpectralGPT.")
    for round_number in range(settings.self_training_rounds):
        pseudo_x, pseudo_y = _pseudo_labels(model, samples, train_y, settings, device,
                                            round_number, cancel)
        notes.append(f"Self-training round {round_number + 1}: {len(pseudo_y)} confident "
                     f"pixels of the scene (probability at least "
                     f"{settings.pseudo_threshold:g}) trained beside the "
                     f"{len(train_y)} drawn ones.")
        model, identity, outcome = train_model(torch.cat([train_x, pseudo_x]),
                                               torch.cat([train_y, pseudo_y]), round_number + 1)
    return model, identity, outcome


def _refit(samples, settings: FineTuneSettings, train_x, train_y, val_x, val_y, outcome,
           metrics: dict, *, device, warm, notes: list[str], progress, cancel):
    """(model, weights identity, TrainingOutcome) trained again on every pixel, held-out ones
    included, for the epochs the validation chose (``outcome.best_epoch``). The outcome keeps
    the validated training's epochs and history, with the new state; ``metrics`` keep the
    validation figures and gain "refit"."""
    epochs = max(1, int(outcome.best_epoch))
    all_x, all_y = torch.cat([train_x, val_x]), torch.cat([train_y, val_y])
    # The epochs count from 1 again: the messages say which training they belong to.
    again = (None if progress is None else
             lambda fraction, message: progress(fraction, f"Training on every pixel: {message}"))
    model, identity, refitted = _train_rounds(
        samples, settings, all_x, all_y, None, None, device=device, warm=warm, notes=[],
        progress=again, cancel=cancel, on_epoch=None, epochs=epochs)
    notes.append(f"The validation figures are those of a model trained without the "
                 f"{len(val_y)} held-out pixels, whose best epoch was {epochs}; the saved "
                 f"adapter was then trained again on all {len(all_y)} pixels for {epochs} epochs.")
    metrics["refit"] = {"epochs": refitted.epochs_run, "pixels": len(all_y),
                        "seconds": refitted.seconds}
    return model, identity, replace(outcome, best_state=refitted.best_state,
                                    seconds=outcome.seconds + refitted.seconds)


def spectral_classifier(samples, settings: FineTuneSettings,
                        index: np.ndarray) -> SpectralKernel | None:
    """The kernel classifier on the spectra (and neighbourhood means) of the labelled pixels
    ``index`` (each polygon its own group), or None where its weight is 0."""
    if not settings.spectral_weight:
        return None
    pixels = samples.pixels
    return fit_spectral_kernel(samples.spectra[index], pixels.class_index[index],
                               pixels.feature_index[index], len(pixels.classes),
                               samples.adaptation.band_indices,
                               means=None if samples.means is None else samples.means[index],
                               context_size=settings.spectral_context,
                               whitening=samples.whitening, weight=settings.spectral_weight,
                               class_weighting=settings.class_weighting, seed=settings.seed)


def held_out_predictions(model, samples, settings: FineTuneSettings, train_index: np.ndarray,
                         held_index: np.ndarray, device, cancel, *,
                         fitted: SpectralKernel | None = None) -> np.ndarray:
    """Classes of the held-out pixels as the map would give them: the model's probabilities,
    mixed with those of a spectral classifier fitted on ``train_index`` alone (``fitted``, where
    the caller has it already)."""
    probabilities = predict_probabilities(samples.network(model),
                                          samples.windows[torch.from_numpy(held_index)],
                                          device=device, batch_size=max(64, settings.batch_size),
                                          cancel=cancel)
    spectral = fitted or spectral_classifier(samples, settings, train_index)
    if spectral is not None:
        probabilities = spectral.mix(probabilities, spectral.features(
            samples.spectra[held_index],
            None if samples.means is None else samples.means[held_index]))
    return probabilities.argmax(axis=1).astype(np.int64)


def _validation_metrics(model, samples, split, settings: FineTuneSettings, device,
                        notes: list[str], cancel, held_spectral: SpectralKernel | None) -> dict:
    """Accuracy on the held-out polygons; an empty matrix (and why) when none were held out.
    ``held_spectral``: the spectral classifier fitted on the training share."""
    classes = samples.pixels.classes
    if len(split.validation):
        predicted = held_out_predictions(model, samples, settings, split.train, split.validation,
                                         device, cancel, fitted=held_spectral)
        return metrics_from_labels(samples.pixels.class_index[split.validation], predicted,
                                   classes)
    notes.append("No validation share was asked for, so nothing was held out for validation."
                 if settings.val_fraction <= 0 else
                 f"No class has more than {MIN_TRAINING_FEATURES} features and "
                 f"{settings.min_validation_pixels} pixels, so nothing was held out for "
                 f"validation and training ran all its epochs.")
    return classification_metrics(np.zeros((len(classes), len(classes)), np.int64), classes)


def _validate(model, samples, split, settings: FineTuneSettings, outcome,
              identity: BackboneIdentity, notes: list[str], *, device, progress,
              cancel) -> tuple[dict, int]:
    """(metrics, segment size): the held-out polygons' figures and the segment vote they leave
    the map, both judged with one spectral classifier fitted on the training share."""
    held_spectral = (spectral_classifier(samples, settings, split.train)
                     if len(split.validation) else None)
    metrics = {**_validation_metrics(model, samples, split, settings, device, notes, cancel,
                                     held_spectral),
               **_run_figures(split, samples.pixels.classes, outcome, identity)}
    segment_size = _chosen_segment_size(model, samples, split, settings, held_spectral, metrics,
                                        notes, device=device, progress=progress, cancel=cancel)
    return metrics, segment_size


def _chosen_segment_size(model, samples, split, settings: FineTuneSettings,
                         held_spectral: SpectralKernel | None, metrics: dict, notes: list[str], *,
                         device, progress, cancel) -> int:
    """The segment vote the map and the adapter keep: the settings' own, or none where the
    held-out polygons are classified clearly better without it (models.jobs.vote_choice)."""
    if not (settings.validate_vote and settings.segment_size and len(split.validation)):
        return int(settings.segment_size)
    _report(progress, 1.0, "Checking the segment vote on the held-out polygons")
    choice = choose_segment_vote(
        model, samples, split.validation, segment_size=settings.segment_size,
        step=options.classify_step(settings.classify_mode, samples.window_size,
                                   settings.tile_step),
        spectral=held_spectral, device=device, batch_size=max(64, settings.batch_size),
        cancel=cancel)
    notes.append(choice.note(settings.segment_size))
    metrics["segment_vote"] = choice.to_dict()
    return int(settings.segment_size) if choice.keep else 0


def _final_spectral_classifier(samples, settings: FineTuneSettings, split, notes: list[str],
                               progress, fraction: float) -> SpectralKernel | None:
    """The spectral classifier the adapter keeps, fitted on every labelled pixel (it costs
    seconds, so the held-out pixels need not be given up), with a note of what the map mixes."""
    if not settings.spectral_weight:
        return None
    _report(progress, fraction, "Fitting the spectral classifier")
    spectral = spectral_classifier(samples, settings, np.arange(len(samples.pixels)))
    held = (f" (the validation figures come from one fitted without the "
            f"{len(split.validation)} held-out pixels)" if len(split.validation) else "")
    notes.append(f"The map mixes the network's class probabilities with those of a spectral "
                 f"classifier: {spectral.describe()}, fitted on all "
                 f"{len(samples.pixels)} labelled pixels{held}.")
    return spectral


def _adapter_record(samples, settings: FineTuneSettings, model, identity: BackboneIdentity,
                    outcome, metrics: dict, adapter_config, *, name: str, sensor: str,
                    raster_path, class_field: str, processes: int,
                    spectral: SpectralKernel | None, segment_size: int) -> AdapterRecord:
    """What the adapter file keeps: the trained tensors, and all a later classify needs
    (``segment_size``: the vote the map keeps, _chosen_segment_size)."""
    info, window_size, input_size = samples.info, samples.window_size, samples.input_size
    return AdapterRecord(
        name=name, trainable_state=outcome.best_state, adapter_config=adapter_config.to_dict(),
        band_adaptation=samples.adaptation.to_state(), window_size=window_size,
        input_size=input_size, classes=samples.pixels.classes,
        sensor={"name": sensor, "band_count": info.band_count,
                "wavelengths_nm": info.wavelengths_nm, "fwhm_nm": info.fwhm_nm,
                "good_bands": info.good_bands},
        backbone={"config": dict(model.config), "weights": identity.to_dict()},
        training={**settings.to_dict(), "window_size": window_size, "input_size": input_size,
                  "best_epoch": outcome.best_epoch, "epochs_run": outcome.epochs_run,
                  "batch_size_used": outcome.batch_size, "seconds": outcome.seconds,
                  "history": outcome.history, "parameters": adapters.count_parameters(model),
                  "training_raster": str(raster_path), "class_field": class_field,
                  "rounds": metrics["rounds"], "refit": metrics.get("refit"),
                  "processes": processes},
        metrics=metrics,
        software={"torch": torch.__version__, "python": platform.python_version()},
        postprocess={"classify_mode": settings.classify_mode,
                     "tile_step": options.classify_step("tile", window_size, settings.tile_step),
                     "segment_size": int(segment_size),
                     "majority_size": int(settings.majority_size),
                     "sieve_pixels": int(settings.sieve_pixels)},
        spectral=spectral.to_state() if spectral is not None else {})


def _describe_mode(mode: str, window_size: int, tile_step: int) -> str:
    step = options.classify_step(mode, window_size, tile_step)
    return (f"tile mode (a window every {step} pixels, features resampled to each pixel)"
            if step > 1 else "a window per pixel")


def _report_details(samples, settings: FineTuneSettings, identity: BackboneIdentity, outcome,
                    num_train: int, spectral: SpectralKernel | None, *, raster_path, vector_path,
                    class_field: str, vote: dict | None = None) -> dict:
    """The run's settings as the report's Details table shows them (``vote``: the segment vote's
    check on the held-out polygons, VoteChoice.to_dict)."""
    segment_vote = (f"superpixels of {settings.segment_size} pixels"
                    if settings.segment_size else "off")
    if vote is not None:
        segment_vote += (", kept" if vote["keep"] else ", left out") + (
            f" (held-out polygons: accuracy {vote['accuracy_with']:.1%} with it, "
            f"{vote['accuracy_without']:.1%} without)")
    sampled = "; one of the four per step, drawn by its weight" if samples.sample_corners else ""
    return {"raster": str(raster_path), "training layer": str(vector_path),
            "class field": class_field, "method": adapters.describe_method(settings.method),
            "band adaptation": samples.adaptation.method,
            "backbone": identity.describe(),
            "window / input size": f"{samples.window_size} / {samples.input_size}",
            "schedule": (f"{settings.epochs_for(num_train)} epochs of {num_train} windows, "
                         f"batches of {settings.batch_size}, learning rate "
                         f"{settings.learning_rate:g}"),
            "epochs run (best)": f"{outcome.epochs_run} ({outcome.best_epoch})",
            "head": (f"pooled tokens and the centre pixel ({settings.pixel_dim}), context "
                     f"dropout {settings.context_dropout:g}" if settings.pixel_dim
                     else "pooled tokens"),
            "class weighting": options.CLASS_WEIGHTINGS[settings.class_weighting],
            "training windows": (f"tile mode's (each pixel between the windows of a grid every "
                                 f"{samples.tile_step} pixels{sampled})"
                                 if samples.tile_step > 1 else "centred on each labelled pixel"),
            "classifying": _describe_mode(settings.classify_mode, samples.window_size,
                                          settings.tile_step),
            "spectral classifier": (spectral.describe() if spectral is not None else "off"),
            "segment vote": segment_vote,
            "clean-up": _describe_cleanup(settings)}


def _write_report(metrics: dict, details: dict, staged: StagedFiles, report_path) -> None:
    """The HTML report of the validation and its metrics as JSON beside it, staged."""
    write_metrics_json(metrics, staged.stage(report_files(report_path)[1]))
    write_html_report(metrics, staged.stage(report_path), title="HyperAdapt validation accuracy",
                      details=details)


def _run_figures(split, classes, outcome, identity: BackboneIdentity) -> dict:
    """What a fine-tune's metrics tell beside the validation accuracy: the split, the epochs and
    the backbone."""
    return {"kind": "validation",
            "split": {"train_pixels": int(len(split.train)),
                      "validation_pixels": int(len(split.validation)),
                      "train_features": split.train_features,
                      "validation_features": split.validation_features,
                      "training_only_classes": [classes[c].name
                                                for c in split.training_only_classes]},
            "best_epoch": outcome.best_epoch, "epochs_run": outcome.epochs_run,
            "stopped_early": outcome.stopped_early,
            "random_start": identity.is_random_start,
            "backbone": identity.describe()}


def _classify_scene(model, samples, record: AdapterRecord, device, output_path,
                    confidence_path, *, batch_size: int, progress, cancel) -> None:
    """The training raster classified with the model just trained, as its adapter file will
    classify it (mode, spectral classifier as saved, vote, clean-up)."""
    adapters.merge_adapters(model)
    with RasterReader(samples.info) as reader:
        classify_and_clean(reader=reader, model=model, adaptation=samples.adaptation,
                           classes=samples.pixels.classes, output_path=output_path,
                           window_size=samples.window_size, device=device,
                           step=record.classify_step(),
                           segment_size=record.segment_size, majority_size=record.majority_size,
                           sieve_pixels=record.sieve_pixels, batch_size=batch_size,
                           spectral=record.spectral_kernel, confidence_path=confidence_path,
                           progress=progress, cancel=cancel)


def fine_tune(raster_path: str, vector_path: str, class_field: str, adapter_path: str, *,
              settings: FineTuneSettings = FineTuneSettings(), layer_name: str | None = None,
              class_colors: dict | None = None, class_names: dict | None = None,
              sensor: str | None = None, adapter_name: str | None = None,
              classification_path: str | None = None, confidence_path: str | None = None,
              report_path: str | None = None,
              progress=None, cancel=None, on_epoch=None) -> FineTuneResult:
    """Fine-tune SpectralGPT on labelled polygons or points and save the adapter file.

    Optionally classifies the same raster afterwards (``classification_path``, with a
    ``confidence_path``) and writes an HTML report of the validation accuracy (``report_path``,
    with the metrics as JSON beside it). ``on_epoch(record)`` receives each epoch's loss and
    validation accuracy. ``class_colors`` (class value as text -> RGB) and ``class_names`` (integer
    class code as text -> name) usually come from the training layer's categorized QGIS style.
    Every output is written under a temporary name and all are renamed together at the end
    (models.stores.files.StagedFiles): a failure or cancel leaves the previous results as they were.
    """
    started = time.perf_counter()
    settings = (settings or FineTuneSettings()).resolved()
    check_job_files({"adapter file": adapter_path,
                     "classification": raster_files(classification_path),
                     "confidence raster": raster_files(confidence_path)[::2],
                     "report": report_files(report_path)},
                    {"input raster": raster_path, "training layer": layer_files(vector_path),
                     "weights file": settings.weights},
                    needed_bytes=map_bytes(raster_path, classification_path, confidence_path))
    if not adapter_path:
        raise HyperAdaptError("No adapter file name was given.")
    adapter_config = _adapter_config(settings)
    staged = StagedFiles()
    rank, world = distributed_rank()
    try:
        samples = _training_samples(raster_path, vector_path, class_field, settings,
                                    layer_name=layer_name, class_colors=class_colors,
                                    class_names=class_names, progress=progress, cancel=cancel)
        info, classes = samples.info, samples.pixels.classes
        notes = list(samples.notes)
        # Continuing from an adapter and saving over it is allowed: the new one replaces it
        # only at the end (StagedFiles), after the old one has been read.
        warm = _warm_start(settings, samples, notes)
        split, train_x, train_y, val_x, val_y = _hold_out(samples, settings, notes)

        _report(progress, 0.1, "Building the model")
        device = choose_device(settings.device)
        end_of_training = 0.85 if classification_path else 0.97
        refit = settings.refit and val_x is not None
        # A refit trains about as long again as the first training.
        first_end = (0.12 + end_of_training) / 2 if refit else end_of_training
        model, identity, outcome = _train_rounds(
            samples, settings, train_x, train_y, val_x, val_y, device=device, warm=warm,
            notes=notes, progress=_scaled(progress, 0.12, first_end), cancel=cancel,
            on_epoch=on_epoch)
        metrics, segment_size = _validate(model, samples, split, settings, outcome, identity,
                                          notes, device=device, cancel=cancel,
                                          progress=_scaled(progress, 0.12, first_end))
        if refit:
            model, identity, outcome = _refit(
                samples, settings, train_x, train_y, val_x, val_y, outcome, metrics,
                device=device, warm=warm, notes=notes,
                progress=_scaled(progress, first_end, end_of_training), cancel=cancel)
        spectral = _final_spectral_classifier(samples, settings, split, notes, progress,
                                              end_of_training)
        metrics["notes"] = list(notes)      # every note so far, the refit's included
        metrics["rounds"] = labelling_rounds(warm, metrics)
        record = _adapter_record(
            samples, settings, model, identity, outcome, metrics, adapter_config,
            name=adapter_name or Path(adapter_path).stem, sensor=sensor or info.sensor,
            raster_path=raster_path, class_field=class_field, processes=world, spectral=spectral,
            segment_size=segment_size)

        # Under torchrun every process has trained the same model; rank 0 alone writes.
        if classification_path and rank == 0:
            _report(progress, end_of_training, "Classifying the raster")
            _classify_scene(model, samples, record, device, staged.stage(
                classification_path, raster_files), staged.stage(confidence_path, raster_files)
                if confidence_path else None, batch_size=max(64, settings.batch_size),
                progress=_scaled(progress, end_of_training, 0.97), cancel=cancel)
        raise_if_cancelled(cancel)
        if report_path and rank == 0:
            _write_report(metrics, _report_details(
                samples, settings, identity, outcome, len(train_x), spectral,
                raster_path=raster_path, vector_path=vector_path, class_field=class_field,
                vote=metrics.get("segment_vote")), staged, report_path)
        raise_if_cancelled(cancel)
        adapter_bytes = save_adapter_file(record, staged.stage(adapter_path)) if rank == 0 else 0
        raise_if_cancelled(cancel)
        staged.commit()
        wait_for_all(world)
        _report(progress, 1.0, "Done")
    except BaseException:
        staged.discard()
        raise
    return FineTuneResult(
        adapter_path=str(adapter_path),
        classification_path=str(classification_path) if classification_path else None,
        confidence_path=str(confidence_path) if classification_path and confidence_path else None,
        report_path=str(report_path) if report_path else None, metrics=metrics, classes=classes,
        seconds=time.perf_counter() - started, adapter_bytes=adapter_bytes, backbone=identity,
        notes=notes, history=outcome.history)
