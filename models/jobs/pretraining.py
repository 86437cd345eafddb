"""Adapting the backbone to a sensor without labels: masked-autoencoder pretraining on its own scenes.

The official SpectralGPT weights (Hong et al., IEEE TPAMI 2024) were pretrained on Sentinel-2.
Where they cannot be had, or the sensor is far from Sentinel-2, the same pretraining objective
(models/network/mae.py) is run on windows cut around the valid pixels of the user's rasters, after
the band adaptation that fine-tuning will use. The band adaptation is fitted once per sensor on
those rasters and stored in the backbone file with the encoder, its configuration and the window
and input sizes, so that fine-tuning reuses all of them unchanged.

Two starting points: continue from the official ViT-B weights ("base" with ``weights``), or start a
named configuration from scratch ("tiny", fast enough for a laptop CPU; "base", the official shape).
The work stops at an epoch or a wall-clock budget, whichever ends first; a cancelled run leaves a
resumable state beside the output (``<backbone>.resume``) and no backbone file.

Pretraining runs fine-tuning's training loop (models.learning.loop.run_training) with its own
task, ``_MaskedTask``: the epochs' draws of pixels, the masked loss and the budget. Its counters
(epoch, step, seconds, running sums) are what the resumable state saves. This module is longer
than this project's modules usually are: the settings, the resumable state, the task and writing
the backbone file (``_write_backbone``) belong to the one job; the backbone file itself is
models.stores.backbone_file, the scenes' pixels models.data.scene_pixels.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .. import options
from ..data.bands import METHODS as BAND_ADAPTATIONS
from ..data.bands import BandAdaptation, fit_band_adaptation
from ..data.scene_pixels import ScenePixels, check_rasters, load_scene_pixels
from ..data.windows import resize_windows
from ..errors import HyperAdaptError, JobCancelled
from ..learning.device import choose_device
from ..learning.distributed import (distributed_rank, mean_over_processes, same_everywhere,
                                    wait_for_all)
from ..learning.loop import TrainingTask, run_training
from ..learning.seeding import seeded
from ..learning.steps import Optimization, augment_batch
from ..network.backbones import BACKBONE_PRESETS
from ..network.checkpoint import file_sha256, filter_checkpoint, load_checkpoint_file
from ..network.identity import BackboneIdentity
from ..network.mae import MaskedAutoencoder, default_mask_ratio, num_kept_tokens
from ..network.spectralgpt import build_backbone
from ..settings import check_window_size
from ..stores.adapter_file import atomic_torch_save, to_plain
from ..stores.backbone_file import read_backbone_file, save_backbone_file
from ..stores.guard import check_job_files, raster_files

log = logging.getLogger(__name__)

RESUME_SUFFIX = ".resume"
RESUME_FORMAT = "hyperadapt-pretraining-state"

# Encoder shapes: fine-tuning's backbone presets (img_size comes from the settings' input_size).
PRETRAIN_PRESETS = {name: {key: value for key, value in config.items() if key != "img_size"}
                    for name, config in BACKBONE_PRESETS.items()}
# SpectralGPT's own ViT-B pretraining decoder is 4 blocks of width 512 (16 heads, as MAE).
DECODER_PRESETS = {
    "tiny": {"decoder_dim": 128, "decoder_depth": 2, "decoder_heads": 4, "decoder_mlp_ratio": 4.0},
    "base": {"decoder_dim": 512, "decoder_depth": 4, "decoder_heads": 16, "decoder_mlp_ratio": 4.0},
}
# Pixels drawn (over all rasters) to fit the band adaptation.
FIT_PIXELS = 50_000
# Resumable state is written at least this often (and always on cancel).
CHECKPOINT_INTERVAL_S = 300.0
WARMUP_FRACTION = 0.05
MIN_LR_FRACTION = 0.01


@dataclass
class PretrainSettings:
    """How to pretrain; a budget (epochs and/or time_budget_s) is required, whichever ends first.

    Args:
        preset: "tiny" (from scratch, laptop CPU) or "base" (the official ViT-B shape).
        weights: official SpectralGPT(+) checkpoint to continue from ("base" only).
        mask_ratio: share of tokens hidden per sample; None picks it from the token count.
        epochs: epoch budget (an epoch is samples_per_epoch windows).
        time_budget_s: wall-clock budget in seconds, counted over resumed runs too.
        batch_size: windows per step.
        learning_rate: AdamW peak rate; None: 1e-3 from scratch, 1.5e-4 x batch/256 when continuing
            from the official weights (MAE's base rate, kept small to not wash the weights out).
        window_size: pixels around the centre pixel (odd), before resizing.
        input_size: model input side in pixels (a multiple of the patch size, 8).
        band_adaptation: one of options.BAND_ADAPTATIONS; the MNF by default (see
            options.PRETRAIN_BAND_ADAPTATION).
        spectral_loss_weight: weight of the spectrally summed reconstruction term (0: off).
        samples_per_epoch: windows per epoch, drawn at random valid pixels.
        seed: seeds the sampling, masking and initialisation.
        device: "auto", "cpu" or "cuda".
        weight_decay: AdamW weight decay (not on biases, norms, embeddings).
        norm_pix_loss: per-token normalised target (as MAE).
        augment: random flips and quarter turns of the windows.
        backbone_overrides: SpectralGPT keyword arguments over the preset (e.g. smaller for tests).
        decoder_overrides: decoder arguments over the preset.
    """

    preset: str = "tiny"
    weights: str | None = None
    mask_ratio: float | None = None
    epochs: int | None = None
    time_budget_s: float | None = None
    batch_size: int = 64
    learning_rate: float | None = None
    window_size: int = options.PRETRAIN_WINDOW_SIZE
    input_size: int = options.FAST_INPUT_SIZE
    band_adaptation: str = options.PRETRAIN_BAND_ADAPTATION
    spectral_loss_weight: float = 0.0
    samples_per_epoch: int = 4096
    seed: int = 0
    device: str = "auto"
    weight_decay: float = 0.05
    norm_pix_loss: bool = True
    augment: bool = True
    backbone_overrides: dict | None = None
    decoder_overrides: dict | None = None

    def __post_init__(self):
        if self.preset not in PRETRAIN_PRESETS:
            raise HyperAdaptError(f"The backbone preset '{self.preset}' is unknown; choose one of "
                                  f"{', '.join(PRETRAIN_PRESETS)}.")
        if self.weights and self.preset != "base":
            raise HyperAdaptError("Pretraining can only continue from the official weights with "
                                  "the 'base' preset, which has their shape.")
        if self.band_adaptation not in BAND_ADAPTATIONS:
            raise HyperAdaptError(f"The band adaptation '{self.band_adaptation}' is unknown; choose "
                                  f"one of {', '.join(BAND_ADAPTATIONS)}.")
        if self.mask_ratio is not None and not 0.0 < self.mask_ratio < 1.0:
            raise HyperAdaptError(f"The mask ratio must lie strictly between 0 and 1 "
                                  f"(got {self.mask_ratio}).")
        if self.epochs is not None and self.epochs < 1:
            raise HyperAdaptError(f"The number of epochs must be at least 1 (got {self.epochs}).")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise HyperAdaptError(f"The time budget must be positive (got {self.time_budget_s}).")
        if self.batch_size < 1 or self.samples_per_epoch < 1:
            raise HyperAdaptError("The batch size and the samples per epoch must be at least 1.")
        check_window_size(self.window_size)
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise HyperAdaptError(f"The learning rate must be positive (got {self.learning_rate}).")

    def backbone_config(self) -> dict:
        """SpectralGPT keyword arguments of the backbone these settings pretrain."""
        config = {**PRETRAIN_PRESETS[self.preset], **(self.backbone_overrides or {}),
                  "img_size": self.input_size, "num_classes": 0}
        patch = config["patch_size"]
        if self.input_size < patch or self.input_size % patch:
            raise HyperAdaptError(f"The input size {self.input_size} must be a positive multiple "
                                  f"of the patch size {patch}.")
        return config

    def decoder_config(self) -> dict:
        return {**DECODER_PRESETS[self.preset], **(self.decoder_overrides or {})}

    def peak_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1.5e-4 * self.batch_size / 256 if self.weights else 1e-3

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PretrainResult:
    """What pretrain_backbone produced."""

    backbone_path: str
    backbone_id: str
    losses: list[float]          # mean masked loss per epoch (the last one may be partial)
    epochs: int                  # epochs run (begun), over resumed runs too
    seconds: float               # training time, over resumed runs too
    resumed: bool
    steps: int = 0
    mask_ratio: float = 0.0
    sensor: str = ""
    backbone_bytes: int = 0


# -- the training loop ----------------------------------------------------------------------------
def resume_path_for(backbone_path) -> Path:
    """Where a cancelled pretraining keeps its state: beside the backbone file, ``.resume`` added."""
    backbone_path = Path(backbone_path)
    return backbone_path.with_name(backbone_path.name + RESUME_SUFFIX)


def _matching_resume(resume_path: Path, fingerprint: dict, say) -> dict | None:
    """The state a cancelled run left, when it was made with the same settings and rasters."""
    if not resume_path.exists():
        return None
    state = _read_resume(resume_path)
    if state is not None and state.get("fingerprint") != fingerprint:
        log.warning("%s was made with other settings or rasters; starting afresh.",
                    resume_path.name)
        say(0.0, "An unfinished pretraining with other settings is set aside; starting afresh")
        return None
    return state


def _masked_autoencoder(settings: PretrainSettings, config: dict, state: dict | None, say):
    """(the masked autoencoder, what it continues from): the seeded start, the resumed state,
    or the official weights in the encoder."""
    model = seeded(settings.seed, lambda: MaskedAutoencoder(
        encoder=build_backbone(config), **settings.decoder_config(),
        norm_pix_loss=settings.norm_pix_loss, spectral_loss_weight=settings.spectral_loss_weight))
    continued_from = None
    if state is not None:
        model.load_state_dict(state["model"])
        continued_from = state.get("continued_from")
    elif settings.weights:
        say(0.0, "Loading the official weights")
        continued_from = _load_official_weights(model, settings.weights)
    return model, continued_from


def _run_fingerprint(settings: PretrainSettings, infos, mask_ratio: float) -> dict:
    """What must not change between a cancelled run and its continuation (budgets may)."""
    kept = {key: value for key, value in settings.to_dict().items()
            if key not in ("epochs", "time_budget_s", "device", "weights")}
    return to_plain({**kept, "weights": Path(settings.weights).name if settings.weights else None,
                   "backbone": settings.backbone_config(), "decoder": settings.decoder_config(),
                   "mask_ratio": mask_ratio,
                   "rasters": [[Path(i.path).name, i.width, i.height, i.band_count] for i in infos]})


def _read_resume(path: Path) -> dict | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        log.warning("The pretraining state %s could not be read (%s); starting afresh.", path, error)
        return None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        log.warning("%s is not a pretraining state; starting afresh.", path)
        return None
    return state


def _load_official_weights(model: MaskedAutoencoder, weights) -> dict:
    """Load the official encoder (and decoder, when it has this shape) into the autoencoder."""
    path = Path(weights)
    checkpoint = load_checkpoint_file(path)
    encoder_state = filter_checkpoint(checkpoint, model.encoder, file_name=path.name)
    missing, unexpected = model.encoder.load_state_dict(encoder_state, strict=False)
    assert not unexpected and all(name.startswith("head.") for name in missing)
    decoder_loaded = model.load_official_decoder(checkpoint.get("model", checkpoint))
    if not decoder_loaded:
        log.info("The decoder of %s does not fit; the decoder starts from scratch.", path.name)
    return {**BackboneIdentity.official(path.name, file_sha256(path)).to_dict(),
            "decoder_loaded": decoder_loaded}


class _Budget:
    """Which share of the budget is spent: the larger of the epoch and the time share."""

    def __init__(self, *, total_steps: int | None, time_budget_s: float | None):
        self.total_steps = total_steps
        self.time_budget_s = time_budget_s

    def fraction(self, steps: int, seconds: float) -> float:
        shares = []
        if self.total_steps:
            shares.append(steps / self.total_steps)
        if self.time_budget_s:
            shares.append(seconds / self.time_budget_s)
        return max(shares)


def _step_inputs(scene: ScenePixels, batch, settings: PretrainSettings, epoch: int, step: int,
                 device: torch.device) -> torch.Tensor:
    """A step's windows, augmented and resized to the model input, on the device."""
    windows = scene.windows(batch, settings.window_size)
    if settings.augment:
        # Seeded by the step, so a resumed run draws what an uninterrupted one would.
        windows = augment_batch(windows, torch.Generator().manual_seed(int(
            np.random.SeedSequence([settings.seed, epoch, step, 1]).generate_state(1)[0])))
    return resize_windows(windows.to(device), settings.input_size)


def _mask_ratio(settings: PretrainSettings, config: dict) -> float:
    """The share of tokens masked: the settings', or the default for the model's token count
    (checked to leave some tokens visible)."""
    num_tokens = ((config["img_size"] // config["patch_size"]) ** 2
                  * (config["in_bands"] // config["tubelet_bands"]))
    mask_ratio = settings.mask_ratio or default_mask_ratio(num_tokens)
    num_kept_tokens(num_tokens, mask_ratio)
    return mask_ratio


def _band_adaptation(settings: PretrainSettings, infos, state: dict | None, say,
                     cancel) -> BandAdaptation:
    """The resumed run's band adaptation, or one fitted on the rasters."""
    if state is not None:
        return BandAdaptation.from_state(state["band_adaptation"])
    say(0.0, "Fitting the band adaptation")
    return fit_band_adaptation(infos, settings.band_adaptation, seed=settings.seed,
                               max_pixels=FIT_PIXELS, cancel=cancel)


def _close_epoch(counters: dict, losses: list[float], steps_per_epoch: int, *,
                 done: bool) -> None:
    """The epoch's mean masked loss joins ``losses``, and the epoch counts as run once its steps
    are done or the budget has ended it early; the running sums start again."""
    if counters["loss_count"]:
        losses.append(counters["loss_sum"] / counters["loss_count"])
    if counters["step_in_epoch"] >= steps_per_epoch or done:
        counters.update(epoch=counters["epoch"] + 1, step_in_epoch=0)
    counters.update(loss_sum=0.0, loss_count=0)


def _write_backbone(backbone_path: Path, encoder, adaptation: BandAdaptation,
                    settings: PretrainSettings, info, sensor_name: str, pretraining: dict, *,
                    world: int) -> tuple[str, int]:
    """Rank 0 writes the backbone file and removes the resumable state; every process then
    returns the file's (id, size)."""
    rank, _ = distributed_rank()
    if rank == 0:
        sensor_info = {"name": sensor_name, "band_count": info.band_count,
                       "wavelengths_nm": info.wavelengths_nm,
                       "band_indices": list(adaptation.band_indices)}
        written = save_backbone_file(backbone_path, model=encoder, band_adaptation=adaptation,
                                     window_size=settings.window_size,
                                     input_size=settings.input_size, sensor=sensor_info,
                                     pretraining=pretraining)
        resume_path_for(backbone_path).unlink(missing_ok=True)
    wait_for_all(world)
    if rank:                            # the file rank 0 wrote, with its id
        written = read_backbone_file(backbone_path)["id"], backbone_path.stat().st_size
    return written


class _MaskedTask(TrainingTask):
    """Pretraining as run_training steps it: each epoch a fresh draw of the scenes' pixels, a
    masked-autoencoder step per batch, until the budget (epochs or time) is spent. ``counters``
    (epoch, step, seconds, running sums) are what a resumed run continues from, so they are kept
    as one dict that the resumable state saves."""

    def __init__(self, forward, scene: ScenePixels, settings: PretrainSettings,
                 device: torch.device, *, mask_ratio: float, state: dict | None, resume: tuple,
                 say):
        self.forward_pass, self.scene, self.settings = forward, scene, settings
        self.device, self.mask_ratio = device, mask_ratio
        self.counters = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "seconds": 0.0,
                         "loss_sum": 0.0, "loss_count": 0}
        self.losses: list[float] = []
        if state is not None:
            self.counters.update({key: state["counters"][key] for key in self.counters})
            self.losses = list(state["losses"])
        self.resume = resume            # (path, record, model, optimization)
        self.say = say
        self.rank, self.world = distributed_rank()
        self.steps_per_epoch = math.ceil(settings.samples_per_epoch / settings.batch_size)
        self.budget = _Budget(
            total_steps=settings.epochs * self.steps_per_epoch if settings.epochs else None,
            time_budget_s=settings.time_budget_s)
        self.loop_start = self.last_save = time.monotonic()
        self.seconds_before = self.counters["seconds"]
        self.generator = torch.Generator()
        self.running = None

    def save_state(self) -> None:
        """Write the resumable state (rank 0 alone under torchrun)."""
        if self.rank:
            return
        path, record, model, optimization = self.resume
        atomic_torch_save({**record,
                           "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                           "optimizer": _to_cpu(optimization.state_dict()),
                           "counters": dict(self.counters), "losses": list(self.losses)}, path)

    def seconds(self) -> float:
        return self.seconds_before + time.monotonic() - self.loop_start

    def spent(self) -> bool:
        return self.budget.fraction(self.counters["global_step"], self.counters["seconds"]) >= 1.0

    def epoch_batches(self, epoch: int) -> list:
        settings = self.settings
        rng = np.random.default_rng([settings.seed, epoch])
        numbers = rng.choice(self.scene.num_pixels, size=settings.samples_per_epoch,
                             replace=self.scene.num_pixels < settings.samples_per_epoch)
        return [(epoch, step, numbers[step * settings.batch_size:(step + 1) * settings.batch_size])
                for step in range(self.counters["step_in_epoch"], self.steps_per_epoch)]

    def progress(self) -> float:
        return self.budget.fraction(self.counters["global_step"], self.seconds())

    def inputs(self, batch) -> torch.Tensor:
        epoch, step, numbers = batch
        return _step_inputs(self.scene, numbers, self.settings, epoch, step, self.device)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The masked loss on this process's share of the batch's rows under torchrun (the
        masks are drawn for the whole batch, seeded by the global step)."""
        self.generator.manual_seed(self.settings.seed * 1_000_003 + self.counters["global_step"])
        world = self.world
        rows = torch.arange(self.rank, len(inputs), world)
        loss, _, _ = self.forward_pass(inputs[rows.to(inputs.device)] if world > 1 else inputs,
                                       mask_ratio=self.mask_ratio, generator=self.generator,
                                       rows=rows if world > 1 else None, global_batch=len(inputs))
        return loss

    def loss(self, loss: torch.Tensor, inputs) -> torch.Tensor:
        if not torch.isfinite(loss):
            raise HyperAdaptError("The pretraining loss is no longer a finite number; lower the "
                                  "learning rate.")
        return loss

    def after_step(self, batch, inputs, output, loss) -> bool:
        epoch, step, _ = batch
        value = float(mean_over_processes(loss.detach(), self.world))
        self.running = value if self.running is None else 0.95 * self.running + 0.05 * value
        counters = self.counters
        counters["loss_sum"] += value
        counters["loss_count"] += 1
        counters["global_step"] += 1
        counters["step_in_epoch"] = step + 1
        counters["seconds"] = self.seconds()
        fraction = same_everywhere(
            self.budget.fraction(counters["global_step"], counters["seconds"]), self.world)
        of_epochs = f"/{self.settings.epochs}" if self.settings.epochs else ""
        self.say(min(fraction, 1.0), f"Epoch {epoch + 1}{of_epochs}: masked loss "
                                     f"{self.running:.4f}")
        return fraction >= 1.0

    def after_epoch(self, epoch: int, *, ended: bool) -> bool:
        _close_epoch(self.counters, self.losses, self.steps_per_epoch, done=ended)
        if not ended and time.monotonic() - self.last_save >= CHECKPOINT_INTERVAL_S:
            self.save_state()
            self.last_save = time.monotonic()
        return ended

    def out_of_memory(self, batch, pending: list) -> list:
        raise HyperAdaptError("The GPU ran out of memory during pretraining; lower the batch "
                              "size or the input size.")

    def cancelled(self) -> None:
        self.counters["seconds"] = self.seconds()
        self.save_state()
        raise JobCancelled(f"Pretraining was cancelled; its state is kept in "
                           f"{self.resume[0].name}, so running it again continues from "
                           f"there.")


def pretrain_backbone(raster_paths, backbone_path, *, settings: PretrainSettings | None = None,
                      sensor: str | None = None, progress=None, cancel=None,
                      resume: bool = True) -> PretrainResult:
    """Pretrain a SpectralGPT backbone on a sensor's rasters and write its backbone file.

    Args:
        raster_paths: rasters of one sensor (same band layout); windows are drawn from their
            valid pixels.
        backbone_path: the backbone file to write (``.pt``).
        settings: PretrainSettings; a budget (epochs and/or time_budget_s) is required.
        sensor: the sensor's name (stored in the file); guessed from the first raster if None.
        progress: ``progress(fraction, message)``; the message carries the running masked loss.
        cancel: ``cancel() -> bool``, checked before every batch. On cancel the resumable state
            is written to ``<backbone_path>.resume``, no backbone file is written and
            JobCancelled is raised.
        resume: continue from ``<backbone_path>.resume`` when it exists and was made with the
            same settings (budgets may differ; they count over both runs).
    """
    settings = settings or PretrainSettings()
    if settings.epochs is None and settings.time_budget_s is None:
        raise HyperAdaptError("Give pretraining a budget: a number of epochs, a time limit, or both.")
    check_window_size(settings.window_size)
    backbone_path = Path(backbone_path)
    resume_path = resume_path_for(backbone_path)
    check_job_files({"backbone file": [backbone_path, resume_path]},
                    {f"input raster {Path(path).name}": raster_files(path)
                     for path in raster_paths})
    say = progress or (lambda fraction, message: None)
    started = time.monotonic()

    say(0.0, "Reading the rasters")
    infos = check_rasters(raster_paths)
    sensor_name = sensor or infos[0].sensor
    config = settings.backbone_config()
    mask_ratio = _mask_ratio(settings, config)
    fingerprint = _run_fingerprint(settings, infos, mask_ratio)
    state = _matching_resume(resume_path, fingerprint, say) if resume else None
    adaptation = _band_adaptation(settings, infos, state, say, cancel)
    scene = load_scene_pixels(infos, adaptation, settings.window_size, seed=settings.seed,
                              cancel=cancel, progress=lambda f, m: say(0.0, m))

    device = choose_device(settings.device)
    model, continued_from = _masked_autoencoder(settings, config, state, say)
    model.to(device).train()
    rank, world = distributed_rank()
    # Under torchrun, each process takes its share of every batch and DDP averages the gradients:
    # with shares of equal size, the same steps as one process (models.network.mae masks).
    forward = (torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model)
    if rank:
        say = (lambda fraction, message: None)
    # Fine-tuning's optimizer, groups and step (models.learning.steps): weight decay on matrices
    # only and betas (0.9, 0.95), as MAE; a linear warm-up over the first 5 % of the budget, then
    # cosine down to 1 % of the peak.
    optimization = Optimization(model, learning_rate=settings.peak_learning_rate(),
                                weight_decay=settings.weight_decay, device=device,
                                betas=(0.9, 0.95), warmup_fraction=WARMUP_FRACTION,
                                min_factor=MIN_LR_FRACTION, warmup_floor=0.01, foreach=True)

    if state is not None:
        optimization.load_state_dict(state["optimizer"])
    # What a cancelled run's state holds beside the weights, the optimizer and the counters.
    resume_record = {"format": RESUME_FORMAT, "version": 1, "fingerprint": fingerprint,
                     "band_adaptation": adaptation.to_state(), "continued_from": continued_from,
                     "sensor": sensor_name}
    task = _MaskedTask(forward, scene, settings, device, mask_ratio=mask_ratio, state=state,
                       resume=(resume_path, resume_record, model, optimization), say=say)
    if not task.spent():
        run_training(task, optimization, first_epoch=task.counters["epoch"], cancel=cancel)
    counters, losses = task.counters, task.losses

    model.eval()
    pretraining = {"epochs": counters["epoch"], "steps": counters["global_step"],
                   "seconds": round(counters["seconds"], 2),
                   "final_loss": losses[-1] if losses else None, "losses": losses,
                   "mask_ratio": mask_ratio, "rasters": scene.raster_names,
                   "preset": settings.preset, "continued_from": continued_from,
                   "settings": {**settings.to_dict(), "weights": fingerprint["weights"]},
                   "device": str(device)}
    say(1.0, "Writing the backbone file")
    backbone_id, size = _write_backbone(backbone_path, model.encoder.cpu(), adaptation, settings,
                                        infos[0], sensor_name, pretraining, world=world)
    log.info("Pretrained %s in %.0f s (%d epochs, loss %.4f).", backbone_path.name,
             time.monotonic() - started, counters["epoch"], losses[-1] if losses else float("nan"))
    return PretrainResult(backbone_path=str(backbone_path), backbone_id=backbone_id, losses=losses,
                          epochs=counters["epoch"], seconds=counters["seconds"],
                          resumed=state is not None, steps=counters["global_step"],
                          mask_ratio=mask_ratio, sensor=sensor_name, backbone_bytes=size)


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(item) for item in value)
    return value
