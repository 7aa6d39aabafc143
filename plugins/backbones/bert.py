"""bert: any BERT-family encoder from a hub id or local path (mean pooling)."""

from __future__ import annotations

from review_toolkit.plugin_api import TransformerBackbone


class BertBackbone(TransformerBackbone):
    description = "Any BERT-style encoder (BERT, RoBERTa, MiniLM, E5...) given with --model, mean pooled."
    default_checkpoint = "bert-base-uncased"
    max_length = 512
    lora_targets = ("query", "key", "value", "attention.output.dense")
