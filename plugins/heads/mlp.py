"""mlp: the research's MLP head (256 -> 128, ReLU, dropout 0.5)."""

from __future__ import annotations

from torch import nn

from review_toolkit.plugin_api import PluginOption, Search, TorchHead


class MlpHead(TorchHead):
    description = "MLP 256 -> 128 with ReLU and dropout 0.5, as in the research (trained by Trainer)."
    declared_options = (
        PluginOption(
            "hidden_sizes", tuple[int, ...], (256, 128), "Widths of the hidden layers, in order.", minimum=1,
            search=Search(choices=("128", "256", "256,128", "512,256")),
        ),
        PluginOption(
            "dropout", float, 0.5, "Dropout after each hidden layer while training.",
            check=lambda value: None if 0 <= value < 1 else "must be in [0, 1)", search=Search(low=0.0, high=0.6),
        ),
    )

    def build(self, in_features: int, num_labels: int) -> nn.Module:
        layers: list[nn.Module] = []
        for width in self.options["hidden_sizes"]:
            layers += [nn.Linear(in_features, width), nn.ReLU(), nn.Dropout(self.options["dropout"])]
            in_features = width
        return nn.Sequential(*layers, nn.Linear(in_features, num_labels))
