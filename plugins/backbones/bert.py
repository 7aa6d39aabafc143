"""bert: any BERT-family encoder from a hub id or local path (mean pooling)."""

from __future__ import annotations

from review_toolkit.plugin_api import TransformerBackbone


class BertBackbone(TransformerBackbone):
    description = "Any BERT-style encoder (BERT, RoBERTa, MiniLM, E5...) given with --model, mean pooled."
    default_checkpoint = "bert-base-uncased"
    max_length = 512
    # Every linear layer of a block: adapting the feed-forward layers too brings LoRA to full
    # fine-tuning's accuracy (benchmarks/results/lora_defaults_minilm_h200.md). Not the pooler:
    # mean pooling never uses it, so its adapter would get no gradient.
    lora_targets = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")
    attention_lora_targets = ("query", "key", "value", "attention.output.dense")
