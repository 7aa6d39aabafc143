"""Small packed rows scored by replaying recorded CUDA graphs.

A packed row of a few reviews (a server's batch, the last row of a file) is computed by the GPU in
a fraction of the time the host takes to launch the encoder's thousand-odd kernels one by one. A
CUDA graph records those launches once and replays them as one. A graph replays fixed shapes at
fixed addresses, so each small row takes the shape of the smallest of the layouts
(``SCORING_ROW_LENGTHS`` tokens, ``packing.StaticRowLayout``) that holds it, is copied into that
graph's inputs, and the graph's output is copied out before the next replay writes it.

A layout's graph is recorded the first time a row needs it, or all at once beforehand
(``gpu_scoring.record_scoring_graphs``: a server does, before it reports ready). Each lane
(``scoring_lanes``: a stream a call in flight computes on) has a set of its own. Rows larger than
every layout, or with a review longer than ``MAX_GRAPHED_REVIEW`` tokens, run eagerly. An encoder
whose layers are compiled (``predict --compile``) records its fused kernels: the passes before
recording compile them. A forward pass that cannot be recorded is scored eagerly from then on.

A row's four inputs (ids, positions, each token's review, the reviews' starts) lie in one buffer
(``input_views``), written on the host in page-locked memory and copied to the graph's in one
copy: the host queues a replayed row in a handful of calls into PyTorch. A server's host does
little else per batch, and each call is a point where its scoring thread gives up the
interpreter to the event loop answering requests, and waits to get it back (benchmarks/README.md,
"Serving load").

The graphs hold the weights' addresses and cast any float32 weight inside every replay (no cached
casts; a run loaded onto the GPU keeps its linear weights in bf16, so those need none): a frozen
encoder scores the same through them as eagerly, to bf16 rounding.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from review_toolkit.accel.packing import ROW_MULTIPLE, StaticRowLayout, packed_pooled

logger = logging.getLogger(__name__)

#: Row lengths that get a recorded graph; longer rows keep the GPU busy enough on their own. Steps of
#: 128 tokens up to 1,024, 256 up to 4,096 and 512 up to 8,192: a row takes the next length up, and
#: the filler up to it costs the GPU as much as reviews' tokens, so the steps stay a small part of a
#: row (benchmarks/README.md, "Serving load").
SCORING_ROW_LENGTHS = (*range(128, 1024, 128), *range(1024, 4096, 256), *range(4096, 8192 + 1, 512))
#: Reviews longer than this take the eager path (the layouts' bound on a segment's length).
MAX_GRAPHED_REVIEW = 512
#: Eager passes before recording, so lazily created state (cuBLAS workspaces) exists first.
WARMUP_PASSES = 2


def scoring_layouts() -> list[StaticRowLayout]:
    """One layout per row length, each for up to a review per 32 tokens (at least 4)."""
    return [
        StaticRowLayout(
            row_length=length,
            review_slots=max(4, length // 32),
            filler_segments=length // ROW_MULTIPLE,
            max_segment_length=min(length, MAX_GRAPHED_REVIEW),
            empty_segments=True,
        )
        for length in SCORING_ROW_LENGTHS
    ]


def input_words(layout: StaticRowLayout) -> int:
    """int64 words of a row's inputs in one buffer: ids, positions and each token's segment, one
    word each per token, then the segments' starts, two int32 to a word."""
    starts = layout.review_slots + layout.filler_segments + 1
    return 3 * layout.row_length + -(-starts // 2)


def input_views(buffer: Any, layout: StaticRowLayout, int32: Any) -> dict[str, Any]:
    """The inputs of a row of ``layout`` as views of one int64 buffer of ``input_words`` words (a
    numpy array with ``int32=np.int32``, or a tensor with ``torch.int32``), named as
    ``packed_pooled`` takes them."""
    length = layout.row_length
    starts = layout.review_slots + layout.filler_segments + 1
    return {
        "input_ids": buffer[:length].reshape(1, length),
        "position_ids": buffer[length : 2 * length].reshape(1, length),
        "review_index": buffer[2 * length : 3 * length],
        "cu_seq_lens": buffer[3 * length :].view(int32)[:starts],
    }


class ScoringGraphs:
    """Recorded graphs of one encoder, one per layout, recorded on first use (those of one lane)."""

    def __init__(self, encoder: nn.Module) -> None:
        self.encoder = encoder
        self.layouts = scoring_layouts()
        self.enabled = True  # until a forward pass cannot be recorded
        self._pool = None
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}  # inputs, output

    @property
    def recorded(self) -> int:
        return len(self._graphs)

    def layout_for(self, lengths: list[int]) -> StaticRowLayout | None:
        """The smallest layout that holds reviews of these lengths, or None."""
        if not self.enabled:
            return None
        return next((layout for layout in self.layouts if layout.fits(lengths)), None)

    def replays(self, lengths: list[int]) -> bool:
        """Whether reviews of these lengths take one of the graphs recorded so far."""
        layout = self.layout_for(lengths)
        return layout is not None and layout.row_length in self._graphs

    def replay(self, layout: StaticRowLayout, row: torch.Tensor, reviews: int) -> torch.Tensor | None:
        """The pooled float32 vectors of the row's ``reviews`` reviews, or None if this encoder's
        forward pass cannot be recorded (it is then scored eagerly from now on).

        ``row``: the row's inputs in one buffer (``input_views``), in page-locked memory, left
        alone until the copy queued now is done. The vectors are a view of the graph's output:
        the next replay of this layout on this lane writes them again, so they must be copied (or
        used) by work queued before it."""
        recorded = self._graphs.get(layout.row_length)
        if recorded is None:
            try:
                recorded = self._record(layout, row)
            except Exception as error:  # an operation a graph cannot hold: score eagerly instead
                logger.warning("Scoring without CUDA graphs: the encoder could not be recorded (%s: %s)", type(error).__name__, error)
                self.enabled = False
                self._graphs.clear()
                return None
        graph, inputs, output = recorded
        inputs.copy_(row, non_blocking=True)
        graph.replay()
        return output[:reviews]

    def _forward(self, layout: StaticRowLayout, inputs: torch.Tensor) -> torch.Tensor:
        views = input_views(inputs, layout, torch.int32)
        pooled = packed_pooled(
            self.encoder, views["input_ids"], views["position_ids"], views["cu_seq_lens"],
            layout.max_segment_length, views["review_index"], layout.review_slots,
        )
        return pooled.float()  # in the graph: one kernel fewer to launch per row

    def _record(self, layout: StaticRowLayout, row: torch.Tensor) -> tuple:
        # Recorded on the stream it will be replayed on (the lane's, never the default stream): a
        # graph keeps the cuBLAS workspace of the stream it was recorded on, and graphs of two
        # lanes recorded on one stream would write one workspace when replayed side by side.
        stream = torch.cuda.current_stream()
        inputs = row.to(stream.device, non_blocking=True)
        dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None
        with _autocast(dtype):
            for _ in range(WARMUP_PASSES):
                self._forward(layout, inputs)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # thread_local: another thread may wait for its own results meanwhile (embed_on_gpu
        # lets one thread at a time queue work, not wait); the global mode would fail that wait.
        with _autocast(dtype), torch.cuda.graph(graph, pool=self._pool, stream=stream, capture_error_mode="thread_local"):
            output = self._forward(layout, inputs)
        self._graphs[layout.row_length] = (graph, inputs, output)
        return graph, inputs, output


def _autocast(dtype: torch.dtype | None):
    """The surrounding autocast without its cache of cast weights (a cached cast would be
    recorded as it is now), or nothing when scoring runs without autocast."""
    if dtype is None:
        return torch.autocast("cuda", enabled=False)
    return torch.autocast("cuda", dtype=dtype, cache_enabled=False)
