"""Fine-tuning: epochs over the labelled windows, early stopping on validation accuracy.
It runs the training loop pretraining runs too (models.learning.loop.run_training) with the same
AdamW, warm-up and cosine schedule, augmentation and mixed-precision step
(models.learning.steps); ``_ClassifierTask`` is what differs: the batches, the cross-entropy loss,
validation and the kept epoch.

Windows are held in memory as one float tensor at their native window size; the model resizes
them to its input per batch (a 9 x 9 window takes an eighth of the memory of its 32 x 32 resize).
Batches are drawn in the loop itself, never by DataLoader workers: QGIS must never fork. On CUDA
the forward pass runs in mixed precision (on a CPU that computes bfloat16, for a backbone as wide
as ViT-Base: models.learning.device.cpu_bf16_training), and an out-of-memory error halves the
batch and retries it. The best state (highest validation accuracy, lower validation loss on a
tie) is the one kept.

Early stopping waits: with a handful of polygons the validation features lie elsewhere in the
scene, and while the head is still learning, validation accuracy can sit below its chance value
of the first epoch for many epochs. Stopping on patience alone then kept an epoch-1 model that
classified near chance (8-17 % overall accuracy on Indian Pines with 2 polygons per class).
So no epoch of the warm-up can be the kept one once a later epoch exists, and training never stops
before half of its epochs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import HyperAdaptError, raise_if_cancelled
from ..network.adapters import trainable_state_dict
from .class_balance import class_weights
from .device import OUT_OF_MEMORY, cpu_bf16_training
from .distributed import distributed_rank, mean_over_processes
from .loop import TrainingTask, run_training
from .steps import Optimization, augment_batch
from .tile_training import TileView


@dataclass
class TrainingOutcome:
    """What training produced: the kept state and how it got there."""

    best_state: dict
    best_epoch: int
    best_val_accuracy: float | None
    best_val_loss: float | None
    epochs_run: int
    stopped_early: bool
    batch_size: int
    seconds: float
    history: list[dict] = field(default_factory=list)


def _evaluate(model, windows: torch.Tensor, labels: torch.Tensor, *, device: torch.device,
              dtype: torch.dtype | None, batch_size: int, cancel) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the model on windows, under the training's autocast
    ``dtype`` (None: none)."""
    correct, loss_sum = 0, 0.0
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(windows), batch_size):
            raise_if_cancelled(cancel)
            x = windows[start:start + batch_size].to(device)
            y = labels[start:start + batch_size].to(device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(x)
            logits = logits.float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(dim=1) == y).sum())
    model.train()
    return correct / len(windows), loss_sum / len(windows)


def _draw_batch(windows: torch.Tensor, labels: torch.Tensor, index: torch.Tensor,
                generator: torch.Generator, *, augment: bool, context_dropout: float, rank: int,
                world: int, device: torch.device):
    """(x, y, keep, weight): this process's rows of the batch ``index``, augmented, with their
    context-dropout draws (on ``device``) and their weight in the batch's mean loss.

    The draws are made for the whole batch on every process (the same generator), then each takes
    rows rank, rank + world, ...; a process left without rows runs one at weight 0, as DDP needs
    every process's step.
    """
    x = windows[index]
    if augment:
        x = augment_batch(x, generator)
    keep = None
    if context_dropout > 0:
        keep = torch.rand(len(index), generator=generator) >= context_dropout
    mine = torch.arange(rank, len(index), world)
    weight = world / len(index) if len(mine) else 0.0
    mine = mine if len(mine) else torch.zeros(1, dtype=torch.long)
    keep = None if keep is None else keep[mine].to(device)
    return x[mine], labels[index][mine].to(device), keep, weight


