"""What plugin authors import: the three plugin contracts and the helpers the built-in plugins use.

``from review_toolkit.plugin_api import TransformerBackbone, TorchHead, add_lora, save_arrays``.
The contracts load at once (they are plain classes); the helpers that need torch or PEFT load
on first use, so that listing plugins stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from review_toolkit.plugin_api.contracts import (
    PLUGIN_KINDS,
    Backbone,
    Featurizer,
    FeaturizerBackbone,
    FittedHead,
    FittedModel,
    Head,
    Method,
    Plugin,
    TorchHead,
)
from review_toolkit.plugin_api.options import PluginOption, positive_numbers
from review_toolkit.plugin_api.search import Search

if TYPE_CHECKING:
    from review_toolkit.plugin_api.adapters import (
        ADAPTER_DIRECTORY,
        LORA_OPTIONS,
        add_lora,
        enable_gradient_checkpointing,
        frozen_weights_dtype,
        load_adapter,
        load_quantized,
        lora_config,
        save_adapter,
    )
    from review_toolkit.plugin_api.encoders import PooledEncoder, TransformerBackbone, load_pretrained
    from review_toolkit.plugin_api.fitted import Standardizer, as_probabilities, load_arrays, save_arrays, sigmoid

_LAZY = {
    **dict.fromkeys(
        ["ADAPTER_DIRECTORY", "LORA_OPTIONS", "add_lora", "enable_gradient_checkpointing", "frozen_weights_dtype", "load_adapter", "load_quantized",
         "lora_config", "save_adapter"],
        "review_toolkit.plugin_api.adapters",
    ),
    **dict.fromkeys(["PooledEncoder", "TransformerBackbone", "load_pretrained"], "review_toolkit.plugin_api.encoders"),
    **dict.fromkeys(
        ["Standardizer", "as_probabilities", "load_arrays", "save_arrays", "sigmoid"], "review_toolkit.plugin_api.fitted"
    ),
}

__all__ = [
    "PLUGIN_KINDS", "Backbone", "Featurizer", "FeaturizerBackbone", "FittedHead", "FittedModel", "Head", "Method",
    "Plugin", "PluginOption", "Search", "TorchHead", "positive_numbers", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'review_toolkit.plugin_api' has no attribute {name!r}")
