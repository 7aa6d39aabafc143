"""Padding-free training batches: a batch's reviews side by side in one row.

A padded batch computes every review at the length of its longest, and the
padding mask it needs rules out PyTorch's flash attention (its memory-efficient
kernel runs instead). Here the reviews of a batch are concatenated into one
row of tokens, with positions restarting at each review, and attention runs
per review through the variable-length flash kernel, told where each review
starts (``cu_seq_lens``). Matrix products see the reviews' tokens and a
short filler that keeps the row's length to a few values; pooling averages
each review's own tokens.

Encoders qualify when transformers' own classes run them through its attention
interface and take position ids (``PACKABLE_MODEL_TYPES``). The attention
function registered here serves padded batches too (evaluation, prediction),
through PyTorch's SDPA exactly as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from review_toolkit.errors import ConfigError
from review_toolkit.accel.fused_lora import compute_dtype_for
from review_toolkit.plugin_api.encoders import PooledEncoder

logger = logging.getLogger(__name__)

ATTENTION_NAME = "review_toolkit_packed"

#: Model types whose transformers classes route attention through the attention interface,
#: forward keyword arguments to it, and read positions from ``position_ids``.
PACKABLE_MODEL_TYPES = frozenset({"bert", "gte"})


_sdpa_attention: Any = None  # transformers' SDPA attention, once registered

#: Packed rows are filled up to a multiple of this many tokens (see ``PackedCollator``).
ROW_MULTIPLE = 128


def packed_row_length(review_tokens: int, multiple: int = ROW_MULTIPLE) -> int:
    """Tokens in a packed row holding ``review_tokens`` tokens of reviews, filler included."""
    return (review_tokens // multiple + 1) * multiple


def packed_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    max_length_q: int | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention over packed reviews when told where they start; SDPA on padded batches otherwise.

    ``query``/``key``/``value`` are [1, heads, tokens, head_dim]; the result is [1, tokens, heads, head_dim].
    """
    if cu_seq_lens_q is None:
        return _sdpa_attention(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if query.shape[0] != 1:
        raise ValueError(f"Packed attention takes one row of concatenated reviews, not a batch of {query.shape[0]}.")
    # [1, heads, tokens, dim] -> [tokens, heads, dim]: views, no copies.
    query, key, value = (states[0].transpose(0, 1) for states in (query, key, value))
    dtype = compute_dtype_for(query)
    if query.is_cuda and dtype in (torch.float16, torch.bfloat16):
        # Rotary embeddings (gte) leave bf16 projections in float32 under autocast; flash takes 16-bit.
        query, key, value = (states.to(dtype) for states in (query, key, value))
        output = torch.ops.aten._flash_attention_forward(
            query, key, value, cu_seq_lens_q, cu_seq_lens_q, max_length_q, max_length_q, dropout, False, False,
            scale=scaling,
        )[0]
    else:
        output = _block_diagonal_attention(query, key, value, cu_seq_lens_q, dropout, scaling)
    return output.unsqueeze(0), None


def _block_diagonal_attention(query, key, value, cu_seq_lens, dropout, scaling) -> torch.Tensor:
    """The same attention through SDPA with a block-diagonal mask: for CPUs and float32 training.

    Quadratic in the packed length, so packing is not chosen by default where this runs.
    """
    lengths = cu_seq_lens.diff().to(device=query.device, dtype=torch.long)
    review = torch.repeat_interleave(torch.arange(len(lengths), device=query.device), lengths)
    same_review = review[:, None] == review[None, :]
    output = nn.functional.scaled_dot_product_attention(
        query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1),
        attn_mask=same_review, dropout_p=dropout, scale=scaling,
    )
    return output.transpose(0, 1)


def register_packed_attention() -> None:
    """Make ``ATTENTION_NAME`` an attention implementation transformers accepts (idempotent)."""
    global _sdpa_attention
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    _sdpa_attention = sdpa_attention_forward  # looked up here, not in every layer's call
    AttentionInterface.register(ATTENTION_NAME, packed_attention)
    # Padded batches get SDPA's mask; a packed one has none (every token is a review's).
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


