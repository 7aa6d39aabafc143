"""Stopping a training on SIGINT or SIGTERM without losing it.

A batch scheduler, ``timeout`` or ``docker stop`` ends a job with SIGTERM, whose default action kills
the process on the spot: the run's staging directory is left with whatever the last epoch saved,
and the epoch in progress is lost. Ctrl-C (SIGINT) raises ``KeyboardInterrupt`` wherever Python
happens to be, which is no better.

While :func:`graceful_interruption` is active (the ``train`` command wraps a training in it):

* the first SIGINT or SIGTERM that arrives while a Trainer runs only *asks* for a stop:
  :class:`InterruptionCallback` saves a checkpoint after the optimizer step in progress, then
  raises :class:`TrainingInterrupted` (a ``KeyboardInterrupt``), so the caller's clean-up runs and
  ``--resume-from`` continues from exactly that step;
* at an epoch's last step the stop waits for that epoch's evaluation and checkpoint, so a resumed
  run selects its best model from the same evaluations as an uninterrupted one;
* a signal outside a Trainer (loading data, extracting frozen embeddings, fitting a scikit-learn
  head), or a second signal, raises ``KeyboardInterrupt`` at once.

Handlers are installed only from the main thread (Python allows no other); elsewhere the context
manager does nothing, and the library behaves as Python does by default.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["TrainingInterrupted", "InterruptionCallback", "graceful_interruption", "stop_requested"]

HANDLED_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT / SIGTERM after writing a checkpoint to resume from."""

    def __init__(self, signal_name: str, checkpoint: str | None = None):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.checkpoint = checkpoint


class _StopState:
    """What the signal handler and the Trainer callback share (one training per process at a time)."""

    def __init__(self) -> None:
        self.installed = False  # graceful_interruption is active
        self.trainer_running = False
        self.requested: str | None = None  # name of the signal that asked for a stop

    def reset(self) -> None:
        self.trainer_running = False
        self.requested = None


_state = _StopState()


def stop_requested() -> bool:
    """True once a signal asked the running training to stop."""
    return _state.requested is not None


def _handle(signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    if _state.trainer_running and _state.requested is None:
        _state.requested = name
        sys.stderr.write(
            f"\n{name} received: saving a checkpoint after the current training step, then stopping "
            "(send it again to stop at once, without that checkpoint).\n"
        )
        sys.stderr.flush()
        return
    raise KeyboardInterrupt(name)


@contextmanager
def graceful_interruption() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into a checkpoint-then-stop while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread() or _state.installed:
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in HANDLED_SIGNALS}
    _state.reset()
    _state.installed = True
    try:
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, _handle)
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        _state.installed = False
        _state.reset()


def _agreed(args: Any, requested: bool) -> bool:
    """Under several processes (accelerate launch), stop everywhere if any process was signalled.

    Every process calls the callbacks at the same points, so deciding together keeps them saving
    and stopping at the same step instead of one waiting forever for the others.
    """
    if getattr(args, "world_size", 1) <= 1:
        return requested
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return requested
    flag = torch.tensor([1.0 if requested else 0.0], device=args.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _at_epoch_boundary(epoch: float | None) -> bool:
    # Trainer sets state.epoch = epoch + (step + 1) / steps_in_epoch, exactly integral at an epoch's end.
    return epoch is not None and float(epoch).is_integer()


def _build_interruption_callback() -> type:
    # transformers (and, through its trainer utilities, PEFT and bitsandbytes) takes seconds to
    # import: the class is built when first asked for, so commands that never train skip it.
    from transformers import TrainerCallback

    class InterruptionCallback(TrainerCallback):
        """Checkpoint-then-stop when :func:`graceful_interruption` caught a signal.

        The checkpoint is a normal Trainer checkpoint (weights, optimizer, scheduler, RNG states,
        trainer state), written by Trainer itself, so ``--resume-from`` needs nothing special. The
        stop is an exception raised after the save rather than ``control.should_training_stop``:
        Trainer's normal ending would evaluate the half-finished epoch and then, with
        ``save_total_limit=1``, delete every checkpoint but the best one, including the fresh one.
        """

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            _state.trainer_running = True
            if stop_requested():  # the signal came while the model was loading: stop before any step
                raise TrainingInterrupted(_state.requested or "signal")
            return control

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if _agreed(args, stop_requested()) and not _at_epoch_boundary(state.epoch):
                control.should_save = True  # the epoch-end save (after its evaluation) happens anyway
            return control

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if _agreed(args, stop_requested()):
                _state.trainer_running = False
                checkpoint = f"{args.output_dir}/checkpoint-{state.global_step}"
                raise TrainingInterrupted(_state.requested or "SIGTERM on another process", checkpoint)
            return control

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            _state.trainer_running = False
            return control

    return InterruptionCallback


def __getattr__(name: str) -> Any:
    if name == "InterruptionCallback":
        globals()[name] = _build_interruption_callback()  # built once: every import sees one class
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
