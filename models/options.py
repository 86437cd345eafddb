"""Every choice of a fine-tuning and its default, in one place: the Fine-tune dialog, the Processing
algorithms and the engine all read these, and nothing copies them.

This module imports nothing but the standard library, so QGIS can list the Processing algorithms
and build the dialogs without loading torch.

The defaults are what the accuracy bench (bench/accuracy.py, results in
bench/results/accuracy.md) found best across its scenes and samplings; the comments give the
reason for each and where it was measured.
"""
from __future__ import annotations

# -- methods --------------------------------------------------------------------------------------
# Method ids are stored in adapter files: never rename one.
METHODS = {"krona_plus": "KronA+", "krona": "KronA", "lora_plus": "LoRA+", "lora": "LoRA",
           "lokr": "LoKr", "fft": "Full fine-tuning", "head": "Head only"}
DEFAULT_METHOD = "krona_plus"
# Methods that add adapter layers; "fft" trains everything and "head" only the classifier.
ADAPTER_METHODS = ("krona_plus", "krona", "lora_plus", "lora", "lokr")
# Methods whose zero-initialised factor learns lambda times faster (LoRA+, KronA+).
PLUS_METHODS = ("krona_plus", "lora_plus")
# Methods with a rank (LoRA, LoKr) and with a Kronecker factor shape (KronA, LoKr).
RANK_METHODS = ("lora_plus", "lora", "lokr")
FACTOR_METHODS = ("krona_plus", "krona", "lokr")
TARGETS = ("attn.q", "attn.k", "attn.v", "attn.proj", "mlp.fc1", "mlp.fc2")
# The query and value projections, as in Ligan et al. (2025). All six layers on the
# scene-pretrained tiny backbone: +0.4 and +1.9 OA points on Indian Pines, -0.2 and -0.1 on EnMAP
# Potsdam, for 1.6 times the training time and twice the adapter
# (bench/results/accuracy_network_alone.md):
# within the seeds' spread, so q and v stay. Measured again with the spectral classifier and the
# class weights (bench/results/accuracy_all_layers.md, the same 3 draws): -0.1 / -0.2 / +0.2 /
# -1.5 against q and v, for about 1.6 times the time per run.
DEFAULT_TARGETS = ("attn.q", "attn.v")
DEFAULT_RANK = 8

# -- band adaptation ------------------------------------------------------------------------------
# Ids are stored in adapter and backbone files: never rename one. Processing passes choices by
# position, so new ones go at the end.
BAND_ADAPTATIONS = {
    "pca": "PCA to 12 components (paper)",
    "s2": "Resampling to the 12 Sentinel-2 bands (needs wavelengths)",
    "mnf": "MNF to 12 components (noise-ordered, one common scale)",
}
# With the official weights: the paper's PCA. For a backbone pretrained on the user's scenes
# (PRETRAIN_BAND_ADAPTATION) the backbone file brings its own.
DEFAULT_BAND_ADAPTATION = "pca"
# Pretraining on the sensor's own scenes: MNF. On Indian Pines an SVM on 12 MNF components scored
# about 20 OA points more than on 12 per-component-scaled principal components; the default path
# on a backbone pretrained on MNF components scored 5 to 11 points more than on a PCA backbone on
# three of the bench's four scene x sampling cases, 1.4 less on the fourth
# (bench/results/accuracy_network_alone.md).
PRETRAIN_BAND_ADAPTATION = "mnf"

# -- backbones and presets ------------------------------------------------------------------------
DEVICES = ("auto", "cuda", "cpu")
BACKBONES = {"base": "ViT-Base (the official SpectralGPT shape)",
             "tiny": "Tiny (quick tests; not for real maps)"}