def pretrained_model(module: nn.Module) -> nn.Module | None:
    """The transformers model inside ``module`` (under PEFT's wrappers, for example)."""
    from transformers import PreTrainedModel

    return next((m for m in module.modules() if isinstance(m, PreTrainedModel)), None)


def supports_packing(encoder: nn.Module) -> bool:
    """Whether ``encoder`` is a mean-pooled ``PooledEncoder`` on transformers' own classes of a packable type."""
    if not isinstance(encoder, PooledEncoder) or type(encoder).forward is not PooledEncoder.forward:
        return False
    model = pretrained_model(encoder.transformer)
    if model is None or not type(model).__module__.startswith("transformers.models."):
        return False  # checkpoint-supplied code (trust_remote_code) may not route attention the same way
    return getattr(model.config, "model_type", None) in PACKABLE_MODEL_TYPES


def enable_packed_attention(encoder: nn.Module) -> None:
    """Route the encoder's attention through ``packed_attention`` (padded batches keep SDPA)."""
    register_packed_attention()
    model = pretrained_model(encoder.transformer)
    if getattr(model.config, "_attn_implementation", None) != ATTENTION_NAME:  # once: it walks every module
        model.set_attn_implementation(ATTENTION_NAME)


def packing_wanted(
    requested: bool | None, encoder: nn.Module, *, backbone: str, bf16: bool, pad_to_max_length: bool = False
) -> bool:
    """Whether to train on packed reviews: as ``pack_sequences`` asks, or by default where it pays.

    By default only for bf16 training on a GPU (the flash kernel); elsewhere packed attention
    falls back to a block-diagonal mask whose cost grows with the square of the packed length.
    Never when batches are to be padded to the maximum length (the research recipe asks for
    exactly that; asking for both is refused when the configuration is read).
    """
    if requested is False or pad_to_max_length:
        return False
    supported = supports_packing(encoder)
    if requested and not supported:
        raise ConfigError(
            f"pack_sequences: the {backbone!r} backbone's encoder cannot train on packed reviews (that needs "
            f"transformers' own classes of a model type in {sorted(PACKABLE_MODEL_TYPES)}, with mean pooling). "
            "Set pack_sequences to false, or leave it unset to pack only where supported."
        )
    if requested and supported and not bf16:
        logger.warning(
            "pack_sequences without bf16 on a GPU: packed attention runs through a block-diagonal mask here, "
            "several times slower than padded batches (benchmarks/README.md has the figures)."
        )
    return supported and (bool(requested) or bf16)


