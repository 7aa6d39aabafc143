"""Two trainings into one --output-dir, and checkpoints a killed process left half-written.

* A second training into a directory another process is training into is refused at once with
  one ``Error:`` line naming the directory and that process; the first one finishes a complete run.
* Resuming skips a half-written newest checkpoint (saying which one, and which it used); when the
  only checkpoint is half-written, ``--resume-from`` says so in one line and the plain command
  starts over: no loop between the two.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import assert_one_error_line
from transformers import TrainerCallback

from review_toolkit.cli import cli
from review_toolkit.config import TrainConfig
from review_toolkit.runs.checkpoints import checkpoint_folders, checkpoints_in
from review_toolkit.runs.lock import lock_path_for
from review_toolkit.runs.manifest import check_run_integrity
from review_toolkit.train.pipeline import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def options(tiny_bert: str, data: Path, output: Path, *, method: str = "frozen", epochs: int = 3) -> list[str]:
    head = "linear"
    return [
        "train", "--backbone", "bert", "--model", tiny_bert, "--method", method, "--head", head,
        "--data", str(data), "--output-dir", str(output), "--cache-dir", str(output.parent / "cache"),
        "--epochs", str(epochs), "--batch-size", "4", "--max-length", "32", "--seed", "3", "--quiet",
    ]  # fmt: skip


def test_second_training_into_the_same_directory_is_refused(tiny_bert, small_reviews, tmp_path):
    output = tmp_path / "run"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A short fine-tune: still running when the second training (in this process) starts.
    first = subprocess.Popen(
        [sys.executable, "-m", "review_toolkit", *options(tiny_bert, small_reviews, output, method="full"), "--max-steps", "40"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
    )
    try:
        deadline = time.monotonic() + 120
        while not lock_path_for(output).exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()[1][-3000:]

        second = CliRunner().invoke(cli, options(tiny_bert, small_reviews, output))
        line = assert_one_error_line(second, f"{output} is being written by another training", f"process {first.pid}")
        assert "--output-dir" in line
        assert first.poll() is None  # the refusal touched nothing of the first training
        stdout, stderr = first.communicate(timeout=400)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr[-3000:]
    assert check_run_integrity(output) == []
    assert (output / "split_predictions.csv").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]  # no lock file, no .partial


class InterruptAfterSaves(TrainerCallback):
    """Ctrl-C right after Trainer's ``saves``-th checkpoint: a real interrupted training."""

    def __init__(self, saves: int):
        self.saves = saves

    def on_save(self, args, state, control, **kwargs):
        self.saves -= 1
        if self.saves == 0:
            raise KeyboardInterrupt("interrupted after a checkpoint")


def interrupted_training(tiny_bert: str, data: Path, output: Path, saves: int) -> Path:
    """Train the tiny frozen BERT + linear head until its ``saves``-th checkpoint; returns RUN.partial."""
    config = TrainConfig(
        backbone="bert", model=tiny_bert, method="frozen", head="linear", data=str(data), output_dir=str(output),
        cache_dir=str(output.parent / "cache"), epochs=3, batch_size=4, max_length=32, seed=3,
    )
    with pytest.raises(KeyboardInterrupt):
        train(config, progress=False, callbacks=[InterruptAfterSaves(saves)])
    partial = output.with_name(output.name + ".partial")
    assert checkpoints_in(partial), "the interrupted training kept no checkpoint"
    return partial


def half_write(checkpoint: Path) -> None:
    """What kill -9 during a save leaves: the weights cut short, no trainer_state.json yet."""
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (checkpoint / "trainer_state.json").unlink()


def test_resume_skips_a_half_written_newest_checkpoint(tiny_bert, small_reviews, tmp_path, caplog):
    output = tmp_path / "run"
    partial = interrupted_training(tiny_bert, small_reviews, output, saves=1)
    (complete,) = checkpoints_in(partial)
    step = int(complete.name.removeprefix("checkpoint-"))
    # The training was killed while writing its next checkpoint.
    newest = complete.with_name(f"checkpoint-{step + 5}")
    newest.mkdir()
    for item in complete.iterdir():
        (newest / item.name).write_bytes(item.read_bytes())
    half_write(newest)

    resumed = CliRunner().invoke(cli, [*options(tiny_bert, small_reviews, output), "--resume-from", str(partial)])
    assert resumed.exit_code == 0, resumed.output
    assert f"Skipping the incomplete checkpoint {newest} (trainer_state.json is missing)" in caplog.text
    assert f"Resuming from {complete}, the last complete checkpoint" in caplog.text
    assert check_run_integrity(output) == [] and not partial.exists()
    assert all(folder.name != newest.name for folder in checkpoint_folders(output))


def test_only_checkpoint_half_written_is_one_error_then_a_fresh_start(tiny_bert, small_reviews, tmp_path, caplog):
    output = tmp_path / "run"
    partial = interrupted_training(tiny_bert, small_reviews, output, saves=1)
    (only,) = checkpoints_in(partial)
    half_write(only)

    resumed = CliRunner().invoke(cli, [*options(tiny_bert, small_reviews, output), "--resume-from", str(partial)])
    assert_one_error_line(resumed, "no complete checkpoint", only.name, "without --resume-from")
    assert partial.is_dir()  # what the user pointed at is kept

    again = CliRunner().invoke(cli, options(tiny_bert, small_reviews, output))
    assert again.exit_code == 0, again.output  # not told to --resume-from: there is nothing to resume
    assert "never completely written" in caplog.text
    assert check_run_integrity(output) == [] and not partial.exists()
