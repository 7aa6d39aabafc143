"""linear: one linear layer on the pooled vector, the default head for training methods."""

from __future__ import annotations

from torch import nn

from review_toolkit.plugin_api import TorchHead


class LinearHead(TorchHead):
    description = "Dropout and one linear layer on the pooled vector (trained by Trainer)."

    def build(self, in_features: int, num_labels: int) -> nn.Module:
        return nn.Sequential(nn.Dropout(0.1), nn.Linear(in_features, num_labels))
