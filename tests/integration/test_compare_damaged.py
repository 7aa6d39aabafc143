"""``compare`` over runs whose records are damaged: each such run is skipped with a warning naming
its file; when no run is left, one ``Error:`` line."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner
from conftest import assert_one_error_line

from review_toolkit.cli import cli


@pytest.mark.parametrize(
    "metrics, problem",
    [
        ("{not json", "is not valid JSON"),
        ("[0.9, 0.8]", "holds list, not a JSON object"),
        ('{"f1_macro": "excellent", "accuracy": 0.9}', "has 'f1_macro' that is not a number"),
        ('{"f1_macro": NaN, "accuracy": 0.9}', "has 'f1_macro' that is not a number"),
    ],
)
def test_a_run_with_damaged_metrics_is_skipped_and_named(tiny_frozen_run, tmp_path, caplog, metrics, problem):
    good, bad = tmp_path / "runs" / "good", tmp_path / "runs" / "bad"
    shutil.copytree(tiny_frozen_run, good)
    shutil.copytree(tiny_frozen_run, bad)
    (bad / "metrics.json").write_text(metrics, encoding="utf-8")

    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert f"Skipping the run {bad}: {bad / 'metrics.json'} {problem}" in caplog.text
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in table[1:]] == ["good"]


def test_no_readable_run_left_is_one_error(tiny_frozen_run, tmp_path):
    bad = tmp_path / "runs" / "bad"
    shutil.copytree(tiny_frozen_run, bad)
    (bad / "metrics.json").write_text("{not json", encoding="utf-8")
    assert_one_error_line(CliRunner().invoke(cli, ["compare", str(tmp_path / "runs")]), "None of the 1 run(s)")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["bad"]  # no comparison written
