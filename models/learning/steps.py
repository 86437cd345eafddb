"""What fine-tuning (models.learning.training) and pretraining (models.jobs.pretraining) share of a
training loop: AdamW over the model's parameter groups (models.network.adapters.param_groups), the
warm-up and cosine schedule, the augmentation, and one optimizer step in mixed precision.

Their loops stay their own where their jobs differ: fine-tuning counts epochs, validates, keeps
the best epoch and halves a batch that runs out of GPU memory; pretraining runs to a step or time
budget, is shared out under torchrun and resumes after a cancel.
"""
from __future__ import annotations

import math

import torch

from ..errors import HyperAdaptError
from ..network.adapters import param_groups
from .device import autocast_dtype


def lr_factor(progress: float, warmup_fraction: float, min_factor: float = 0.0,
              warmup_floor: float = 1e-3) -> float:
    """Learning-rate multiplier at ``progress`` (0..1 of the run): linear warm-up from
    ``warmup_floor``, then cosine down to ``min_factor``."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup_fraction > 0 and progress < warmup_fraction:
        return max(progress / warmup_fraction, warmup_floor)
    span = max(1.0 - warmup_fraction, 1e-9)
    cosine = 0.5 * (1.0 + math.cos(math.pi * (progress - warmup_fraction) / span))
    return min_factor + (1.0 - min_factor) * cosine


def augment_batch(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random quarter turns and mirror flips per window (a scene has no preferred orientation)."""
    turns = torch.randint(0, 4, (len(batch),), generator=generator)
    flips = torch.randint(0, 2, (len(batch),), generator=generator).bool()
    out = batch.clone()
    for k in range(4):
        for flip in (False, True):
            members = torch.nonzero((turns == k) & (flips == flip)).flatten()
            if len(members) == 0 or (k == 0 and not flip):
                continue
            part = batch[members.to(batch.device)]
            if flip:
                part = torch.flip(part, dims=(-1,))
            out[members.to(batch.device)] = torch.rot90(part, k, dims=(-2, -1))
    return out


class Optimization:
    """AdamW over the model's trainable tensors, its schedule, and the mixed-precision step.

    Each parameter group keeps its own peak rate (the head's, KronA+'s lambda group); ``schedule``
    scales them all by ``lr_factor`` of the run's progress. On CUDA the forward pass runs under
    ``autocast`` and float16 losses go through a gradient scaler; on a CPU it stays float32, or
    with ``cpu_bf16`` runs in bfloat16 where the CPU computes it natively
    (models.learning.device.autocast_dtype).
    """

    def __init__(self, model, *, learning_rate: float, weight_decay: float,
                 device: torch.device, betas: tuple[float, float] = (0.9, 0.999),
                 warmup_fraction: float = 0.1, min_factor: float = 0.0,
                 warmup_floor: float = 1e-3, foreach: bool | None = None,
                 cpu_bf16: bool = False):
        groups = param_groups(model, lr=learning_rate, weight_decay=weight_decay)
        if not groups:
            raise HyperAdaptError("The model has nothing to train.")
        self._peaks = [group["lr"] for group in groups]
        self.optimizer = torch.optim.AdamW(groups, lr=learning_rate, weight_decay=weight_decay,
                                           betas=betas, foreach=foreach)
        self.device = device
        self.dtype = autocast_dtype(device, cpu_bf16=cpu_bf16)
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        self.warmup_fraction, self.min_factor = warmup_fraction, min_factor
        self.warmup_floor = warmup_floor

    def schedule(self, progress: float) -> None:
        """Set every group's learning rate for ``progress`` (0..1) of the run."""
        factor = lr_factor(progress, self.warmup_fraction, self.min_factor, self.warmup_floor)
        for group, peak in zip(self.optimizer.param_groups, self._peaks):
            group["lr"] = peak * factor

    @property
    def learning_rate(self) -> float:
        """The first group's current rate (what progress lines and histories show)."""
        return self.optimizer.param_groups[0]["lr"]

    def autocast(self):
        """The forward pass's mixed-precision context (a no-op where training stays float32)."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def step(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` into fresh gradients and take one optimizer step."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()

    def clear(self) -> None:
        """Drop the gradients (after a step that failed half-way)."""
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)
