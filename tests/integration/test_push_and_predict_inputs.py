"""A run as the Hugging Face ecosystem and a new user meet it: push, predict's defaults, train-many's data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from review_toolkit.cli import cli
from review_toolkit.runs.publish import files_to_push, push_run


def run_cli(*arguments: str, cwd: Path, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "review_toolkit", *arguments], cwd=cwd, capture_output=True, text=True,
        input=stdin, timeout=600, env=env,
    )


@pytest.fixture(scope="module")
def renamed_run(tmp_path_factory, small_reviews) -> Path:
    """A frozen MiniLM run trained on a file whose text column is 'review_body'."""
    root = tmp_path_factory.mktemp("renamed")
    data = root / "reviews.csv"
    pd.read_csv(small_reviews).rename(columns={"text": "review_body"}).to_csv(data, index=False)
    trained = run_cli("train", "--quiet", "--data", str(data), "--text-column", "review_body",
                      "--output-dir", "run", cwd=root)
    assert trained.returncode == 0, trained.stderr[-2000:]
    return root / "run"


class RecordingHub:
    """Stands in for huggingface_hub.HfApi at its boundary: keeps what would be created and uploaded."""

    def __init__(self):
        self.repos: list[tuple[str, dict]] = []
        self.uploaded: dict[str, bytes] = {}

    def create_repo(self, repo_id, **options):
        self.repos.append((repo_id, options))

    def create_commit(self, repo_id, operations, **options):
        for operation in operations:
            self.uploaded[operation.path_in_repo] = Path(operation.path_or_fileobj).read_bytes()
        return type("Commit", (), {"commit_url": f"http://127.0.0.1/{repo_id}/commit/1"})()


def test_push_uploads_exactly_the_manifest_files_the_manifest_and_the_card(renamed_run):
    hub = RecordingHub()
    result = push_run(renamed_run, "team/fake-reviews", api=hub)
    manifest = json.loads((renamed_run / "manifest.json").read_text())
    assert set(hub.uploaded) == {*manifest["files"], "manifest.json"} and "README.md" in hub.uploaded
    assert all(hub.uploaded[name] == (renamed_run / name).read_bytes() for name in hub.uploaded)
    assert not any(name.startswith("checkpoints/") for name in hub.uploaded)
    assert hub.repos == [("team/fake-reviews", {"repo_type": "model", "private": False, "exist_ok": True})]
    assert result.files == sorted(hub.uploaded)


def test_push_refuses_a_changed_run_and_a_bad_repo_id_in_one_line(renamed_run, tmp_path):
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(renamed_run), str(copy)], check=True)
    (copy / "report.txt").write_text("edited")
    result = CliRunner().invoke(cli, ["push", "--run", str(copy), "--repo-id", "team/x", "--dry-run"])
    assert result.exit_code == 1 and "report.txt" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["push", "--run", str(renamed_run), "--repo-id", "no-owner"])
    assert result.exit_code == 1 and "OWNER/NAME" in result.output
    assert files_to_push(renamed_run)[0] == "README.md"


def test_predict_reads_the_runs_own_text_column_and_plain_lines(renamed_run, tmp_path):
    table = tmp_path / "new.csv"
    pd.DataFrame({"review_body": ["Great product, would buy again", "Broke in a day"]}).to_csv(table, index=False)
    scored = run_cli("predict", "--run", str(renamed_run), "--input", str(table), "--quiet", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr[-2000:]
    rows = pd.read_csv(pd.io.common.StringIO(scored.stdout))
    assert list(rows.columns) == ["review_body", "label", "p_fake"] and len(rows) == 2

    # Plain lines on standard input are reviews, not a header: two lines in, two rows out.
    lines = run_cli("predict", "--run", str(renamed_run), "--input", "-", "--quiet", cwd=tmp_path,
                    stdin="Great product, would buy again\nBroke in a day\n")
    assert lines.returncode == 0, lines.stderr[-2000:]
    out = pd.read_csv(pd.io.common.StringIO(lines.stdout))
    assert out.text.tolist() == ["Great product, would buy again", "Broke in a day"]
    assert "one review per line" in lines.stderr
    assert out.p_fake.round(6).tolist() == rows.p_fake.round(6).tolist()  # same reviews, same scores


def test_train_many_takes_the_data_options_of_train_and_checks_them_before_any_run(tmp_path, small_reviews):
    data = tmp_path / "reviews.csv"
    pd.read_csv(small_reviews).rename(columns={"text": "body"}).to_csv(data, index=False)
    plan = tmp_path / "plan.yaml"
    plan.write_text("shared: {method: frozen}\nruns: [{head: logreg}, {head: svm}]\n")
    refused = run_cli("train-many", str(plan), "--data", str(data), "--output-dir", "runs", cwd=tmp_path)
    assert refused.returncode == 1 and "has no column 'text'" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "runs").exists()  # nothing started
    trained = run_cli("train-many", str(plan), "--data", str(data), "--text-column", "body", "--output-dir", "runs",
                      "--quiet", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "text_column: body" in (tmp_path / "runs" / "minilm-frozen-svm" / "config.yaml").read_text()


def test_an_unreachable_hub_fails_in_one_line_naming_the_checkpoint(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))  # nothing listens on port 9
    result = run_cli("train", "--backbone", "stella", "--quiet", "--output-dir", "run", cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[-1]]  # one line, nothing before
    assert "NovaSearch/stella_en_400M_v5" in result.stderr and "cannot be reached" in result.stderr
    assert not (tmp_path / "run").exists()


def test_compare_shows_data_test_size_seed_and_threshold_and_warns_on_mixed_data(renamed_run, tmp_path, small_reviews):
    other = run_cli("train", "--quiet", "--data", str(small_reviews), "--head", "svm", "--seed", "7",
                    "--output-dir", str(tmp_path / "other"), cwd=tmp_path)
    assert other.returncode == 0, other.stderr[-2000:]
    compared = run_cli("compare", str(renamed_run), str(tmp_path / "other"), "--output-dir", str(tmp_path / "cmp"), cwd=tmp_path)
    assert compared.returncode == 0, compared.stderr[-2000:]
    header = compared.stdout.splitlines()[0]
    for title in ("threshold", "data", "test reviews", "split seed"):
        assert f"| {title} |" in header
    assert "reviews.csv" in compared.stdout and "| 7 |" in compared.stdout and "| 42 |" in compared.stdout
    assert "tested on different reviews" in compared.stderr
    same = run_cli("compare", str(renamed_run), "--output-dir", str(tmp_path / "cmp1"), cwd=tmp_path)
    assert same.returncode == 0 and "different reviews" not in same.stderr
    # Another training seed on the same split (--split-seed) is tested on the same reviews: no warning.
    reseeded = run_cli("train", "--quiet", "--data", str(renamed_run.parent / "reviews.csv"), "--text-column", "review_body",
                       "--head", "svm", "--seed", "7", "--split-seed", "42", "--output-dir", str(tmp_path / "reseeded"), cwd=tmp_path)
    assert reseeded.returncode == 0, reseeded.stderr[-2000:]
    both = run_cli("compare", str(renamed_run), str(tmp_path / "reseeded"), "--output-dir", str(tmp_path / "cmp2"), cwd=tmp_path)
    assert both.returncode == 0 and "different reviews" not in both.stderr


def test_the_model_card_carries_hub_metadata_and_says_whether_probabilities_are_calibrated(renamed_run):
    import yaml

    card = (renamed_run / "README.md").read_text()
    assert card.startswith("---\n")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["pipeline_tag"] == "text-classification" and "fake-review-detection" in front["tags"]
    metrics = json.loads((renamed_run / "metrics.json").read_text())
    scores = {entry["type"]: entry["value"] for entry in front["model-index"][0]["results"][0]["metrics"]}
    assert scores["f1"] == pytest.approx(metrics["f1_macro"], abs=1e-4)
    # The bundled MiniLM is a copy of the Hub's: named by its id, not by the site-packages folder.
    assert front["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert "site-packages" not in card
    calibration = json.loads((renamed_run / "run.json").read_text()).get("calibration") or {"method": "none"}
    if calibration["method"] == "none":
        assert "not calibrated" in card and "calibrated by" not in card
    else:
        assert f"calibrated by {calibration['method']} scaling" in card
