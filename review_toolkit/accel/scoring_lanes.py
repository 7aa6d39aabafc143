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
results are on the host. The lanes of an encoder are made as calls need them, up to
``MAX_LANES``; a call beyond waits for one. One thread at a time scoring, as ``predict`` does,
always gets the same lane, and records one set of graphs.
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
        self._free: list[ScoringLane] = []
        self._changed = threading.Condition()

    def ensure(self, count: int) -> list[ScoringLane]:
        """At least ``count`` lanes (at most ``MAX_LANES``) made; returns the first ``count``."""
        count = max(1, min(count, MAX_LANES))
        with self._changed:
            while len(self.lanes) < count:
                self._free.append(self._new_lane())
            return self.lanes[:count]

    @contextmanager
    def borrow(self, lane: ScoringLane | None = None) -> Iterator[ScoringLane]:
        """A free lane (or ``lane``, once it is free), made if none is free and fewer than
        ``MAX_LANES`` exist, given back on leaving."""
        with self._changed:
            while True:
                if lane is None and self._free:
                    taken = self._free.pop()  # the lane given back last: one thread keeps one lane
                    break
                if lane is None and len(self.lanes) < MAX_LANES:
                    taken = self._new_lane()
                    break
                if lane is not None and lane in self._free:
                    self._free.remove(lane)
                    taken = lane
                    break
                self._changed.wait()
        try:
            yield taken
        finally:
            with self._changed:
                self._free.append(taken)
                self._changed.notify()

    def _new_lane(self) -> ScoringLane:
        lane = ScoringLane(torch.cuda.Stream(device=self.device), ScoringGraphs(self.encoder))
        self.lanes.append(lane)
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
