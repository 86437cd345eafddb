"""The fine-tuning loop: epochs over the labelled windows, early stopping on validation accuracy.
AdamW, its warm-up and cosine schedule, the augmentation and the mixed-precision step are the
ones pretraining uses too (models.learning.steps).

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

``train_classifier`` is longer than this project's functions usually are (about 70 lines beside
its docstring): its loop carries the schedule, the batch that an out-of-memory error halves, the
processes' shares of each batch and the running loss together, and splitting it would pass all of
them back and forth; a step (``_train_step``), the halving (``_halved``), a batch's figures
(``_batch_figures``) and the kept epoch (``_BestEpoch``) are apart.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import HyperAdaptError, raise_if_cancelled
from ..network.adapters import trainable_state_dict
from .device import (autocast_dtype, cpu_bf16_training, is_out_of_memory,
                     release_cached_memory)
from .distributed import distributed_rank, mean_over_processes
from .predict import OUT_OF_MEMORY
from .steps import Optimization, augment_batch


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
              batch_size: int, cancel) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the model on windows."""
    correct, loss_sum = 0, 0.0
    dtype = autocast_dtype(device, cpu_bf16=cpu_bf16_training(model))
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


def _train_step(trainer, optimization: Optimization, x, y, keep, weight: float):
    """One optimizer step on a batch: (summed loss times ``weight``, logits), or None after a
    CUDA out-of-memory error (gradients and the allocator's cache cleared; the caller halves the
    batch)."""
    try:
        x = x.to(optimization.device, non_blocking=True)
        with optimization.autocast():
            logits = trainer(x) if keep is None else trainer(x, context_keep=keep)
        loss = F.cross_entropy(logits.float(), y, reduction="sum") * weight
        optimization.step(loss)
        return loss, logits
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
    optimization.clear()
    release_cached_memory(optimization.device)
    return None


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


def train_classifier(model, train_windows: torch.Tensor, train_labels: torch.Tensor,
                     val_windows: torch.Tensor | None, val_labels: torch.Tensor | None, *,
                     epochs: int, learning_rate: float, weight_decay: float = 0.05,
                     batch_size: int = 32, warmup_fraction: float = 0.1, patience: int = 10,
                     min_epochs: int | None = None, seed: int = 0,
                     device: torch.device = torch.device("cpu"), augment: bool = True,
                     context_dropout: float = 0.0, progress=None, cancel=None,
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
        progress: ``progress(fraction, message)``; cancel: ``cancel() -> bool`` (checked every
            batch); on_epoch: ``on_epoch(record)`` with epoch, epochs (planned), loss,
            train_accuracy, val_accuracy, val_loss, learning_rate.
    """
    started = time.perf_counter()
    num_train = len(train_windows)
    if num_train == 0:
        raise HyperAdaptError("There are no training windows.")
    has_val = val_windows is not None and len(val_windows) > 0
    model.to(device)
    model.train()
    optimization = Optimization(model, learning_rate=learning_rate,
                                weight_decay=weight_decay, device=device,
                                warmup_fraction=warmup_fraction,
                                cpu_bf16=cpu_bf16_training(model))
    generator = torch.Generator().manual_seed(int(seed))
    rank, world = distributed_rank()
    # Under torchrun every process draws the same batch and takes its share of the rows; DDP
    # averages the gradients, so N processes take the steps of one (models.learning.distributed).
    trainer = model if world == 1 else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
    batch_size = max(1, int(batch_size))
    total_samples = epochs * num_train
    seen = 0
    best = _BestEpoch()
    history: list[dict] = []
    min_epochs = math.ceil(epochs / 2) if min_epochs is None else min(int(min_epochs), epochs)
    stopped_early = False
    epoch = 0
    for epoch in range(1, epochs + 1):
        order = torch.randperm(num_train, generator=generator)
        chunks = list(torch.split(order, batch_size))
        loss_sum, correct, count = 0.0, 0, 0
        while chunks:
            raise_if_cancelled(cancel)
            index = chunks.pop(0)
            optimization.schedule(seen / total_samples)
            x, y, keep, weight = _draw_batch(train_windows, train_labels, index, generator,
                                             augment=augment, context_dropout=context_dropout,
                                             rank=rank, world=world, device=device)
            stepped = _train_step(trainer, optimization, x, y, keep, weight)
            if stepped is None:              # out of GPU memory: halve the batch and go on
                batch_size, chunks = _halved(index, chunks)
                continue
            batch_loss, hits = _batch_figures(*stepped, y, weight, world)
            seen += len(index)
            loss_sum += batch_loss * len(index)
            correct += hits
            count += len(index)
            if progress is not None:
                progress(seen / total_samples,
                         f"Epoch {epoch}/{epochs}: loss {loss_sum / count:.3f}")
        record = {"epoch": epoch, "epochs": epochs, "loss": loss_sum / count,
                  "train_accuracy": correct / count,
                  "val_accuracy": None, "val_loss": None,
                  "learning_rate": optimization.learning_rate}
        if has_val:
            record["val_accuracy"], record["val_loss"] = _evaluate(
                model, val_windows, val_labels, device=device,
                batch_size=max(batch_size, 64), cancel=cancel)
        history.append(record)
        best.consider(model, record, after_warmup=seen >= warmup_fraction * total_samples)
        if on_epoch is not None:
            on_epoch(dict(record))
        if progress is not None:
            progress(seen / total_samples, _epoch_message(record))
        if has_val and best.stale >= patience and epoch >= min_epochs:
            stopped_early = epoch < epochs
            break
    return TrainingOutcome(best_state=best.state, best_epoch=best.epoch,
                           best_val_accuracy=best.accuracy, best_val_loss=best.loss,
                           epochs_run=epoch, stopped_early=stopped_early, batch_size=batch_size,
                           seconds=time.perf_counter() - started, history=history)
