"""KronA (Edalati et al., "KronA: Parameter Efficient Tuning with Kronecker Adapter", 2022).

KronA+ (Ligan et al., 2025) is KronA whose zero-initialised factor learns lambda times faster, in
the manner of LoRA+; that is an optimizer setting (``param_groups``), not another layer.
"""
from __future__ import annotations

import torch
from torch import nn

from ...errors import HyperAdaptError
from .base import AdapterLayer, choose_kronecker_factors, kaiming_uniform_, kronecker_apply


def split_factor_shape(out_features: int, in_features: int,
                       factor_shape: tuple[int, int] | None, *, name: str = "") -> tuple[int, ...]:
    """(a_out, a_in, b_out, b_in) with kron(A, B) of shape (out_features, in_features)."""
    a_out, a_in = factor_shape or choose_kronecker_factors(out_features, in_features)
    if out_features % a_out or in_features % a_in:
        raise HyperAdaptError(f"The Kronecker factor shape {a_out} x {a_in} does not divide the "
                              f"{out_features} x {in_features} weight of {name or 'a layer'}.")
    return a_out, a_in, out_features // a_out, in_features // a_in


class KronALinear(AdapterLayer):
    """W x + b + s (A kron B) x, with A (a_out, a_in) kaiming-uniform and B (b_out, b_in) at zero.

    The update is applied by reshaping x to (a_in, b_in) and computing A X B^T, so the
    (out, in) Kronecker product is only built for merging.
    """

    zero_init_names = ("adapter_B",)

    def __init__(self, base_layer: nn.Linear, *, factor_shape: tuple[int, int] | None = None,
                 scale: float = 1.0, init_weights: bool = True, name: str = ""):
        """Args:
            base_layer: the frozen linear layer.
            factor_shape: (a_out, a_in) of A; None picks the divisors nearest the square roots.
            scale: s, the multiplier of the Kronecker update.
            init_weights: False starts B random instead of zero (tests).
            name: the layer's name in the model, for error messages.
        """
        super().__init__(base_layer)
        a_out, a_in, b_out, b_in = split_factor_shape(self.out_features, self.in_features,
                                                      factor_shape, name=name)
        self.scale = scale
        self.adapter_A = self._factor(a_out, a_in)
        self.adapter_B = self._factor(b_out, b_in)
        kaiming_uniform_(self.adapter_A)
        if not init_weights:
            kaiming_uniform_(self.adapter_B)

    def delta_weight(self) -> torch.Tensor:
        return self.scale * torch.kron(self.adapter_A, self.adapter_B)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * kronecker_apply(x, self.adapter_A, self.adapter_B)
