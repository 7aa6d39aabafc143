"""Runs are atomic, never overwritten by accident, and survive SIGTERM / SIGINT.

* A run directory appears complete (with its manifest) or not at all; every failure path leaves
  neither the run nor ``RUN.partial``, except an interrupted training that saved a checkpoint.
* An existing run, or an interrupted one, is replaced only with ``--overwrite``.
* SIGTERM mid-epoch saves a checkpoint at the current step; ``--resume-from RUN.partial`` then
  finishes with exactly the metrics of an uninterrupted run with the same seed.

Models: a tiny random BERT (hidden 64, 2 layers) with ``--backbone bert --method full``, on CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
from click.testing import CliRunner

from review_toolkit.cli import cli
from review_toolkit.runs.manifest import MANIFEST_FILE, check_run_integrity
from review_toolkit.runs.layout import checkpoints_in

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# tiny_bert (a random BERT, hidden 64, 2 layers, MiniLM's tokenizer) and small_reviews (240
# balanced reviews of the bundled sample) come from conftest.py.


@pytest.fixture
def small_data(small_reviews: Path) -> Path:
    return small_reviews




def train_arguments(model: str | Path, data: Path, output: Path, *extra: str, method: str = "full") -> list[str]:
    head = "linear" if method != "frozen" else "logreg"
    return [
        "train", "--backbone", "bert", "--model", str(model), "--method", method, "--head", head,
        "--data", str(data), "--output-dir", str(output), "--cache-dir", str(output.parent / "cache"),
        "--epochs", "2", "--batch-size", "4", "--max-length", "32", "--seed", "7", "--quiet", *extra,
    ]  # fmt: skip


def partial_of(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def invoke(arguments: list[str]):
    result = CliRunner().invoke(cli, arguments)
    return result, result.output + ("".join(traceback.format_exception(result.exception)) if result.exception else "")


def assert_complete_run(output: Path) -> None:
    assert (output / "run.json").is_file() and (output / MANIFEST_FILE).is_file()
    assert check_run_integrity(output) == []
    assert not partial_of(output).exists()
    assert not list(output.parent.glob(f"{output.name}.replaced-*"))


# ------------------------------------------------------------------------ kill and resume


def test_sigterm_mid_epoch_then_resume_gives_the_same_metrics(tmp_path: Path, tiny_bert: str, small_data: Path) -> None:
    command = [sys.executable, "-m", "review_toolkit"]
    reference = tmp_path / "reference" / "run"
    interrupted = tmp_path / "interrupted" / "run"
    reference.parent.mkdir()
    interrupted.parent.mkdir()
    # One thread per process: the two trainings run side by side on a small machine; both use the
    # same setting, so their floating-point results can be compared bit for bit.
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    # The uninterrupted reference trains at the same time (the results do not depend on timing).
    # Batches of 2: 72 short steps per epoch, so the signal below lands well inside the second epoch.
    small_batches = ("--batch-size", "2")
    reference_process = subprocess.Popen(command + train_arguments(tiny_bert, small_data, reference, *small_batches), **pipes)
    process = subprocess.Popen(command + train_arguments(tiny_bert, small_data, interrupted, *small_batches), **pipes)
    try:
        # Wait until the first epoch's checkpoint is complete (trainer_state.json is written last),
        # then a moment more, so that the signal lands inside the second epoch.
        deadline = time.monotonic() + 400
        first = None
        while first is None and process.poll() is None and time.monotonic() < deadline:
            found = checkpoints_in(partial_of(interrupted))
            if found and (found[0] / "trainer_state.json").is_file():
                first = found[0]
            else:
                time.sleep(0.02)
        assert first is not None, process.communicate()[1][-3000:]
        time.sleep(0.25)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr[-3000:]
    assert "SIGTERM received: saving a checkpoint" in stderr
    assert "Interrupted (SIGTERM)" in stderr and f"--resume-from {partial_of(interrupted)}" in stderr
    assert "Traceback" not in stderr

    # Nothing complete appeared; the staging directory holds a mid-epoch checkpoint.
    assert not interrupted.exists()
    assert not (partial_of(interrupted) / MANIFEST_FILE).exists()
    steps_per_epoch = int(first.name.removeprefix("checkpoint-"))
    last = checkpoints_in(partial_of(interrupted))[-1]
    last_step = int(last.name.removeprefix("checkpoint-"))
    assert steps_per_epoch < last_step < 2 * steps_per_epoch, (steps_per_epoch, last_step)
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        assert (last / name).is_file(), name

    # The same command plus --resume-from; --output-dir is left out: RUN.partial names its run.
    arguments = train_arguments(tiny_bert, small_data, interrupted, *small_batches, "--resume-from", str(partial_of(interrupted)))
    at = arguments.index("--output-dir")
    del arguments[at : at + 2]
    resumed = subprocess.run(command + arguments, **pipes, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference_stdout, reference_stderr = reference_process.communicate(timeout=400)
    assert reference_process.returncode == 0, reference_stderr[-3000:]

    assert_complete_run(interrupted)
    assert_complete_run(reference)
    expected = json.loads((reference / "metrics.json").read_text())
    assert json.loads((interrupted / "metrics.json").read_text()) == expected
    # Not only the metrics: the trained weights are the same.
    for name in ("head.safetensors", "encoder/model.safetensors"):
        assert (interrupted / name).read_bytes() == (reference / name).read_bytes(), name


def test_sigint_during_fine_tuning_keeps_a_checkpoint(tmp_path: Path, tiny_bert: str, small_data: Path, monkeypatch) -> None:
    """Ctrl-C (SIGINT) in the middle of an epoch: checkpoint at that step, exit 130, nothing complete."""
    from review_toolkit.runtime import interrupts as signals

    original = signals.InterruptionCallback.on_step_end

    def press_ctrl_c_at_step_3(self, args, state, control, **kwargs):
        if state.global_step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, args, state, control, **kwargs)

    monkeypatch.setattr(signals.InterruptionCallback, "on_step_end", press_ctrl_c_at_step_3)
    handler_before = signal.getsignal(signal.SIGINT)
    output = tmp_path / "run"
    result, detail = invoke(train_arguments(tiny_bert, small_data, output))
    assert result.exit_code == 130, detail
    assert "Interrupted (SIGINT). Training stopped at step 3" in result.output
    assert not output.exists()
    assert [path.name for path in checkpoints_in(partial_of(output))] == ["checkpoint-3"]
    assert signal.getsignal(signal.SIGINT) is handler_before  # the handler is restored

    # A new training to the same place without --resume-from would throw that work away: refused.
    monkeypatch.setattr(signals.InterruptionCallback, "on_step_end", original)
    result, detail = invoke(train_arguments(tiny_bert, small_data, output, method="frozen"))
    assert result.exit_code == 1, detail
    assert f"Error: {partial_of(output)} holds an interrupted training (checkpoint checkpoint-3)" in result.output
    assert f"Continue it with --resume-from {partial_of(output)}, or pass --overwrite" in result.output
    assert checkpoints_in(partial_of(output))

    # --overwrite discards the interrupted training and starts again.
    monkeypatch.setattr(signals.InterruptionCallback, "on_step_end", original)
    result, detail = invoke(train_arguments(tiny_bert, small_data, output, "--overwrite", method="frozen"))
    assert result.exit_code == 0, detail
    assert_complete_run(output)


# ------------------------------------------------------------------------ atomic writes


def test_existing_run_is_kept_without_overwrite_and_replaced_with_it(tmp_path: Path, tiny_bert: str, small_data: Path) -> None:
    output = tmp_path / "run"
    output.mkdir()
    (output / "precious.txt").write_text("keep me")

    result, detail = invoke(train_arguments(tiny_bert, small_data, output, method="frozen"))
    assert result.exit_code == 1, detail
    assert f"Error: {output} already exists. Choose another --output-dir, or pass --overwrite" in result.output
    assert (output / "precious.txt").read_text() == "keep me"
    assert not partial_of(output).exists()

    result, detail = invoke(train_arguments(tiny_bert, small_data, output, "--overwrite", method="frozen"))
    assert result.exit_code == 0, detail
    assert not (output / "precious.txt").exists()
    assert_complete_run(output)
    manifest = json.loads((output / MANIFEST_FILE).read_text())
    assert {"run.json", "config.yaml", "metrics.json", "head.safetensors", "head.json"} <= set(manifest["files"])
    assert manifest["not_covered"] == ["checkpoints/"]


def test_crash_after_checkpoints_leaves_nothing(tmp_path: Path, tiny_bert: str, small_data: Path, monkeypatch) -> None:
    """A failure that is not an interruption removes the staging directory, checkpoints included."""
    from review_toolkit.train import pipeline

    output = tmp_path / "run"
    checkpoints_at_crash = []

    def broken_metrics(*args, **kwargs):
        checkpoints_at_crash.extend(checkpoints_in(partial_of(output)))
        raise RuntimeError("simulated failure after training")

    monkeypatch.setattr(pipeline, "classification_metrics", broken_metrics)
    result, _ = invoke(train_arguments(tiny_bert, small_data, output, "--epochs", "1"))
    assert isinstance(result.exception, RuntimeError)
    assert checkpoints_at_crash, "the crash was meant to happen after a checkpoint was saved"
    assert not output.exists() and not partial_of(output).exists()


def test_failure_while_writing_the_run_leaves_nothing(tmp_path: Path, tiny_bert: str, small_data: Path, monkeypatch) -> None:
    from review_toolkit.train import pipeline

    original = pipeline._write_run

    def disk_full(staging, *args, **kwargs):
        original(staging, *args, **kwargs)  # everything is staged ...
        raise OSError(28, "No space left on device")  # ... and then the disk fills up

    monkeypatch.setattr(pipeline, "_write_run", disk_full)
    output = tmp_path / "run"
    result, detail = invoke(train_arguments(tiny_bert, small_data, output, method="frozen"))
    assert result.exit_code == 1 and "Traceback" not in result.output, detail
    assert f"Error: No space left on device: {partial_of(output)}. Free some space" in result.output
    assert not output.exists() and not partial_of(output).exists()


def test_interrupt_before_any_checkpoint_leaves_nothing(tmp_path: Path, tiny_bert: str, small_data: Path, monkeypatch) -> None:
    from review_toolkit import registry

    head, _ = registry.get("head", "logreg")

    def interrupted_fit(*args, **kwargs):
        raise KeyboardInterrupt("SIGTERM")

    monkeypatch.setattr(type(head), "fit", interrupted_fit)
    output = tmp_path / "run"
    result, detail = invoke(train_arguments(tiny_bert, small_data, output, method="frozen"))
    assert result.exit_code == 130, detail
    assert "Interrupted (SIGTERM). No checkpoint had been saved, so nothing was kept" in result.output
    assert not output.exists() and not partial_of(output).exists()


def test_which_failures_keep_the_staging_directory(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from review_toolkit.runs.layout import RunWriter, run_of_staging

    def staged(with_checkpoint: bool | str, resuming: bool = False) -> RunWriter:
        writer = RunWriter(tmp_path / "run", resuming=resuming, overwrite=True)
        staging = writer.open()
        if with_checkpoint:
            checkpoint = staging / "checkpoints" / "checkpoint-5"
            checkpoint.mkdir(parents=True)
            if with_checkpoint != "half-written":
                save_file({"weight": torch.zeros(2)}, str(checkpoint / "model.safetensors"))
                (checkpoint / "trainer_state.json").write_text('{"global_step": 5}')
        return writer

    cases = [
        (KeyboardInterrupt("SIGTERM"), True, False, True),  # interrupted with a checkpoint: resumable
        (KeyboardInterrupt("SIGINT"), False, False, False),  # interrupted before any checkpoint
        (KeyboardInterrupt("SIGTERM"), "half-written", False, False),  # nothing complete to resume from
        (RuntimeError("bug"), True, False, False),  # a crash is not an interruption
        (MemoryError(), True, False, False),
        (RuntimeError("bug"), True, True, True),  # never delete the checkpoints a resume started from
    ]
    for error, with_checkpoint, resuming, kept in cases:
        writer = staged(with_checkpoint, resuming)
        assert writer.abandon(error) is kept, (error, with_checkpoint, resuming)
        assert writer.partial.exists() is kept
        assert not writer.final.exists()
        writer.discard()

    assert run_of_staging(tmp_path / "run.partial") == tmp_path / "run"
    assert run_of_staging(tmp_path / "run.partial" / "checkpoints" / "checkpoint-5") == tmp_path / "run"
    assert run_of_staging(tmp_path / "run") is None