DEFAULT_BACKBONE = "base"
PRESETS = {"paper": "As in the paper (input 32)", "fast": "Fast (input 16, fewer steps)"}
DEFAULT_PRESET = "paper"
FAST_INPUT_SIZE = 16
FAST_MAX_STEPS = 200
# Backbones pretrained on the user's own scenes (models.jobs.pretraining).
PRETRAIN_PRESETS = {"tiny": "Tiny (from scratch, fast on a laptop CPU)",
                    "base": "Base (the official ViT-B shape; continues from the official weights)"}
DEFAULT_PRETRAIN_PRESET = "tiny"
DEFAULT_PRETRAIN_MINUTES = 15.0
# 40 epochs take about 4 minutes on 2 cores. Three times as many (7.5 minutes here) lowered the
# masked loss further but moved the default path's OA by -0.2 / -1.2 / -2.2 / +0.3 points (Indian
# Pines polygons / scattered, EnMAP Potsdam polygons / scattered; 5 draws, window mode with the
# segment vote), inside the draws' spread (1.1 to 3.4 points): no reason to make users wait longer.
DEFAULT_PRETRAIN_EPOCHS = 40
# Windows the backbone is pretrained (and then fine-tuned) on; resized to FAST_INPUT_SIZE.
PRETRAIN_WINDOW_SIZE = 15

# -- windows --------------------------------------------------------------------------------------
DEFAULT_WINDOW_SIZE = 9
DEFAULT_INPUT_SIZE = 32
MAX_WINDOW_SIZE = 63
PATCH_SIZE = 8
MAX_INPUT_SIZE = 256


def window_size_problem(window_size) -> str | None:
    """The sentence a window size earns, or None when it is usable."""
    if isinstance(window_size, bool) or not isinstance(window_size, int):
        return f"The window size must be a whole number of pixels (got {window_size!r})."
    if window_size < 1 or window_size % 2 == 0:
        return (f"The window size must be an odd number of pixels (got {window_size}), so that "
                f"one pixel is its centre.")
    if window_size > MAX_WINDOW_SIZE:
        return (f"The window size must be at most {MAX_WINDOW_SIZE} pixels (got {window_size}); "
                f"larger windows cost memory without helping a per-pixel classifier.")
    return None


def input_size_problem(input_size) -> str | None:
    """The sentence a model input size earns, or None when it is usable."""
    if isinstance(input_size, bool) or not isinstance(input_size, int):
        return f"The model input size must be a whole number of pixels (got {input_size!r})."
    if input_size < PATCH_SIZE or input_size % PATCH_SIZE or input_size > MAX_INPUT_SIZE:
        return (f"The model input size must be a multiple of {PATCH_SIZE} pixels between "
                f"{PATCH_SIZE} and {MAX_INPUT_SIZE} (got {input_size}).")
    return None


