"""Train through the toolkit's library API and report steady-state training throughput.

    python benchmarks/timed_train.py --set backbone=stella --set model=/ckpt --set method=qlora --set data=reviews.csv
    accelerate launch --multi_gpu --num_processes 2 benchmarks/timed_train.py --set ...

A run's own ``train_samples_per_second`` covers Trainer's whole loop, evaluation and
checkpoint saving included; on a few thousand reviews those fixed costs weigh as much as
the training. Here a callback also times each epoch's optimizer steps after a few warm-up
steps, evaluation and saving left out: the rate a large dataset trains at. The main process
prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import TrainerCallback


class SteadyThroughput(TrainerCallback):
    """Seconds and optimizer steps of each epoch after its first ``warmup`` steps.

    Synchronised with the GPU only where a window opens and at the epoch's end, before
    Trainer evaluates and saves: evaluation and checkpoints stay out of the count.
    """

    def __init__(self, warmup: int = 5, skip_epochs: int = 0) -> None:
        self.warmup = warmup
        self.skip_epochs = skip_epochs
        self.opened: tuple[float, int] | None = None
        self.epoch_start_step = 0
        self.seconds = 0.0
        self.steps = 0
        self.steps_per_epoch = 0.0

    @staticmethod
    def _now() -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        # This process's batches per epoch over the accumulation: optimizer steps per epoch.
        self.steps_per_epoch = len(train_dataloader) / args.gradient_accumulation_steps

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.epoch_start_step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.epoch is not None and state.epoch <= self.skip_epochs:
            return
        if self.opened is None and state.global_step - self.epoch_start_step == self.warmup:
            self.opened = (self._now(), state.global_step)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.opened is not None:
            started, first_step = self.opened
            self.seconds += self._now() - started
            self.steps += state.global_step - first_step
            self.opened = None


def _value(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="a config file, as for 'review-toolkit train --config'")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="a TrainConfig field (JSON value)")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument(
        "--skip-epochs", type=int, default=0,
        help="leave the first epochs out of the count: compiled layers compile (and recompile for new "
        "shape ranges) during them",
    )
    args = parser.parse_args()

    from review_toolkit import train

    from review_toolkit.runtime import distributed
    from review_toolkit.config import build_config

    fields = {key: _value(raw) for key, raw in (item.split("=", 1) for item in args.set)}
    config = build_config(args.config, {"overwrite": True, "early_stopping_patience": 0, **fields})
    timer = SteadyThroughput(args.warmup_steps, args.skip_epochs)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = train(config, progress=False, callbacks=[timer])
    if not distributed.is_main_process():
        return
    info = result.info
    train_size = info["data"]["sizes"]["train"]
    steady = None
    if timer.steps and timer.steps_per_epoch:
        # Each optimizer step covers one batch per process; over an epoch batch sizes average out.
        steady = train_size / timer.steps_per_epoch * timer.steps / timer.seconds
    print(json.dumps({
        "config": {"file": args.config, **fields} if args.config else fields,
        "processes": info["processes"],
        "steady_samples_per_s": steady and round(steady, 1),
        "steady_window_steps": timer.steps,
        "run_samples_per_s": info.get("train_samples_per_second"),
        "peak_gpu_gib": info.get("peak_gpu_gib"),
        "f1_macro": result.metrics["f1_macro"],
        "run_dir": str(result.run_dir),
        "device": info["device"],
    }), flush=True)


if __name__ == "__main__":
    main()
