"""Loading a run executes nothing from it, and a changed run is refused with the file named.

Behaviour under test (see review_toolkit/manifest.py):

* every run has ``manifest.json`` (SHA-256 and size of every file except ``checkpoints/``);
  ``load_run`` and ``predict`` refuse a run with a missing, changed, truncated or extra file, or a
  missing / unreadable manifest, and name each file;
* a file that looks like a pickle is never loaded: refused by default, even when the manifest lists
  it; with the explicit opt-in ``allow_unverified=True`` the run loads from its safetensors / JSON /
  text files, the pickle is skipped, and any attempt to unpickle a file of the run fails;
* a run's config cannot switch on ``trust_remote_code``: the caller must;
* nothing in the load path calls ``pickle`` / ``torch.load`` at all.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from review_toolkit.cli import cli
from review_toolkit.config import TrainConfig
from review_toolkit.errors import RunDirectoryError
from review_toolkit.runs.manifest import MANIFEST_FILE, check_run_integrity, refuse_unpickling, write_manifest
from review_toolkit.runs.loader import load_run
from review_toolkit.train.pipeline import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REVIEWS = ["Absolutely love it, works as described.", "Terrible. Broke after one day and support never answered."]
PACKAGE_ROOT = Path(__file__).resolve().parents[3]


class Payload:
    """Unpickling this creates a directory: proof that code from the pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def plant_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(Payload(marker), protocol=4))




@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str, small_reviews: Path) -> dict[str, Path]:
    """Two runs of the tiny BERT (conftest.py): full fine-tuning (torch head) and frozen + logreg
    (fitted head stored as arrays)."""
    root = tmp_path_factory.mktemp("safe_loading")
    model, data = tiny_bert, small_reviews
    runs = {}
    for method, head in (("full", "linear"), ("frozen", "logreg")):
        config = TrainConfig(
            backbone="bert", model=str(model), method=method, head=head, data=str(data), epochs=1,
            batch_size=8, max_length=32, seed=3, output_dir=str(root / f"{method}-{head}"),
            cache_dir=str(root / "cache"),
        )  # fmt: skip
        runs[method] = train(config, progress=False).run_dir
    return runs


@pytest.fixture
def run_copy(trained_runs: dict[str, Path], tmp_path: Path):
    def copy(method: str = "full") -> Path:
        target = tmp_path / f"copy-{method}"
        shutil.copytree(trained_runs[method], target)
        return target

    return copy


def p_fake(run: Path, **options) -> np.ndarray:
    return np.array([prediction.p_fake for prediction in load_run(run, device="cpu", **options).predict(REVIEWS)])


# ------------------------------------------------------------------------------ manifest


def test_manifest_covers_everything_but_checkpoints(trained_runs: dict[str, Path]) -> None:
    run = trained_runs["full"]
    manifest = json.loads((run / MANIFEST_FILE).read_text())
    on_disk = {
        path.relative_to(run).as_posix()
        for path in run.rglob("*")
        if path.is_file() and path.name != MANIFEST_FILE and not path.relative_to(run).as_posix().startswith("checkpoints/")
    }
    assert set(manifest["files"]) == on_disk
    assert {"encoder/model.safetensors", "head.safetensors", "run.json", "config.yaml", "tokenizer/tokenizer.json"} <= on_disk
    assert (run / "checkpoints").is_dir() and manifest["not_covered"] == ["checkpoints/"]
    assert check_run_integrity(run) == []


def test_checkpoints_are_not_covered(run_copy) -> None:
    run = run_copy("full")
    shutil.rmtree(run / "checkpoints")
    assert check_run_integrity(run) == []
    assert len(p_fake(run)) == 2


@pytest.mark.parametrize(
    "tamper, expected",
    [
        (lambda run: (run / "config.yaml").unlink(), "config.yaml: missing"),
        (lambda run: _flip_last_byte(run / "encoder" / "model.safetensors"), "encoder/model.safetensors: changed (its SHA-256 differs)"),
        (lambda run: _truncate(run / "head.safetensors"), "head.safetensors: truncated"),
        (lambda run: (run / "run.json").write_text(json.dumps({"backbone": "bert"})), "run.json: truncated"),
        (lambda run: (run / "tokenizer" / "extra.txt").write_text("hi"), "tokenizer/extra.txt: not part of the run"),
        (lambda run: (run / MANIFEST_FILE).unlink(), "manifest.json: missing"),
        (lambda run: (run / MANIFEST_FILE).write_text("{not json"), "manifest.json: unreadable"),
    ],
    ids=["deleted", "changed", "truncated", "edited", "added", "no manifest", "bad manifest"],
)
def test_tampered_run_is_refused_naming_the_file(run_copy, tamper, expected: str) -> None:
    run = run_copy("full")
    tamper(run)
    with pytest.raises(RunDirectoryError) as refused:
        load_run(run)
    message = str(refused.value)
    assert message.startswith(f"Refusing to load {run}: it is not the run that training wrote")
    assert expected in message
    assert "allow_unverified=True" in message


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_predict_command_rejects_a_tampered_run(run_copy) -> None:
    run = run_copy("frozen")
    _truncate(run / "head.safetensors")
    result = CliRunner().invoke(cli, ["predict", "--run", str(run), "--text", REVIEWS[0]])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: Refusing to load {run}")
    assert "head.safetensors: truncated" in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------ pickles


