"""Training with the embedding cache: a slice of embedded data embeds nothing, and a cache that
cannot be written only warns."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from review_toolkit.cli import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def train(tiny_bert, data, output, cache):
    return CliRunner().invoke(cli, [
        "train", "--backbone", "bert", "--model", tiny_bert, "--method", "frozen", "--head", "logreg",
        "--data", str(data), "--output-dir", str(output), "--cache-dir", str(cache), "--max-length", "32", "--quiet",
    ])  # fmt: skip


def test_a_slice_of_embedded_data_embeds_nothing(tiny_frozen_run, tiny_bert, small_reviews, tmp_path):
    # tiny_frozen_run embedded all of small_reviews into the cache beside it.
    cache = tiny_frozen_run.parent / "cache"
    entries = sorted(path.name for path in cache.rglob("*") if path.is_file())
    part = tmp_path / "part.csv"
    pd.read_csv(small_reviews).iloc[40:200].to_csv(part, index=False)

    result = train(tiny_bert, part, tmp_path / "run", cache)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "run.json").read_text())["embeddings_cached"] is True
    assert sorted(path.name for path in cache.rglob("*") if path.is_file()) == entries


def test_a_cache_that_cannot_be_written_does_not_stop_the_training(tiny_bert, small_reviews, tmp_path, caplog):
    blocker = tmp_path / "somefile"
    blocker.write_text("a file where the cache folder would go", encoding="utf-8")
    result = train(tiny_bert, small_reviews, tmp_path / "run", blocker / "cache")
    assert result.exit_code == 0, result.output
    assert "Could not write the embedding cache" in caplog.text and str(blocker / "cache") in caplog.text
    assert json.loads((tmp_path / "run" / "run.json").read_text())["embeddings_cached"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "somefile"]
