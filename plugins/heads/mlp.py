"""mlp: the research's MLP head (256 -> 128, ReLU, dropout 0.5)."""

from __future__ import annotations

from torch import nn

from review_toolkit.plugin_api import TorchHead


class MlpHead(TorchHead):
    description = "MLP 256 -> 128 with ReLU and dropout 0.5, as in the research (trained by Trainer)."

    def build(self, in_features: int, num_labels: int) -> nn.Module:
        return nn.Sequential(
            nn.Linear(in_features, 256),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(256, 128),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(128, num_labels),
        )
