"""Several processes, one device each: what ``accelerate launch`` (or ``torchrun``) starts.

Trainer distributes training by itself. Everything else a run does, it does
through this module: work over a list of texts (embedding, scoring) is split
into one contiguous shard per process and gathered back in input order, so
every process ends with the same full arrays and computes the same metrics;
files are written by the main process alone. In a single process every
function here is a no-op or a direct call.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Callable, Iterator, Sequence, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

Item = TypeVar("Item")


def launched() -> bool:
    """True in a process that a launcher started among several (it sets WORLD_SIZE for each).

    A single process answers the questions below without importing torch and accelerate, which
    take seconds: scoring a few reviews on a CPU should not wait for them.
    """
    return int(os.environ.get("WORLD_SIZE", "1") or "1") > 1


def _state():
    import torch
    from accelerate import PartialState

    # A singleton: the first construction joins the process group the launcher described, and
    # later ones (Trainer's included) get that state. Without cpu=True on a machine without a
    # GPU, several launched processes would each run alone instead of joining over gloo.
    return PartialState(cpu=not torch.cuda.is_available())


def process_count() -> int:
    return _state().num_processes if launched() else 1


def is_main_process() -> bool:
    return _state().is_main_process if launched() else True


def device() -> torch.device:
    """This process's device: its own GPU under a multi-GPU launch, else the GPU or the CPU."""
    return _state().device


def wait_for_everyone() -> None:
    if launched():
        _state().wait_for_everyone()


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    with _state().main_process_first():
        yield


def all_true(flag: bool) -> bool:
    """``flag`` and-ed over all processes (each process decides on the same answer)."""
    if process_count() == 1:
        return flag
    import torch
    from accelerate.utils import gather

    flags = gather(torch.tensor([int(flag)], device=device()))
    return bool(flags.min().item())


def shard_bounds(total: int, process: int, processes: int) -> tuple[int, int]:
    """[start, stop) of ``process``'s contiguous share of ``total`` items (sizes differ by at most one)."""
    base, extra = divmod(total, processes)
    start = process * base + min(process, extra)
    return start, start + base + (1 if process < extra else 0)


def map_in_shards(function: Callable[[list[Item]], np.ndarray], items: Sequence[Item]) -> np.ndarray:
    """``function(items)`` computed as one shard per process; every process gets the whole result.

    ``function`` maps a list to an array with one row per item. Each process applies it to a
    contiguous slice, padded to the largest slice's size with repeats of the slice's last item
    (collective operations need equal sizes; a slice is never empty that way), and the slices
    are gathered in process order, so rows come back in the order of ``items``.
    """
    if not launched() or len(items) == 0:
        return function(list(items))
    state = _state()
    if state.num_processes == 1:
        return function(list(items))
    import torch
    from accelerate.utils import gather

    largest = -(-len(items) // state.num_processes)
    start, stop = shard_bounds(len(items), state.process_index, state.num_processes)
    shard = list(items[start:stop]) or [items[-1]]
    shard += [shard[-1]] * (largest - len(shard))
    rows = torch.as_tensor(np.ascontiguousarray(function(shard))).to(state.device)
    gathered = gather(rows).cpu().numpy().reshape(state.num_processes, largest, *rows.shape[1:])
    parts = []
    for process in range(state.num_processes):
        first, last = shard_bounds(len(items), process, state.num_processes)
        parts.append(gathered[process, : last - first])
    return np.concatenate(parts)