# -- the schedule ---------------------------------------------------------------------------------
# Counted in optimizer steps, whose epochs follow from the pixels (at least one). 300 steps of 32
# windows at 3e-3 against the paper's 30 epochs at 1e-3 (about 50 steps at 10 px/class): +3.7 and
# +10.7 OA points on Indian Pines, -2.4 and +0.3 on EnMAP Potsdam
# (bench/results/accuracy_network_alone.md).
DEFAULT_STEPS = 300
MAX_STEPS = 100_000
# ... but steps alone leave a larger training set too few passes: 50 pixels per class of Indian
# Pines (693 scattered pixels) made 14 epochs of the 300 steps and scored 86.6 % OA, under Random
# Forest on PCA + 15 x 15 means (91.2 %). At least 50 epochs gave 93.3 % there, +3.3 points with
# 50-pixel polygons, and -0.3 / +0.1 on EnMAP Potsdam (bench/results/accuracy_50px.md; 25 epochs
# gave 90.8 % in a screen of the same draws). With 10 pixels per class the 300 steps already make
# 60 to 150 epochs, so nothing changes there. MAX_SCHEDULED_STEPS bounds the time: ten times the
# steps, reached from about 1,900 training pixels.
DEFAULT_MIN_PASSES = 50
MAX_SCHEDULED_STEPS = 3000
DEFAULT_BATCH_SIZE = 32
MAX_BATCH_SIZE = 4096
# KronA+ on a backbone pretrained on the scene: 3e-3 beat 1e-3 on every seed (bench/README.md).
DEFAULT_LEARNING_RATE = 3e-3
DEFAULT_LR_RATIO = 4.0
MIN_LR_RATIO = 0.01
DEFAULT_WEIGHT_DECAY = 0.05
DEFAULT_WARMUP_FRACTION = 0.1
# Whole polygons of classes with more than two polygons and at least MIN_VALIDATION_CLASS_PIXELS
# pixels are held out for validation (early stopping and the report); other classes train on all
# of theirs. With 10 pixels per class, holding a quarter out of the small classes too cost the
# default path 3.3 (Indian Pines) and 6.7 (EnMAP Potsdam) OA points at scattered sampling
# (bench/results/accuracy_network_alone.md): a handful of pixels is worth more for training than
# for a validation figure, and the step-counted schedule needs no early stopping.
# With 100 pixels per class, where classes reach the threshold, training on every pixel instead
# moved OA by +1.8 / +2.6 / -0.5 / +0.6 points (Indian Pines polygons / scattered, EnMAP Potsdam
# polygons / scattered) for 1.7 times the training time (no early stop), and training again on
# every pixel after validating (refit) by +1.5 / +2.0 / -3.7 / +0.3 (bench/results/
# accuracy_100px.md, 5 draws): Potsdam's polygons lose with either (in 3 and 4 draws of 5), so the
# hold-out stays, with its validation figure and early stop, and the refit is an option.
DEFAULT_VAL_FRACTION = 0.25
MIN_VALIDATION_CLASS_PIXELS = 100
DEFAULT_PATIENCE = 10
DEFAULT_REFIT = False

# -- class weights --------------------------------------------------------------------------------
# How much each class counts in training, in the network's loss and in the spectral classifier's
# least squares (models.learning.class_balance). People draw what is easy to draw: one large
# polygon over a lake, a few pixels of a rare crop. "balanced" weighs each pixel by the inverse of
# its class's share, so every class counts the same; with as many pixels in every class it is the
# plain fit, to the bit. With 5 to 80 pixels per class (bench/results/accuracy_uneven.md, 5 draws)
# it moved OA by +0.3 / +1.5 / +5.8 / +7.7 points (Indian Pines polygons / scattered, EnMAP
# Potsdam polygons / scattered), better in 17 draws of 20, and put the default ahead of the
# strongest classical on Potsdam (+3.6 and +6.5; without the weights it lost to an SVM on the
# spectra by 2.3 and 1.9). Where a class is rare in the scene as well as in the training pixels
# (25 to 100 pixels per class, rare classes giving half theirs;
# bench/results/accuracy_default_*px.md) they cost up to 1.2 OA points (Indian Pines' polygons,
# 25 and 50 per class) and 1.6 (Potsdam's scattered pixels, 100 per class, for AA +1.7): less
# than they gain. The square root of the weights lost to them by 2.1 and 4.5 points on Potsdam's
# uneven draws (bench/README.md, accuracy).
# Keys are stored in adapter files and parameter values: new ones go at the end.
CLASS_WEIGHTINGS = {"balanced": "Balanced: every class counts the same, however many pixels it has",
                    "none": "None: every pixel counts the same"}
DEFAULT_CLASS_WEIGHTING = "balanced"


def class_weighting_problem(weighting) -> str | None:
    """The sentence for a class weighting the engine does not know, or None."""
    if weighting not in CLASS_WEIGHTINGS:
        return (f"The class weighting '{weighting}' is unknown; choose one of "
                f"{', '.join(CLASS_WEIGHTINGS)}.")
    return None


