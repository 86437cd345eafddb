"""The fine-tuning methods and their settings."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from ...errors import HyperAdaptError
from ...options import (ADAPTER_METHODS, DEFAULT_METHOD, DEFAULT_RANK, DEFAULT_TARGETS, METHODS,
                        PLUS_METHODS, TARGETS)

__all__ = ["ADAPTER_METHODS", "DEFAULT_METHOD", "METHODS", "PLUS_METHODS", "TARGETS",
           "AdapterConfig", "describe_method"]


def describe_method(method_id: str) -> str:
    """Display name of a method id, e.g. ``"krona_plus"`` -> ``"KronA+"``."""
    if method_id not in METHODS:
        raise HyperAdaptError(f"Unknown fine-tuning method '{method_id}'; choose one of "
                              f"{', '.join(METHODS)}.")
    return METHODS[method_id]


@dataclass
class AdapterConfig:
    """How a SpectralGPT backbone is fine-tuned; stored in adapter files via ``to_dict``.

    Args:
        method: one of ``METHODS``.
        targets: linear layers of every block that get an adapter.
        rank: LoRA / LoKr rank r.
        alpha: LoRA / LoKr scaling alpha (the update is multiplied by alpha / r).
        factor_shape: (a_out, a_in), the shape of KronA's / LoKr's first factor A; by default the
            divisors of each layer's dimensions nearest their square roots (768 x 768 -> 24 x 24).
        scale: KronA / LoKr multiplier s of the Kronecker update.
        lr_ratio: lambda of LoRA+ / KronA+; ``param_groups`` gives the zero-initialised factor
            lambda times the learning rate. Other methods always use 1.0.
        init_weights: True starts the zero-initialised factor at zero (exact no-op); False starts
            it random (tests).
        decompose_both: LoKr only: also write factor A in low-rank form.
    """

    method: str = DEFAULT_METHOD
    targets: tuple[str, ...] = DEFAULT_TARGETS
    rank: int = DEFAULT_RANK
    alpha: float = 16.0
    factor_shape: tuple[int, int] | None = None
    scale: float = 1.0
    lr_ratio: float = 1.0
    init_weights: bool = True
    decompose_both: bool = False

    def __post_init__(self):
        describe_method(self.method)
        self.targets = tuple(self.targets)
        for target in self.targets:
            if target not in TARGETS:
                raise HyperAdaptError(f"Unknown adapter target '{target}'; choose among "
                                      f"{', '.join(TARGETS)}.")
        if len(set(self.targets)) != len(self.targets):
            raise HyperAdaptError("Each adapter target may be listed only once.")
        if self.method in ADAPTER_METHODS and not self.targets:
            raise HyperAdaptError(f"{METHODS[self.method]} needs at least one target layer.")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise HyperAdaptError(f"The adapter rank must be a whole number of at least 1 "
                                  f"(got {self.rank!r}).")
        for label, value in (("alpha", self.alpha), ("scale", self.scale),
                             ("learning-rate ratio", self.lr_ratio)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise HyperAdaptError(f"The adapter {label} must be a positive number "
                                      f"(got {value!r}).")
        if self.factor_shape is not None:
            shape = tuple(self.factor_shape)
            if len(shape) != 2 or not all(isinstance(n, int) and n >= 1 for n in shape):
                raise HyperAdaptError(f"The Kronecker factor shape must be two whole numbers of at "
                                      f"least 1 (got {self.factor_shape!r}).")
            self.factor_shape = shape
        if self.method not in PLUS_METHODS:
            self.lr_ratio = 1.0

    def to_dict(self) -> dict:
        """Plain JSON-friendly values (tuples as lists)."""
        data = asdict(self)
        data["targets"] = list(self.targets)
        data["factor_shape"] = list(self.factor_shape) if self.factor_shape else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "AdapterConfig":
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise HyperAdaptError(f"The adapter setting '{unknown[0]}' is unknown to this version "
                                  f"of HyperAdapt.")
        return cls(**data)
