"""Building blocks for backbones built on Hugging Face encoders.

``TransformerBackbone`` implements the Backbone contract for any model that
``AutoModel`` loads; a plugin for a new encoder usually only sets class
attributes. ``PooledEncoder`` is the module every method adapts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from review_toolkit.errors import PluginError
from review_toolkit.runtime.hub import hub_reachable, offline_by_setting
from review_toolkit.runtime.quiet import quiet_call
from review_toolkit.plugin_api.contracts import Backbone


class PooledEncoder(nn.Module):
    """A transformer followed by masked mean pooling and an optional projection.

    The transformer sits in its own attribute so that methods can wrap it
    (LoRA) or quantize it (QLoRA) while the projection stays in full precision.
    """

    def __init__(self, transformer: nn.Module, embedding_size: int, projection: nn.Module | None = None):
        super().__init__()
        self.transformer = transformer
        self.projection = projection
        self.embedding_size = embedding_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled embeddings ``[batch, embedding_size]`` of padded reviews ``[batch, length]`` and their mask."""
        outputs = self.transformer(input_ids=input_ids, attention_mask=attention_mask)
        hidden = outputs[0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        if self.projection is not None:
            pooled = self.projection(pooled.to(self.projection.weight.dtype))
        return pooled


def load_pretrained(loader: Any, checkpoint: str, what: str, **kwargs: Any) -> Any:
    """Call ``loader.from_pretrained`` and turn a missing checkpoint into a message, not a hub traceback.

    A hub id is looked up in the local cache only when the hub is unreachable or offline by
    setting, so that a missing checkpoint fails in seconds instead of after minutes of retries.
    """
    local = Path(checkpoint).expanduser()
    hub_down = not local.exists() and not hub_reachable()
    if hub_down:
        kwargs["local_files_only"] = True
    try:
        with quiet_call(progress=True):  # the library's own retry and HTTP lines would precede ours
            return loader.from_pretrained(checkpoint, **kwargs)
    except (OSError, ValueError) as error:
        if local.exists():
            detail = f"{local} exists but is not a complete {what} directory ({type(error).__name__}: {error})"
        else:
            reason = "HF_HUB_OFFLINE is set" if offline_by_setting() else (
                "the Hub cannot be reached" if hub_down else "no such model id, or no network"
            )
            detail = (
                f"{checkpoint!r} is not a local directory and not in the local Hugging Face cache, and it could "
                f"not be fetched ({reason})"
            )
        raise PluginError(
            f"Could not load the {what} for {checkpoint!r}: {detail}. "
            "Pass a local copy with --model /path/to/model (a directory with config.json and weights), "
            "or make the Hub reachable."
        ) from error


class TransformerBackbone(Backbone):
    """Backbone for encoders that ``AutoModel`` loads, pooled by masked mean."""

    #: Set by the composer from ``--trust-remote-code``; off means no downloaded code runs.
    trust_remote_code: bool = False
    #: Extra keyword arguments for ``from_pretrained`` of the model.
    model_kwargs: ClassVar[dict[str, Any]] = {}

    def load_tokenizer(self, checkpoint: str) -> Any:
        from transformers import AutoTokenizer

        tokenizer = load_pretrained(AutoTokenizer, checkpoint, "tokenizer", trust_remote_code=self.trust_remote_code)
        if tokenizer.pad_token is None:  # some tokenizers ship without one; padding needs it
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        return tokenizer

    def load_transformer(self, checkpoint: str, **kwargs: Any) -> nn.Module:
        from transformers import AutoModel

        return load_pretrained(
            AutoModel,
            checkpoint,
            "model",
            trust_remote_code=self.trust_remote_code,
            **self.model_kwargs,
            **kwargs,
        )

    def load_encoder(
        self,
        checkpoint: str,
        *,
        quantization_config: Any | None = None,
        dtype: torch.dtype | None = None,
        device_map: Any | None = None,
    ) -> nn.Module:
        kwargs: dict[str, Any] = {}
        if quantization_config is not None:
            kwargs["quantization_config"] = quantization_config
        # Weights train in float32 (mixed precision comes from Trainer's autocast); a checkpoint
        # stored in fp16 would otherwise load, and train, in fp16.
        kwargs["dtype"] = dtype or torch.float32
        if device_map is not None:
            kwargs["device_map"] = device_map
        transformer = self.load_transformer(checkpoint, **kwargs)
        return PooledEncoder(transformer, transformer.config.hidden_size)