@dataclass(frozen=True)
class StaticRowLayout:
    """One shape for packed rows, as CUDA graphs replay it: every training row of a run
    (``review_toolkit.accel.graphs``), or the small scoring rows of one size (``scoring_graphs``).

    A row holds ``row_length`` tokens in ``review_slots + filler_segments`` segments: the batch's
    reviews, the review slots the batch leaves empty, and the rest of the row in ``filler_segments``
    pieces of at most ``ROW_MULTIPLE`` tokens (attention within a piece costs little; one long
    filler would attend to itself quadratically). ``TokenBudgetBatchSampler`` cuts batches that fit
    (``row_tokens``).

    In training every segment holds at least one token: an empty review slot one padding token,
    and the filler is spread over all its pieces (the backward kernels are not relied on for
    empty segments). With ``empty_segments`` (scoring, forward only), empty slots hold no token
    and the filler fills as few pieces as it needs, the others empty: the flash kernel returns at
    once for an empty segment, while any segment of up to 128 tokens costs it a whole tile, so
    a server's small rows spent most of their attention on their empty slots and filler
    (benchmarks/README.md, "Serving load").
    """

    row_length: int
    review_slots: int
    filler_segments: int
    max_segment_length: int
    empty_segments: bool = False

    @classmethod
    def for_budget(cls, max_tokens: int, max_reviews: int, max_review_length: int) -> StaticRowLayout:
        """Rows of ``max_tokens`` rounded up to a multiple of ``ROW_MULTIPLE``, for at most ``max_reviews`` reviews."""
        row_length = -(-max_tokens // ROW_MULTIPLE) * ROW_MULTIPLE
        return cls(row_length, max_reviews, row_length // ROW_MULTIPLE, max(max_review_length, ROW_MULTIPLE))

    def row_tokens(self, review_tokens: int, reviews: int) -> int:
        """Tokens a row needs for ``reviews`` reviews of ``review_tokens`` tokens: theirs and, unless
        segments may be empty, one per empty review slot and one per filler segment. At most
        ``row_length`` to fit."""
        if self.empty_segments:
            return review_tokens
        return review_tokens + max(self.review_slots - reviews, 0) + self.filler_segments

    @property
    def longest_review(self) -> int:
        """Tokens of the longest review a row of this layout can hold."""
        return min(self.max_segment_length, self.row_length - self.row_tokens(0, 1))

    def fits(self, lengths: list[int]) -> bool:
        """Whether reviews of these lengths fit the layout (else the batch takes a row of its own length)."""
        return (
            len(lengths) <= self.review_slots
            and self.row_tokens(sum(lengths), len(lengths)) <= self.row_length
            and max(lengths, default=0) <= self.max_segment_length
        )

    def segment_lengths(self, lengths: list[int]) -> list[int]:
        """Tokens of each segment of a row holding reviews of ``lengths`` (which must fit)."""
        empty_slots = self.review_slots - len(lengths)
        if self.empty_segments:
            rest = self.row_length - sum(lengths)
            piece = max(ROW_MULTIPLE, -(-rest // self.filler_segments))
            full, last = divmod(rest, piece)
            filler = [piece] * full + [last] * (last > 0)
            return [*lengths, *[0] * empty_slots, *filler, *[0] * (self.filler_segments - len(filler))]
        rest = self.row_length - sum(lengths) - empty_slots
        pieces, longer = divmod(rest, self.filler_segments)
        filler = [pieces + 1] * longer + [pieces] * (self.filler_segments - longer)
        return [*lengths, *[1] * empty_slots, *filler]


class PackedCollator:
    """Concatenates a batch's tokenized reviews into one row, with what attention and pooling need.

    The reviews come first, one segment each; after them the row holds padding tokens in
    segments of their own, which attend only to themselves and are left out of pooling
    (``reviews`` says how many segments are reviews). Without ``layout`` that is one filler
    segment that rounds the row's length up to a multiple of ``multiple`` (1 to ``multiple``
    tokens): rows of every possible length would give the matrix products a shape never seen
    before on nearly every step, and each new shape costs cuBLAS a search for its kernel on the
    CPU that launches them. With ``layout``, every batch that fits it takes its one shape.

    ``labels`` comes first: Trainer reads a batch's size from its first tensor.
    """

    def __init__(
        self, pad_token_id: int = 0, multiple: int = ROW_MULTIPLE, layout: StaticRowLayout | None = None
    ) -> None:
        self.pad_token_id = pad_token_id
        self.multiple = multiple
        self.layout = layout

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        lengths = [len(feature["input_ids"]) for feature in features]
        review_tokens = sum(lengths)
        if self.layout is not None and self.layout.fits(lengths):
            segment_lengths = self.layout.segment_lengths(lengths)
            max_length = self.layout.max_segment_length
        else:
            segment_lengths = [*lengths, packed_row_length(review_tokens, self.multiple) - review_tokens]
            max_length = max(segment_lengths)
        row_length = sum(segment_lengths)
        tokens = [token for feature in features for token in feature["input_ids"]]
        tokens += [self.pad_token_id] * (row_length - review_tokens)
        segment_lengths = torch.tensor(segment_lengths)
        starts = torch.zeros(len(segment_lengths) + 1, dtype=torch.int32)
        starts[1:] = segment_lengths.cumsum(0)
        segment = torch.repeat_interleave(torch.arange(len(segment_lengths)), segment_lengths)
        return {
            "labels": torch.tensor([int(feature["labels"]) for feature in features]),
            "input_ids": torch.tensor(tokens).unsqueeze(0),
            "position_ids": (torch.arange(row_length) - starts[segment].long()).unsqueeze(0),
            "cu_seq_lens": starts,
            "max_length": max_length,
            "review_index": segment,
            "reviews": len(features),
        }


def mean_per_review(
    hidden: torch.Tensor, review_index: torch.Tensor, cu_seq_lens: torch.Tensor, reviews: int | None = None
) -> torch.Tensor:
    """[tokens, width] states of a packed row -> [reviews, width]: the mean of each of the first
    ``reviews`` segments (the rest are ``PackedCollator``'s filler; None: all but the last).
    Lengths come from ``cu_seq_lens`` and the count from its shape: nothing waits for the GPU."""
    segments = cu_seq_lens.shape[0] - 1
    reviews = segments - 1 if reviews is None else reviews
    sums = hidden.new_zeros(segments, hidden.shape[-1]).index_add_(0, review_index, hidden)
    # An empty review slot (``StaticRowLayout.empty_segments``) pools to zeros, not 0 / 0.
    counts = cu_seq_lens[: reviews + 1].diff().clamp(min=1)
    return sums[:reviews] / counts.unsqueeze(-1).to(hidden.dtype)


def packed_pooled(
    encoder: PooledEncoder,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    cu_seq_lens: torch.Tensor,
    max_length: int,
    review_index: torch.Tensor,
    reviews: int | None = None,
) -> torch.Tensor:
    """What ``encoder`` computes for padded reviews, for the reviews of one packed row:
    its transformer on the row (attention told where each review starts), the mean of each
    review's tokens, then its projection. ``[reviews, embedding_size]``."""
    outputs = encoder.transformer(
        input_ids=input_ids, position_ids=position_ids,
        cu_seq_lens_q=cu_seq_lens, cu_seq_lens_k=cu_seq_lens, max_length_q=max_length, max_length_k=max_length,
    )
    pooled = mean_per_review(outputs[0][0], review_index, cu_seq_lens, reviews)
    if encoder.projection is not None:
        pooled = encoder.projection(pooled.to(encoder.projection.weight.dtype))
    return pooled


class PackedBatchEncoder:
    """Pooled embeddings of a training batch, packed (``PackedCollator``'s fields) or padded.

    Called by the classifier model with its encoder and the batch's inputs: packed rows go
    through ``packed_pooled`` (or, in training, through the recorded CUDA graphs of ``graphed``
    where the row has their shape), padded batches through the encoder itself. Not a module:
    the encoder stays where it is in the model, and so do its weights' names.
    """

    def __init__(self, graphed: Any | None = None) -> None:
        self.graphed = graphed  # a review_toolkit.accel.graphs.GraphedEncoder, or None

    def __call__(
        self,
        encoder: PooledEncoder,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        cu_seq_lens: torch.Tensor | None = None,
        max_length: int | None = None,
        review_index: torch.Tensor | None = None,
        reviews: int | None = None,
        **unused: Any,  # e.g. the "length" column used for length-grouped batches
    ) -> torch.Tensor:
        if cu_seq_lens is None:
            return encoder(input_ids=input_ids, attention_mask=attention_mask)
        if self.graphed is not None and encoder.training and torch.is_grad_enabled():
            pooled = self.graphed(input_ids, position_ids, cu_seq_lens, review_index, max_length)
            if pooled is not None:
                return pooled[:reviews]  # the layout's empty review slots are left out
        return packed_pooled(encoder, input_ids, position_ids, cu_seq_lens, max_length, review_index, reviews)
