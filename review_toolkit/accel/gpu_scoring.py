"""Embedding reviews on a GPU: packed rows where the encoder packs, token-budget batches otherwise.

Scoring has no backward pass and no optimizer, so a forward pass is all there is: its cost is the
tokens it computes. Padded batches compute every review at the length of the longest in its batch
and, with a padding mask, cannot use PyTorch's flash attention. Packed rows (the reviews of a row
concatenated, positions restarting at each, attention per review through the variable-length
flash kernel, as in training: ``review_toolkit.accel.packing``) compute only the reviews' own
tokens. Rows are cut from the reviews sorted by length, longest first, up to a token budget, so
nearly every row has the budget's length and the matrix products see few shapes.

Encoders that do not pack (T5's relative attention bias, checkpoint-supplied code) get padded
batches cut from the length-sorted order under the same token budget, rather than a fixed
number of reviews: short reviews share large batches, long ones small.

Inputs travel to the GPU, and each row's vectors back, through page-locked memory without
waiting: nothing makes the host wait for the GPU between rows, and the vectors are put back in
input order on the host once the last row is copied. Small rows (a server's batches, the end of a
file) cost the host more time to launch than the GPU to compute: they replay recorded CUDA graphs
(``review_toolkit.accel.scoring_graphs``), each in a handful of calls into PyTorch.

Several threads may score with one encoder at once (a server keeps batches in flight). Each call
computes on a lane (``review_toolkit.accel.scoring_lanes``: a CUDA stream and the graphs replayed on
it): calls on lanes of their own are computed side by side, calls sharing one, one after another.
One thread at a time queues its call's work, up to the copy of its vectors back to the host (the
host launches one call's kernels at a time anyway, and an encoder's modules, compiled ones above
all, are not made to be entered by two threads at once), and waits for them outside, so the next
call's work is queued while the GPU still computes this one.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from review_toolkit.accel.scoring_graphs import input_views, input_words
from review_toolkit.accel.scoring_lanes import scoring_lanes_for
from review_toolkit.accel.packing import (
    ROW_MULTIPLE,
    StaticRowLayout,
    enable_packed_attention,
    packed_pooled,
    packed_row_length,
    supports_packing,
)

#: Tokens a packed row or a padded batch computes at most (filler and padding included).
#: Large enough that the matrix products run near the card's peak, small enough that a
#: Stella-size encoder's activations stay a few GiB (benchmarks/README.md, "GPU scoring").
GPU_SCORING_TOKENS = 32768
#: Reviews in one padded batch at most (short reviews would otherwise make huge batches).
MAX_PADDED_REVIEWS = 1024
#: A padded batch that holds this many tokens closes rather than take a review this many times
#: longer than its shortest (``padded_batches``).
PADDED_BATCH_MIN_TOKENS = 16384
PADDED_LENGTH_SPREAD = 1.15


def use_shape_agnostic_attention() -> None:
    """Keep PyTorch's attention off the cuDNN backend on GPUs.

    cuDNN builds an execution plan for every new input shape, on the CPU, at
    every call with a new shape; length-sorted batches bring a new sequence length
    almost every batch, and those plans cost more than the attention itself
    (benchmarks/README.md, "cuDNN attention and varying lengths"). The flash and
    memory-efficient kernels take any shape as it comes.
    """
    if torch.cuda.is_available():
        torch.backends.cuda.enable_cudnn_sdp(False)


def scores_in_bf16(device: torch.device) -> bool:
    """Whether scoring on ``device`` computes in bf16 (``embed_on_gpu``): a CUDA GPU with bf16."""
    return device.type == "cuda" and _bf16_gpu(torch.cuda.current_device() if device.index is None else device.index)


@functools.cache
def _bf16_gpu(index: int) -> bool:
    # Asked at every scoring call; the answer takes several calls into the CUDA runtime.
    with torch.cuda.device(index):
        return torch.cuda.is_bf16_supported()


def keep_linear_weights_in_bf16(encoder: nn.Module) -> int:
    """Store the weights and biases of ``encoder``'s plain linear layers in bf16; returns how many.

    Scoring under bf16 autocast casts every float32 linear weight to bf16 again at every call
    (autocast keeps no cast of weights that need no gradient): one more kernel per layer per row
    and a read of the float32 weights. Cast once, the products see the very same bf16 values
    and give the same results; norms, embeddings and the rest keep their dtype, as autocast
    keeps their arithmetic in float32. Subclasses of ``nn.Linear`` (4-bit layers, adapters) are
    left as they are.
    """
    count = 0
    for module in encoder.modules():
        if type(module) is nn.Linear and module.weight.dtype == torch.float32:
            module.to(torch.bfloat16)
            count += 1
    return count


def packs_on(encoder: nn.Module, device: torch.device) -> bool:
    """Whether ``encoder`` scores in packed rows on ``device``: a CUDA GPU with bf16 and a packable encoder."""
    return scores_in_bf16(device) and supports_packing(encoder)


def packed_rows(lengths: Sequence[int], max_tokens: int = GPU_SCORING_TOKENS) -> list[list[int]]:
    """Indices of reviews grouped into rows, longest reviews first, each row's tokens (with the
    filler that rounds it to ``ROW_MULTIPLE``) within ``max_tokens`` unless one review is longer."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
    rows: list[list[int]] = []
    row: list[int] = []
    tokens = 0
    for index in order:
        if row and packed_row_length(tokens + lengths[index]) > max_tokens:
            rows.append(row)
            row, tokens = [], 0
        row.append(index)
        tokens += lengths[index]
    if row:
        rows.append(row)
    return rows


