"""Run directories rewritten by someone hostile, manifest re-sealed so that it matches: loading
refuses in one line naming the file, nothing stored in the run ever runs, no NaN is ever reported.

Each payload, if it ever ran, would create ``marker``: every test checks that it does not exist.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import assert_one_error_line

from review_toolkit.cli import cli
from review_toolkit.runs.manifest import write_manifest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Payload:
    """Unpickling this creates the marker file: proof that code from a file ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_bert, small_reviews) -> Path:
    run = tmp_path_factory.mktemp("lora") / "run"
    result = CliRunner().invoke(cli, [
        "train", "--backbone", "bert", "--model", tiny_bert, "--method", "lora", "--head", "linear",
        "--data", str(small_reviews), "--output-dir", str(run), "--max-length", "32", "--max-steps", "2",
        "--batch-size", "8", "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    return run


def hostile_copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "hostile-run"
    shutil.copytree(run, copy)
    return copy


def predict(run: Path):
    return CliRunner().invoke(cli, ["predict", "--run", str(run), "--text", "Great kettle.", "--quiet"])


def reseal_and_predict(run: Path):
    write_manifest(run)  # the hostile party rewrote the manifest too: the check passes
    return predict(run)


def test_protocol_0_pickle_named_head_safetensors(tiny_frozen_run, tmp_path):
    run = hostile_copy(tiny_frozen_run, tmp_path)
    (run / "head.safetensors").write_bytes(pickle.dumps(Payload(tmp_path / "marker"), protocol=0))
    line = assert_one_error_line(reseal_and_predict(run), f"{run / 'head.safetensors'} is not a valid safetensors file")
    assert "Traceback" not in line and not (tmp_path / "marker").exists()


@pytest.mark.parametrize(
    "edit, fragments",
    [
        (lambda run: (run / "tokenizer" / "tokenizer.json").write_text('{"model": 5}'), ["tokenizer", "was refused"]),
        (lambda run: _edit_json(run / "run.json", lambda info: info.pop("backbone")), ["run.json", "KeyError: 'backbone'"]),
        (lambda run: _edit_json(run / "run.json", lambda info: info.update(threshold="high")), ["threshold", "'high'"]),
        (lambda run: (run / "run.json").write_text("[1, 2]"), ["run.json is not a JSON object"]),
    ],
    ids=["tokenizer.json", "run.json without backbone", "run.json threshold", "run.json a list"],
)
def test_edited_files_are_named(tiny_frozen_run, tmp_path, edit, fragments):
    run = hostile_copy(tiny_frozen_run, tmp_path)
    edit(run)
    assert_one_error_line(reseal_and_predict(run), str(run), *fragments)


def _edit_json(path: Path, change) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


def test_config_model_pointing_at_a_pickle_outside_the_run(tiny_frozen_run, tiny_bert, tmp_path):
    run = hostile_copy(tiny_frozen_run, tmp_path)
    evil = tmp_path / "evil-model"
    evil.mkdir()
    shutil.copy(Path(tiny_bert) / "config.json", evil / "config.json")
    torch.save(Payload(tmp_path / "marker"), evil / "pytorch_model.bin")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"] = str(evil)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    _edit_json(run / "run.json", lambda info: info.update(checkpoint=str(evil)))
    assert_one_error_line(
        reseal_and_predict(run), f"the checkpoint {str(evil)!r} named in {run / 'config.yaml'}", "nothing in it was run"
    )
    assert not (tmp_path / "marker").exists()


def test_nan_in_a_fitted_head_is_refused_not_reported(tiny_frozen_run, tmp_path):
    run = hostile_copy(tiny_frozen_run, tmp_path)
    _edit_json(run / "head.json", lambda head: head.update(intercept=float("nan")))
    result = reseal_and_predict(run)
    line = assert_one_error_line(result, "head plugin 'logreg'", "not probabilities in [0, 1]", "NaN")
    assert "nan" not in result.stdout.lower()
    assert line


def test_edited_adapter_config(lora_run, tmp_path):
    run = hostile_copy(lora_run, tmp_path)
    _edit_json(run / "adapter" / "adapter_config.json", lambda adapter: adapter.update(r="sixteen", peft_type="NOPE"))
    assert_one_error_line(reseal_and_predict(run), f"Cannot load the run {run}", "the run's lora weights", "was refused")


@pytest.mark.parametrize("planted", ["pickle in a torch archive", "bare pickle"])
def test_resume_from_a_checkpoint_with_a_planted_optimizer(lora_run, tiny_bert, small_reviews, tmp_path, planted):
    run = hostile_copy(lora_run, tmp_path)
    (checkpoint,) = (run / "checkpoints").glob("checkpoint-*")
    if planted == "bare pickle":
        (checkpoint / "optimizer.pt").write_bytes(pickle.dumps(Payload(tmp_path / "marker")))
        expected = ["optimizer.pt is not a whole archive", str(checkpoint)]
    else:
        torch.save(Payload(tmp_path / "marker"), checkpoint / "optimizer.pt")
        expected = ["was refused because it holds more than tensors", "nothing in it was run"]
    output = tmp_path / "resumed"
    result = CliRunner().invoke(cli, [
        "train", "--backbone", "bert", "--model", tiny_bert, "--method", "lora", "--head", "linear",
        "--data", str(small_reviews), "--output-dir", str(output), "--max-length", "32", "--max-steps", "4",
        "--batch-size", "8", "--quiet", "--resume-from", str(checkpoint),
    ])  # fmt: skip
    assert_one_error_line(result, *expected)
    assert not (tmp_path / "marker").exists()
    assert not output.exists() and not (tmp_path / "resumed.partial").exists()
