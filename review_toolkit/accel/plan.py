"""What speeds up one training run, decided once, applied in one place, recorded in run.json.

``AccelerationPlan`` looks at the configuration, the encoder the method built and the
process layout, and says for each speed measure whether it applies and why: mixed
precision, packed batches (and with them the attention implementation), fused LoRA
layers, compiled encoder layers, CUDA graphs, and token-budget batches. The training
code asks the plan for the collator and batch sampler to use and lets it prepare the
encoder and the model; it knows nothing of the measures themselves.

None of these changes what a step computes, only how fast: ``AccelerationPlan.plain()``
applies none of them and trains the same model, slower.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch
from torch import nn

from review_toolkit.accel.batching import TokenBudgetBatchSampler
from review_toolkit.accel.compilation import compile_encoder_layers
from review_toolkit.accel.fused_lora import fuse_lora_layers, has_lora_layers
from review_toolkit.accel.graphs import GraphedEncoder, cuda_graphs_wanted, graph_obstacles
from review_toolkit.accel.packing import (
    ATTENTION_NAME,
    PackedBatchEncoder,
    PackedCollator,
    StaticRowLayout,
    enable_packed_attention,
    packing_wanted,
)
from review_toolkit.config import TrainConfig
from review_toolkit.runtime import distributed

logger = logging.getLogger(__name__)

#: Padded batches are padded to a multiple of this many tokens: a handful of shapes for the
#: matrix products instead of one per batch length.
PAD_TO_MULTIPLE_OF = 8


@dataclass(frozen=True)
class Choice:
    """Whether one speed measure applies to this run, and why (or why not)."""

    applies: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"applies": self.applies, "reason": self.reason}


def _off(reason: str) -> Choice:
    return Choice(False, reason)


def mixed_precision(config: TrainConfig) -> Choice:
    """bf16 autocast in training: as ``bf16`` asks (GPUs only), or wherever the GPU computes in it."""
    if not torch.cuda.is_available():
        return _off("no CUDA GPU is visible")
    if config.bf16 is False:
        return _off("bf16 is set to false")
    if config.bf16:
        return Choice(True, "bf16 is set to true")
    if torch.cuda.is_bf16_supported():
        return Choice(True, "the GPU computes in bf16")
    return _off("the GPU has no bf16")


@dataclass
class AccelerationPlan:
    """The speed measures of one training run (see the module's description)."""

    bf16: Choice
    packed: Choice
    fused_lora: Choice
    compiled: Choice
    cuda_graphs: Choice
    token_budget: Choice
    #: Tokens a training batch may compute (``TokenBudgetBatchSampler``); None: Trainer's batches.
    max_tokens_per_batch: int | None = None
    #: The one shape packed training rows take, for CUDA graphs.
    row_layout: StaticRowLayout | None = None
    pad_to_multiple_of: int | None = None
    graphed: GraphedEncoder | None = field(default=None, repr=False)

    # -- deciding -------------------------------------------------------------------------

    @classmethod
    def plain(cls, reason: str = "the plain training loop was asked for") -> AccelerationPlan:
        """Nothing applies: float32, padded batches of ``batch_size``, PEFT's own layers, eager steps."""
        off = _off(reason)
        return cls(bf16=off, packed=off, fused_lora=off, compiled=off, cuda_graphs=off, token_budget=off)

    @classmethod
    def for_head_training(cls, config: TrainConfig, method: str) -> AccelerationPlan:
        """A head trained on frozen embeddings: mixed precision is all that applies."""
        no_encoder = f"method {method!r} trains no encoder layers"
        if config.compile:
            logger.warning("--compile applies to fine-tuning methods; %s.", no_encoder)
        return replace(cls.plain(no_encoder), bf16=mixed_precision(config))

    @classmethod
    def for_fine_tuning(
        cls, config: TrainConfig, encoder: nn.Module, *, backbone: str, max_length: int
    ) -> AccelerationPlan:
        """The measures for fine-tuning ``encoder`` (as the method built it) under ``config``,
        in this launch's processes. Refuses, naming the option, what was asked for and cannot apply."""
        bf16 = mixed_precision(config)
        packed = cls._packing(config, encoder, backbone=backbone, bf16=bf16.applies)
        token_budget, max_tokens = cls._token_budget(config, max_length)
        graphs = cls._cuda_graphs(config, packed=packed.applies)
        layout = StaticRowLayout.for_budget(max_tokens, config.batch_size, max_length) if graphs.applies else None
        return cls(
            bf16=bf16,
            packed=packed,
            fused_lora=cls._fused_lora(config, encoder),
            compiled=Choice(True, "compile is set") if config.compile else _off("compile is not set"),
            cuda_graphs=graphs,
            token_budget=token_budget,
            max_tokens_per_batch=max_tokens,
            row_layout=layout,
            pad_to_multiple_of=None if config.pad_to_max_length else PAD_TO_MULTIPLE_OF,
        )

    @staticmethod
    def _packing(config: TrainConfig, encoder: nn.Module, *, backbone: str, bf16: bool) -> Choice:
        if config.pad_to_max_length:
            return _off("batches are padded to max_length (pad_to_max_length)")
        if config.pack_sequences is False:
            return _off("pack_sequences is set to false")
        if packing_wanted(config.pack_sequences, encoder, backbone=backbone, bf16=bf16):
            why = "pack_sequences is set" if config.pack_sequences else "bf16 on a GPU with an encoder that packs"
            return Choice(True, why)
        if not bf16:
            return _off("packed attention is fast only through the flash kernel (bf16 on a GPU)")
        return _off(f"the {backbone!r} backbone's encoder cannot train on packed reviews")

    @staticmethod
    def _token_budget(config: TrainConfig, max_length: int) -> tuple[Choice, int | None]:
        if config.pad_to_max_length:
            return _off("batches are padded to max_length (pad_to_max_length)"), None
        if not config.max_tokens_per_batch:
            return _off("max_tokens_per_batch is not set"), None
        tokens = max(config.max_tokens_per_batch, max_length)  # one full-length review always fits
        return Choice(True, f"length-sorted batches of at most {tokens} tokens (max_tokens_per_batch)"), tokens

    @staticmethod
    def _cuda_graphs(config: TrainConfig, *, packed: bool) -> Choice:
        processes = distributed.process_count()
        if cuda_graphs_wanted(config.cuda_graphs, packed=packed, config=config, processes=processes):
            return Choice(True, "packed rows of one shape on one GPU")
        if config.cuda_graphs is False:
            return _off("cuda_graphs is set to false")
        return _off("; ".join(graph_obstacles(packed=packed, config=config, processes=processes)))

    @staticmethod
    def _fused_lora(config: TrainConfig, encoder: nn.Module) -> Choice:
        if not has_lora_layers(encoder):
            return _off("the encoder has no LoRA layers")
        if config.compile:
            # The compiler fuses PEFT's operations itself; a hand-written backward stays out of its way.
            return _off("compiled layers fuse PEFT's operations themselves")
        return Choice(True, "PEFT's LoRA layers run as one autograd node each")

    # -- applying -------------------------------------------------------------------------

    def prepare_encoder(self, encoder: nn.Module) -> None:
        """Change the encoder's forward as decided (after the method built it and it was placed)."""
        if self.fused_lora.applies:
            fuse_lora_layers(encoder.transformer)
        if self.packed.applies:
            enable_packed_attention(encoder)

    def prepare_model(self, model: nn.Module) -> None:
        """Compile the composed model's encoder layers and give it the packed forward, as decided.

        ``model`` holds the encoder as ``model.encoder`` and calls ``model.batch_encoder``, when
        set, with its encoder and each batch's inputs.
        """
        if self.compiled.applies:
            compile_encoder_layers(model)
        if self.packed.applies:
            if self.cuda_graphs.applies:
                self.graphed = GraphedEncoder(model.encoder, self.row_layout)
            model.batch_encoder = PackedBatchEncoder(self.graphed)

    def collator(self, tokenizer: Any, *, max_length: int, pad_to_max_length: bool) -> Any:
        """The training and validation batches' collator: packed rows, or padded batches."""
        if self.packed.applies:
            return PackedCollator(pad_token_id=getattr(tokenizer, "pad_token_id", None) or 0, layout=self.row_layout)
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(
            tokenizer,
            padding="max_length" if pad_to_max_length else "longest",
            max_length=max_length if pad_to_max_length else None,
            pad_to_multiple_of=self.pad_to_multiple_of,
        )

    def batch_sampler(
        self, lengths: Sequence[int], *, max_batch_size: int, seed: int, processes: int
    ) -> TokenBudgetBatchSampler | None:
        """Token-budget batches over examples of these lengths, or None for Trainer's own batches."""
        if self.max_tokens_per_batch is None:
            return None
        return TokenBudgetBatchSampler(
            lengths,
            max_tokens=self.max_tokens_per_batch,
            max_batch_size=max_batch_size,
            seed=seed,
            group_size=processes,
            packed=self.packed.applies,
            layout=self.row_layout,
        )

    def finish(self, model: nn.Module) -> None:
        """After training: the model scores through its encoder itself, and the graphs' memory goes."""
        model.batch_encoder = None
        if self.graphed is not None:
            self.graphed.release()

    # -- reporting ------------------------------------------------------------------------

    @property
    def attention(self) -> str:
        """The attention implementation training batches run through."""
        return ATTENTION_NAME if self.packed.applies else "the encoder's own"

    def report(self) -> dict[str, Any]:
        """What run.json records: each measure with its reason, and what graphs actually did."""
        return {
            "packed_sequences": self.packed.applies,
            "cuda_graphs": self.graphed is not None and self.graphed.recorded,
            "acceleration": {
                "bf16": self.bf16.as_dict(),
                "packed_sequences": self.packed.as_dict(),
                "attention": self.attention,
                "fused_lora": self.fused_lora.as_dict(),
                "compiled_layers": self.compiled.as_dict(),
                "cuda_graphs": self.cuda_graphs.as_dict(),
                "token_budget_batches": self.token_budget.as_dict(),
            },
        }