def padded_batches(lengths: Sequence[int], max_tokens: int = GPU_SCORING_TOKENS) -> list[list[int]]:
    """Indices grouped into length-sorted padded batches of at most ``max_tokens`` padded tokens.

    Filling every batch to the budget pads each to its longest review over a wide range of
    lengths wherever few reviews share a length (the long tail, or a chunk of a thousand
    reviews): a batch also closes once it holds ``PADDED_BATCH_MIN_TOKENS`` and the next review
    is more than ``PADDED_LENGTH_SPREAD`` times its shortest. Each batch costs the host a launch of
    every layer, so batches stay large: closing them earlier padded less but ran slower
    (benchmarks/README.md, "GPU scoring").
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    batch: list[int] = []
    for index in order:
        length = lengths[index]
        if batch:
            count, shortest, longest = len(batch), lengths[batch[0]], lengths[batch[-1]]
            full = count >= MAX_PADDED_REVIEWS or (count + 1) * length > max_tokens
            spread = length > PADDED_LENGTH_SPREAD * shortest and count * longest >= PADDED_BATCH_MIN_TOKENS
            if full or spread:
                batches.append(batch)
                batch = []
        batch.append(index)
    if batch:
        batches.append(batch)
    return batches


_QUEUEING: "weakref.WeakKeyDictionary[nn.Module, threading.Lock]" = weakref.WeakKeyDictionary()
_QUEUEING_LOCKS = threading.Lock()


def queueing_lock(encoder: nn.Module) -> threading.Lock:
    """The lock a thread holds while it queues scoring work for ``encoder`` on the GPU."""
    with _QUEUEING_LOCKS:
        lock = _QUEUEING.get(encoder)
        if lock is None:
            lock = _QUEUEING[encoder] = threading.Lock()
        return lock


def _pinned(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``array`` on ``device``; to a GPU from page-locked memory, so the copy need not wait."""
    tensor = torch.from_numpy(array)
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def _row_arrays(token_ids: list[np.ndarray], row: list[int], layout: StaticRowLayout | None) -> dict:
    """One packed row's inputs on the host: ids, positions, segment starts, each token's segment."""
    lengths = np.fromiter((len(token_ids[i]) for i in row), dtype=np.int64, count=len(row))
    review_tokens = int(lengths.sum())
    if layout is None:
        row_length = packed_row_length(review_tokens, ROW_MULTIPLE)
        segment_lengths = np.append(lengths, row_length - review_tokens)  # the last segment is filler
        # The flash kernel sizes its grid by this bound; rounded up, it takes a few values only
        # (compiled layers would otherwise be recompiled for every new longest review).
        max_length = packed_row_length(int(segment_lengths.max()) - 1)
    else:
        row_length = layout.row_length
        segment_lengths = np.asarray(layout.segment_lengths(lengths.tolist()), dtype=np.int64)
        max_length = layout.max_segment_length
    starts = np.zeros(len(segment_lengths) + 1, dtype=np.int32)
    starts[1:] = np.cumsum(segment_lengths)
    segment = np.repeat(np.arange(len(segment_lengths)), segment_lengths)
    ids = np.zeros(row_length, dtype=np.int64)
    ids[:review_tokens] = np.concatenate([token_ids[i] for i in row])
    positions = np.arange(row_length, dtype=np.int64) - starts[segment]
    return {"input_ids": ids, "position_ids": positions, "cu_seq_lens": starts, "review_index": segment, "max_length": max_length}


