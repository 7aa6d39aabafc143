"""Length-sorted batches under a token budget.

Reviews vary from a dozen tokens to hundreds. Random batches pad every review
to the longest in its batch; a fixed batch size lets one batch of long reviews
set the peak memory. Here batches are cut from the length-sorted order so that
the tokens a batch computes stay within ``max_tokens`` (``batch length x longest
review`` when padded, the packed row's length, filler included, when packed; the row of
a ``StaticRowLayout`` when rows take one shape) with at most
``max_batch_size`` reviews, and their order is shuffled each epoch. Under a multi-GPU launch the
processes take turns at the batches; ``group_size`` (the number of processes)
keeps neighbours in length together, so the processes of one optimizer step
get batches of similar cost and none waits long for another.

The number of batches depends only on the multiset of lengths, so it is the
same every epoch (Trainer counts steps up front); within a run of equal
lengths the examples are reshuffled every epoch, so batch contents vary.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # packing imports torch; padded CPU batches (the ONNX backend) need neither
    from review_toolkit.accel.packing import StaticRowLayout


def token_budget_ranges(
    sorted_lengths: Sequence[int],
    *,
    max_tokens: int,
    max_batch_size: int,
    packed: bool = False,
    layout: StaticRowLayout | None = None,
) -> list[tuple[int, int]]:
    """[start, end) ranges over ascending lengths: at most ``max_batch_size`` examples each, and
    ``count x longest <= max_tokens`` (padded batches) or a packed row of at most ``max_tokens``
    (the lengths' sum and the filler that rounds it up, ``review_toolkit.accel.packing.packed_row_length``;
    with ``layout``, the row that layout's shape needs) unless one example alone is longer than that."""
    ranges, start, total = [], 0, 0
    for end in range(1, len(sorted_lengths) + 1):
        size = end - start
        total += sorted_lengths[end - 1]
        # Sorted ascending, so the newest element is the longest in the batch.
        if layout is not None:
            tokens = layout.row_tokens(total, size)
        elif packed:
            from review_toolkit.accel.packing import packed_row_length

            tokens = packed_row_length(total)
        else:
            tokens = size * sorted_lengths[end - 1]
        if size > 1 and (size > max_batch_size or tokens > max_tokens):
            ranges.append((start, end - 1))
            start, total = end - 1, sorted_lengths[end - 1]
    if start < len(sorted_lengths):
        ranges.append((start, len(sorted_lengths)))
    return ranges


class _Epoch:
    """Epoch holder; accelerate's sharding wrapper reaches it as ``.sampler.set_epoch``."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class TokenBudgetBatchSampler:
    """Batches of similar length whose computed tokens (padded, or packed) stay within ``max_tokens``."""

    def __init__(
        self,
        lengths: Sequence[int],
        *,
        max_tokens: int,
        max_batch_size: int,
        seed: int = 0,
        group_size: int = 1,
        packed: bool = False,
        layout: StaticRowLayout | None = None,
    ):
        if max_tokens < max(lengths, default=1):
            raise ValueError(f"max_tokens={max_tokens} is below the longest example ({max(lengths)} tokens)")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.seed = seed
        self.group_size = max(1, group_size)
        self.sampler = _Epoch()
        self._boundaries = token_budget_ranges(
            np.sort(self.lengths), max_tokens=max_tokens, max_batch_size=max_batch_size, packed=packed, layout=layout
        )

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self._boundaries)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng(self.seed + self.sampler.epoch)
        # Sort by length with a random tie-break: the same cut points, new companions each epoch.
        order = np.lexsort((rng.random(len(self.lengths)), self.lengths))
        batches = [order[start:end].tolist() for start, end in self._boundaries]
        # Whole groups are shuffled and a short last group goes last, so batch i of every group
        # still reaches process i when the processes deal the batches out in turn.
        full_groups = len(batches) // self.group_size
        for group in rng.permutation(full_groups):
            yield from batches[group * self.group_size : (group + 1) * self.group_size]
        yield from batches[full_groups * self.group_size :]
