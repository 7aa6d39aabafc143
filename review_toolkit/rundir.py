"""The run directory: written aside and renamed into place, loaded back without executing code.

Layout::

    RUN/
      config.yaml      the resolved TrainConfig (feed it back with --config)
      run.json         what the loader needs: plugins, checkpoint, sizes, threshold, timings
      metrics.json     test-split metrics
      report.txt       scikit-learn classification report
      tokenizer/       the tokenizer used in training
      head.safetensors torch head weights, or a fitted head's arrays (+ head.json)
      adapter/         lora, qlora: PEFT adapters        | encoder.safetensors: full
      checkpoints/     the last Trainer checkpoint, for --resume-from

A run appears complete or not at all: everything is written into
``RUN.partial`` and renamed at the end; an existing run is replaced only with
``--overwrite``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from review_toolkit.errors import RunDirectoryError

RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.txt"
TOKENIZER_DIRECTORY = "tokenizer"
TORCH_HEAD_FILE = "head.safetensors"
CHECKPOINT_DIRECTORY = "checkpoints"
PARTIAL_SUFFIX = ".partial"


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


class RunWriter:
    """Stage a run in ``<output>.partial`` and move it into place when complete."""

    def __init__(self, output_dir: str | Path, *, overwrite: bool = False, resuming: bool = False):
        self.final = Path(output_dir).expanduser()
        self.partial = self.final.with_name(self.final.name + PARTIAL_SUFFIX)
        if self.final.exists() and not overwrite:
            raise RunDirectoryError(
                f"{self.final} already exists. Choose another --output-dir, or pass --overwrite to replace it."
            )
        if self.final.exists() and not self.final.is_dir():
            raise RunDirectoryError(f"{self.final} exists and is not a directory; choose another --output-dir.")
        self.resuming = resuming

    def open(self) -> Path:
        """Create the staging directory (kept when resuming an interrupted run in place)."""
        if self.partial.exists() and not self.resuming:
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        return self.partial

    def commit(self) -> Path:
        """Move the finished run into place; an overwritten run is removed only after that succeeds."""
        previous = None
        if self.final.exists():
            previous = self.final.with_name(self.final.name + f".replaced-{os.getpid()}")
            os.replace(self.final, previous)
        os.replace(self.partial, self.final)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)


def require_run_directory(path: str | Path) -> Path:
    run = Path(path).expanduser()
    if not run.is_dir():
        hint = ""
        partial = run.with_name(run.name + PARTIAL_SUFFIX)
        if partial.is_dir():
            hint = f" An interrupted run is in {partial}; continue it with --resume-from {partial}."
        raise RunDirectoryError(f"Run directory {run} does not exist.{hint}")
    if not (run / RUN_FILE).is_file():
        raise RunDirectoryError(
            f"{run} is not a complete run directory (no {RUN_FILE}). Give a directory written by 'review-toolkit train'."
        )
    return run