def packed_inputs(
    token_ids: list[np.ndarray], row: list[int], device: torch.device, layout: StaticRowLayout | None = None
) -> dict:
    """One packed row's tensors on ``device``: ids, positions, review starts and each token's review.

    Without ``layout`` the reviews are followed by one filler segment up to a multiple of
    ``ROW_MULTIPLE``; with it, the row takes that layout's one shape (a recorded graph's).
    """
    arrays = _row_arrays(token_ids, row, layout)
    return {
        "input_ids": _pinned(arrays["input_ids"], device).unsqueeze(0),
        "position_ids": _pinned(arrays["position_ids"], device).unsqueeze(0),
        "cu_seq_lens": _pinned(arrays["cu_seq_lens"], device),
        "max_length": arrays["max_length"],
        "review_index": _pinned(arrays["review_index"], device),
        "reviews": len(row),
    }


def graph_row(token_ids: list[np.ndarray], row: list[int], layout: StaticRowLayout) -> torch.Tensor:
    """One packed row of ``layout`` as a recorded graph takes it: its inputs in one page-locked
    buffer (``scoring_graphs.input_views``), copied to the GPU in one copy."""
    arrays = _row_arrays(token_ids, row, layout)
    buffer = torch.empty(input_words(layout), dtype=torch.int64, pin_memory=torch.cuda.is_available())  # CPU-only builds cannot pin
    for name, view in input_views(buffer.numpy(), layout, np.int32).items():
        view[...] = arrays[name].reshape(view.shape)
    return buffer


def _packed_row(encoder: nn.Module, ids: list[np.ndarray], row: list[int], device: torch.device, graphs) -> torch.Tensor:
    """The row's float32 vectors; from a graph's output where it replays one (valid until that
    layout's next replay)."""
    layout = graphs.layout_for([len(ids[i]) for i in row]) if graphs is not None else None
    if layout is not None:
        vectors = graphs.replay(layout, graph_row(ids, row, layout), len(row))
        if vectors is not None:
            return vectors
    return packed_pooled(encoder, **packed_inputs(ids, row, device)).float()


def _padded_inputs(token_ids: list[np.ndarray], batch: list[int], pad_token_id: int, device: torch.device) -> dict:
    longest = max(len(token_ids[i]) for i in batch)
    ids = np.full((len(batch), longest), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(batch), longest), dtype=np.int64)
    for slot, index in enumerate(batch):
        ids[slot, : len(token_ids[index])] = token_ids[index]
        mask[slot, : len(token_ids[index])] = 1
    return {"input_ids": _pinned(ids, device), "attention_mask": _pinned(mask, device)}


