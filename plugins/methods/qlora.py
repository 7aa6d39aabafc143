"""qlora: LoRA on a 4-bit NF4 (double-quantized) backbone, the research recipe's method."""

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
    load_adapter,
    load_quantized,
    save_adapter,
)


class QloraMethod(Method):
    description = "QLoRA: 4-bit NF4 double-quantized backbone (bitsandbytes) with LoRA adapters."
    trains_backbone = True
    # 4-bit base weights: a larger step and more epochs than lora reach the same accuracy
    # (benchmarks/results/lora_defaults_minilm_h200.md).
    default_learning_rate = 1e-3
    default_epochs = 8.0
    # The optimizer holds the adapters only (a few million values): 8-bit paged states would save
    # megabytes and cost a kernel launch per parameter tensor on every step.
    default_optimizer = "adamw_torch"
    declared_options = LORA_OPTIONS
    run_files = (ADAPTER_DIRECTORY,)
    quantized = True  # placed on its device by a device map; the toolkit never moves it

    def load_for_training(self, backbone: Backbone, checkpoint: str, config: Any) -> nn.Module:
        return add_lora(load_quantized(backbone, checkpoint, config), backbone, self.options)

    def save(self, encoder: nn.Module, directory: Path) -> None:
        save_adapter(encoder, directory)

    def load_trained(self, backbone: Backbone, checkpoint: str, directory: Path, config: Any) -> nn.Module:
        return load_adapter(load_quantized(backbone, checkpoint, config), directory)
