"""A fine-tune keeps its history in the run, reports to TensorBoard when asked, and says one line per epoch."""

from __future__ import annotations

import json
import subprocess
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def test_report_to_tensorboard_writes_readable_events_and_the_run_keeps_its_history(tmp_path, tiny_bert, small_reviews):
    completed = subprocess.run(
        [sys.executable, "-m", "review_toolkit", "train", "--quiet", "--backbone", "bert", "--model", tiny_bert,
         "--method", "full", "--head", "linear", "--epochs", "2", "--max-length", "32", "--data", str(small_reviews),
         "--report-to", "tensorboard", "--output-dir", "run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    run = tmp_path / "run"
    history = [json.loads(line) for line in (run / "training_log.jsonl").read_text().splitlines()]
    evaluations = [record for record in history if "eval_f1_macro" in record]
    assert [record["epoch"] for record in evaluations] == [1.0, 2.0]
    steps = [record for record in history if "loss" in record]
    assert [record["epoch"] for record in steps] == [1.0, 2.0] and all("learning_rate" in record for record in steps)
    # --quiet: one line per epoch, with the validation score training logged.
    lines = [line for line in completed.stderr.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and f"validation macro F1 {evaluations[1]['eval_f1_macro']:.4f}" in lines[1]
    events = EventAccumulator(str(run / "logs"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "eval/f1_macro" in tags and len(events.Scalars("eval/f1_macro")) == 2
    assert "training_log.jsonl" in json.loads((run / "manifest.json").read_text())["files"]