@pytest.mark.parametrize("name", ["evil.pkl", "pytorch_model.bin", "tokenizer/optimizer.pt", "notes.txt"])
def test_planted_pickle_is_refused_unless_opted_in_and_never_unpickled(run_copy, tmp_path: Path, caplog, name: str) -> None:
    run = run_copy("full")
    expected = p_fake(run)
    marker = tmp_path / "pwned"
    plant_pickle(run / name, marker)  # notes.txt: a pickle by content, not by name

    with pytest.raises(RunDirectoryError) as refused:
        load_run(run)
    message = str(refused.value)
    assert f"{name}: not part of the run (absent from the manifest)" in message
    assert "looks like a pickle: loading one can run arbitrary code" in message
    assert not marker.exists()

    result = CliRunner().invoke(cli, ["predict", "--run", str(run), "--text", REVIEWS[0]])
    assert result.exit_code == 1 and "Error: Refusing to load" in result.output and name in result.output
    assert not marker.exists()

    # Opting in loads the safe files only: same predictions, the pickle never opened.
    with caplog.at_level(logging.WARNING, logger="review_toolkit.runs.manifest"):
        assert np.array_equal(p_fake(run, allow_unverified=True), expected)
    assert not marker.exists()
    assert any(name in record.getMessage() and "allow_unverified" in record.getMessage() for record in caplog.records)


def test_pickle_listed_in_the_manifest_is_still_refused(run_copy, tmp_path: Path) -> None:
    """A run made elsewhere brings its own manifest: a valid checksum does not make a pickle safe."""
    run = run_copy("full")
    marker = tmp_path / "pwned"
    plant_pickle(run / "extra_weights.pt", marker)
    write_manifest(run)
    with pytest.raises(RunDirectoryError, match=r"extra_weights\.pt: listed in the manifest, but runs never hold pickles"):
        load_run(run)
    assert not marker.exists()


@pytest.mark.parametrize("method", ["full", "frozen"])
def test_head_replaced_by_a_pickle(run_copy, tmp_path: Path, method: str) -> None:
    run = run_copy(method)
    marker = tmp_path / "pwned"
    plant_pickle(run / "head.safetensors", marker)

    with pytest.raises(RunDirectoryError, match=r"head\.safetensors: (changed|truncated).*looks like a pickle"):
        load_run(run)
    # Opting in does not make it loadable: it is not a safetensors file, and it is never unpickled.
    with pytest.raises(RunDirectoryError, match=r"head\.safetensors is not a valid safetensors file.*looks like a pickle"):
        load_run(run, allow_unverified=True)
    assert not marker.exists()


def test_no_file_of_a_run_can_be_unpickled_while_it_loads(run_copy, tmp_path: Path) -> None:
    run = run_copy("full")
    marker = tmp_path / "pwned"
    plant_pickle(run / "pytorch_model.bin", marker)
    outside = tmp_path / "outside.pt"
    torch.save({"x": torch.zeros(1)}, outside)
    with refuse_unpickling(run):
        with pytest.raises(RunDirectoryError, match="Refused to unpickle"):
            torch.load(run / "pytorch_model.bin", weights_only=False)
        with pytest.raises(RunDirectoryError, match="Refused to unpickle"), open(run / "pytorch_model.bin", "rb") as handle:
            pickle.load(handle)
        assert torch.load(outside, weights_only=True)["x"].shape == (1,)  # other files load as usual
    assert not marker.exists()
    assert not getattr(torch.load, "__review_toolkit_guard__", False)  # removed afterwards


@pytest.mark.parametrize("method", ["full", "frozen"])
def test_load_run_never_calls_pickle_or_torch_load(trained_runs: dict[str, Path], monkeypatch, method: str) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError(f"unpickling called with {args!r}")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(module, name, forbidden)
    assert len(p_fake(trained_runs[method])) == 2


def test_source_has_no_unsafe_deserialisation() -> None:
    """No pickle / joblib / torch.load(weights_only=False) / np.load(allow_pickle=True) in the package."""
    offenders = []
    for path in sorted((PACKAGE_ROOT / "review_toolkit").rglob("*.py")) + sorted((PACKAGE_ROOT / "plugins").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [alias.name for alias in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(name and name.split(".")[0] in ("joblib", "dill", "cloudpickle") for name in names):
                    offenders.append(f"{path.name}:{node.lineno} imports {names}")
            if not isinstance(node, ast.Call):
                continue
            called = ast.unparse(node.func)
            keywords = {keyword.arg: ast.unparse(keyword.value) for keyword in node.keywords}
            if called in ("pickle.load", "pickle.loads", "pickle.Unpickler") and path.name != "manifest.py":
                offenders.append(f"{path.name}:{node.lineno} {called}")
            if called.endswith("torch.load") and keywords.get("weights_only") != "True":
                offenders.append(f"{path.name}:{node.lineno} {called} without weights_only=True")
            if called in ("np.load", "numpy.load") and keywords.get("allow_pickle", "False") != "False":
                offenders.append(f"{path.name}:{node.lineno} {called} allows pickles")
    assert offenders == []


# ------------------------------------------------------------------------------ remote code


def test_run_config_cannot_enable_remote_code(run_copy) -> None:
    """A run made elsewhere with trust_remote_code: true (and a matching manifest) is refused."""
    run = run_copy("frozen")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["trust_remote_code"] = True
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    write_manifest(run)
    with pytest.raises(RunDirectoryError, match="was trained with --trust-remote-code.*pass trust_remote_code=True"):
        load_run(run)
    assert len(p_fake(run, trust_remote_code=True)) == 2  # the caller's explicit choice
