"""LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022).

LoRA+ (Hayou et al., "LoRA+: Efficient Low Rank Adaptation of Large Models", ICML 2024) uses the
same layer; it only gives B a larger learning rate, through ``param_groups``.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import AdapterLayer, kaiming_uniform_


class LoRALinear(AdapterLayer):
    """W x + b + (alpha / r) B A x, with A (r, in) kaiming-uniform and B (out, r) starting at zero."""

    zero_init_names = ("adapter_B",)

    def __init__(self, base_layer: nn.Linear, *, rank: int = 8, alpha: float = 16.0,
                 init_weights: bool = True):
        """Args:
            base_layer: the frozen linear layer.
            rank: r, the inner dimension of B A.
            alpha: the update is scaled by alpha / r.
            init_weights: False starts B random instead of zero (tests).
        """
        super().__init__(base_layer)
        self.rank = rank
        self.scaling = alpha / rank
        self.adapter_A = self._factor(rank, self.in_features)
        self.adapter_B = self._factor(self.out_features, rank)
        kaiming_uniform_(self.adapter_A)
        if not init_weights:
            kaiming_uniform_(self.adapter_B)

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * (self.adapter_B @ self.adapter_A)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaling * ((x @ self.adapter_A.T) @ self.adapter_B.T)
