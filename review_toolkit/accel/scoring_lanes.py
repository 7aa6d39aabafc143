"""Lanes: the CUDA streams that scoring calls in flight compute on, each with its own graphs.

A server's batch of a few dozen reviews leaves most of a large GPU idle: its matrix products
have fewer tiles than the card has multiprocessors, and its thousand-odd kernels each take a few
microseconds however little they compute. Batches in flight on one stream are still computed one
after another. On streams of their own, the GPU runs their kernels side by side.

A lane is such a stream with the recorded graphs that are replayed on it
(``scoring_graphs.ScoringGraphs``). A graph reads and writes fixed tensors, so graphs replayed side
by side must be different recordings, and each lane's have a memory pool of their own: graphs of
one pool reuse each other's memory, which only graphs replayed one after another can.

A call borrows a lane for as long as its work is queued and computed, and gives it back once its
results are on the host: an idle lane if there is one, else a new one while fewer than the lanes'
limit exist, else the lane with the fewest calls in flight. Calls sharing a lane are computed one
after another in the order they were queued (one thread at a time queues, ``gpu_scoring.queueing_lock``),
so the second's rows are copied into the graphs' inputs only after the first's outputs were copied
out. One thread at a time scoring, as ``predict`` does, always gets the first lane, and records
one set of graphs.

Side by side is not always faster for the caller: two batches sharing the GPU each take longer
than one alone, so a server whose clients wait for their answer before they send again can get
more from batches queued on one stream (benchmarks/README.md, "Batches side by side on CUDA
streams"). A server sets how many lanes it uses (``ensure``), and records their graphs before it
reports ready.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from review_toolkit.accel.scoring_graphs import ScoringGraphs

#: Lanes per encoder at most: each holds its graphs' memory (a forward pass of the largest layout),
#: and beyond a few batches side by side the GPU is full.
MAX_LANES = 4


@dataclass(eq=False)
class ScoringLane:
    """A stream and the graphs replayed on it."""

    stream: torch.cuda.Stream
    graphs: ScoringGraphs


class ScoringLanes:
    """The lanes of one encoder on one device."""

    def __init__(self, encoder: nn.Module, device: torch.device) -> None:
        self.encoder = encoder
        self.device = device
        self.lanes: list[ScoringLane] = []
        self.limit = MAX_LANES  # lanes made on demand at most, until ``ensure`` sets it
        self._calls: dict[ScoringLane, int] = {}  # calls in flight on each lane
        self._lock = threading.Lock()

    def ensure(self, count: int) -> list[ScoringLane]:
        """Use ``count`` lanes (1 to ``MAX_LANES``) from now on: made now if missing, and no more
        made later; returns them."""
        count = max(1, min(count, MAX_LANES))
        with self._lock:
            self.limit = count
            while len(self.lanes) < count:
                self._new_lane()
            return self.lanes[:count]

    @contextmanager
    def borrow(self, lane: ScoringLane | None = None) -> Iterator[ScoringLane]:
        """``take`` a lane for as long as the block runs."""
        lane = self.take(lane)
        try:
            yield lane
        finally:
            self.give_back(lane)

    def take(self, lane: ScoringLane | None = None) -> ScoringLane:
        """``lane``, or the first idle lane, a new one while fewer than ``limit`` exist, or the
        least busy; counted as in flight on it until ``give_back``."""
        with self._lock:
            if lane is None:
                usable = self.lanes[: self.limit]
                lane = next((candidate for candidate in usable if not self._calls[candidate]), None)
                if lane is None:
                    lane = self._new_lane() if len(usable) < self.limit else min(usable, key=self._calls.__getitem__)
            self._calls[lane] += 1
            return lane

    def give_back(self, lane: ScoringLane) -> None:
        with self._lock:
            self._calls[lane] -= 1

    def _new_lane(self) -> ScoringLane:
        # torch hands out streams round-robin from a small pool: a lane sharing another's stream
        # would share its cuBLAS workspace (scoring_graphs), so it takes the next free one.
        taken = {lane.stream.cuda_stream for lane in self.lanes}
        stream = torch.cuda.Stream(device=self.device)
        while stream.cuda_stream in taken:
            stream = torch.cuda.Stream(device=self.device)
        lane = ScoringLane(stream, ScoringGraphs(self.encoder))
        self.lanes.append(lane)
        self._calls[lane] = 0
        return lane


_LANES: "weakref.WeakKeyDictionary[nn.Module, ScoringLanes]" = weakref.WeakKeyDictionary()
_MAKING = threading.Lock()


def scoring_lanes_for(encoder: nn.Module, device: torch.device) -> ScoringLanes:
    """The lanes of ``encoder`` on ``device`` (made once, dropped with the encoder, when it is
    compiled, or when it is scored on another device).

    Looked up at every scoring call, so it does nothing per call that walks the encoder's modules:
    for a server's small batches, that walk cost as much as the forward pass.
    """
    if device.index is None:  # "cuda" and "cuda:0" are one device, and get one set of lanes
        device = torch.device(device.type, torch.cuda.current_device())
    lanes = _LANES.get(encoder)
    if lanes is None or lanes.device != device:
        with _MAKING:  # two threads' first calls get one set of lanes
            lanes = _LANES.get(encoder)
            if lanes is None or lanes.device != device:
                lanes = _LANES[encoder] = ScoringLanes(encoder, device)
    return lanes


def forget_scoring_lanes(encoder: nn.Module) -> None:
    """Drop ``encoder``'s lanes and their graphs: its layers were just compiled, and graphs recorded
    before would replay the uncompiled kernels; the next call records the compiled ones."""
    _LANES.pop(encoder, None)
