"""The newcomer's path on the real bundled MiniLM: the default command, the cache, real accuracy."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from conftest import SHARED_REVIEWS


def run_cli(*arguments: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "review_toolkit", *arguments], cwd=cwd, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
def test_default_train_prints_a_report_above_chance(tmp_path):
    """`review-toolkit train` with no option: minilm + frozen + logreg on the bundled sample."""
    completed = run_cli("train", "--quiet", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-2000:]
    out = completed.stdout
    assert "precision    recall  f1-score   support" in out and "macro avg" in out
    run = tmp_path / "runs" / "minilm-frozen-logreg"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["f1_macro"] >= 0.65
    assert set(metrics) >= {"accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc", "per_class"}
    assert "macro avg" in (run / "report.txt").read_text()
    plugins = json.loads((run / "run.json").read_text())["plugins"]
    assert {p["kind"]: p["name"] for p in plugins} == {"backbone": "minilm", "method": "frozen", "head": "logreg"}
    assert all(p["distribution"] == "review_toolkit" and p["version"] for p in plugins)

    predicted = run_cli("predict", "--run", str(run), "--text", "Great product, works exactly as described.", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    rows = list(csv.DictReader(io.StringIO(predicted.stdout)))
    assert len(rows) == 1 and rows[0]["label"] in {"fake", "real"} and 0 <= float(rows[0]["p_fake"]) <= 1


@pytest.mark.slow
def test_second_head_reads_the_embeddings_the_first_one_cached(tmp_path):
    cache = tmp_path / "cache"

    def train_head(head: str) -> dict:
        completed = run_cli(
            "train", "--quiet", "--head", head, "--cache-dir", str(cache), "--output-dir", str(tmp_path / head), cwd=tmp_path
        )
        assert completed.returncode == 0, completed.stderr[-2000:]
        return json.loads((tmp_path / head / "run.json").read_text())

    first = train_head("logreg")
    entries = sorted(path.name for path in cache.rglob("*") if path.is_file())
    second = train_head("mlp")
    assert first["embeddings_cached"] is False and second["embeddings_cached"] is True
    assert entries and sorted(path.name for path in cache.rglob("*") if path.is_file()) == entries  # read, not rewritten


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_REVIEWS.is_file(), reason="needs ../shared/data/fake_reviews.csv")
def test_frozen_minilm_logreg_reaches_reference_f1_on_the_full_dataset(tmp_path):
    """Measured reference for frozen MiniLM + logistic regression on these 6,000 reviews: 0.78."""
    completed = run_cli(
        "train", "--quiet", "--data", str(SHARED_REVIEWS), "--backbone", "minilm", "--method", "frozen",
        "--head", "logreg", "--output-dir", str(tmp_path / "run"), cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["f1_macro"] >= 0.75
    assert metrics["n_examples"] == 1200
