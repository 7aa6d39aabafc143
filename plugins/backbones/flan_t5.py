"""flan-t5: the encoder half of FLAN-T5 (T5EncoderModel), mean pooled; inputs end with ``</s>``.

T5 was trained on inputs that end with the end-of-sequence token. The T5
tokenizer of this transformers version appends it through its post-processor;
``load_tokenizer`` checks that and installs the same post-processor on a
tokenizer that lacks it, so truncation keeps ``</s>`` as the last token (a
``</s>`` glued onto the text would be cut off with long reviews). The fixed
tokenizer is what the run saves, so a reloaded run appends it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from review_toolkit.plugin_api import TransformerBackbone, load_pretrained
from review_toolkit.errors import PluginError

DEFAULT_CHECKPOINT = "google/flan-t5-large"
#: ``--model small`` (base, large, xl, xxl) is short for google/flan-t5-small when no such local directory exists.
SIZES = ("small", "base", "large", "xl", "xxl")


def ensure_eos(tokenizer: Any) -> Any:
    """Make ``tokenizer`` end every encoded input with its EOS token, or say why it cannot."""
    if tokenizer.eos_token_id is None:
        raise PluginError(
            "The flan-t5 backbone needs a tokenizer with an end-of-sequence token ('</s>'); this one has none. "
            "Pass --model with a T5 checkpoint (its tokenizer files included)."
        )
    if _ends_with_eos(tokenizer):
        return tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise PluginError(
            "The tokenizer of this checkpoint does not append '</s>' and cannot be told to (no tokenizers backend). "
            "Pass --model with a T5 checkpoint that ships tokenizer.json."
        )
    from tokenizers import processors

    eos, eos_id = tokenizer.eos_token, tokenizer.eos_token_id
    backend.post_processor = processors.TemplateProcessing(
        single=["$A", eos], pair=["$A", eos, "$B", eos], special_tokens=[(eos, eos_id)]
    )
    if not _ends_with_eos(tokenizer):
        raise PluginError("Could not make the tokenizer append '</s>' to T5 inputs.")
    return tokenizer


def _ends_with_eos(tokenizer: Any) -> bool:
    ids = tokenizer("a review", truncation=True, max_length=8)["input_ids"]
    return bool(ids) and ids[-1] == tokenizer.eos_token_id


class FlanT5Backbone(TransformerBackbone):
    description = (
        "FLAN-T5 encoder (T5EncoderModel; large by default, --model google/flan-t5-base or -small), "
        "mean pooled, inputs end with </s>."
    )
    default_checkpoint = DEFAULT_CHECKPOINT
    max_length = 512  # T5's training input length
    lora_targets = ("q", "k", "v", "o")  # T5 attention projections
    # T5 keeps its feed-forward output ``wo`` in float32 (transformers' _keep_in_fp32_modules: it overflows
    # in low precision); the pooled head and any projection sit outside the transformer.
    quantization_skip = ("wo", "head", "projection")

    def resolve_checkpoint(self, checkpoint: str | None) -> str:
        if checkpoint in SIZES and not Path(checkpoint).expanduser().exists():
            return f"google/flan-t5-{checkpoint}"
        return checkpoint or self.default_checkpoint

    def load_tokenizer(self, checkpoint: str) -> Any:
        return ensure_eos(super().load_tokenizer(checkpoint))

    def load_transformer(self, checkpoint: str, **kwargs: Any) -> nn.Module:
        from transformers import T5EncoderModel

        # Only the encoder is built; a full T5 checkpoint's decoder weights are skipped on load.
        return load_pretrained(T5EncoderModel, checkpoint, "model", **self.model_kwargs, **kwargs)
