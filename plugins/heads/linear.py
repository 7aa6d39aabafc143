"""linear: one linear layer on the pooled vector, the default head for training methods."""

from __future__ import annotations

from torch import nn

from review_toolkit.plugin_api import PluginOption, Search, TorchHead


class LinearHead(TorchHead):
    description = "Dropout and one linear layer on the pooled vector (trained by Trainer)."
    declared_options = (
        PluginOption(
            "dropout", float, 0.1, "Dropout on the pooled vector while training.",
            check=lambda value: None if 0 <= value < 1 else "must be in [0, 1)", search=Search(low=0.0, high=0.5),
        ),
    )

    def build(self, in_features: int, num_labels: int) -> nn.Module:
        return nn.Sequential(nn.Dropout(self.options["dropout"]), nn.Linear(in_features, num_labels))
