"""Applying a fine-tuning method to a SpectralGPT model, and what is trained, merged and saved."""
from __future__ import annotations

import torch
from torch import nn

from ...errors import HyperAdaptError
from .base import ADAPTER_PREFIX, AdapterLayer
from .config import AdapterConfig
from .krona import KronALinear
from .lokr import LoKrLinear
from .lora import LoRALinear

HEAD_PREFIX = "head."


def _make_layer(base: nn.Linear, config: AdapterConfig, name: str) -> AdapterLayer:
    if config.method in ("lora", "lora_plus"):
        return LoRALinear(base, rank=config.rank, alpha=config.alpha,
                          init_weights=config.init_weights)
    if config.method in ("krona", "krona_plus"):
        return KronALinear(base, factor_shape=config.factor_shape, scale=config.scale,
                           init_weights=config.init_weights, name=name)
    return LoKrLinear(base, factor_shape=config.factor_shape, rank=config.rank,
                      alpha=config.alpha, scale=config.scale,
                      decompose_both=config.decompose_both, init_weights=config.init_weights,
                      name=name)


def adapter_layers(model: nn.Module):
    """(name, layer) of every adapter layer in the model."""
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, AdapterLayer)]


def get_adapter_config(model: nn.Module) -> AdapterConfig | None:
    """The config ``apply_adapter`` used on this model, or None."""
    return getattr(model, "adapter_config", None)


def is_adapter_name(name: str) -> bool:
    return name.rsplit(".", 1)[-1].startswith(ADAPTER_PREFIX)


def apply_adapter(model: nn.Module, config: AdapterConfig) -> nn.Module:
    """Wrap the target linears of every block and freeze everything but the adapter and the head.

    "fft" trains every tensor and "head" only the classifier. The model is changed in place and
    returned; ``model.adapter_config`` records the config.
    """
    if get_adapter_config(model) is not None:
        raise HyperAdaptError("This model already has a fine-tuning method applied.")
    if config.method == "fft":
        model.requires_grad_(True)
    else:
        model.requires_grad_(False)
        if config.method != "head":
            for index, block in enumerate(model.blocks):
                for target in config.targets:
                    parent_name, child_name = target.rsplit(".", 1)
                    parent = block.get_submodule(parent_name)
                    name = f"blocks.{index}.{target}"
                    setattr(parent, child_name, _make_layer(getattr(parent, child_name), config, name))
        for name, param in model.named_parameters():
            param.requires_grad_(is_adapter_name(name) or name.startswith(HEAD_PREFIX))
    model.adapter_config = config
    return model


def merge_adapters(model: nn.Module) -> None:
    """Fold every adapter into its base weight (inference at the frozen backbone's cost)."""
    for name, layer in adapter_layers(model):
        layer.merge(name=name)


def unmerge_adapters(model: nn.Module) -> None:
    """Undo ``merge_adapters``."""
    for _, layer in adapter_layers(model):
        layer.unmerge()


def _is_trainable_name(model: nn.Module, name: str) -> bool:
    config = get_adapter_config(model)
    if config is not None and config.method == "fft":
        return True
    return is_adapter_name(name) or name.startswith(HEAD_PREFIX)


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of the tensors a method trains: adapter + head (every tensor for "fft").

    Copies, so a caller can keep the best state while training goes on.
    """
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()
            if _is_trainable_name(model, name)}


def load_trainable_state_dict(model: nn.Module, state: dict) -> None:
    """Put saved adapter + head tensors into a model prepared with the same method and shape."""
    own = {name: tensor for name, tensor in model.state_dict().items()
           if _is_trainable_name(model, name)}
    for name, tensor in own.items():
        if name not in state:
            raise HyperAdaptError(f"The saved adapter lacks the tensor '{name}', so it was made for "
                                  f"another method or model size.")
        if not isinstance(state[name], torch.Tensor) or state[name].shape != tensor.shape:
            shape = getattr(state[name], "shape", None)
            raise HyperAdaptError(f"The saved adapter's tensor '{name}' has shape "
                                  f"{tuple(shape) if shape is not None else None} where "
                                  f"{tuple(tensor.shape)} is expected.")
    extra = sorted(set(state) - set(own))
    if extra:
        raise HyperAdaptError(f"The saved adapter has a tensor '{extra[0]}' that this model does "
                              f"not use, so it was made for another method or model size.")
    merged = any(layer.merged for _, layer in adapter_layers(model))
    if merged:
        unmerge_adapters(model)
    with torch.no_grad():
        for name, tensor in own.items():
            tensor.copy_(state[name])
    if merged:
        merge_adapters(model)


def count_parameters(model: nn.Module) -> dict:
    """{"trainable", "backbone", "adapter", "head"} parameter counts (backbone excludes the head)."""
    counts = {"trainable": 0, "backbone": 0, "adapter": 0, "head": 0}
    for name, param in model.named_parameters():
        if param.requires_grad:
            counts["trainable"] += param.numel()
        if is_adapter_name(name):
            counts["adapter"] += param.numel()
        elif name.startswith(HEAD_PREFIX):
            counts["head"] += param.numel()
        else:
            counts["backbone"] += param.numel()
    return counts
