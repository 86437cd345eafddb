"""Seeded model building that two jobs in two threads cannot disturb.

Module initialisers draw from torch's process-wide generator. A random start is rebuilt from its
seed when it classifies, so its weights must come out the same every time; two jobs in two threads
(two dialogs) seeding and drawing from that one generator at once would interleave their draws,
and the rebuilt backbone would no longer match the adapter. Every model build therefore holds one
lock while it seeds, draws and restores the generator, also builds whose weights are then loaded
from a file (their initialisers draw too).
"""
from __future__ import annotations

import threading

import torch

_LOCK = threading.Lock()


def seeded(seed: int, build):
    """``build()`` with torch's generator seeded, under a process-wide lock; the caller's random
    state is left as it was."""
    with _LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build()
