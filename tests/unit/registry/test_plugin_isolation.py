"""A misbehaving plugin is one clear error naming it, never a dead CLI or a silent wrong answer.

Plugins here are throwaway distributions (``review_toolkit.testing.temporary_distribution``):
``sys.exit()`` on import, a raising constructor, a description that is not a string, a torch head
with five logits, a fitted head whose ``predict_proba`` is one-dimensional.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from conftest import assert_one_error_line

from review_toolkit import registry
from review_toolkit.cli import cli
from review_toolkit.errors import PluginError
from review_toolkit.testing import temporary_distribution

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXITS_ON_IMPORT = "import sys\nsys.exit(3)\n"

RAISING_CONSTRUCTOR = '''
from review_toolkit.plugin_api.contracts import TorchHead

class Grumpy(TorchHead):
    description = "Refuses to start."

    def __init__(self):
        raise RuntimeError("no licence key")

    def build(self, in_features, num_labels):
        raise NotImplementedError
'''

NUMBER_DESCRIPTION = '''
from review_toolkit.plugin_api.contracts import TorchHead

class Numbered(TorchHead):
    description = 42

    def build(self, in_features, num_labels):
        raise NotImplementedError
'''

FIVE_LOGITS = '''
from torch import nn
from review_toolkit.plugin_api.contracts import TorchHead

class Five(TorchHead):
    description = "Five logits, whatever num_labels says."

    def build(self, in_features, num_labels):
        return nn.Linear(in_features, 5)
'''

FLAT_PROBABILITIES = '''
import json
import numpy as np
from review_toolkit.plugin_api.contracts import FittedHead

class Flat:
    def predict_proba(self, features):
        return np.full(len(features), 0.5)  # P(fake) only: not [n, 2]

    def save(self, directory):
        (directory / "head.json").write_text("{}")

class FlatHead(FittedHead):
    description = "Returns a vector from predict_proba."

    def fit(self, train_features, train_labels, validation_features, validation_labels, *, seed, class_weight=None):
        return Flat()

    def load(self, directory):
        return Flat()
'''


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch):
    monkeypatch.delenv(registry.BLOCK_ENVIRONMENT_VARIABLE, raising=False)
    registry.refresh()
    yield
    registry.refresh()


def train(tmp_path, tiny_bert, small_reviews, head: str, method: str = "frozen"):
    output = tmp_path / "out" / "run"
    result = CliRunner().invoke(cli, [
        "train", "--backbone", "bert", "--model", tiny_bert, "--method", method, "--head", head,
        "--data", str(small_reviews), "--output-dir", str(output), "--cache-dir", str(tmp_path / "cache"),
        "--max-length", "32", "--max-steps", "2", "--quiet",
    ])  # fmt: skip
    return result, output


def assert_nothing_written(output):
    assert not output.exists() and not output.with_name(output.name + ".partial").exists()
    assert not output.parent.exists() or list(output.parent.iterdir()) == []


def test_sys_exit_on_import_is_a_broken_row_not_a_dead_cli(tmp_path):
    with temporary_distribution("acme-exit", {"head": {"quitter": "acme_quitter:Quitter"}}, version="0.1",
                                modules={"acme_quitter": EXITS_ON_IMPORT}, directory=tmp_path):  # fmt: skip
        listing = CliRunner().invoke(cli, ["plugins"])
        assert listing.exit_code == 0, listing.output
        row = next(line for line in listing.output.splitlines() if line.split()[:2] == ["head", "quitter"])
        assert "BROKEN" in row and "SystemExit: 3" in row and "acme-exit" in row
        assert "Logistic regression" in listing.output  # every other plugin still listed

        # Messages that list suggestions load every plugin of a kind: still one line.
        result = CliRunner().invoke(cli, ["train", "--method", "full", "--head", "logreg", "--output-dir", str(tmp_path / "r")])
        assert_one_error_line(result, "head trained by Trainer")
        with pytest.raises(PluginError, match="'quitter' from distribution acme-exit 0.1 failed to import"):
            registry.get("head", "quitter")


def test_raising_constructor_names_plugin_and_distribution(tmp_path, tiny_bert, small_reviews):
    with temporary_distribution("acme-grumpy", {"head": {"grumpy": "acme_grumpy:Grumpy"}}, version="2.0",
                                modules={"acme_grumpy": RAISING_CONSTRUCTOR}, directory=tmp_path / "dist"):  # fmt: skip
        result, output = train(tmp_path, tiny_bert, small_reviews, "grumpy")
        assert_one_error_line(
            result, "head plugin 'grumpy' from distribution acme-grumpy 2.0 failed to start",
            "RuntimeError: no licence key",
        )
        assert_nothing_written(output)


def test_description_that_is_not_a_string_is_a_broken_row(tmp_path):
    with temporary_distribution("acme-number", {"head": {"numbered": "acme_numbered:Numbered"}},
                                modules={"acme_numbered": NUMBER_DESCRIPTION}, directory=tmp_path):  # fmt: skip
        listing = CliRunner().invoke(cli, ["plugins"])
        assert listing.exit_code == 0, listing.output
        row = next(line for line in listing.output.splitlines() if line.split()[:2] == ["head", "numbered"])
        assert "BROKEN" in row and "no one-line `description` string (it is int 42)" in row


def test_torch_head_with_five_logits_is_refused_before_training(tmp_path, tiny_bert, small_reviews):
    with temporary_distribution("acme-five", {"head": {"five": "acme_five:Five"}}, version="1.0",
                                modules={"acme_five": FIVE_LOGITS}, directory=tmp_path / "dist"):  # fmt: skip
        for method in ("frozen", "full"):
            result, output = train(tmp_path, tiny_bert, small_reviews, "five", method)
            assert_one_error_line(
                result, "head plugin 'five' from distribution acme-five 1.0 returned shape [2, 5]", "[batch, 2]"
            )
            assert_nothing_written(output)


def test_fitted_head_with_flat_predict_proba_is_one_error(tmp_path, tiny_bert, small_reviews):
    with temporary_distribution("acme-flat", {"head": {"flat": "acme_flat:FlatHead"}}, version="0.3",
                                modules={"acme_flat": FLAT_PROBABILITIES}, directory=tmp_path / "dist"):  # fmt: skip
        result, output = train(tmp_path, tiny_bert, small_reviews, "flat")
        assert_one_error_line(
            result, "head plugin 'flat' from distribution acme-flat 0.3: predict_proba returned shape [", "[", ", 2]"
        )
        assert_nothing_written(output)
