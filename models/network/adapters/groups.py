"""Optimizer parameter groups: weight decay where it belongs, the head's rate, and LoRA+/KronA+'s lambda.

LoRA+ (Hayou et al., ICML 2024) showed that the factor starting at zero should learn faster than
the other; KronA+ (Ligan et al., 2025) applies the same ratio lambda to KronA's zero factor.
"""
from __future__ import annotations

from torch import nn

from .config import PLUS_METHODS
from .tuning import HEAD_PREFIX, adapter_layers, get_adapter_config


def zero_init_parameter_names(model: nn.Module) -> set[str]:
    """Names of the adapter factors that start at zero."""
    return {f"{layer_name}.{factor}" for layer_name, layer in adapter_layers(model)
            for factor in layer.zero_init_names}


def param_groups(model: nn.Module, *, lr: float, weight_decay: float = 0.05,
                 head_lr: float | None = None) -> list[dict]:
    """Groups of the trainable parameters for a torch optimizer.

    Biases, norms and positional embeddings (``model.no_weight_decay()``) get no weight decay.
    The head learns at ``head_lr`` (default ``lr``). The zero-initialised adapter factors form the
    "lambda" group at the applied config's ``lr_ratio`` times ``lr`` for LoRA+ and KronA+ (lambda
    travels with the adapter only), and at ``lr`` for every other method. Each group has
    "params", "param_names", "lr", "weight_decay" and "name"; empty groups are left out.
    """
    config = get_adapter_config(model)
    ratio = config.lr_ratio if config is not None and config.method in PLUS_METHODS else 1.0
    head_lr = lr if head_lr is None else head_lr
    no_decay = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    zero_init = zero_init_parameter_names(model)
    specs = {"decay": (lr, weight_decay), "no_decay": (lr, 0.0), "lambda": (lr * ratio, weight_decay),
             "head": (head_lr, weight_decay), "head_no_decay": (head_lr, 0.0)}
    members = {key: [] for key in specs}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim <= 1 or name in no_decay
        if name in zero_init:
            key = "lambda"
        elif name.startswith(HEAD_PREFIX):
            key = "head_no_decay" if exempt else "head"
        else:
            key = "no_decay" if exempt else "decay"
        members[key].append((name, param))
    return [{"name": key, "params": [param for _, param in found],
             "param_names": [name for name, _ in found], "lr": specs[key][0],
             "weight_decay": specs[key][1]}
            for key, found in members.items() if found]
