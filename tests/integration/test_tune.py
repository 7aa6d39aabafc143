"""``review-toolkit tune`` on the tiny BERT, frozen, logistic regression: outputs, reproduction, resume, refusals."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import pytest
import yaml
from click.testing import CliRunner
from conftest import assert_one_error_line

from review_toolkit.cli import cli
from review_toolkit.runs.loader import load_run
from review_toolkit.train.tune import validation_f1

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tune_command(tiny_bert, small_reviews, output, cache, *extra):
    return [
        "tune", "--backbone", "bert", "--model", tiny_bert, "--method", "frozen", "--head", "logreg",
        "--data", str(small_reviews), "--cache-dir", str(cache), "--max-length", "32", "--output-dir", str(output),
        "--quiet", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def search(tmp_path_factory, tiny_bert, small_reviews):
    """A 3-trial search, shared by the tests that read its outputs."""
    root = tmp_path_factory.mktemp("tune")
    result = CliRunner().invoke(cli, tune_command(tiny_bert, small_reviews, root / "search", root / "cache", "--trials", "3"))
    assert result.exit_code == 0, result.output
    return root, result


def read_trials(folder):
    with open(folder / "trials.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_a_search_writes_its_table_plot_best_run_and_config(search):
    root, result = search
    folder = root / "search"
    rows = read_trials(folder)
    assert [row["trial"] for row in rows] == ["0", "1", "2"]
    assert rows[0]["head.c_grid"] == "(defaults)"  # the first trial is the configuration as given
    assert all(row["state"] == "complete" for row in rows)
    assert (folder / "trials.png").stat().st_size > 0
    assert "| trial | state | validation_f1_macro |" in result.output
    best_value = max(float(row["validation_f1_macro"]) for row in rows)
    assert validation_f1(folder / "best") == pytest.approx(best_value)
    assert load_run(folder / "best").predict(["Great product, works as described."])
    assert "best run on the test split: macro F1" in result.output
    # Only the best trial's run is kept under trials/ (the default --keep-trials best).
    assert len(list((folder / "trials").iterdir())) == 1


def test_the_best_config_trains_to_the_same_validation_f1(search):
    root, _ = search
    folder = root / "search"
    config = yaml.safe_load((folder / "best_config.yaml").read_text(encoding="utf-8"))
    assert config["output_dir"] is None and config["method"] == "frozen" and config["head"] == "logreg"
    retrained = root / "retrained"
    result = CliRunner().invoke(cli, ["train", "--config", str(folder / "best_config.yaml"),
                                      "--output-dir", str(retrained), "--quiet"])
    assert result.exit_code == 0, result.output
    assert validation_f1(retrained) == pytest.approx(validation_f1(folder / "best"))
    best_metrics = json.loads((folder / "best" / "metrics.json").read_text())
    assert json.loads((retrained / "metrics.json").read_text())["f1_macro"] == pytest.approx(best_metrics["f1_macro"])


def test_running_again_with_a_larger_budget_adds_trials(search, tiny_bert, small_reviews):
    root, _ = search
    folder = root / "search"
    result = CliRunner().invoke(cli, tune_command(tiny_bert, small_reviews, folder, root / "cache", "--trials", "5"))
    assert result.exit_code == 0, result.output
    assert [row["trial"] for row in read_trials(folder)] == ["0", "1", "2", "3", "4"]
    # The same budget again adds nothing.
    again = CliRunner().invoke(cli, tune_command(tiny_bert, small_reviews, folder, root / "cache", "--trials", "5"))
    assert again.exit_code == 0, again.output
    assert len(read_trials(folder)) == 5


def test_a_different_search_in_the_same_folder_is_refused(search, tiny_bert, small_reviews):
    root, _ = search
    folder = root / "search"
    before = read_trials(folder)
    command = tune_command(tiny_bert, small_reviews, folder, root / "cache", "--trials", "9")
    command[command.index("--max-length") + 1] = "24"
    assert_one_error_line(CliRunner().invoke(cli, command), "holds a different search", "max_length")
    assert read_trials(folder) == before


@pytest.mark.parametrize(
    ("space", "fragments"),
    [
        ("head.c_grd: {low: 0.1, high: 1}", ["head.c_grd", "Did you mean head.c_grid"]),
        ("head.c_grid: {low: 10, high: 0.1, log: true}", ["head.c_grid", "low (10) is above high (0.1)"]),
        ("head.c_grid: {low: 0, high: 1, log: true}", ["head.c_grid", "log range must start above 0"]),
        ("head.c_grid: {low: -1, high: 1}", ["head.c_grid", "positive numbers"]),
        ("learning_rate: {choices: [0.1, -0.1]}", ["learning_rate", "-0.1"]),
        ("data: {choices: [a.csv, b.csv]}", ["data", "cannot be searched"]),
        ("method.r: {choices: [4, 8]}", ["method.r", "has no option 'r'"]),
    ],
)
def test_a_search_space_that_cannot_work_is_refused_before_anything_trains(
    space, fragments, tiny_bert, small_reviews, tmp_path
):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(space + "\n", encoding="utf-8")
    result = CliRunner().invoke(
        cli, tune_command(tiny_bert, small_reviews, tmp_path / "search", tmp_path / "cache", "--space", str(space_file))
    )
    assert_one_error_line(result, *fragments)
    assert not (tmp_path / "search").exists() and not (tmp_path / "cache").exists()


def test_an_option_both_fixed_and_searched_is_refused(tiny_bert, small_reviews, tmp_path):
    space_file = tmp_path / "space.yaml"
    space_file.write_text("head.c_grid: {low: 0.1, high: 1}\n", encoding="utf-8")
    command = tune_command(tiny_bert, small_reviews, tmp_path / "search", tmp_path / "cache",
                           "--space", str(space_file), "--head-option", "c_grid=0.5")
    assert_one_error_line(CliRunner().invoke(cli, command), "head.c_grid", "fix it or search it")
    assert not (tmp_path / "search").exists()


def test_a_killed_search_loses_no_finished_trial(tiny_bert, small_reviews, tmp_path):
    folder, cache = tmp_path / "search", tmp_path / "cache"
    command = [sys.executable, "-m", "review_toolkit", *tune_command(tiny_bert, small_reviews, folder, cache, "--trials", "50")]
    search = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 300
        for line in search.stderr:  # killed as soon as its first trial has finished
            if "(1/50)" in line or time.monotonic() > deadline:
                break
        search.kill()
    finally:
        search.wait()
    assert search.returncode == -9

    result = CliRunner().invoke(cli, tune_command(tiny_bert, small_reviews, folder, cache, "--trials", "2"))
    assert result.exit_code == 0, result.output
    rows = read_trials(folder)
    assert rows[0]["trial"] == "0" and rows[0]["state"] == "complete"  # the defaults trial, kept
    assert sum(row["state"] == "complete" for row in rows) == 2  # one more for the budget
    assert all(row["state"] in ("complete", "interrupted") for row in rows)  # the killed one, if it had started
    assert not list(folder.glob("trials/*.partial"))


def test_trainer_trained_trials_report_each_epoch_and_the_time_budget_stops_new_trials(tiny_bert, small_reviews, tmp_path):
    import optuna

    folder = tmp_path / "search"
    command = tune_command(tiny_bert, small_reviews, folder, tmp_path / "cache", "--trials", "5", "--timeout", "0.01",
                           "--epochs", "2", "--batch-size", "16")
    command[command.index("logreg")] = "linear"
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 0, result.output
    assert "no further trial starts" in result.output
    rows = read_trials(folder)
    assert len(rows) == 1 and {"learning_rate", "weight_decay", "head.dropout"} <= set(rows[0])
    study = optuna.load_study(study_name="review-toolkit-tune", storage=f"sqlite:///{folder / 'study.db'}")
    assert sorted(study.trials[0].intermediate_values) == [1, 2]  # what the median pruner compares


def test_without_optuna_the_error_says_what_to_install(small_reviews, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # an import of it fails, as when it is not installed
    result = CliRunner().invoke(cli, ["tune", "--data", str(small_reviews), "--output-dir", str(tmp_path / "search")])
    assert_one_error_line(result, "needs Optuna", 'pip install "review-toolkit[tune]"')
    assert not (tmp_path / "search").exists()
