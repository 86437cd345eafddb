"""What every adapter layer shares: the frozen base linear, merging and the tensor name prefix."""
from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from ...errors import HyperAdaptError

# Every adapter tensor's name starts with this; freezing, saving and the lambda groups select by it.
ADAPTER_PREFIX = "adapter_"


def nearest_divisor(n: int, target: float) -> int:
    """The divisor of n closest to target (the smaller one on a tie)."""
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    return min(divisors, key=lambda d: (abs(d - target), d))


def choose_kronecker_factors(out_features: int, in_features: int) -> tuple[int, int]:
    """Default (a_out, a_in) of factor A: the divisors nearest the square roots (768 x 768 -> 24 x 24)."""
    return (nearest_divisor(out_features, math.sqrt(out_features)),
            nearest_divisor(in_features, math.sqrt(in_features)))


def kronecker_apply(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``x @ kron(a, b).T`` without building the Kronecker product.

    With x viewed as X (a_in, b_in), ``kron(a, b) @ vec(X) = vec(a @ X @ b.T)`` (row-major vec),
    which costs two small matmuls instead of one (out x in) product.
    """
    grid = rearrange(x, "... (i j) -> ... i j", i=a.shape[1])
    return rearrange(a @ (grid @ b.T), "... i k -> ... (i k)")


def kaiming_uniform_(tensor: torch.Tensor) -> torch.Tensor:
    """The default nn.Linear weight init (kaiming uniform, a = sqrt(5)), as LoRA uses for A."""
    return nn.init.kaiming_uniform_(tensor, a=math.sqrt(5))


class AdapterLayer(nn.Module):
    """A frozen ``nn.Linear`` (``base_layer``) plus a trainable low-cost weight update.

    Subclasses define the update through ``delta_weight()`` (the full (out, in) matrix, used for
    merging) and ``adapter_forward(x)`` (the same update applied to x without building it).
    ``zero_init_names`` lists the factors that start at zero: the update starts as an exact no-op,
    and LoRA+ / KronA+ give these factors the larger learning rate.
    """

    adapter_prefix = ADAPTER_PREFIX
    zero_init_names: tuple[str, ...] = ()

    def __init__(self, base_layer: nn.Linear):
        """Args:
            base_layer: the linear layer to adapt; it is frozen and kept as ``base_layer``.
        """
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"Adapters wrap nn.Linear layers, not {type(base_layer).__name__}.")
        self.base_layer = base_layer
        self.base_layer.requires_grad_(False)
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features
        self.merged = False

    def _factor(self, *shape: int) -> nn.Parameter:
        weight = self.base_layer.weight
        return nn.Parameter(torch.zeros(*shape, device=weight.device, dtype=weight.dtype))

    def delta_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.merged:
            return result
        # The bias is already in the base output; the update is purely linear.
        return result + self.adapter_forward(x).to(result.dtype)

    @torch.no_grad()
    def merge(self, *, name: str = "") -> None:
        """Add the update into a copy of the base weight; forward then costs what the base costs."""
        if self.merged:
            return
        weight = self.base_layer.weight
        merged = weight.clone() + self.delta_weight().to(weight.dtype)
        if not torch.isfinite(merged).all():
            raise HyperAdaptError(f"Merging the adapter of {name or 'a layer'} gives non-finite "
                                  f"weights; the adapter is damaged or diverged in training.")
        self.base_layer.weight.data = merged
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the update merged by ``merge`` again."""
        if not self.merged:
            return
        weight = self.base_layer.weight
        self.base_layer.weight.data = weight.clone() - self.delta_weight().to(weight.dtype)
        self.merged = False

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, merged={self.merged}"
