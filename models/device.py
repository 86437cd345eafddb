"""Which torch device a job runs on, and how to recognise running out of its memory."""
from __future__ import annotations

import os

import torch

from .errors import HyperAdaptError

DEVICE_CHOICES = ("auto", "cuda", "cpu")


def choose_device(preference: str = "auto") -> torch.device:
    """The device for ``preference``: "auto" takes the first CUDA GPU when there is one, else the CPU.

    "cuda:1" style names pick a given GPU.
    """
    name = (preference or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise HyperAdaptError("A CUDA GPU was asked for, but this PyTorch sees none; choose "
                                  "'auto' or 'cpu'.")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise HyperAdaptError(f"There is no GPU {device.index}; this machine has "
                                  f"{torch.cuda.device_count()}.")
        return device
    raise HyperAdaptError(f"The device '{preference}' is unknown; choose one of "
                          f"{', '.join(DEVICE_CHOICES)}.")


def describe_devices() -> list[str]:
    """One line per device this PyTorch can use, the CPU first (for dialogs and logs)."""
    lines = [f"CPU ({os.cpu_count() or 1} cores, {torch.get_num_threads()} PyTorch threads)"]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            lines.append(f"cuda:{index} {props.name} ({props.total_memory / 2**30:.1f} GiB)")
    return lines


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision type for ``device``: bfloat16 where the GPU has it, else float16; none on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def is_out_of_memory(error: BaseException) -> bool:
    """True for a CUDA out-of-memory error (the one failure that a smaller batch can fix)."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def release_cached_memory(device: torch.device) -> None:
    """Hand the allocator's cached blocks back after an out-of-memory error."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
