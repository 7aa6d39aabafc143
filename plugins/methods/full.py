"""full: every weight of the backbone trains with the head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import load_model, save_model
from torch import nn

from review_toolkit.plugin_api import Backbone, Method, enable_gradient_checkpointing

ENCODER_FILE = "encoder.safetensors"


class FullMethod(Method):
    description = "Full fine-tuning: every backbone weight trains together with the head."
    trains_backbone = True
    default_learning_rate = 1e-4
    default_optimizer = "adamw_torch"
    run_files = (ENCODER_FILE,)

    def load_for_training(self, backbone: Backbone, checkpoint: str, config: Any) -> nn.Module:
        encoder = backbone.load_encoder(checkpoint)
        encoder.requires_grad_(True)
        # ...except the checkpoint's own pooler (BERT's dense layer over [CLS]), which mean pooling
        # never reads: a trainable weight that gets no gradient stops multi-process (DDP) training.
        pooler = getattr(getattr(encoder, "transformer", None), "pooler", None)
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)
        return enable_gradient_checkpointing(encoder, config)

    def save(self, encoder: nn.Module, directory: Path) -> None:
        # save_model (not save_file) copes with tied weights, as in T5's shared embeddings.
        save_model(encoder, str(directory / ENCODER_FILE))

    def load_trained(self, backbone: Backbone, checkpoint: str, directory: Path, config: Any) -> nn.Module:
        encoder = backbone.load_encoder(checkpoint)
        load_model(encoder, str(directory / ENCODER_FILE), device="cpu")
        return encoder.eval()
