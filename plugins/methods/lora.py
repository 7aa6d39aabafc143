"""lora: low-rank adapters on the backbone's declared modules; the base weights stay frozen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from review_toolkit.plugin_api import (
    ADAPTER_DIRECTORY,
    LORA_OPTIONS,
    Backbone,
    Method,
    add_lora,
    enable_gradient_checkpointing,
    frozen_weights_dtype,
    load_adapter,
    save_adapter,
)


class LoraMethod(Method):
    description = "LoRA adapters (PEFT) on the backbone's declared layers (every linear layer of BERT-style blocks); the head trains in full."
    trains_backbone = True
    default_learning_rate = 5e-4  # adapters start at zero and need a larger step than full fine-tuning
    default_epochs = 8.0  # adapters start at zero: they need more epochs than full fine-tuning (early stopping ends sooner)
    default_optimizer = "adamw_torch"
    declared_options = LORA_OPTIONS
    run_files = (ADAPTER_DIRECTORY,)

    def load_for_training(self, backbone: Backbone, checkpoint: str, config: Any) -> nn.Module:
        encoder = backbone.load_encoder(checkpoint, dtype=frozen_weights_dtype())
        return add_lora(enable_gradient_checkpointing(encoder, config), backbone, self.options)

    def save(self, encoder: nn.Module, directory: Path) -> None:
        save_adapter(encoder, directory)

    def load_trained(self, backbone: Backbone, checkpoint: str, directory: Path, config: Any) -> nn.Module:
        return load_adapter(backbone.load_encoder(checkpoint, dtype=frozen_weights_dtype()), directory)
