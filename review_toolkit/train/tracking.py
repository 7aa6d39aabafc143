"""What a training run tells the world as it goes: its history file, trackers, one line per epoch.

Every Trainer run keeps its history in the run directory (``training_log.jsonl``: one JSON
object per logged event, with the step, the epoch, the training loss and learning rate, and the
validation metrics). ``--report-to`` hands the same events to one of Trainer's own integrations
(TensorBoard, Weights & Biases, MLflow); the CLI's ``--quiet`` prints one line per epoch.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any, Callable

from transformers import TrainerCallback

from review_toolkit.config import TrainConfig
from review_toolkit.errors import ConfigError
from review_toolkit.runs.layout import TRAINING_LOG_FILE

TENSORBOARD_DIRECTORY = "logs"  # inside the run, where --logging-dir is not given

# Tracker -> the package its Trainer integration needs.
_TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


class TrainingHistory(TrainerCallback):
    """Collects every event Trainer logs, as plain JSON-ready numbers."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs:
            return
        record: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch}
        for key, value in logs.items():
            if isinstance(value, (int, float)):
                record[key] = value if math.isfinite(value) else None  # JSON has no NaN
        self.records.append(record)

    def write(self, path: Path) -> None:
        path.write_text("".join(json.dumps(record) + "\n" for record in self.records), encoding="utf-8")


class EpochLines(TrainerCallback):
    """One line per epoch (training loss, learning rate, validation macro F1) through ``echo``."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self._train: dict[str, Any] = {}

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs or not state.is_world_process_zero:
            return
        if "loss" in logs:
            self._train = logs
        without_validation = str(args.eval_strategy) in ("no", "IntervalStrategy.NO")
        if "eval_f1_macro" in logs or ("loss" in logs and without_validation):
            parts = [f"epoch {state.epoch:g}/{args.num_train_epochs:g}"]
            if "loss" in self._train:
                parts.append(f"train loss {self._train['loss']:.4f}")
            if "learning_rate" in self._train:
                parts.append(f"lr {self._train['learning_rate']:.2e}")
            if "eval_f1_macro" in logs:
                parts.append(f"validation macro F1 {logs['eval_f1_macro']:.4f}")
            self.echo(", ".join(parts))


def tracker_callbacks(config: TrainConfig, run_staging: Path) -> list[TrainerCallback]:
    """Trainer's integration for ``config.report_to`` (none: no callback), its package checked first."""
    tracker = config.report_to
    if tracker in (None, "none"):
        return []
    package = _TRACKER_PACKAGES[tracker]
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"--report-to {tracker} needs the {package} package: pip install {package}.")
    if tracker == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        log_dir = Path(config.logging_dir).expanduser() if config.logging_dir else run_staging / TENSORBOARD_DIRECTORY
        return [TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(log_dir)))]
    if tracker == "wandb":
        from transformers.integrations import WandbCallback

        return [WandbCallback()]
    from transformers.integrations import MLflowCallback

    return [MLflowCallback()]