def whole_number_problem(value, label: str, low: int, high: int) -> str | None:
    """The sentence for ``value`` that is not a whole number from low to high, or None."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return f"The {label} must be a whole number from {low} to {high} (got {value!r})."
    return None


def batch_size_problem(batch_size) -> str | None:
    """The sentence for a batch size outside 1..MAX_BATCH_SIZE, or None."""
    return whole_number_problem(batch_size, "batch size", 1, MAX_BATCH_SIZE)


# -- the classifier head --------------------------------------------------------------------------
# The centre pixel's inputs enter the head beside the pooled tokens (spectralgpt.PixelHead):
# +2.1 to +6.9 OA points on the bench's four cases.
# Measured and not adopted: the head also seeing the pixel's next MNF components (those after the
# backbone's 12) or its whole standardised spectrum, as an SVM does. OA points against the head on
# the 12 inputs (Indian Pines polygons / scattered, EnMAP Potsdam polygons / scattered; window
# mode with the segment vote, 5 draws, 3 for the last two): 8 more components +1.5 / +1.0 / -0.5
# / +0.8, 20 more +1.0 / -1.7 / +1.6 / -0.2, 36 more +2.4 / -3.5 / +1.6 / +0.8, the spectrum
# -1.7 / -0.8 / -4.6 / +0.9: none wins everywhere, and all are inside the draws' spread of 3 to
# 7 points.
DEFAULT_PIXEL_DIM = 64
# Share of training windows whose pooled tokens the head does not see, so the pixel path learns to
# classify on its own: on EnMAP Potsdam, where neighbouring pixels often differ in class, the
# window's context alone overfits: +8.0 and +2.8 OA points there, +0.6 and -2.9 on Indian Pines
# (bench/results/accuracy_network_alone.md). With the spectral classifier mixed in, none at all
# still lost 1.4 / 0.1 / 7.4 / 1.3 points, and 0.25 moved OA by +0.5 / -0.3 / -0.3 / -0.5
# (bench/results/accuracy_levers.md).
DEFAULT_CONTEXT_DROPOUT = 0.5
# A head trained with context dropout classifies each window with the more confident of its two
# views, with and without the pooled tokens (spectralgpt.SpectralGPT.forward). The window's view
# alone is better on Indian Pines (+1.1, +1.2 OA points) and the pixel's alone on Potsdam's
# polygons (+2.5), but either loses 1.3 to 15.6 points elsewhere; choosing one per run by 3-fold
# polygon-grouped cross-validation gained +1.1 / +0.9 / +0.6 / -0.7 for three more trainings
# (bench/README.md, accuracy).

# -- the spectral classifier ----------------------------------------------------------------------
# Share of a kernel classifier on each pixel's standardised spectrum in the map's probabilities
# (models.learning.spectral_kernel); 0 leaves the network alone. Half and half against the network
# alone, OA points (Indian Pines polygons / scattered, EnMAP Potsdam polygons / scattered), at 10,
# 25, 50 and 100 pixels per class (3 draws, 5 at 100; bench/results/accuracy_spectral*.md):
# 0.0 / -0.1 / +0.2 / +1.1, +0.3 / -0.5 / +0.7 / +2.1, -0.2 / -0.4 / +2.9 / +2.6 and +1.1 / +0.6 /
# +2.3 / +2.9; better in 41 runs of 56. Potsdam gains at every size: its scattered pixels went
# from 3.4 / 2.5 / 3.3 points under the SVM on the spectra (25 / 50 / 100 per class) to 1.0 /
# 1.0 / 0.4, and its polygons from 3.1 under Random Forest (50 per class) to 0.5 over it.
# Indian Pines, where the window's context carries the lead, moves by -0.5 to +1.1, inside the
# draws' spread but for its scattered pixels at 50 per class (-0.4 in all three draws, against a
# spread of 0.3). Same time per run; the adapter holds the training spectra (0.1 to 0.7 MB instead
# of 0.09). With the neighbourhood inputs below, weights 0.25 and 0.75 did no better at 10 pixels
# per class: +0.3 / -2.6 / +0.1 / -1.0 and -1.3 / -1.6 / -2.2 / -0.1 against 0.5
# (bench/results/accuracy.md); nor did choosing the share per run on the held-out polygons at 100
# per class on Potsdam, -0.4 / -0.3 (bench/README.md, accuracy).
DEFAULT_SPECTRAL_WEIGHT = 0.5
# The odd side of the square whose mean spectrum the kernel classifier may see instead of or
# beside the pixel's own (models.learning.spectral_kernel), whichever scores best leaving one
# polygon out at a time; 0 (or 1): the pixel's spectrum alone. Against the spectrum alone, OA
# points (Indian Pines polygons / scattered, EnMAP Potsdam polygons / scattered): -0.4 / +4.1 /
# -0.3 / +0.3 at 10 pixels per class (bench/results/accuracy.md, 3 draws), +1.3 / +4.0 / -0.7 /
# +0.1 at 25 and +2.1 / +3.3 / -0.6 / +0.1 at 50 (accuracy_neighbourhood_25px.md, _50px.md):
# Indian Pines gains in 15 draws of 18, Potsdam moves by -1.2 to +1.2; at 100 (5 draws,
# accuracy_neighbourhood_100px.md against accuracy_spectral_100px.md) +2.5 / +3.1 / +0.2 / +0.2.
# In a screen of the same draws at 10 and 50 per class, 15 x 15 squares lost up to 1.8 on
# Potsdam and 3 x 3 gained less on Indian Pines (bench/README.md).
DEFAULT_SPECTRAL_CONTEXT = 9
MAX_SPECTRAL_CONTEXT = 51
# The kernel classifier compares spectra in units of the scene's noise (the MNF's coordinates, all
# of its components, at one common scale; models.data.bands.noise_whitening) rather than each band
# standardised on its own, which gives noisy bands the weight of clean ones; where neighbouring
# pixels differ like the scene itself in every band (the MNF's test, MNF_NOISY_BAND_SPREAD) the
# bands stay standardised. At 10 pixels per class on Indian Pines, +3.2 / +1.5 OA points
# (polygons / scattered, better in all six draws; bench/results/accuracy.md). On EnMAP Potsdam,
# where the test fails, whitening by the scene's variances anyway moved OA by +0.2 / -0.2 at 10
# per class and -0.9 / +0.2 at 100 (bench/README.md, accuracy), so it is not applied there.
DEFAULT_SPECTRAL_WHITENING = True
# The most training pixels the kernel classifier keeps (a class-balanced subsample): choosing its
# width and ridge costs the cube of this count, and classifying a pixel a multiple of it.
SPECTRAL_MAX_PIXELS = 2000


def spectral_weight_problem(weight) -> str | None:
    """The sentence for a spectral classifier weight outside 0..1, or None."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
        return (f"The spectral classifier's weight must be a number from 0 (the network alone) "
                f"to 1 (the spectral classifier alone) (got {weight!r}).")
    return None


