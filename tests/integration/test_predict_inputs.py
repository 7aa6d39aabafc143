"""`predict` reads its input with the readers `train` uses: the same rows, the same one-line errors."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from click.testing import CliRunner

from review_toolkit.cli import cli


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_bert, small_reviews) -> pathlib.Path:
    """A frozen tiny random BERT with a logistic-regression head: real scores in seconds."""
    from review_toolkit.config import TrainConfig
    from review_toolkit.train.pipeline import train

    workspace = tmp_path_factory.mktemp("predict_inputs")
    config = TrainConfig(
        method="frozen", head="logreg", model=tiny_bert, data=str(small_reviews), max_length=64,
        output_dir=str(workspace / "run"), cache_dir=str(workspace / "cache"),
    )
    return train(config, progress=False).run_dir


def error_line(arguments: list[str]) -> str:
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert "Traceback" not in result.output
    return result.output.strip()


# name -> (file name, content): inputs both commands must refuse with the same message.
BAD_INPUTS = {
    "extra field in the only row": ("reviews.csv", "text,label\nhello,world,extra\n"),
    "every row one field more than the header": (
        "reviews.csv", "text,label\nGreat product, would buy again,1\nBroke after a day, avoid,0\n",
    ),
    "extra field in a later row": (
        "reviews.csv", "text,label\n" + "".join(f"review {i},fake\n" for i in range(30)) + "fast, quiet,fake\n",
    ),
    "a 5,000-digit integer in JSON Lines": ("reviews.jsonl", '{"text": "fine", "label": ' + "9" * 5000 + "}\n"),
    "broken JSON Lines": ("reviews.jsonl", '{"text": "fine", "label": "fake"}\n{"text": "broken", "label": \n'),
    "not UTF-8": ("reviews.csv", b"text,label\n" + b"fine,fake\n" * 5 + "caf\xe9,real\n".encode("latin-1")),
    "unclosed quote": ("reviews.tsv", 'text\tlabel\n"never closed\tfake\nother\treal\n'),
    "JSON list of numbers": ("reviews.json", "[1, 2, 3]"),
    "corrupt Parquet": ("reviews.parquet", b"PAR1 this is not parquet"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_predict_refuses_what_train_refuses_with_the_same_error(tiny_run, tmp_path, case) -> None:
    name, content = BAD_INPUTS[case]
    data = tmp_path / name
    data.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    output = tmp_path / "scored.csv"

    from_train = error_line(["train", "--data", str(data), "--output-dir", str(tmp_path / "run"), "--quiet"])
    from_predict = error_line(["predict", "--run", str(tiny_run), "--input", str(data), "--output", str(output), "--quiet"])

    assert from_predict == from_train
    assert str(data) in from_predict
    assert not output.exists() and not (tmp_path / "run").exists()


def test_predict_refuses_a_shifted_row_on_standard_input(tiny_run) -> None:
    stdin = "text,id\nGreat product, would buy again,1\nBroke after a day, avoid,2\n"
    result = CliRunner().invoke(cli, ["predict", "--run", str(tiny_run), "--input", "-", "--quiet"], input=stdin)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: Cannot parse standard input: a row has more fields than the header's 2")
    assert "Traceback" not in result.output and result.stdout == ""  # no scored row either


def test_predict_scores_parquet_streamed_by_row_groups(tiny_run, tmp_path, monkeypatch) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from review_toolkit.data import formats
    from review_toolkit.runs.loader import load_run

    texts = [f"Review {i}: {'great, works' if i % 2 else 'broke after a day'}." for i in range(70)]
    table = pa.table({"id": list(range(70)), "text": texts, "stars": [float(i % 5) for i in range(70)]})
    source = tmp_path / "reviews.parquet"
    pq.write_table(table, source, row_group_size=25)  # three row groups
    monkeypatch.setattr(formats, "CHUNK_ROWS", 16)  # several chunks per row group
    output = tmp_path / "scored.jsonl"

    result = CliRunner().invoke(
        cli, ["predict", "--run", str(tiny_run), "--input", str(source), "--output", str(output), "--quiet"]
    )

    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [row["id"] for row in rows] == list(range(70))  # every row, in order
    assert [row["stars"] for row in rows] == [float(i % 5) for i in range(70)]
    expected = load_run(tiny_run).predict_proba(texts)
    assert np.allclose([row["p_fake"] for row in rows], expected, atol=1e-6)
    assert all(row["label"] in ("fake", "real") for row in rows)


def test_predict_reads_a_json_list_of_records(tiny_run, tmp_path) -> None:
    """.json means a list of records (or JSON Lines) to predict as to train."""
    source = tmp_path / "reviews.json"
    source.write_text(json.dumps([{"text": "Works well."}, {"text": "Broke at once."}]), encoding="utf-8")
    result = CliRunner().invoke(cli, ["predict", "--run", str(tiny_run), "--input", str(source), "--quiet"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["text"] for row in rows] == ["Works well.", "Broke at once."]
