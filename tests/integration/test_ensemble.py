"""`review-toolkit ensemble`: runs trained on the same data combined into a run like any other.

Members are real tiny runs (a random 2-layer BERT, frozen with a fitted logistic regression, and
fine-tuned in full with a torch linear head) trained on the 240 small reviews; nothing is mocked. The ensemble must load with
load_run, predict, evaluate, compare and serve, score each review once per member, and refuse
members that cannot be combined with one Error line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from review_toolkit.cli import cli
from review_toolkit.runs.layout import RUN_FILE
from conftest import assert_one_error_line

REVIEWS = ["Great kettle, boils fast.", "Broke after a day and support never answered.", "Five stars!!! Best ever."]


def _train(root: Path, name: str, tiny_bert: str, data: Path, *extra: str) -> Path:
    run = root / name
    result = CliRunner().invoke(cli, [
        "train", "--backbone", "bert", "--model", tiny_bert, "--data", str(data),
        "--output-dir", str(run), "--cache-dir", str(root / "cache"), "--max-length", "32", "--quiet", *extra,
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="module")
def members(tmp_path_factory, tiny_bert, small_reviews, tiny_frozen_run, one_torch_thread) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("members")
    return {
        "logreg": tiny_frozen_run,
        "full": _train(root, "full", tiny_bert, small_reviews, "--method", "full", "--epochs", "1"),
        "other_seed": _train(root, "other_seed", tiny_bert, small_reviews, "--method", "frozen", "--seed", "7"),
        "same_split": _train(
            root, "same_split", tiny_bert, small_reviews, "--method", "full", "--epochs", "1", "--seed", "7",
            "--split-seed", "42",
        ),
    }


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory, members) -> Path:
    output = tmp_path_factory.mktemp("ensembles") / "both"
    result = CliRunner().invoke(cli, ["ensemble", str(members["logreg"]), str(members["full"]), "--output-dir", str(output)])
    assert result.exit_code == 0, result.output
    assert "combination:" in result.output and "test split: macro F1" in result.output
    return output


def test_ensemble_loads_and_scores_like_its_members_combined(ensemble_dir, members):
    from review_toolkit.runs.loader import load_run

    ensemble = load_run(ensemble_dir)
    info = json.loads((ensemble_dir / RUN_FILE).read_text())
    assert info["kind"] == "ensemble" and [m["name"] for m in info["members"]] == ["run", "full"]
    parts = np.column_stack([load_run(members[key]).predict_proba(REVIEWS) for key in ("logreg", "full")])
    assert info["combination"]["method"] in ("mean", "stacking")
    expected = ensemble.calibration.apply(ensemble.combination.apply(parts))
    np.testing.assert_allclose(ensemble.predict_proba(REVIEWS), expected, rtol=1e-6)
    predictions = ensemble.predict(REVIEWS)
    assert [p.label for p in predictions] == ensemble.labels_for(np.array([p.p_fake for p in predictions]))
    card = (ensemble_dir / "README.md").read_text()
    assert "## Members" in card and "| full |" in card and "| run |" in card


def test_each_member_scores_each_review_once(ensemble_dir):
    from review_toolkit.runs.loader import load_run

    ensemble = load_run(ensemble_dir)
    seen = []
    for member in ensemble.members:
        counted = [0]
        seen.append(counted)

        def count(module, args, kwargs, counted=counted):
            counted[0] += kwargs["input_ids"].shape[0]

        member.encoder.register_forward_pre_hook(count, with_kwargs=True)
    ensemble.predict_proba(REVIEWS * 3, batch_size=4)
    assert [counted[0] for counted in seen] == [len(REVIEWS) * 3] * len(ensemble.members)


def test_predict_evaluate_and_compare_treat_it_as_a_run(ensemble_dir, members, tmp_path):
    runner = CliRunner()
    predicted = runner.invoke(cli, ["predict", "--run", str(ensemble_dir), "--text", REVIEWS[0]])
    assert predicted.exit_code == 0, predicted.output
    assert "fake" in predicted.output or "real" in predicted.output
    evaluated = runner.invoke(cli, ["evaluate", "--run", str(ensemble_dir), "--threshold-for", "f1", "--quiet"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "macro F1" in evaluated.output
    from review_toolkit.runs.loader import load_run

    stored = json.loads((ensemble_dir / RUN_FILE).read_text())
    assert stored["threshold_selection"]["rule"] == "f1"
    assert load_run(ensemble_dir).threshold == stored["threshold"]  # re-sealed: still loads
    assert "## Members" in (ensemble_dir / "README.md").read_text()
    compared = runner.invoke(cli, ["compare", str(ensemble_dir.parent), str(members["full"]), "--output-dir", str(tmp_path / "cmp")])
    assert compared.exit_code == 0, compared.output
    rows = (tmp_path / "cmp" / "leaderboard.csv").read_text().splitlines()
    assert len(rows) == 3 and any(row.startswith("both,ensemble,") for row in rows)  # its member copies are not listed


def test_served_with_info(ensemble_dir):
    from fastapi.testclient import TestClient

    from review_toolkit.runs.loader import load_run
    from review_toolkit.serve import app

    expected = load_run(ensemble_dir).predict_proba(REVIEWS)
    with TestClient(app(str(ensemble_dir))) as client:
        for _ in range(600):
            if client.get("/health").status_code == 200:
                break
        info = client.get("/info")
        assert info.status_code == 200, info.text
        assert info.json()["run"]["backbone"] == "ensemble"
        scored = client.post("/score", json={"reviews": REVIEWS})
        assert scored.status_code == 200, scored.text
    np.testing.assert_allclose([r["p_fake"] for r in scored.json()["results"]], expected, rtol=1e-5)


def test_stacking_is_stored_as_numbers_and_applied(members, tmp_path):
    from review_toolkit.runs.loader import load_run

    output = tmp_path / "stacked"
    result = CliRunner().invoke(cli, [
        "ensemble", str(members["logreg"]), str(members["full"]), "--output-dir", str(output), "--combine", "stacking",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    combination = json.loads((output / RUN_FILE).read_text())["combination"]
    assert combination["method"] == "stacking" and len(combination["weights"]) == 2
    assert load_run(output).predict_proba(REVIEWS).shape == (len(REVIEWS),)


@pytest.mark.parametrize(
    "arguments, fragments",
    [
        (lambda m, out: [str(m["logreg"]), "--output-dir", out], ("at least two runs",)),
        (lambda m, out: [str(m["logreg"]), str(m["other_seed"]), "--output-dir", out], ("--seed", "same data")),
        (lambda m, out: [str(m["logreg"]), str(m["logreg"].parent), "--output-dir", out], ("not a complete run directory",)),
        (lambda m, out: [str(m["logreg"]), str(m["full"]), "--output-dir", str(m["full"])], ("--output-dir",)),
    ],
    ids=["one-run", "other-seed", "not-a-run", "output-is-a-member"],
)
def test_refusals_name_the_problem_and_write_nothing(members, tmp_path, arguments, fragments):
    output = tmp_path / "refused"
    result = CliRunner().invoke(cli, ["ensemble", *arguments(members, str(output))])
    assert_one_error_line(result, *fragments)
    assert not output.exists() and not Path(str(output) + ".partial").exists()


def test_members_of_other_training_seeds_combine_when_their_split_seed_is_the_same(members, tmp_path):
    output = tmp_path / "seeds"
    result = CliRunner().invoke(cli, ["ensemble", str(members["full"]), str(members["same_split"]), "--output-dir", str(output)])
    assert result.exit_code == 0, result.output
    evaluated = CliRunner().invoke(cli, ["evaluate", "--run", str(output)])
    assert evaluated.exit_code == 0, evaluated.output
    stored = json.loads((output / "metrics.json").read_text())
    # evaluate re-derived the same test split from the ensemble's config: the same reviews, the same score
    assert f"macro F1 {stored['f1_macro']:.4f}" in evaluated.output and f"{stored['n_examples']}\n" in evaluated.output


def test_refuses_an_existing_output_and_an_ensemble_as_member(ensemble_dir, members, tmp_path):
    existing = CliRunner().invoke(cli, ["ensemble", str(members["logreg"]), str(members["full"]), "--output-dir", str(ensemble_dir)])
    assert_one_error_line(existing, "already exists", "--overwrite")
    nested = CliRunner().invoke(cli, ["ensemble", str(ensemble_dir), str(members["full"]), "--output-dir", str(tmp_path / "n")])
    assert_one_error_line(nested, "itself an ensemble")


# --------------------------------------------------------------------------- a plan that trains the members and the ensemble


def _plan(tmp_path: Path, tiny_bert: str, data: Path, ensemble: str) -> Path:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"output_dir: {tmp_path / 'runs'}\n"
        f"shared: {{backbone: bert, model: {tiny_bert}, method: frozen, data: {data}, max_length: 32,"
        f" cache_dir: {tmp_path / 'cache'}}}\n"
        "runs:\n  - {head: logreg, name: lr}\n  - {head: svm, name: svm}\n"
        + ensemble,
        encoding="utf-8",
    )
    return plan


def test_train_many_trains_the_members_then_the_ensemble(tmp_path, tiny_bert, small_reviews):
    import os
    import subprocess
    import sys

    plan = _plan(tmp_path, tiny_bert, small_reviews, "ensemble: {name: both, members: [lr, svm], combine: mean}\n")
    completed = subprocess.run(
        [sys.executable, "-m", "review_toolkit", "train-many", str(plan), "--quiet"],
        capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    info = json.loads((tmp_path / "runs" / "both" / RUN_FILE).read_text())
    assert [m["name"] for m in info["members"]] == ["lr", "svm"] and info["combination"]["method"] == "mean"
    assert "| both |" in completed.stdout  # in the printed comparison


@pytest.mark.parametrize(
    "section, fragments",
    [
        ("ensemble: {members: [lr, nope]}\n", ("'nope'", "not runs of the plan")),
        ("ensemble: {members: [lr]}\n", ("at least two",)),
        ("ensemble: {combine: median}\n", ("'combine'",)),
    ],
    ids=["unknown-member", "one-member", "bad-combine"],
)
def test_a_plan_whose_ensemble_cannot_work_is_refused_before_training(tmp_path, tiny_bert, small_reviews, section, fragments):
    result = CliRunner().invoke(cli, ["train-many", str(_plan(tmp_path, tiny_bert, small_reviews, section))])
    assert_one_error_line(result, *fragments)
    assert not (tmp_path / "runs").exists()


def test_a_plan_whose_members_use_different_seeds_is_refused_before_training(tmp_path, tiny_bert, small_reviews):
    plan = _plan(tmp_path, tiny_bert, small_reviews, "ensemble: {}\n")
    plan.write_text(plan.read_text().replace("name: lr}", "name: lr, seed: 7}"), encoding="utf-8")
    result = CliRunner().invoke(cli, ["train-many", str(plan)])
    assert_one_error_line(result, "seed", "same data")
    assert not (tmp_path / "runs").exists()


def test_an_ensemble_naming_a_member_outside_itself_is_refused(ensemble_dir, members, tmp_path):
    import shutil

    from review_toolkit.runs.manifest import write_manifest

    copy = tmp_path / "edited"
    shutil.copytree(ensemble_dir, copy)
    info = json.loads((copy / RUN_FILE).read_text())
    info["members"][0]["path"] = str(members["logreg"])  # a run outside the ensemble, resealed as if built so
    (copy / RUN_FILE).write_text(json.dumps(info))
    write_manifest(copy)
    result = CliRunner().invoke(cli, ["predict", "--run", str(copy), "--text", REVIEWS[0]])
    assert_one_error_line(result, "members/NAME")