# -- classifying the scene -----------------------------------------------------------------------
# Ids are stored in adapter files: never rename one. Processing passes choices by position, so
# new ones go at the end.
CLASSIFY_MODES = {
    "tile": "Tile: a window every few pixels, features resampled to each pixel (fast)",
    "window": "Window: one window through the backbone per pixel",
}
# Tile mode (models.learning.inference.grid_probabilities): windows two thirds of a window apart
# (10 pixels for 15-pixel windows, 6 for 9), their pooled features mixed bilinearly at each pixel,
# the head given the pixel's own inputs; 1/100 and 1/36 of the backbone's windows
# (bench/results/modes.md). Trained in tile mode (below), the default path moved OA against the
# default before it (windows 0.4 of a window apart, trained window by window) by +0.9 / +1.5 /
# -0.1 / -0.7 points (Indian Pines polygons / scattered, EnMAP Potsdam polygons / scattered; 3
# draws at 10 pixels per class, bench/results/accuracy.md; +0.7 / +0.9 / +0.2 / -0.6 over 5 in a
# screen) and by +1.4 / +2.0 / 0.0 / +0.2 at 25 per class (accuracy_default_25px.md); trained
# window by window at the same step, -0.2 / -0.5 / -0.1 / -0.5 (5 draws). At 0.4 of a window,
# training in tile mode moved it by +0.1 / -0.1 / -1.1 / -1.6 (3 draws): the wider the step, the
# more the head gains from learning the mixed features. A whole window apart lost 0.4 and 0.7 on
# Indian Pines' polygons (window by window, then in tile mode). Against a window per pixel with
# the same adapters, tile mode: +0.2 / +0.9 / +0.8 / +1.0.
DEFAULT_CLASSIFY_MODE = "tile"
TILE_STEP_SHARE = 0.67
# Adapter files from before tile mode were measured with a window per pixel.
LEGACY_CLASSIFY_MODE = "window"