@torch.inference_mode()
def record_scoring_graphs(encoder: nn.Module, device: torch.device, lanes: int = 1) -> int:
    """Record now the CUDA graph of every small-row layout ``embed_on_gpu`` replays on ``device``,
    on each of ``lanes`` lanes, the lanes calls in flight share from now on (otherwise each graph
    is recorded by the first row that needs it, which then waits for it); returns how many graphs
    each lane has, 0 where the encoder scores without them. On compiled layers, the first
    recordings also compile them (seconds to tens of seconds)."""
    if not packs_on(encoder, device):
        return 0
    if encoder.training:
        encoder.eval()
    use_shape_agnostic_attention()
    enable_packed_attention(encoder)
    scoring_lanes = scoring_lanes_for(encoder, device)
    made = scoring_lanes.ensure(lanes)
    for lane in made:
        with scoring_lanes.borrow(lane), queueing_lock(encoder), torch.cuda.stream(lane.stream):
            lane.stream.wait_stream(torch.cuda.default_stream(device))
            with torch.autocast("cuda", dtype=torch.bfloat16):
                for layout in lane.graphs.layouts:
                    if not lane.graphs.enabled:  # a forward pass a graph cannot hold
                        return 0
                    # One review as long as the layout holds: its shape is all a recording needs.
                    review = np.zeros(layout.longest_review, dtype=np.int64)
                    lane.graphs.replay(layout, graph_row([review], [0], layout), 1)
    torch.cuda.synchronize(device)
    return min(lane.graphs.recorded for lane in made)


def embed_on_gpu(
    encoder: nn.Module,
    chunks: Iterable[Sequence[Sequence[int]]],
    *,
    pad_token_id: int,
    device: torch.device,
    max_tokens: int = GPU_SCORING_TOKENS,
    pack: bool | None = None,
    replay_graphs: bool = True,
    progress=None,
) -> np.ndarray:
    """Pooled float32 vectors of tokenized reviews, in input order, computed in bf16 on ``device``.

    ``chunks`` are consecutive pieces of the input, each a list of token ids per review: rows
    and batches are cut within a chunk, so the GPU computes one chunk while the next is still
    being tokenized. ``pack``: packed rows (True; the encoder must support them), padded batches
    (False), or packed rows wherever the encoder and the GPU support them (None). Small packed rows
    replay recorded CUDA graphs unless ``replay_graphs`` is False
    (``review_toolkit.accel.scoring_graphs``). ``progress``
    (a tqdm bar, say) is advanced by the number of reviews of each row or batch.
    """
    queued = queue_on_gpu(
        encoder, chunks, pad_token_id=pad_token_id, device=device, max_tokens=max_tokens, pack=pack,
        replay_graphs=replay_graphs, progress=progress,
    )
    return queued.result()


class QueuedWork:
    """Work queued on a GPU, finished in two steps: ``wait()`` blocks until the GPU has done its
    part, without holding the interpreter's lock (a thread's job); ``result()`` then finishes it
    on the host, in any thread, and returns it (once only; it waits first if need be)."""

    def __init__(self, wait: Callable[[], None], result: Callable[[], Any]):
        self.wait, self.result = wait, result

    def then(self, finish: Callable[[Any], Any]) -> "QueuedWork":
        """The same work, whose result is ``finish`` of this one's."""
        return QueuedWork(self.wait, lambda: finish(self.result()))


@dataclass(eq=False)
class QueuedVectors:
    """The vectors of reviews whose work is queued on a GPU (``queue_on_gpu``)."""

    on_host: list[torch.Tensor]  # each row's vectors, in row order, once ``copied`` has passed
    positions: np.ndarray  # the input position of each of their reviews
    copied: torch.cuda.Event
    release: Callable[[], None]  # gives the lane back
    released: bool = False

    def wait(self) -> None:
        """Block until the vectors are on the host (without holding the interpreter's lock), and
        give the lane back: the vectors lie in memory of this call's own."""
        if self.released:
            return
        try:
            self.copied.synchronize()
        finally:
            self.released = True
            self.release()

    def result(self) -> np.ndarray:
        """The vectors, float32, in input order (waiting for them first if need be). Once only."""
        self.wait()
        vectors = np.empty((len(self.positions), self.on_host[0].shape[1]), dtype=np.float32)
        start = 0
        for piece in self.on_host:  # rows come back longest reviews first: each review to its input position
            vectors[self.positions[start : start + len(piece)]] = piece.numpy()
            start += len(piece)
        return vectors

    def then(self, finish: Callable[[np.ndarray], Any]) -> QueuedWork:
        """The work of ``finish`` on these vectors, queued as they are (``QueuedWork``)."""
        return QueuedWork(self.wait, self.result).then(finish)


