"""evaluate, calibration and thresholds, streaming predict, compare, train-many and the model card.

One real frozen MiniLM + logreg run on the bundled data (and an SVM on the same cached embeddings)
is trained once per session and shared; tests that change a run work on a copy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from review_toolkit.data import formats as prediction
from review_toolkit.inference.calibration import Calibration, choose_threshold, expected_calibration_error, fit_calibration
from review_toolkit.cli import cli
from review_toolkit.config import TrainConfig
from review_toolkit.data import default_data_path
from review_toolkit.errors import ConfigError
from review_toolkit.evaluation.run_evaluation import PLOT_FILES, load_split_predictions
from review_toolkit.runs.loader import load_run
from review_toolkit.train.pipeline import train

GIB = 2**30


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("evaluate_predict_compare")


@pytest.fixture(scope="session")
def cache_dir(workspace) -> Path:
    return workspace / "cache"


@pytest.fixture(scope="session")
def logreg_run(workspace, cache_dir) -> Path:
    result = train(
        TrainConfig(method="frozen", head="logreg", output_dir=str(workspace / "runs" / "logreg"), cache_dir=str(cache_dir)),
        progress=False,
    )
    return result.run_dir


@pytest.fixture(scope="session")
def tiny_logreg_run(workspace, cache_dir, tiny_bert, small_reviews) -> Path:
    """A frozen tiny random BERT + logistic regression: scores in milliseconds, for tests of the plumbing."""
    result = train(
        TrainConfig(
            backbone="bert", model=tiny_bert, method="frozen", head="logreg", data=str(small_reviews),
            output_dir=str(workspace / "tiny-runs" / "logreg"), cache_dir=str(cache_dir),  # not among the runs compare lists
        ),
        progress=False,
    )
    return result.run_dir


@pytest.fixture(scope="session")
def svm_run(workspace, cache_dir, logreg_run) -> Path:
    # Same backbone, data and cache as logreg_run: the embeddings come from the cache.
    result = train(
        TrainConfig(method="frozen", head="svm", output_dir=str(workspace / "runs" / "svm"), cache_dir=str(cache_dir)),
        progress=False,
    )
    return result.run_dir


@pytest.fixture
def run_copy(logreg_run, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(logreg_run, target)
    return target


def invoke(*args: str, input: str | bytes | None = None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; fails unless the file is a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def no_partials(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if "partial" in p.name]


# --------------------------------------------------------------------------- train time


def test_run_has_model_card_split_predictions_and_calibration(logreg_run):
    card = (logreg_run / "README.md").read_text(encoding="utf-8")
    for heading in ("## Data and split", "## Configuration", "## Metrics", "## Intended use and limitations"):
        assert heading in card
    metrics = json.loads((logreg_run / "metrics.json").read_text())
    assert f"{metrics['f1_macro']:.4f}" in card
    assert "random stratified split" in card and "validation 80" in card

    info = json.loads((logreg_run / "run.json").read_text())
    calibration = info["calibration"]
    assert calibration["method"] in ("temperature", "none")
    # Fitted on validation, and never kept when it makes validation ECE worse.
    assert calibration["validation_ece_after"] <= calibration["validation_ece_before"]
    assert info["threshold"] == 0.5 and info["threshold_selection"] == {"rule": "default"}

    scores = load_split_predictions(logreg_run)
    assert len(scores["validation"].labels) == 80 and len(scores["test"].labels) == 200
    # The stored raw test scores, calibrated, give the run's test metrics.
    p_fake = Calibration.from_dict(calibration).apply(scores["test"].p_raw)
    accuracy = float(((p_fake >= 0.5).astype(int) == scores["test"].labels).mean())
    assert accuracy == pytest.approx(metrics["accuracy"])


def test_library_predictions_are_calibrated_and_survive_reload(logreg_run):
    classifier = load_run(logreg_run)
    texts = ["Great kettle, boils fast.", "This is the best product ever, I love it so much, highly recommend!"]
    predictions = classifier.predict(texts)
    raw = classifier.predict_proba(texts, calibrated=False)
    expected = classifier.calibration.apply(raw)
    assert [p.p_fake for p in predictions] == pytest.approx(expected.tolist(), abs=0)
    assert [p.label for p in predictions] == classifier.labels_for(expected)


# --------------------------------------------------------------------------- calibration units


def test_temperature_scaling_fixes_overconfident_probabilities():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    true_logit = np.where(labels == 1, 1.0, -1.0) + rng.normal(0, 1.2, 2000)
    overconfident = 1 / (1 + np.exp(-3.0 * true_logit))  # logits three times too large
    calibration = fit_calibration(overconfident, labels, "temperature")
    assert calibration.method == "temperature" and calibration.temperature > 2
    before = expected_calibration_error(labels, overconfident)
    after = expected_calibration_error(labels, calibration.apply(overconfident))
    assert after < before / 2
    # Ranking and the 0.5 decision are unchanged by temperature scaling.
    assert np.array_equal(calibration.apply(overconfident) >= 0.5, overconfident >= 0.5)


def test_threshold_for_target_precision_is_the_one_with_most_recall():
    p = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2])
    y = np.array([1, 1, 0, 1, 1, 0, 1, 0])
    choice = choose_threshold(p, y, target_precision=0.8)
    predicted = p >= choice.threshold
    assert predicted.sum() == 5  # precision 4/5 with recall 4/5; lower cuts fall below 0.8
    assert choice.details["validation_precision"] == pytest.approx(0.8)
    with pytest.raises(ConfigError, match="best reachable"):
        choose_threshold(np.array([0.9, 0.8]), np.array([0, 1]), target_precision=0.99)


# --------------------------------------------------------------------------- evaluate


def test_evaluate_test_split_writes_metrics_report_and_plots(run_copy):
    result = invoke("evaluate", "--run", str(run_copy), "--quiet")
    assert result.exit_code == 0, result.output
    assert "macro avg" in result.output and "ECE on validation" in result.output
    out = run_copy / "evaluation" / "test"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc", "average_precision", "brier_score",
        "log_loss", "ece_before_calibration", "ece_after_calibration", "confusion_matrix", "per_class", "threshold",
        "threshold_selection", "calibration", "data", "plots",
    ):
        assert key in metrics, key
    assert metrics["data"]["n_examples"] == 200
    assert sum(map(sum, metrics["confusion_matrix"]["rows_true_columns_predicted"])) == 200
    # Same numbers as training measured on the test split.
    assert metrics["f1_macro"] == pytest.approx(json.loads((run_copy / "metrics.json").read_text())["f1_macro"])
    assert "macro avg" in (out / "report.txt").read_text()
    assert len(pd.read_csv(out / "predictions.csv")) == 200
    for name in PLOT_FILES.values():
        width, height = png_size(out / name)
        assert width >= 500 and height >= 400, name
        assert (out / name).stat().st_size > 15_000, f"{name} looks empty"
    assert no_partials(out.parent) == []
    # Writing the evaluation into the run re-sealed its manifest: it still loads.
    assert load_run(run_copy).threshold == 0.5


def test_target_precision_threshold_reaches_precision_on_validation(run_copy):
    result = invoke("evaluate", "--run", str(run_copy), "--target-precision", "0.9", "--quiet")
    assert result.exit_code == 0, result.output
    info = json.loads((run_copy / "run.json").read_text())
    assert info["threshold_selection"]["rule"] == "target_precision"
    threshold = info["threshold"]
    validation = load_split_predictions(run_copy)["validation"]
    p_fake = Calibration.from_dict(info["calibration"]).apply(validation.p_raw)
    flagged = p_fake >= threshold
    assert flagged.any()
    precision = validation.labels[flagged].mean()
    assert precision >= 0.9
    assert precision == pytest.approx(info["threshold_selection"]["validation_precision"])
    # predict and load_run use the stored threshold; the model card says so.
    assert load_run(run_copy).threshold == threshold
    assert f"{threshold:.4f}" in (run_copy / "README.md").read_text()


def test_threshold_for_f1_and_platt_without_saving(run_copy):
    before = (run_copy / "run.json").read_text()
    result = invoke("evaluate", "--run", str(run_copy), "--calibration", "platt", "--threshold-for", "f1", "--no-save", "--quiet")
    assert result.exit_code == 0, result.output
    assert (run_copy / "run.json").read_text() == before  # --no-save
    metrics = json.loads((run_copy / "evaluation" / "test" / "metrics.json").read_text())
    calibration = metrics["calibration"]
    assert calibration["validation_ece_after"] <= calibration["validation_ece_before"]
    assert metrics["threshold_selection"]["rule"] == "f1"
    validation = load_split_predictions(run_copy)["validation"]
    p_fake = Calibration.from_dict(calibration).apply(validation.p_raw)

    def macro_f1(threshold):
        from sklearn.metrics import f1_score

        return f1_score(validation.labels, (p_fake >= threshold).astype(int), average="macro")

    assert macro_f1(metrics["threshold"]) >= macro_f1(0.5) - 1e-12
    assert metrics["threshold_selection"]["validation_f1_macro"] == pytest.approx(macro_f1(metrics["threshold"]))


def test_evaluate_on_new_labelled_data(run_copy, tmp_path):
    reviews = pd.read_csv(default_data_path(), dtype=str, keep_default_na=False).head(40)
    data = tmp_path / "shop_reviews.csv"
    reviews.rename(columns={"text": "review", "label": "gold"}).to_csv(data, index=False)
    result = invoke("evaluate", "--run", str(run_copy), "--data", str(data), "--text-column", "review", "--label-column", "gold", "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads((run_copy / "evaluation" / "shop_reviews" / "metrics.json").read_text())
    assert metrics["data"]["n_examples"] == 40
    assert metrics["data"]["description"] == str(data)


def test_evaluate_refuses_two_threshold_rules(run_copy):
    result = CliRunner().invoke(cli, ["evaluate", "--run", str(run_copy), "--threshold-for", "f1", "--target-precision", "0.9"])
    assert result.exit_code == 1
    assert "Error: Give only one of" in result.output
    assert not (run_copy / "evaluation").exists()


# --------------------------------------------------------------------------- predict


def test_predict_large_csv_streams_in_order_with_little_memory(tiny_logreg_run, tmp_path):
    base = pd.read_csv(default_data_path(), dtype=str, keep_default_na=False)
    big = pd.concat([base, base], ignore_index=True)  # 2,000 reviews
    big.insert(0, "id", [f"r{i:05d}" for i in range(len(big))])
    big["note"] = ["NA" if i % 7 == 0 else f"n{i}" for i in range(len(big))]  # "NA" must stay text
    source = tmp_path / "big.csv"
    big.to_csv(source, index=False)
    output = tmp_path / "scored.csv"

    command = [sys.executable, "-m", "review_toolkit", "predict", "--run", str(tiny_logreg_run), "--input", str(source),
               "--output", str(output), "--quiet"]
    peak_kib = _peak_rss_kib(command)
    assert peak_kib * 1024 < 1.5 * GIB * 0.8, f"peak RSS {peak_kib / 2**20:.2f} GiB"

    scored = pd.read_csv(output, dtype=str, keep_default_na=False)
    assert len(scored) == len(big)
    # The input has a 'label' column, so predictions get the predicted_ prefix; originals are kept verbatim.
    assert list(scored.columns) == ["id", "text", "label", "note", "predicted_label", "predicted_p_fake"]
    pd.testing.assert_frame_equal(scored[["id", "text", "label", "note"]], big[["id", "text", "label", "note"]])
    assert set(scored.predicted_label) <= {"real", "fake"}
    p_fake = scored.predicted_p_fake.astype(float)
    assert ((p_fake >= 0) & (p_fake <= 1)).all()
    # Rows 1,000 apart are the same review: same score, so nothing was shuffled.
    assert np.allclose(p_fake[:1000].to_numpy(), p_fake[1000:].to_numpy(), atol=1e-6)
    # The same numbers as the library.
    expected = load_run(tiny_logreg_run).predict_proba(big.text[:20].tolist())
    assert np.allclose(p_fake[:20].to_numpy(), expected, atol=1e-6)
    assert no_partials(tmp_path) == []


def _peak_rss_kib(command: list[str]) -> int:
    """Run ``command``; return its peak resident set size in KiB (GNU time, else getrusage of a wrapper)."""
    if Path("/usr/bin/time").exists():
        completed = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
        assert completed.returncode == 0, completed.stderr[-3000:]
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", completed.stderr)
        assert match, completed.stderr[-2000:]
        return int(match.group(1))
    wrapper = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    completed = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return int(completed.stdout.strip().splitlines()[-1])


def test_predict_reads_jsonl_from_stdin_and_keeps_keys(logreg_run):
    records = [{"id": i, "text": text, "meta": {"stars": i % 5}} for i, text in enumerate(
        ["Great kettle, boils fast.", "Terrible. Broke after a day.", "I love this product so much it is the best."]
    )]
    stdin = "".join(json.dumps(r) + "\n" for r in records)
    result = CliRunner().invoke(cli, ["predict", "--run", str(logreg_run), "--input", "-", "--quiet"], input=stdin)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [line["id"] for line in lines] == [0, 1, 2]
    assert [line["meta"] for line in lines] == [r["meta"] for r in records]
    assert all(line["label"] in ("real", "fake") and 0 <= line["p_fake"] <= 1 for line in lines)


def test_predict_text_option_writes_csv(logreg_run):
    result = CliRunner().invoke(cli, ["predict", "--run", str(logreg_run), "--text", "Great kettle.", "--text", "Bad, broke.", "--quiet"])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(__import__("io").StringIO(result.stdout))
    assert list(rows.columns) == ["text", "label", "p_fake"] and rows.text.tolist() == ["Great kettle.", "Bad, broke."]


def test_predict_bad_input_file_names_it_and_leaves_no_output(logreg_run, tmp_path):
    source = tmp_path / "reviews.csv"
    source.write_text('id,text\n1,"Fine."\n2,"Okay."\n3,\n4,"Good."\n', encoding="utf-8")
    output = tmp_path / "scored.csv"
    output.write_text("previous results\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["predict", "--run", str(logreg_run), "--input", str(source), "--output", str(output)])
    assert result.exit_code == 1
    assert str(source) in result.output and "row 3" in result.output and "'text'" in result.output
    assert "Traceback" not in result.output
    assert output.read_text() == "previous results\n"  # untouched
    assert no_partials(tmp_path) == []

    missing = tmp_path / "nope.csv"
    result = CliRunner().invoke(cli, ["predict", "--run", str(logreg_run), "--input", str(missing), "--output", str(tmp_path / "x.csv")])
    assert result.exit_code == 1 and str(missing) in result.output
    assert not (tmp_path / "x.csv").exists()

    result = CliRunner().invoke(cli, ["predict", "--run", str(logreg_run), "--input", str(source), "--text-column", "review"])
    assert result.exit_code == 1 and "no column 'review'" in result.output and str(source) in result.output


def test_predict_failure_mid_stream_removes_the_partial_output(logreg_run, tmp_path, monkeypatch):
    monkeypatch.setattr(prediction, "CHUNK_ROWS", 4)  # several chunks are written before the bad line
    lines = [json.dumps({"text": f"Review number {i}, quite good."}) for i in range(10)]
    lines.insert(9, "{not json")
    output = tmp_path / "scored.jsonl"
    result = CliRunner().invoke(
        cli, ["predict", "--run", str(logreg_run), "--input", "-", "--output", str(output), "--quiet"], input="\n".join(lines)
    )
    assert result.exit_code == 1
    assert "standard input" in result.output and "line 10" in result.output
    assert not output.exists() and no_partials(tmp_path) == []


# --------------------------------------------------------------------------- compare and train-many


def _table_rows(markdown: str) -> list[list[str]]:
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| run ")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_compare_lists_every_run_sorted_by_macro_f1(logreg_run, svm_run):
    result = invoke("compare", str(logreg_run.parent))
    assert result.exit_code == 0, result.output
    rows = _table_rows(result.output)
    assert sorted(row[0] for row in rows) == ["logreg", "svm"]
    f1 = [float(row[4]) for row in rows]
    assert f1 == sorted(f1, reverse=True)
    expected = {run.name: json.loads((run / "metrics.json").read_text())["f1_macro"] for run in (logreg_run, svm_run)}
    assert {row[0]: float(row[4]) for row in rows} == pytest.approx(expected, abs=5e-5)
    out = logreg_run.parent / "comparison"
    assert len(pd.read_csv(out / "leaderboard.csv")) == 2
    assert png_size(out / "leaderboard.png")[0] >= 800
    assert "| macro F1 |" in (out / "leaderboard.md").read_text()


def test_compare_explains_a_folder_without_runs(tmp_path):
    result = CliRunner().invoke(cli, ["compare", str(tmp_path)])
    assert result.exit_code == 1 and "no run.json" in result.output


def test_train_many_trains_a_plan_and_prints_the_comparison(tmp_path, cache_dir, logreg_run):
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"output_dir: {tmp_path / 'runs'}\n"
        "shared:\n  backbone: minilm\n  method: frozen\n"
        f"  cache-dir: {cache_dir}\n"
        "runs:\n  - head: logreg\n  - {head: svm, name: rbf-svm}\n",
        encoding="utf-8",
    )
    completed = subprocess.run(
        [sys.executable, "-m", "review_toolkit", "train-many", str(plan), "--quiet"],
        capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    for name in ("minilm-frozen-logreg", "rbf-svm"):
        assert (tmp_path / "runs" / name / "run.json").is_file()
        assert (tmp_path / "runs" / name / "README.md").is_file()
    names = [row[0] for row in _table_rows(completed.stdout)]
    assert sorted(names) == ["minilm-frozen-logreg", "rbf-svm"]
    assert (tmp_path / "runs" / "comparison" / "leaderboard.png").is_file()


def test_train_many_checks_every_run_before_training(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"output_dir: {tmp_path / 'runs'}\nruns:\n  - head: logreg\n  - head: no-such-head\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["train-many", str(plan)])
    assert result.exit_code == 1
    assert "run 2" in result.output and "no-such-head" in result.output
    assert not (tmp_path / "runs").exists()


def test_example_plan_is_valid():
    from review_toolkit.train.plan import load_plan

    example = Path(__file__).resolve().parents[2] / "examples" / "compare_frozen_heads.yaml"
    planned = load_plan(example)
    assert [run.config.head for run in planned] == ["logreg", "svm", "mlp"]