# Tile mode's grid step in pixels as a setting (FineTuneSettings.tile_step); 0: the share above.
DEFAULT_TILE_STEP = 0


def classify_step(mode: str, window_size: int, tile_step: int = DEFAULT_TILE_STEP) -> int:
    """Pixels between the windows the backbone sees: 1 in window mode; in tile mode ``tile_step``,
    or where it is 0, TILE_STEP_SHARE of a window (10 for 15-pixel windows, 6 for 9, 2 for 3; a
    window of one pixel is classified pixel by pixel)."""
    if mode not in CLASSIFY_MODES:
        raise ValueError(f"unknown classification mode {mode!r}")
    if mode != "tile":
        return 1
    return int(tile_step) if tile_step else max(1, int(round(TILE_STEP_SHARE * int(window_size))))


def classify_mode_problem(mode) -> str | None:
    """The sentence for a classification mode the engine does not know, or None."""
    if mode not in CLASSIFY_MODES:
        return (f"The classification mode '{mode}' is unknown; choose one of "
                f"{', '.join(CLASSIFY_MODES)}.")
    return None


# How the training pixels are seen (models.learning.tile_training). Ids are stored in adapter
# files (the settings): never rename one; new ones go at the end. Tile mode: against training
# window by window at the same grid step, +1.0 / +1.3 / +0.2 / -0.1 OA points (the cases above, 5
# draws; 9 of 10 draws better on Indian Pines, 6 of 10 on Potsdam), for about 2.8 times the time
# per run at 10 pixels per class (four windows through the backbone per training pixel; 47 s
# against 17 s fine-tuning and classifying, bench/results/accuracy.md). Sampled, one of the four
# windows per step drawn by its bilinear weight: -0.8 / 0.0 / -0.1 / -0.2 OA points against tile
# mode at 10 pixels per class (5 draws) and -0.7 / 0.0 / +0.3 / -0.3 at 50 (3 draws), for a window
# mode's time (19 s against 46 per run, 42 against 145 at 50; bench/results/accuracy_sampled*.md):
# the choice where fine-tuning time counts more than a fraction of a point, as with ViT-Base on
# a CPU.
TRAINING_MODES = {
    "window": "Window: each training window centred on its labelled pixel",
    "tile": "Tile: each labelled pixel seen between the windows of tile mode's grid",
    "sampled": "Sampled tile: each labelled pixel seen through one of the four grid windows "
               "around it per step, drawn by its tile-mode weight (a window's time)",
}
DEFAULT_TRAINING_MODE = "tile"


def training_step(mode: str, window_size: int, tile_step: int = DEFAULT_TILE_STEP) -> int:
    """Pixels between the grid windows a training pixel is seen between: tile mode's step
    (classify_step), or 1 for a window centred on each pixel."""
    if mode not in TRAINING_MODES:
        raise ValueError(f"unknown training mode {mode!r}")
    return classify_step("tile", window_size, tile_step) if mode != "window" else 1


