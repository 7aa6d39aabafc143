"""``train --folds K`` through the CLI: K fold runs, cv.json, out-of-fold predictions, compare as one row."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from review_toolkit.cli import cli
from review_toolkit.runs.manifest import check_run_integrity
from tests.conftest import assert_one_error_line

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def train_folds(tiny_bert: str, data: Path, output: Path, *extra: str):
    return CliRunner().invoke(cli, [
        "train", "--backbone", "bert", "--model", tiny_bert, "--method", "frozen", "--head", "logreg",
        "--data", str(data), "--output-dir", str(output), "--cache-dir", str(output.parent / "cache"),
        "--max-length", "32", "--quiet", *extra,
    ])  # fmt: skip


@pytest.fixture(scope="module")
def cross_validation(tmp_path_factory, tiny_bert, small_reviews):
    output = tmp_path_factory.mktemp("cv") / "cv"
    result = train_folds(tiny_bert, small_reviews, output, "--folds", "3")
    assert result.exit_code == 0, result.output
    return output, result.output


def test_three_fold_runs_each_tested_on_its_fold(cross_validation):
    output, _ = cross_validation
    assert sorted(path.name for path in output.iterdir()) == ["cv.json", "fold-1", "fold-2", "fold-3", "oof_predictions.csv"]
    for fold in (1, 2, 3):
        run = output / f"fold-{fold}"
        assert check_run_integrity(run) == []  # complete, sealed runs
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert (config["folds"], config["fold"]) == (3, fold)
        assert config["output_dir"] == str(output / f"fold-{fold}")  # where it is, not the staging folder


def test_out_of_fold_predictions_cover_every_row_exactly_once(cross_validation, small_reviews):
    output, _ = cross_validation
    oof = pd.read_csv(output / "oof_predictions.csv")
    data = pd.read_csv(small_reviews)
    assert sorted(oof["row"]) == list(range(1, len(data) + 1))
    expected_labels = data["label"].str.strip().str.lower().to_numpy()[oof["row"].to_numpy() - 1]
    assert (oof["label"].to_numpy() == expected_labels).all()
    assert ((oof["p_fake"] >= 0) & (oof["p_fake"] <= 1)).all()
    for fold in (1, 2, 3):  # each row comes from the fold whose test split held it
        tested = pd.read_csv(output / f"fold-{fold}" / "split_predictions.csv").query("split == 'test'")
        assert set(oof.loc[oof["fold"] == fold, "row"]) == set(tested["row"])
    # Stratified: every fold holds both classes in about the data's proportion.
    assert oof.groupby("fold")["label"].nunique().eq(2).all()


def test_cv_json_holds_per_fold_metrics_mean_and_std(cross_validation):
    output, printed = cross_validation
    summary = json.loads((output / "cv.json").read_text())
    assert summary["folds"] == 3 and summary["reviews"] == 240
    per_fold = [json.loads((output / f"fold-{fold}" / "metrics.json").read_text())["f1_macro"] for fold in (1, 2, 3)]
    f1 = summary["metrics"]["f1_macro"]
    assert f1["per_fold"] == pytest.approx(per_fold)
    assert f1["mean"] == pytest.approx(np.mean(per_fold)) and f1["std"] == pytest.approx(np.std(per_fold, ddof=1))
    assert {"accuracy", "roc_auc", "precision_macro", "f1_fake", "f1_real"} <= set(summary["metrics"])
    line = next(line for line in printed.splitlines() if line.startswith("macro F1 "))
    assert re.fullmatch(r"macro F1 \d\.\d{4} ± \d\.\d{4}  accuracy \d\.\d{4} ± \d\.\d{4}  ROC AUC \d\.\d{4} ± \d\.\d{4}", line)
    assert f"{f1['mean']:.4f} ± {f1['std']:.4f}" in line


def test_compare_shows_the_cross_validation_as_one_row(cross_validation, tmp_path):
    output, _ = cross_validation
    result = CliRunner().invoke(cli, ["compare", str(output), "--output-dir", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| cv")]
    assert len(rows) == 1 and "(3 folds)" in rows[0]
    f1 = json.loads((output / "cv.json").read_text())["metrics"]["f1_macro"]
    assert f"{f1['mean']:.4f} ± {f1['std']:.4f}" in rows[0]


def test_evaluate_scores_a_fold_run_on_its_own_fold(cross_validation):
    output, _ = cross_validation
    run = output / "fold-2"
    result = CliRunner().invoke(cli, ["evaluate", "--run", str(run), "--output-dir", str(run.parent.parent / "eval-fold-2")])
    assert result.exit_code == 0, result.output
    evaluated = json.loads((run.parent.parent / "eval-fold-2" / "metrics.json").read_text())
    assert evaluated["f1_macro"] == pytest.approx(json.loads((run / "metrics.json").read_text())["f1_macro"])


@pytest.mark.parametrize(
    "arguments, fragments",
    [
        (["--folds", "1"], ["--folds"]),
        (["--folds", "121"], ["--folds 121", "120 fake, 120 real", "--folds 120 or fewer"]),
        (["--folds", "3", "--split-column", "split"], ["folds", "split_column"]),
        (["--refit"], ["refit", "folds"]),
    ],
)
def test_bad_folds_are_refused_with_one_error_line(tiny_bert, small_reviews, tmp_path, arguments, fragments):
    output = tmp_path / "cv"
    assert_one_error_line(train_folds(tiny_bert, small_reviews, output, *arguments), *fragments)
    assert not output.exists() and not output.with_name("cv.partial").exists()


def test_a_cross_validation_that_stops_leaves_nothing_that_looks_complete(tiny_bert, small_reviews, tmp_path, monkeypatch):
    from review_toolkit.train import cross_validation as cv

    trained = []
    real_train = cv.train

    def stop_at_the_second_fold(config, **kwargs):
        if trained:
            raise KeyboardInterrupt("SIGTERM")
        trained.append(config.fold)
        return real_train(config, **kwargs)

    monkeypatch.setattr(cv, "train", stop_at_the_second_fold)
    output = tmp_path / "cv"
    result = train_folds(tiny_bert, small_reviews, output, "--folds", "3")
    assert result.exit_code == 130, result.output
    assert trained == [1]
    assert not output.exists() and not output.with_name("cv.partial").exists()


def test_refit_trains_the_deployable_run_on_all_the_data(tiny_bert, small_reviews, tmp_path):
    output = tmp_path / "cv"
    result = train_folds(tiny_bert, small_reviews, output, "--folds", "2", "--refit")
    assert result.exit_code == 0, result.output
    final = output / "final"
    assert check_run_integrity(final) == []
    assert yaml.safe_load((final / "config.yaml").read_text())["fold"] == 0
    sizes = json.loads((final / "run.json").read_text())["data"]["sizes"]
    assert sizes["test"] == 0 and sizes["train"] + sizes["validation"] == 240
    assert json.loads((output / "cv.json").read_text())["refit"] == "final"
    compared = CliRunner().invoke(cli, ["compare", str(output), "--output-dir", str(tmp_path / "cmp")])
    assert compared.exit_code == 0, compared.output
    assert "(2 folds)" in compared.output and "| final |" in compared.output
    # No test split to score it on: evaluate asks for labelled data instead.
    assert_one_error_line(CliRunner().invoke(cli, ["evaluate", "--run", str(final)]), "no test split", "--data")
    scored = CliRunner().invoke(cli, ["evaluate", "--run", str(final), "--data", str(small_reviews),
                                      "--output-dir", str(tmp_path / "scored")])
    assert scored.exit_code == 0, scored.output
