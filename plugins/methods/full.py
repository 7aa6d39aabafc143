"""full: every weight of the backbone trains with the head."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from safetensors.torch import load_model, save_model
from torch import nn

from review_toolkit.plugin_api import Backbone, Method, enable_gradient_checkpointing
from review_toolkit.plugin_api.encoders import can_save_pretrained, load_projection_weights, save_pretrained_encoder

logger = logging.getLogger(__name__)

ENCODER_DIRECTORY = "encoder"  # a model folder: transformers' save_pretrained, tokenizer, pooling
#: The whole pooled encoder's weights in one file: what runs held before ``encoder/``, and what an
#: encoder that a model folder cannot describe (a projection other than a linear layer) is saved as.
ENCODER_FILE = "encoder.safetensors"
TOKENIZER_DIRECTORY = "tokenizer"  # the toolkit writes the run's tokenizer there before ``save``


class FullMethod(Method):
    description = "Full fine-tuning: every backbone weight trains together with the head."
    trains_backbone = True
    default_learning_rate = 1e-4
    default_optimizer = "adamw_torch"
    run_files = (ENCODER_DIRECTORY, ENCODER_FILE)

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
        if can_save_pretrained(encoder):
            tokenizer = directory / TOKENIZER_DIRECTORY
            save_pretrained_encoder(encoder, directory / ENCODER_DIRECTORY, tokenizer if tokenizer.is_dir() else None)
            return
        logger.warning(
            "The encoder's projection (%s) is not a linear layer: saved as %s, which only this toolkit loads.",
            type(getattr(encoder, "projection", None)).__name__, ENCODER_FILE,
        )
        # save_model (not save_file) copes with tied weights, as in T5's shared embeddings.
        save_model(encoder, str(directory / ENCODER_FILE))

    def load_trained(self, backbone: Backbone, checkpoint: str, directory: Path, config: Any) -> nn.Module:
        folder = directory / ENCODER_DIRECTORY
        if folder.is_dir():  # the fine-tuned model is complete in the run: the base checkpoint is not read
            encoder = backbone.load_encoder(str(folder))
            load_projection_weights(encoder, folder)
        else:
            encoder = backbone.load_encoder(checkpoint)
            load_model(encoder, str(directory / ENCODER_FILE), device="cpu")
        return encoder.eval()
