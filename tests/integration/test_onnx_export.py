"""`export --format onnx`: the exported encoder scores as the PyTorch one, inside a run that still verifies."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from review_toolkit.cli import cli
from conftest import assert_one_error_line

pytest.importorskip("onnxruntime")

REVIEWS = ["Great kettle, boils fast.", "It broke after two days and the seller never answered.", "ok"]


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


@pytest.fixture(scope="module")
def exported_fp32(tiny_frozen_run, tmp_path_factory) -> Path:
    run = _copy(tiny_frozen_run, tmp_path_factory.mktemp("fp32"))
    result = CliRunner().invoke(cli, ["export", "--run", str(run), "--format", "onnx", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Test split (" in result.output  # the run's own test split, scored with the export
    return run


def test_fp32_export_scores_as_torch_and_the_run_still_verifies(exported_fp32) -> None:
    from review_toolkit import load_run
    from review_toolkit.runs.manifest import check_run_integrity

    assert check_run_integrity(exported_fp32) == []
    onnx = load_run(exported_fp32, backend="onnx")
    torch = load_run(exported_fp32, backend="torch")
    assert onnx.scored_with == "onnx fp32" and torch.scored_with.startswith("torch")
    assert np.abs(onnx.predict_proba(REVIEWS) - torch.predict_proba(REVIEWS)).max() < 1e-4
    assert load_run(exported_fp32).scored_with == "onnx fp32"  # auto: the export, on this CPU
    record = json.loads((exported_fp32 / "onnx" / "export.json").read_text())
    assert record["precision"] == "fp32" and record["test_split"]["measured"]
    assert record["test_split"]["labels_changed"] == 0
    card = (exported_fp32 / "README.md").read_text()
    assert "Scored with on a CPU: onnx fp32" in card and "On the test split with onnx fp32" in card


def test_int8_export_predicts_and_says_so(tiny_frozen_run, tmp_path) -> None:
    run = _copy(tiny_frozen_run, tmp_path)
    result = CliRunner().invoke(cli, ["export", "--run", str(run), "--quantize", "int8", "--skip-test-split"])
    assert result.exit_code == 0, result.output
    assert (run / "onnx" / "encoder.int8.onnx").is_file() and not (run / "onnx" / "encoder.onnx").exists()
    output = tmp_path / "scored.csv"
    result = CliRunner().invoke(
        cli, ["predict", "--run", str(run), "--backend", "onnx", "--text", REVIEWS[0], "--text", REVIEWS[1], "--output", str(output)]
    )
    assert result.exit_code == 0, result.output
    assert "2 reviews scored with onnx int8" in result.output
    import pandas as pd

    scored = pd.read_csv(output)
    assert scored["p_fake"].between(0, 1).all() and set(scored["label"]) <= {"fake", "real"}
    assert "Scored with on a CPU: onnx int8" in (run / "README.md").read_text()


def test_a_second_export_replaces_the_first(exported_fp32, tmp_path) -> None:
    run = _copy(exported_fp32, tmp_path)
    result = CliRunner().invoke(cli, ["export", "--run", str(run), "--quantize", "int8", "--skip-test-split"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (run / "onnx").iterdir()) == ["encoder.int8.onnx", "export.json"]
    from review_toolkit.runs.manifest import check_run_integrity

    assert check_run_integrity(run) == []


def test_backend_onnx_without_an_export_names_the_command(tiny_frozen_run) -> None:
    result = CliRunner().invoke(cli, ["predict", "--run", str(tiny_frozen_run), "--backend", "onnx", "--text", "fine"])
    assert_one_error_line(result, "has no ONNX export", "review-toolkit export --run")


def test_export_refuses_a_run_that_does_not_verify(tiny_frozen_run, tmp_path) -> None:
    run = _copy(tiny_frozen_run, tmp_path)
    with open(run / "run.json", "a", encoding="utf-8") as handle:
        handle.write(" ")
    result = CliRunner().invoke(cli, ["export", "--run", str(run)])
    assert_one_error_line(result, "Refusing to load", "run.json")
    assert not (run / "onnx").exists()


def _without_onnxruntime(*arguments: str) -> subprocess.CompletedProcess:
    # None in sys.modules makes the import machinery report the package as absent.
    code = "import sys; sys.modules['onnxruntime'] = None; from review_toolkit.cli import main; sys.argv[0] = 'review-toolkit'; main()"
    return subprocess.run([sys.executable, "-c", code, *arguments], capture_output=True, text=True)


def test_without_onnxruntime_the_error_names_the_extra(exported_fp32) -> None:
    completed = _without_onnxruntime("predict", "--run", str(exported_fp32), "--backend", "onnx", "--text", "fine")
    assert_one_error_line(completed, "ONNX Runtime", "review_toolkit[onnx]")
    # auto falls back to the PyTorch model, and says nothing is missing
    completed = _without_onnxruntime("predict", "--run", str(exported_fp32), "--text", "fine", "--quiet")
    assert completed.returncode == 0, completed.stderr[-2000:]


def _imported(*arguments: str) -> set[str]:
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "review_toolkit", *arguments], capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return {line.split("|")[-1].strip() for line in completed.stderr.splitlines() if "|" in line}


def test_predict_text_imports_no_training_library(exported_fp32, tiny_frozen_run) -> None:
    training = {"peft", "bitsandbytes", "sklearn", "transformers.trainer_utils"}
    assert not _imported("predict", "--run", str(tiny_frozen_run), "--text", "fine", "--quiet") & training
    # With an export, not even a transformers model: the tokenizer and ONNX Runtime score.
    on_onnx = _imported("predict", "--run", str(exported_fp32), "--text", "fine", "--quiet")
    assert not on_onnx & (training | {"transformers", "transformers.modeling_utils", "accelerate"})
    assert "onnxruntime" in on_onnx


def test_evaluate_data_records_what_scored(exported_fp32, small_reviews, tmp_path) -> None:
    for backend, expected in (("onnx", "onnx fp32"), ("torch", "torch float32 (cpu)")):
        target = tmp_path / backend
        result = CliRunner().invoke(cli, [
            "evaluate", "--run", str(exported_fp32), "--data", str(small_reviews), "--backend", backend,
            "--output-dir", str(target), "--quiet",
        ])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert json.loads((target / "metrics.json").read_text())["scored_with"] == expected
        assert f"scored with: {expected}" in result.output


def test_processes_that_share_the_cores_open_sessions_of_that_many_threads(exported_fp32) -> None:
    """serve --workers / --threads set each process's threads: the ONNX Runtime session's too."""
    from review_toolkit import load_run
    from review_toolkit.inference.onnx_backend import set_session_threads

    set_session_threads(1)
    try:
        classifier = load_run(exported_fp32, backend="onnx")
        assert classifier.encoder.session.get_session_options().intra_op_num_threads == 1
        assert classifier.predict_proba(REVIEWS).shape == (3,)
    finally:
        set_session_threads(None)
    assert load_run(exported_fp32, backend="onnx").encoder.session.get_session_options().intra_op_num_threads == 0