@torch.inference_mode()
def queue_on_gpu(
    encoder: nn.Module,
    chunks: Iterable[Sequence[Sequence[int]]],
    *,
    pad_token_id: int,
    device: torch.device,
    max_tokens: int = GPU_SCORING_TOKENS,
    pack: bool | None = None,
    replay_graphs: bool = True,
    progress=None,
) -> QueuedVectors:
    """``embed_on_gpu``'s work, queued on the GPU; returns at once, before the GPU has computed it.

    The caller must call ``wait()`` or ``result()`` on what it returns: until then, the call holds a lane.
    """
    use_shape_agnostic_attention()
    packed = packs_on(encoder, device) if pack is None else pack
    if packed:
        enable_packed_attention(encoder)
    lanes = scoring_lanes_for(encoder, device)
    lane = lanes.take()
    try:
        with queueing_lock(encoder), torch.cuda.stream(lane.stream):
            # What was queued before on the default stream (the weights' copy to the GPU, say) comes first.
            lane.stream.wait_stream(torch.cuda.default_stream(device))
            graphs = lane.graphs if packed and replay_graphs else None
            on_host, positions, copied = _embed(encoder, chunks, pad_token_id, device, max_tokens, packed, graphs, progress)
    except BaseException:
        lanes.give_back(lane)
        raise
    return QueuedVectors(on_host, positions, copied, functools.partial(lanes.give_back, lane))


def replays_one_graph(encoder: nn.Module, device: torch.device, lengths: Sequence[int]) -> bool:
    """Whether reviews of these lengths are scored as one row replayed from a graph already
    recorded (``record_scoring_graphs``): queuing them costs the host a handful of calls into
    PyTorch, rather than a launch of every layer's kernels (or a recording)."""
    if not packs_on(encoder, device):
        return False
    lanes = scoring_lanes_for(encoder, device).lanes
    return bool(lanes) and lanes[0].graphs.replays(list(lengths))


def _embed(encoder, chunks, pad_token_id, device, max_tokens, packed, graphs, progress) -> tuple[list[torch.Tensor], np.ndarray, torch.cuda.Event]:
    """Queue the forward passes of ``chunks`` on the current stream, each row's vectors copied to
    the host as soon as they are computed; returns those host tensors in row order, the input
    position of each of their reviews, and the event after which they hold the vectors."""
    on_host: list[torch.Tensor] = []
    positions: list[np.ndarray] = []
    offset = 0
    with torch.autocast("cuda", dtype=torch.bfloat16):
        for chunk in chunks:
            ids = [np.asarray(review, dtype=np.int64) for review in chunk]
            lengths = [len(review) for review in ids]
            groups = packed_rows(lengths, max_tokens) if packed else padded_batches(lengths, max_tokens)
            for group in groups:
                if packed:
                    vectors = _packed_row(encoder, ids, group, device, graphs)
                else:
                    vectors = encoder(**_padded_inputs(ids, group, pad_token_id, device)).float()
                # Queued before anything that could write them again (a graph's next replay).
                host = torch.empty(vectors.shape, dtype=torch.float32, pin_memory=True)
                host.copy_(vectors, non_blocking=True)
                on_host.append(host)
            if groups:
                positions.append(offset + np.concatenate(groups))
            offset += len(ids)
            if progress is not None:
                progress.update(len(ids))
    if not on_host:
        raise ValueError("embed_on_gpu needs at least one review")
    copied = torch.cuda.Event()
    copied.record(torch.cuda.current_stream(device))
    return on_host, np.concatenate(positions), copied