def _halved(index: torch.Tensor, chunks: list) -> tuple[int, list]:
    """After a CUDA out-of-memory error on the batch ``index``: the halved batch size, and the
    batches left (that one first) split to it; one window that does not fit is refused."""
    if len(index) <= 1:
        raise HyperAdaptError(OUT_OF_MEMORY)
    size = max(1, len(index) // 2)
    return size, list(torch.split(index, size)) + [
        piece for chunk in chunks for piece in torch.split(chunk, size)]


def _batch_figures(loss, logits, y, weight: float, world: int) -> tuple[float, int]:
    """Over the whole batch: the mean of the processes' weighted loss sums, and their hits; a
    loss that is not a number stops training."""
    batch_loss = mean_over_processes(loss.detach(), world)
    hits = ((logits.detach().argmax(dim=1) == y).float() * (weight > 0)).sum()
    hits = mean_over_processes(hits, world) * world
    if not torch.isfinite(batch_loss):
        raise HyperAdaptError("Training diverged (the loss is not a number); lower the "
                              "learning rate.")
    return float(batch_loss), int(round(float(hits)))


class _BestEpoch:
    """The epoch whose trainable state training keeps: the best validation (accuracy, then loss;
    without validation the latest) once the warm-up is over, the first epoch until then; and
    the epochs since it (early stopping)."""

    def __init__(self):
        self.key, self.state, self.epoch = None, None, 0
        self.accuracy = self.loss = None
        self.after_warmup = False
        self.stale = 0

    def consider(self, model, record: dict, *, after_warmup: bool) -> None:
        validated = record["val_accuracy"] is not None
        key = (record["val_accuracy"], -record["val_loss"]) if validated else (record["epoch"], 0.0)
        if (self.key is None or (after_warmup and not self.after_warmup)
                or (after_warmup and key > self.key)):
            self.key, self.epoch, self.after_warmup = key, record["epoch"], after_warmup
            self.state = trainable_state_dict(model)
            self.accuracy, self.loss = record["val_accuracy"], record["val_loss"]
            self.stale = 0
        else:
            self.stale += 1


def _epoch_message(record: dict) -> str:
    message = f"Epoch {record['epoch']}/{record['epochs']}: loss {record['loss']:.3f}"
    if record["val_accuracy"] is not None:
        message += f", validation accuracy {100 * record['val_accuracy']:.1f} %"
    return message


class _ClassifierTask(TrainingTask):
    """Fine-tuning as run_training steps it: epochs over a shuffled order of the labelled
    windows, cross-entropy on each process's share of a batch, validation and the kept epoch
    after each epoch, early stopping."""

    def __init__(self, model, optimization: Optimization, windows, labels, val_windows,
                 val_labels, *, epochs: int, batch_size: int, warmup_fraction: float,
                 patience: int, min_epochs: int | None, seed: int, augment: bool,
                 context_dropout: float, weights_per_class: np.ndarray | None,
                 tile_window: int | None, sample_corners: bool, progress, cancel, on_epoch):
        self.model, self.optimization = model, optimization
        # What the windows go through: the model, or the model as tile mode applies it (with
        # its own generator, so that the batches are those of the other modes).
        sampler = torch.Generator().manual_seed(int(seed) + 7919) if sample_corners else None
        self.network = (model if tile_window is None
                        else TileView(model, tile_window, sampler=sampler))
        self.windows, self.labels = windows, labels
        self.class_weights = (None if weights_per_class is None else torch.from_numpy(
            weights_per_class).float().to(optimization.device))
        self.val_windows, self.val_labels = val_windows, val_labels
        self.has_val = val_windows is not None and len(val_windows) > 0
        self.epochs, self.batch_size = epochs, max(1, int(batch_size))
        self.warmup_fraction, self.patience = warmup_fraction, patience
        self.min_epochs = (math.ceil(epochs / 2) if min_epochs is None
                           else min(int(min_epochs), epochs))
        self.augment, self.context_dropout = augment, context_dropout
        self.report, self.cancel, self.on_epoch = progress, cancel, on_epoch
        self.generator = torch.Generator().manual_seed(int(seed))
        self.rank, self.world = distributed_rank()
        # Under torchrun every process draws the same batch and takes its share of the rows;
        # DDP averages the gradients, so N processes take the steps of one
        # (models.learning.distributed).
        device = optimization.device
        self.trainer = (self.network if self.world == 1
                        else torch.nn.parallel.DistributedDataParallel(
                            self.network,
                            device_ids=[device.index] if device.type == "cuda" else None))
        self.total_samples = epochs * len(windows)
        self.seen = 0
        self.best = _BestEpoch()
        self.history: list[dict] = []
        self.stopped_early = False

    def epoch_batches(self, epoch: int) -> list:
        self.epoch, self.loss_sum, self.correct, self.count = epoch, 0.0, 0, 0
        order = torch.randperm(len(self.windows), generator=self.generator)
        return list(torch.split(order, self.batch_size))

    def progress(self) -> float:
        return self.seen / self.total_samples

    def inputs(self, index):
        x, y, keep, weight = _draw_batch(
            self.windows, self.labels, index, self.generator, augment=self.augment,
            context_dropout=self.context_dropout, rank=self.rank, world=self.world,
            device=self.optimization.device)
        return x.to(self.optimization.device, non_blocking=True), y, keep, weight

    def forward(self, inputs):
        x, _, keep, _ = inputs
        return self.trainer(x) if keep is None else self.trainer(x, context_keep=keep)

    def loss(self, logits, inputs) -> torch.Tensor:
        _, y, _, weight = inputs
        return F.cross_entropy(logits.float(), y, weight=self.class_weights,
                               reduction="sum") * weight

    def after_step(self, index, inputs, logits, loss) -> bool:
        _, y, _, weight = inputs
        batch_loss, hits = _batch_figures(loss, logits, y, weight, self.world)
        self.seen += len(index)
        self.loss_sum += batch_loss * len(index)
        self.correct += hits
        self.count += len(index)
        if self.report is not None:
            self.report(self.progress(), f"Epoch {self.epoch}/{self.epochs}: loss "
                                         f"{self.loss_sum / self.count:.3f}")
        return False

    def out_of_memory(self, index, pending: list) -> list:
        self.batch_size, pending = _halved(index, pending)
        return pending

    def after_epoch(self, epoch: int, *, ended: bool) -> bool:
        record = {"epoch": epoch, "epochs": self.epochs, "loss": self.loss_sum / self.count,
                  "train_accuracy": self.correct / self.count,
                  "val_accuracy": None, "val_loss": None,
                  "learning_rate": self.optimization.learning_rate}
        if self.has_val:
            record["val_accuracy"], record["val_loss"] = _evaluate(
                self.network, self.val_windows, self.val_labels, device=self.optimization.device,
                dtype=self.optimization.dtype, batch_size=max(self.batch_size, 64),
                cancel=self.cancel)
        self.history.append(record)
        self.best.consider(self.model, record,
                           after_warmup=self.seen >= self.warmup_fraction * self.total_samples)
        if self.on_epoch is not None:
            self.on_epoch(dict(record))
        if self.report is not None:
            self.report(self.progress(), _epoch_message(record))
        if self.has_val and self.best.stale >= self.patience and epoch >= self.min_epochs:
            self.stopped_early = epoch < self.epochs
            return True
        return False


def train_classifier(model, train_windows: torch.Tensor, train_labels: torch.Tensor,
                     val_windows: torch.Tensor | None, val_labels: torch.Tensor | None, *,
                     epochs: int, learning_rate: float, weight_decay: float = 0.05,
                     batch_size: int = 32, warmup_fraction: float = 0.1, patience: int = 10,
                     min_epochs: int | None = None, seed: int = 0,
                     device: torch.device = torch.device("cpu"), augment: bool = True,
                     context_dropout: float = 0.0, class_weighting: str = "none",
                     num_classes: int | None = None, tile_window: int | None = None,
                     sample_corners: bool = False, progress=None, cancel=None,
                     on_epoch=None) -> TrainingOutcome:
    """Train the model's trainable tensors (adapter + head) on labelled windows.

    Args:
        model: backbone with an adapter applied (models.network.adapters.apply_adapter) and a head.
        train_windows, train_labels: (N, 12, w, w) float32 windows and (N,) class indices.
        val_windows, val_labels: the held-out validation set, or None.
        epochs: the most passes over the training windows.
        learning_rate: peak learning rate; the zero-initialised factors of LoRA+ and KronA+
            learn at the adapter's own ratio lambda times it (AdapterConfig.lr_ratio, read by
            models.network.adapters.param_groups).
        weight_decay: AdamW weight decay (not on biases, norms, positional embeddings).
        batch_size: windows per step; halved after a CUDA out-of-memory error.
        warmup_fraction: share of all steps spent warming the learning rate up.
        patience: epochs without a better validation result before stopping.
        min_epochs: epochs always run before early stopping may end training; None: half of
            ``epochs``.
        seed: seeds the shuffling and the augmentation.
        device: where to train.
        augment: random flips and quarter turns.
        context_dropout: share of training windows whose pooled tokens a pixel head does not see
            (drawn per window from the seeded generator).
        class_weighting: "balanced" weighs each class in the loss by the inverse of its share of
            the training windows (class_balance.class_weights); "none": every window the same.
        num_classes: the classes the model outputs, which the class weights cover (a class may
            have no training windows); None: the highest training label plus one.
        tile_window: train in tile mode: the windows are crops of models.learning.tile_training
            (``grid_crops``) around windows of this size, seen through ``TileView``; None: each
            window centred on its labelled pixel.
        sample_corners: with ``tile_window``, each training step sends one of a crop's four
            windows, drawn by its bilinear weight (TileView's sampler); validation mixes all four.
        progress: ``progress(fraction, message)``; cancel: ``cancel() -> bool`` (checked every
            batch); on_epoch: ``on_epoch(record)`` with epoch, epochs (planned), loss,
            train_accuracy, val_accuracy, val_loss, learning_rate.
    """
    started = time.perf_counter()
    if len(train_windows) == 0:
        raise HyperAdaptError("There are no training windows.")
    model.to(device)
    model.train()
    optimization = Optimization(model, learning_rate=learning_rate,
                                weight_decay=weight_decay, device=device,
                                warmup_fraction=warmup_fraction,
                                cpu_bf16=cpu_bf16_training(model))
    task = _ClassifierTask(model, optimization, train_windows, train_labels,
                           val_windows, val_labels, epochs=epochs, batch_size=batch_size,
                           warmup_fraction=warmup_fraction, patience=patience,
                           min_epochs=min_epochs, seed=seed, augment=augment,
                           context_dropout=context_dropout,
                           weights_per_class=class_weights(train_labels.cpu().numpy(),
                                                           class_weighting, num_classes),
                           tile_window=tile_window, sample_corners=sample_corners,
                           progress=progress, cancel=cancel,
                           on_epoch=on_epoch)
    epochs_run = run_training(task, optimization, first_epoch=1, last_epoch=epochs,
                              cancel=cancel)
    best = task.best
    return TrainingOutcome(best_state=best.state, best_epoch=best.epoch,
                           best_val_accuracy=best.accuracy, best_val_loss=best.loss,
                           epochs_run=epochs_run, stopped_early=task.stopped_early,
                           batch_size=task.batch_size, seconds=time.perf_counter() - started,
                           history=task.history)