def training_mode_problem(mode) -> str | None:
    """The sentence for a training mode the engine does not know, or None."""
    if mode not in TRAINING_MODES:
        return (f"The training mode '{mode}' is unknown; choose one of "
                f"{', '.join(TRAINING_MODES)}.")
    return None


# -- spatial clean-up -----------------------------------------------------------------------------
# Superpixel side in pixels for the segment vote after classifying (models.data.segments); 0 = off.
# +2.5 and +2.6 OA points on Indian Pines, -0.1 and +0.5 on EnMAP Potsdam; 8-pixel superpixels
# did no better (bench/results/accuracy_network_alone.md).
DEFAULT_SEGMENT_SIZE = 5
# Where polygons are held out for validation (classes of MIN_VALIDATION_CLASS_PIXELS or more),
# the vote goes only where leaving it out puts more held-out pixels right than wrong by more than
# chance (models.jobs.vote_choice): at 100 pixels per class +0.4 / +1.7 OA points on EnMAP Potsdam
# (polygons / scattered, 5 draws) and 0.0 / +0.2 on Indian Pines (3 draws), worse in no draw
# (bench/results/accuracy_vote_100px_potsdam.md, accuracy_vote_100px_indian_pines.md).
DEFAULT_VALIDATE_VOTE = True
MAX_SEGMENT_SIZE = 50
# Majority filter side and sieve threshold applied after the vote (models.jobs.postprocessing);
# 0 = off. Off by default: the segment vote already removes most single-pixel noise, and both
# change the map's outlines, which map makers choose for their own minimum mapping unit.
DEFAULT_MAJORITY_SIZE = 0
MAX_MAJORITY_SIZE = 51
DEFAULT_SIEVE_PIXELS = 0
MAX_SIEVE_PIXELS = 10**6

# -- cross-validation -----------------------------------------------------------------------------
# Most folds of the polygon-grouped cross-validation (jobs.cross_validate); each costs a training.
MAX_FOLDS = 20

# -- continuing from an earlier adapter ----------------------------------------------------------
# Share of the steps a warm start (FineTuneSettings.warm_start) trains: the adapter already fits
# the earlier labels. Its early stop waits the same share of the patience
# (FineTuneSettings.patience_for): once classes hold polygons out, a fresh round often stops after
# 25 to 45 of its 50 epochs, and a warm one that waited the whole patience ran most of its share.
# On the simulated users of bench/results/active.md, half the steps and patience trained in 0.54
# of a fresh round's time on Indian Pines (0.49 on Potsdam); 0.4 of them in 0.34 (0.37), 0.38
# (0.44) against fresh rounds timed in the same later session, with the last round's OA level
# with half (95.9 % against 95.6 on Indian Pines, 63.0 against 62.9 on Potsdam; 95.7 and 64.3
# afresh).
WARM_START_STEP_SHARE = 0.4

# -- self-training --------------------------------------------------------------------------------
# Rounds of training again with confident pseudo-labels of the scene's other pixels
# (models.learning.pseudo). Off: two rounds moved OA by -5.6 to +0.5 points on the bench
# (bench/results/accuracy_network_alone.md) for three times the training time.
DEFAULT_SELF_TRAINING_ROUNDS = 0
MAX_SELF_TRAINING_ROUNDS = 5
DEFAULT_PSEUDO_THRESHOLD = 0.9
# Each class adds at most this many times its own training pixels per round.
PSEUDO_FACTOR = 5
# Scene pixels the model classifies per round to find the confident ones.
PSEUDO_CANDIDATES = 20000

# -- evaluation -----------------------------------------------------------------------------------
# An evaluation is refused when more than this share of the labelled reference pixels belong to
# classes the classification does not have: the accuracy of the part that matched would look
# right and not be (a 5,192-pixel reference with 4,826 unmatched evaluated to OA 1.0).
DEFAULT_MAX_UNMATCHED_SHARE = 0.05
