"""frozen: the backbone is not trained; its vectors are computed once, cached, and a head learns on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from review_toolkit.plugin_api import Backbone, Method


class FrozenMethod(Method):
    description = "Backbone untouched: embeddings are extracted once (cached on disk) and only the head learns."
    trains_backbone = False
    default_learning_rate = 1e-3  # only a small head trains
    default_head = "logreg"  # fitted on the cached vectors in seconds
    run_files = ()  # nothing of the encoder changed

    def load_for_training(self, backbone: Backbone, checkpoint: str, config: Any) -> nn.Module:
        return self._load(backbone, checkpoint)

    def save(self, encoder: nn.Module, directory: Path) -> None:
        """Nothing of the encoder changed: the run records the checkpoint it came from."""

    def load_trained(self, backbone: Backbone, checkpoint: str, directory: Path, config: Any) -> nn.Module:
        return self._load(backbone, checkpoint)

    @staticmethod
    def _load(backbone: Backbone, checkpoint: str) -> nn.Module:
        encoder = backbone.load_encoder(checkpoint)
        encoder.requires_grad_(False)
        return encoder.eval()
