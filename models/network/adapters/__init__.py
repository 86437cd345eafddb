"""Fine-tuning methods for SpectralGPT: LoRA, LoRA+, KronA, KronA+ (default), LoKr, full, head only.

Adapter layers keep the frozen ``nn.Linear`` as ``base_layer`` and name their tensors with the
``adapter_`` prefix; ``apply_adapter`` wraps the target linears of every block, ``param_groups``
builds the optimizer groups (lambda for the *_plus methods), and ``trainable_state_dict`` is what
an adapter file stores.
"""
from .base import ADAPTER_PREFIX, AdapterLayer, choose_kronecker_factors, kronecker_apply
from .config import (ADAPTER_METHODS, DEFAULT_METHOD, METHODS, PLUS_METHODS, TARGETS,
                     AdapterConfig, describe_method)
from .groups import param_groups, zero_init_parameter_names
from .krona import KronALinear
from .lokr import LoKrLinear
from .lora import LoRALinear
from .tuning import (adapter_layers, apply_adapter, count_parameters, get_adapter_config,
                     load_trainable_state_dict, merge_adapters, trainable_state_dict,
                     unmerge_adapters)

__all__ = [
    "ADAPTER_METHODS", "ADAPTER_PREFIX", "DEFAULT_METHOD", "METHODS", "PLUS_METHODS", "TARGETS",
    "AdapterConfig", "AdapterLayer", "KronALinear", "LoKrLinear", "LoRALinear", "adapter_layers",
    "apply_adapter", "choose_kronecker_factors", "count_parameters", "describe_method",
    "get_adapter_config", "kronecker_apply", "load_trainable_state_dict", "merge_adapters",
    "param_groups", "trainable_state_dict", "unmerge_adapters", "zero_init_parameter_names",
]
