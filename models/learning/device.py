"""Which torch device a job runs on, and how to recognise running out of its memory."""
from __future__ import annotations

import os

import torch

from ..errors import HyperAdaptError

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


# "auto": bfloat16 for fine-tuning and classifying on a CPU that computes it natively; "fp32" or
# "bf16" force it (the precision and accuracy benches compare the two).
CPU_PRECISION_ENV = "HYPERADAPT_CPU_PRECISION"


def autocast_dtype(device: torch.device, *, cpu_bf16: bool = False) -> torch.dtype | None:
    """The mixed-precision type for ``device``: on a GPU bfloat16 where it has it, else float16.

    On a CPU, None (float32), or with ``cpu_bf16`` bfloat16 where the CPU computes it natively
    (``cpu_computes_bf16``; HYPERADAPT_CPU_PRECISION can force either). Classifying asks for it,
    and fine-tuning a wide backbone (``cpu_bf16_training``): bench/results/precision.md measured
    the labels it changes and the speed it gives, and the accuracy bench has rows in both.
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if not cpu_bf16:
        return None
    choice = os.environ.get(CPU_PRECISION_ENV, "auto").strip().lower()
    if choice == "bf16" or (choice == "auto" and cpu_computes_bf16()):
        return torch.bfloat16
    return None


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic (AVX512-BF16 or AMX): elsewhere PyTorch emulates
    it, slower than float32. Read from /proc/cpuinfo; False where there is none (Windows, macOS)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            flags = next((line for line in info if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


# Fine-tuning in bfloat16 on a CPU pays for a backbone as wide as ViT-Base (1.3 to 1.5 times the
# steps per second here) but not for the tiny one (0.9 times: its small matrices spend their time
# elsewhere) (bench/results/precision.md). Pretraining, whose CPU backbone is the tiny one, stays
# in float32.
CPU_BF16_TRAINING_WIDTH = 768


def cpu_bf16_training(model) -> bool:
    """Whether fine-tuning ``model`` on a CPU runs in bfloat16 where the CPU computes it: a wide
    backbone, or any where HYPERADAPT_CPU_PRECISION=bf16 forces it."""
    forced = os.environ.get(CPU_PRECISION_ENV, "auto").strip().lower() == "bf16"
    return forced or int(getattr(model, "embed_dim", 0)) >= CPU_BF16_TRAINING_WIDTH


OUT_OF_MEMORY = ("The GPU ran out of memory even for a single window; close other GPU programs "
                 "or choose the CPU.")


def is_out_of_memory(error: BaseException) -> bool:
    """True for a CUDA out-of-memory error (the one failure that a smaller batch can fix)."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def release_cached_memory(device: torch.device) -> None:
    """Hand the allocator's cached blocks back after an out-of-memory error."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
