"""Several processes under torchrun (DDP): who this process is, and what all must agree on.

Pretraining and fine-tuning share the scheme: every process draws the same batch from the same
seeded generator, takes its share of its rows (rank, rank + world, ...), and DDP averages the
gradients, so N processes take the steps one process takes, up to the order of float additions.
Only rank 0 writes files.
"""
from __future__ import annotations

import torch


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) under torch.distributed (torchrun), else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def mean_over_processes(value: torch.Tensor, world: int) -> torch.Tensor:
    """The mean of ``value`` over the processes (itself alone)."""
    if world > 1:
        value = value.float().clone()
        torch.distributed.all_reduce(value)
        value /= world
    return value


def same_everywhere(fraction: float, world: int) -> float:
    """Rank 0's value on every process, so that all stop at the same step (clocks and a time
    budget differ between processes)."""
    if world > 1:
        on = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
        shared = torch.tensor([float(fraction)], dtype=torch.float64, device=on)
        torch.distributed.broadcast(shared, 0)
        fraction = float(shared[0])
    return fraction


def wait_for_all(world: int) -> None:
    """Every process waits here until all have come (rank 0's files are written)."""
    if world > 1:
        torch.distributed.barrier()
