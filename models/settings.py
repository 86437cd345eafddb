"""FineTuneSettings: how to fine-tune, with every default taken from models.options.

Torch-free, like models.options, so the dialog and the Processing algorithms build settings (and
get their sentences about bad values) without loading torch.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from . import options
from .errors import HyperAdaptError

BACKBONE_NAMES = tuple(options.BACKBONES)


def check_window_size(window_size) -> int:
    """The window size as an int, or a HyperAdaptError with options.window_size_problem's sentence."""
    if isinstance(window_size, float) and window_size.is_integer():
        window_size = int(window_size)
    problem = options.window_size_problem(window_size)
    if problem:
        raise HyperAdaptError(problem)
    return int(window_size)


@dataclass
class FineTuneSettings:
    """How to fine-tune. Every default comes from models.options; ``preset="fast"`` trades
    accuracy for time.

    Args:
        method: fine-tuning method id (options.METHODS), KronA+ by default.
        steps: optimizer steps of the schedule (epochs follow from the training pixels).
        min_passes: the schedule runs at least this many epochs, within
            options.MAX_SCHEDULED_STEPS steps, so a larger training set gets more than ``steps``;
            0: ``steps`` alone.
        epochs: a fixed number of passes over the training windows instead of ``steps``.
        learning_rate: peak AdamW learning rate.
        lr_ratio: lambda of the *_plus methods (the zero-initialised factor learns this much faster).
        batch_size: windows per step (halved automatically after a GPU out-of-memory error).
        window_size: pixels around the centre pixel (odd), before resizing.
        input_size: model input side (32 -> 64 tokens).
        band_adaptation: one of options.BAND_ADAPTATIONS (a backbone file brings its own).
        targets: linear layers of each block that get an adapter.
        rank: LoRA / LoKr rank.
        factor_shape: KronA / LoKr first-factor shape, or None for the default.
        val_fraction: share of each class's features held out for validation.
        min_validation_pixels: a class with fewer labelled pixels keeps them all for training.
        patience: epochs without a better validation result before stopping.
        refit: after a validation, train again on every pixel, held-out ones included, for the
            epochs the validation chose; the validation figures stay those of the first model.
        seed: seeds the split, the sampling, the random start and the training.
        device: "auto", "cuda" or "cpu".
        backbone: "base" (ViT-B, the official shape) or "tiny" (tests).
        weights: official checkpoint (.pth) or a HyperAdapt backbone file; None uses the
            downloaded official weights, if any.
        random_start: allow running without pretrained weights (the result says so).
        preset: "paper" or "fast" (input 16, at most options.FAST_MAX_STEPS steps, whatever the
            number of pixels).
        backbone_overrides: SpectralGPT keyword arguments, e.g. {"depth": 2, "embed_dim": 32}.
        weight_decay: AdamW weight decay.
        warmup_fraction: share of the steps spent warming the learning rate up.
        min_pixels_per_class: fewer usable pixels in a class is an error naming the class.
        max_pixels_per_class: training and validation pixels kept per class (seeded subsample),
            which bounds memory for large polygons.
        fit_pixels: scene pixels sampled to fit the band adaptation.
        augment: random flips and quarter turns of the training windows.
        pixel_dim: width of the centre pixel's embedding in the head (spectralgpt.PixelHead);
            0: a linear head on the pooled tokens alone.
        context_dropout: share of training windows whose pooled tokens the head does not see.
        class_weighting: "balanced" (each class counts the same in the network's loss and the
            spectral classifier's fit, however many pixels it has) or "none" (each pixel counts
            the same); options.CLASS_WEIGHTINGS.
        classify_mode: how the scene is classified after training and by the adapter later:
            "tile" (a window every few pixels, features resampled) or "window" (one per pixel).
        tile_step: tile mode's grid step in pixels, for classifying and for training in tile
            mode; 0: options.TILE_STEP_SHARE of the window.
        training_mode: how the training pixels are seen: "window" (a window centred on each),
            "tile" (between the windows of tile mode's grid, as tile mode classifies them;
            models.learning.tile_training) or "sampled" (as "tile", but each step sends one of
            the four grid windows, drawn by its bilinear weight).
        spectral_weight: share of a kernel classifier on each pixel's spectrum in
            the map's probabilities (models.learning.spectral_kernel); 0: the network alone.
        spectral_context: odd side of the neighbourhood whose mean spectrum the kernel classifier
            may see instead of or beside the pixel's (chosen by leave-out accuracy); 0 or 1: the
            pixel's spectrum alone.
        spectral_whitening: the kernel classifier compares spectra in units of the scene's
            noise (models.data.bands.noise_whitening) instead of each band standardised, where
            neighbour differences measure the noise (not where they vary like the scene).
        segment_size: superpixel side of the segment vote after classifying (0: no vote).
        validate_vote: where polygons are held out for validation, leave the segment vote out
            if that puts more of their pixels right than wrong by more than chance
            (models.jobs.vote_choice).
        majority_size: side of the majority filter after the vote (odd; 0: none).
        sieve_pixels: patches smaller than this many pixels are merged into a neighbour (0: none).
        self_training_rounds: rounds of training again with confident pseudo-labels of the
            scene's other pixels (models.learning.pseudo); 0: none.
        pseudo_threshold: the least top probability of a pseudo-labelled pixel.
        warm_start: an adapter file made earlier on the same backbone with the same method: its
            adapter (and its head, where the classes are the same) is the start, and training
            runs options.WARM_START_STEP_SHARE of the steps and of the patience; None: a fresh
            adapter.
    """

    method: str = options.DEFAULT_METHOD
    steps: int = options.DEFAULT_STEPS
    min_passes: int = options.DEFAULT_MIN_PASSES
    epochs: int | None = None
    learning_rate: float = options.DEFAULT_LEARNING_RATE
    lr_ratio: float = options.DEFAULT_LR_RATIO
    batch_size: int = options.DEFAULT_BATCH_SIZE
    window_size: int = options.DEFAULT_WINDOW_SIZE
    input_size: int = options.DEFAULT_INPUT_SIZE
    band_adaptation: str = options.DEFAULT_BAND_ADAPTATION
    targets: tuple[str, ...] = options.DEFAULT_TARGETS
    rank: int = options.DEFAULT_RANK
    factor_shape: tuple[int, int] | None = None
    val_fraction: float = options.DEFAULT_VAL_FRACTION
    min_validation_pixels: int = options.MIN_VALIDATION_CLASS_PIXELS
    patience: int = options.DEFAULT_PATIENCE
    refit: bool = options.DEFAULT_REFIT
    seed: int = 0
    device: str = "auto"
    backbone: str = options.DEFAULT_BACKBONE
    weights: str | None = None
    random_start: bool = False
    preset: str = options.DEFAULT_PRESET
    backbone_overrides: dict | None = None
    weight_decay: float = options.DEFAULT_WEIGHT_DECAY
    warmup_fraction: float = options.DEFAULT_WARMUP_FRACTION
    min_pixels_per_class: int = 1
    max_pixels_per_class: int = 10000
    fit_pixels: int = 20000
    augment: bool = True
    pixel_dim: int = options.DEFAULT_PIXEL_DIM
    context_dropout: float = options.DEFAULT_CONTEXT_DROPOUT
    class_weighting: str = options.DEFAULT_CLASS_WEIGHTING
    classify_mode: str = options.DEFAULT_CLASSIFY_MODE
    tile_step: int = options.DEFAULT_TILE_STEP
    training_mode: str = options.DEFAULT_TRAINING_MODE
    spectral_weight: float = options.DEFAULT_SPECTRAL_WEIGHT
    spectral_context: int = options.DEFAULT_SPECTRAL_CONTEXT
    spectral_whitening: bool = options.DEFAULT_SPECTRAL_WHITENING
    segment_size: int = options.DEFAULT_SEGMENT_SIZE
    validate_vote: bool = options.DEFAULT_VALIDATE_VOTE
    majority_size: int = options.DEFAULT_MAJORITY_SIZE
    sieve_pixels: int = options.DEFAULT_SIEVE_PIXELS
    self_training_rounds: int = options.DEFAULT_SELF_TRAINING_ROUNDS
    pseudo_threshold: float = options.DEFAULT_PSEUDO_THRESHOLD
    warm_start: str | None = None

    def resolved(self) -> FineTuneSettings:
        """A checked copy with the preset applied."""
        if self.preset not in options.PRESETS:
            raise HyperAdaptError(f"The preset '{self.preset}' is unknown; choose one of "
                                  f"{', '.join(options.PRESETS)}.")
        settings = dataclasses.replace(self, targets=tuple(self.targets))
        if settings.preset == "fast":
            settings = dataclasses.replace(settings, input_size=options.FAST_INPUT_SIZE,
                                           steps=min(int(settings.steps), options.FAST_MAX_STEPS),
                                           min_passes=0)
        if settings.method not in options.METHODS:
            raise HyperAdaptError(f"Unknown fine-tuning method '{settings.method}'; choose one of "
                                  f"{', '.join(options.METHODS)}.")
        if settings.band_adaptation not in options.BAND_ADAPTATIONS:
            raise HyperAdaptError(f"The band adaptation '{settings.band_adaptation}' is unknown; "
                                  f"choose one of {', '.join(options.BAND_ADAPTATIONS)}.")
        if settings.backbone not in options.BACKBONES:
            raise HyperAdaptError(f"The backbone '{settings.backbone}' is unknown; choose one of "
                                  f"{', '.join(options.BACKBONES)}.")
        _check_whole(settings.steps, "number of steps", 1, options.MAX_STEPS)
        _check_whole(settings.min_passes, "least number of epochs", 0, options.MAX_STEPS)
        if settings.epochs is not None:
            _check_whole(settings.epochs, "number of epochs", 1, options.MAX_STEPS)
        _check_whole(settings.batch_size, "batch size", 1, options.MAX_BATCH_SIZE)
        _check_whole(settings.pixel_dim, "pixel embedding width", 0, 4096)
        _check_whole(settings.min_validation_pixels, "least pixels of a validated class", 0,
                     10**9)
        problem = (options.classify_mode_problem(settings.classify_mode)
                   or options.training_mode_problem(settings.training_mode)
                   or options.class_weighting_problem(settings.class_weighting))
        if problem:
            raise HyperAdaptError(problem)
        problem = options.spectral_weight_problem(settings.spectral_weight)
        if problem:
            raise HyperAdaptError(problem)
        _check_whole(settings.spectral_context, "spectral classifier's neighbourhood", 0,
                     options.MAX_SPECTRAL_CONTEXT)
        if settings.spectral_context and settings.spectral_context % 2 == 0:
            raise HyperAdaptError(f"The spectral classifier's neighbourhood must be an odd number "
                                  f"of pixels across, or 0 for each pixel's spectrum alone (got "
                                  f"{settings.spectral_context}).")
        _check_whole(settings.tile_step, "tile step", 0, options.MAX_WINDOW_SIZE)
        _check_whole(settings.segment_size, "superpixel size", 0, options.MAX_SEGMENT_SIZE)
        _check_whole(settings.majority_size, "majority filter size", 0, options.MAX_MAJORITY_SIZE)
        if settings.majority_size and (settings.majority_size < 3 or settings.majority_size % 2 == 0):
            raise HyperAdaptError(f"The majority filter needs an odd window of at least 3 pixels "
                                  f"(got {settings.majority_size}).")
        _check_whole(settings.sieve_pixels, "sieve threshold", 0, options.MAX_SIEVE_PIXELS)
        _check_whole(settings.self_training_rounds, "number of self-training rounds", 0,
                     options.MAX_SELF_TRAINING_ROUNDS)
        if not 0.0 < settings.pseudo_threshold <= 1.0:
            raise HyperAdaptError("The pseudo-label threshold must be above 0 and at most 1.")
        problem = options.input_size_problem(settings.input_size)
        if problem:
            raise HyperAdaptError(problem)
        settings.window_size = check_window_size(settings.window_size)
        if not (isinstance(settings.learning_rate, (int, float))
                and math.isfinite(settings.learning_rate) and settings.learning_rate > 0):
            raise HyperAdaptError("The learning rate must be a positive number.")
        if not 0.0 <= settings.val_fraction < 1.0:
            raise HyperAdaptError("The validation share must be at least 0 and below 1.")
        if not 0.0 <= settings.context_dropout < 1.0:
            raise HyperAdaptError("The context dropout must be at least 0 and below 1.")
        return settings

    def two_views(self) -> bool:
        """Whether the head classifies with the more confident of its two views (with and without
        the pooled tokens): it learned both when trained with context dropout."""
        return bool(self.pixel_dim) and self.context_dropout > 0

    def epochs_for(self, num_train: int) -> int:
        """Passes over ``num_train`` training windows: the fixed epochs; or enough for the steps
        and at least ``min_passes``, as far as options.MAX_SCHEDULED_STEPS steps allow (a share
        of them for a warm start)."""
        if self.epochs is not None:
            return self._warm_share(int(self.epochs))
        steps_per_epoch = max(1, math.ceil(num_train / max(1, int(self.batch_size))))
        epochs = max(int(self.steps) / steps_per_epoch,
                     min(int(self.min_passes), options.MAX_SCHEDULED_STEPS // steps_per_epoch))
        return self._warm_share(epochs)

    def patience_for(self) -> int:
        """Epochs without a better validation result before stopping: a warm start's shorter
        schedule waits the same share of them, as it begins from a model that already fits."""
        return self._warm_share(int(self.patience))

    def _warm_share(self, count: float) -> int:
        """``count`` epochs, or options.WARM_START_STEP_SHARE of them for a warm start; at least
        one."""
        share = options.WARM_START_STEP_SHARE if self.warm_start else 1.0
        return max(1, math.ceil(count * share))

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["targets"] = list(self.targets)
        data["factor_shape"] = list(self.factor_shape) if self.factor_shape else None
        return data


def _check_whole(value, label: str, low: int, high: int) -> None:
    problem = options.whole_number_problem(value, label, low, high)
    if problem:
        raise HyperAdaptError(problem)
