"""Where a training step's time goes, on one GPU: step times by phase and the top CUDA kernels.

    python3 benchmarks/profile_train.py --checkpoint DIR --backbone stella --method full --data reviews.csv

Trains through the toolkit's own Trainer path with a callback that times each
optimizer step (synchronised), then profiles a few steps with torch.profiler.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import TrainerCallback

from timed_train import _value  # FIELD=VALUE parsing, shared with benchmarks/timed_train.py


class StepTimer(TrainerCallback):
    """Synchronised time of each optimizer step; with a profiler, records steps 6-13 only.

    The profiler is anything with ``start``/``stop``: torch.profiler's, or a
    :class:`PythonProfile` to see which Python functions the host spends a step in.
    """

    def __init__(self, profiler=None, window: tuple[int, int] = (6, 14)) -> None:
        self.times: list[float] = []
        self.started = 0.0
        self.profiler = profiler
        self.window = window

    def on_step_begin(self, args, state, control, **kwargs):
        torch.cuda.synchronize()
        if self.profiler is not None and state.global_step == self.window[0]:
            self.profiler.start()
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self.started)
        if self.profiler is not None and state.global_step == self.window[1]:
            self.profiler.stop()


class PythonProfile:
    """cProfile over the window: host time per Python function (the GPU runs asynchronously,
    so on a step bound by kernel launches this is where the step's time goes)."""

    def __init__(self) -> None:
        import cProfile

        self.profile = cProfile.Profile()

    def start(self) -> None:
        self.profile.enable()

    def stop(self) -> None:
        self.profile.disable()

    def print(self) -> None:
        import pstats

        for key in ("tottime", "cumulative"):
            pstats.Stats(self.profile).sort_stats(key).print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--backbone", default="stella")
    parser.add_argument("--method", default="full")
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--set", action="append", default=[], help="TrainConfig field=value (JSON value)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top operators")
    parser.add_argument("--python-profile", action="store_true", help="print cProfile's top Python functions over the same steps")
    parser.add_argument("--stacks", action="store_true", help="with --profile, group operators by their Python call site")
    parser.add_argument("--compile", action="store_true", help="compile the whole model (Trainer's torch_compile); --set compile=true compiles its layers")
    args = parser.parse_args()

    import review_toolkit.train.trainer as training
    from review_toolkit import TrainConfig, train

    profiler = None
    if args.profile:
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile

        profiler = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=args.stacks)
    elif args.python_profile:
        profiler = PythonProfile()
    timer = StepTimer(profiler)
    original = training.ReviewTrainer.__init__

    def with_timer(self, *a, **k):
        original(self, *a, **k)
        self.add_callback(timer)

    training.ReviewTrainer.__init__ = with_timer
    if args.compile:
        plain_arguments = training.training_arguments

        def compiled_arguments(*a, **k):
            arguments = plain_arguments(*a, **k)
            arguments.torch_compile, arguments.torch_compile_backend = True, "inductor"
            return arguments

        training.training_arguments = compiled_arguments
    overrides = {key: _value(raw) for key, raw in (item.split("=", 1) for item in args.set)}
    config = TrainConfig(
        backbone=args.backbone, model=args.checkpoint, method=args.method, head="linear", data=args.data,
        output_dir="/tmp/profile-run", overwrite=True, max_steps=args.steps, early_stopping_patience=0, **overrides,
    )
    started = time.perf_counter()
    result = train(config, progress=False)
    if isinstance(profiler, PythonProfile):
        profiler.print()
    elif profiler is not None:
        if args.stacks:
            print(profiler.key_averages(group_by_stack_n=6).table(sort_by="count", row_limit=40, max_name_column_width=50))
        events = profiler.key_averages()
        for key in ("self_cpu_time_total", "self_cuda_time_total"):
            print(events.table(sort_by=key, row_limit=25, max_name_column_width=60))
        window_steps = timer.window[1] - timer.window[0]
        kernels = [event for event in events if event.device_type == DeviceType.CUDA]
        gpu_busy_ms = sum(event.self_device_time_total for event in kernels) / 1000 / window_steps
        print(json.dumps({"profiled_steps": window_steps, "gpu_busy_ms_per_step": round(gpu_busy_ms, 1),
                          "median_step_ms_in_window": round(sorted(timer.times[timer.window[0]:timer.window[1]])[window_steps // 2] * 1000, 1)}))
    total = time.perf_counter() - started
    steps = sorted(timer.times[5:])
    median = steps[len(steps) // 2]
    print(json.dumps({
        "method": args.method, "overrides": overrides, "compile": args.compile, "steps": len(timer.times), "median_step_ms": round(median * 1000, 1),
        "sum_step_s": round(sum(timer.times), 2), "train_call_s": round(total, 2),
        "samples_per_s_reported": result.info.get("train_samples_per_second"),
        "peak_gpu_gib": result.info.get("peak_gpu_gib"),
    }), flush=True)


if __name__ == "__main__":
    main()
