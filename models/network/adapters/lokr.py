"""LoKr: a Kronecker adapter with low-rank factors, from LyCORIS (Yeh et al., "Navigating
Text-To-Image Customization: From LyCORIS Fine-Tuning to Model Evaluation", ICLR 2024).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import AdapterLayer, kaiming_uniform_, kronecker_apply
from .krona import split_factor_shape


class LoKrLinear(AdapterLayer):
    """W x + b + s (alpha / r) (A kron B_up B_down) x.

    B = B_up (b_out, r) B_down (r, b_in) is low rank; B_up starts at zero. With ``decompose_both``
    A is A_up (a_out, r) A_down (r, a_in) as well. The small factor products are formed each
    forward; the (out, in) Kronecker product is only built for merging.
    """

    zero_init_names = ("adapter_B_up",)

    def __init__(self, base_layer: nn.Linear, *, factor_shape: tuple[int, int] | None = None,
                 rank: int = 8, alpha: float = 16.0, scale: float = 1.0,
                 decompose_both: bool = False, init_weights: bool = True, name: str = ""):
        """Args:
            base_layer: the frozen linear layer.
            factor_shape: (a_out, a_in) of A; None picks the divisors nearest the square roots.
            rank: r of the low-rank factors.
            alpha: the update is scaled by alpha / r (times scale).
            scale: s, the multiplier of the Kronecker update.
            decompose_both: also write A as a rank-r product.
            init_weights: False starts B_up random instead of zero (tests).
            name: the layer's name in the model, for error messages.
        """
        super().__init__(base_layer)
        a_out, a_in, b_out, b_in = split_factor_shape(self.out_features, self.in_features,
                                                      factor_shape, name=name)
        self.scaling = scale * alpha / rank
        self.decompose_both = decompose_both
        if decompose_both:
            self.adapter_A_up = kaiming_uniform_(self._factor(a_out, rank))
            self.adapter_A_down = kaiming_uniform_(self._factor(rank, a_in))
        else:
            self.adapter_A = kaiming_uniform_(self._factor(a_out, a_in))
        self.adapter_B_up = self._factor(b_out, rank)
        self.adapter_B_down = kaiming_uniform_(self._factor(rank, b_in))
        if not init_weights:
            kaiming_uniform_(self.adapter_B_up)

    def factor_a(self) -> torch.Tensor:
        if self.decompose_both:
            return self.adapter_A_up @ self.adapter_A_down
        return self.adapter_A

    def factor_b(self) -> torch.Tensor:
        return self.adapter_B_up @ self.adapter_B_down

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * torch.kron(self.factor_a(), self.factor_b())

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaling * kronecker_apply(x, self.factor_a(), self.factor_b())
