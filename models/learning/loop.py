"""The training loop that fine-tuning and pretraining both run; their losses and bookkeeping differ.

A job describes its run as a ``TrainingTask``: the batches of an epoch, how a batch becomes the
step's inputs, the forward pass, the loss, and what follows each step and each epoch (progress
lines, validation, resumable counters). ``run_training`` keeps the rest in one place: the cancel
check before every batch, the schedule's clock, the forward pass under the optimizer's autocast,
the mixed-precision step (models.learning.steps.Optimization), and what a CUDA out-of-memory error
leads to.
"""
from __future__ import annotations

from collections import deque

import torch

from ..errors import HyperAdaptError, JobCancelled
from .device import OUT_OF_MEMORY, is_out_of_memory, release_cached_memory
from .steps import Optimization


class TrainingTask:
    """What one job's run consists of; ``run_training`` calls these in this order per step:
    ``progress`` (for the schedule), ``inputs``, ``forward`` (under autocast), ``loss``, the
    optimizer step, then ``after_step``."""

    def epoch_batches(self, epoch: int) -> list:
        """The batches of ``epoch``, in the order they are stepped."""
        raise NotImplementedError

    def progress(self) -> float:
        """Share of the run done so far (0..1): the learning-rate schedule's clock."""
        raise NotImplementedError

    def inputs(self, batch):
        """The batch as the step's inputs (drawn, augmented, on the device), outside autocast."""
        return batch

    def forward(self, inputs):
        """The model's output for the inputs; runs under the optimizer's autocast."""
        raise NotImplementedError

    def loss(self, output, inputs) -> torch.Tensor:
        """The float32 loss to step on (outside autocast)."""
        return output

    def after_step(self, batch, inputs, output, loss: torch.Tensor) -> bool:
        """Bookkeeping after the optimizer step; True ends the run (a spent budget)."""
        return False

    def after_epoch(self, epoch: int, *, ended: bool) -> bool:
        """Bookkeeping after an epoch (``ended``: ``after_step`` ended the run during it);
        True stops the run."""
        return ended

    def out_of_memory(self, batch, pending: list) -> list:
        """The batches to step instead of ``batch`` and ``pending`` after a CUDA out-of-memory
        error; by default the run stops with a sentence."""
        raise HyperAdaptError(OUT_OF_MEMORY)

    def cancelled(self) -> None:
        """Called when the user cancels, before JobCancelled (which it may raise itself)."""


def run_training(task: TrainingTask, optimization: Optimization, *, first_epoch: int,
                 last_epoch: int | None = None, cancel=None) -> int:
    """Step ``task`` from ``first_epoch`` until ``after_epoch`` says stop or ``last_epoch`` is
    done (None: no limit); the number of the last epoch run.

    ``cancel() -> bool`` is asked before every batch. After a CUDA out-of-memory error the step's
    gradients and the allocator's cache are dropped and the task says how to go on.
    """
    epoch = first_epoch
    while True:
        pending = deque(task.epoch_batches(epoch))
        ended = False
        while pending and not ended:
            if cancel is not None and cancel():
                task.cancelled()
                raise JobCancelled("The job was cancelled.")
            batch = pending.popleft()
            optimization.schedule(task.progress())
            try:
                inputs = task.inputs(batch)
                with optimization.autocast():
                    output = task.forward(inputs)
                loss = task.loss(output, inputs)
                optimization.step(loss)
            except RuntimeError as error:
                if not is_out_of_memory(error):
                    raise
                optimization.clear()
                release_cached_memory(optimization.device)
                pending = deque(task.out_of_memory(batch, list(pending)))
                continue
            ended = task.after_step(batch, inputs, output, loss)
        if task.after_epoch(epoch, ended=ended) or epoch == last_epoch:
            return epoch
        epoch += 1
