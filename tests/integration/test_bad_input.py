"""Bad input files given to ``review-toolkit train --data``: a clear error, or a documented, logged repair.

Every error case runs the real command (click's CliRunner on ``review_toolkit.cli.cli``) and checks
the message, the exit status 1, that no traceback is printed and that nothing was written: no run
directory and no ``.partial`` staging directory.

Repairs, each logged:

* a UTF-8 byte-order mark is removed (INFO on ``review_toolkit.data``);
* labels are matched case- and whitespace-insensitively, and spelled-out missing values ("NaN",
  "null", "N/A", an empty cell) count as a missing label, which is an error naming the rows;
* a very long review (here 1 MB) is kept: the tokenizer truncates every review to the backbone's
  maximum length, so only its beginning is used; reviews over 100,000 characters get a WARNING.

A property-based test throws generated files at the loader: it may only succeed or raise DataError.
"""

from __future__ import annotations

import json
import logging
import pathlib
import tempfile
import traceback

import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from review_toolkit.cli import cli
from review_toolkit.data import default_data_path, load_reviews, load_splits
from review_toolkit.errors import DataError

N_PER_CLASS = 30


def good_rows(n_per_class: int = N_PER_CLASS) -> str:
    """CSV data rows (no header), both classes, distinct texts."""
    return "".join(f"review number {i} says it works,{'fake' if i % 2 else 'real'}\n" for i in range(2 * n_per_class))


def jsonl_rows(n_per_class: int = N_PER_CLASS) -> list[str]:
    return [json.dumps({"text": f"review {i}", "label": "fake" if i % 2 else "real"}) for i in range(2 * n_per_class)]


GOOD_CSV = "text,label\n" + good_rows()

# name -> (file name, content (str is written as UTF-8), extra CLI args, expected message fragments)
ERROR_CASES: dict[str, tuple[str, str | bytes, list[str], list[str]]] = {
    "unclosed quote": (
        "reviews.csv",
        'text,label\n"this quote is never closed,fake\nanother review,real\n',
        [],
        ["quoted field starting at row 1 (line 2 of the file) is never closed", "enclosed in double quotes"],
    ),
    "unquoted separator in the first row": (
        "reviews.csv",
        "text,label\nfast, quiet kettle,fake\n" + good_rows(),
        [],
        ["row 1 (line 2 of the file) has more fields than the header's 2", "double quotes"],
    ),
    "unquoted separator in a later row": (
        "reviews.csv",
        "text,label\n" + good_rows() + "fast, quiet kettle,fake\n",
        [],
        ["has 3 fields but the header has 2", "double quotes"],
    ),
    "latin-1 bytes": (
        "reviews.csv",
        ("text,label\n" + good_rows()).encode() + "caf\xe9 cr\xe8me,fake\n".encode("latin-1"),
        [],
        ["is not UTF-8 text: byte 0xe9 on line 62", "iconv -f latin1 -t utf-8"],
    ),
    "binary garbage": ("reviews.csv", bytes(range(256)) * 8, [], ["is not UTF-8 text", "Save the file as UTF-8"]),
    "empty file": ("reviews.csv", b"", [], ["is empty: it has no header and no data rows"]),
    "only blank lines": ("reviews.csv", b"\n  \r\n\n", [], ["is empty"]),
    "header only": ("reviews.csv", "text,label\n", [], ["has a header (columns: text, label) but no data rows"]),
    "byte-order mark and header only": ("reviews.csv", "\ufefftext,label\n", [], ["has a header (columns: text, label) but no data rows"]),
    "empty label": (
        "reviews.csv",
        GOOD_CSV + "a review without label,\n",
        [],
        ["column 'label' has no label in row 61 (line 62 of the file)", "fill them in or remove those rows"],
    ),
    "NaN label": ("reviews.csv", GOOD_CSV + "a review,NaN\nanother,null\n", [], ["has no label in rows 61, 62"]),
    "JSON NaN label": (
        "reviews.jsonl",
        "\n".join(jsonl_rows()) + '\n{"text": "no label", "label": NaN}\n',
        [],
        ["column 'label' has no label in row 61 (line 61 of the file)"],
    ),
    "unknown label": (
        "reviews.csv",
        GOOD_CSV.replace("real\n", "legit\n", 1),
        [],
        ["3 different labels ('legit', 'fake', 'real')", "Not fake or real: 'legit' in 1 row, first row 1", "--label-map"],
    ),
    "three classes": (
        "reviews.csv",
        "text,label\n" + "".join(f"review {i},{('fake', 'real', 'unsure')[i % 3]}\n" for i in range(60)),
        [],
        ["3 different labels ('fake', 'real', 'unsure')", "binary fake-vs-real classifiers only", "--label-map"],
    ),
    "numeric classes 0 1 2": (
        "reviews.csv",
        "text,label\n" + "".join(f"review {i},{i % 3}\n" for i in range(60)),
        [],
        ["3 different labels ('0', '1', '2')", "binary", "--label-map"],
    ),
    "label map missing a value": (
        "reviews.csv",
        "text,label\n" + "".join(f"review {i},{('CG', 'OR', 'XX')[i % 3]}\n" for i in range(60)),
        ["--label-map", "CG=fake,OR=real"],
        ["3 different labels", "The label map given (CG=fake, OR=real) is the only mapping used"],
    ),
    "one class": (
        "reviews.csv",
        "text,label\n" + "".join(f"review {i},fake\n" for i in range(40)),
        [],
        ["has only one class (40 fake, 0 real)"],
    ),
    "text column misnamed": (
        "reviews.csv",
        "Text,label\n" + good_rows(),
        [],
        ["has no column 'text'", "Did you mean 'Text'?", "--text-column"],
    ),
    "semicolon separated": (
        "reviews.csv",
        "text;label\n" + good_rows().replace(",", ";"),
        [],
        ["Only one column was found", "different separator"],
    ),
    "blank review text": (
        "reviews.csv",
        GOOD_CSV + '"   ",fake\n',
        [],
        ["column 'text' is empty or missing in row 61 (line 62 of the file)"],
    ),
    "too few rows to split": (
        "reviews.csv",
        "text,label\na,fake\nb,real\nc,fake\nd,real\n",
        [],
        ["too small for a stratified 72%/8%/20% train/validation/test split", "4 reviews (2 fake, 2 real)"],
    ),
    "unsupported format": ("reviews.xlsx", b"PK\x03\x04 not really", [], ["unknown file type '.xlsx'", "Supported formats"]),
    "broken JSON Lines": (
        "reviews.jsonl",
        '{"text": "fine", "label": "fake"}\n{"text": "broken", "label": \n',
        [],
        ["line 2 is not valid JSON", "one complete JSON object per line"],
    ),
    "JSON list of numbers": ("reviews.json", "[1, 2, 3]", [], ["record 1 of the list is a JSON number"]),
    "JSON integer of 5000 digits": (
        "reviews.json",
        '[{"text": "a", "label": ' + "9" * 5000 + "}]",
        [],
        ["cannot be read as JSON", "4300 digits"],
    ),
    "JSON nested 100000 deep": ("reviews.json", "[" * 100_000 + "]" * 100_000, [], ["cannot be read as JSON", "recursion"]),
    "corrupt Parquet": ("reviews.parquet", b"PAR1 this is not parquet", [], ["Cannot read", "as Parquet"]),
    "bad --label-map": ("reviews.csv", GOOD_CSV, ["--label-map", "CG=bogus"], ["--label-map", "the target must be 'fake' or 'real'"]),
}


def invoke_train(tmp_path: pathlib.Path, data: pathlib.Path | str, *extra: str):
    output = tmp_path / "out" / "run"
    arguments = ["train", "--data", str(data), "--output-dir", str(output), "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    result = CliRunner().invoke(cli, arguments + list(extra))
    return result, output


def assert_nothing_written(output: pathlib.Path) -> None:
    assert not output.exists(), f"{output} was created"
    assert not output.with_name(output.name + ".partial").exists(), "a .partial staging directory was left"
    assert not output.parent.exists() or not any(output.parent.iterdir()), list(output.parent.iterdir())


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path: pathlib.Path, case: str) -> None:
    name, content, extra, expected = ERROR_CASES[case]
    data = tmp_path / name
    (data.write_bytes if isinstance(content, bytes) else lambda text: data.write_text(text, encoding="utf-8"))(content)

    result, output = invoke_train(tmp_path, data, *extra)

    detail = "".join(traceback.format_exception(result.exception)) if result.exception else result.output
    assert result.exit_code == 1, detail
    assert result.output.startswith("Error: "), result.output
    assert "Traceback" not in result.output
    if "--label-map" not in extra or case == "label map missing a value":
        assert str(data) in result.output  # the message names the file
    for fragment in expected:
        assert fragment in result.output, f"{fragment!r} not in {result.output!r}"
    assert_nothing_written(output)


def test_missing_data_file(tmp_path: pathlib.Path) -> None:
    result, output = invoke_train(tmp_path, tmp_path / "nope.csv")
    assert result.exit_code == 1
    assert f"Error: Data file not found: {tmp_path / 'nope.csv'}. Check the path given with --data." in result.output
    assert_nothing_written(output)


def test_data_directory_that_is_not_a_dataset(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    result, output = invoke_train(tmp_path, folder)
    assert result.exit_code == 1
    assert "is a directory but not a dataset saved with datasets' save_to_disk" in result.output
    assert_nothing_written(output)


# ----------------------------------------------------------------------------------- repairs


def test_byte_order_mark_is_removed_and_logged(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "bom.csv"
    data.write_bytes(b"\xef\xbb\xbf" + GOOD_CSV.replace("\n", "\r\n").encode())
    with caplog.at_level(logging.INFO, logger="review_toolkit.data"):
        reviews = load_reviews(data)
    assert list(reviews.columns[:2]) == ["text", "label"] and len(reviews) == 2 * N_PER_CLASS
    assert reviews.text.iloc[0] == "review number 0 says it works"  # no "\ufeff", no "\r"
    assert any("byte-order mark" in record.getMessage() for record in caplog.records)


def test_label_spelling_is_normalised(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "labels.csv"
    data.write_text("text,label\na, FAKE \nb,Real\nc,1.0\nd,0\n", encoding="utf-8")
    assert load_reviews(data).label.tolist() == [1, 0, 1, 0]


def test_long_review_is_kept_and_logged(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "long.csv"
    data.write_text(GOOD_CSV + '"' + "word " * 200_000 + '",fake\n', encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="review_toolkit.data"):
        reviews = load_reviews(data)
    assert len(reviews.text.iloc[-1]) == 1_000_000  # kept whole: the tokenizer truncates it later
    messages = [record.getMessage() for record in caplog.records]
    assert any("over 100000 characters" in message and "row 61" in message for message in messages), messages


def test_repairs_train_end_to_end(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    """A BOM, CRLF line ends, odd label spelling and a 1 MB review: training succeeds.

    The 1 MB review goes through the real tokenizer and is truncated to the backbone's maximum
    length (256 tokens for the default minilm backbone): truncation is the repair.
    """
    sample = pd.read_csv(default_data_path(), dtype=str, keep_default_na=False)
    sample = pd.concat([sample[sample.label == "fake"].head(70), sample[sample.label == "real"].head(70)])
    sample["label"] = sample["label"].map({"fake": " Fake", "real": "REAL "})
    sample.iloc[3, 0] = "lorem ipsum " * 87_382  # ~1 MB
    data = tmp_path / "messy.csv"
    data.write_bytes(b"\xef\xbb\xbf" + sample.to_csv(index=False, lineterminator="\r\n").encode("utf-8"))
    assert data.stat().st_size > 1_000_000

    with caplog.at_level(logging.INFO, logger="review_toolkit"):
        result, output = invoke_train(tmp_path, data, "--backbone", "minilm", "--method", "frozen", "--head", "logreg")

    assert result.exit_code == 0, result.output + "".join(traceback.format_exception(result.exception or Exception()))
    assert (output / "run.json").is_file() and (output / "manifest.json").is_file()
    assert not output.with_name("run.partial").exists()
    info = json.loads((output / "run.json").read_text())
    assert sum(info["data"]["sizes"].values()) == 140
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "byte-order mark" in messages and "over 100000 characters" in messages


# ------------------------------------------------------------------------- property-based

_CELL_ALPHABET = st.sampled_from(list('ab ,;"\'\t\n\r\\\x00é€\ufeff\u2028{}[]:') + ["NaN", "fake", "real", "1", "0"])
_cells = st.lists(_CELL_ALPHABET, max_size=8).map("".join)
_labels = st.one_of(st.sampled_from(["fake", "real", "FAKE", " real ", "0", "1", "2", "NaN", "", "null", "maybe"]), _cells)


@st.composite
def delimited_files(draw: st.DrawFn) -> tuple[str, bytes]:
    sep = draw(st.sampled_from([",", "\t", ";"]))
    suffix = draw(st.sampled_from([".csv", ".tsv"]))
    header = draw(st.sampled_from([["text", "label"], ["label", "text"], ["text"], ["text", "label", "extra"], ["Text", "label"]]))
    n_rows = draw(st.integers(0, 40))
    rows = []
    for _ in range(n_rows):
        fields = []
        for column in header:
            value = draw(_labels) if column == "label" else draw(_cells)
            if draw(st.booleans()):
                value = '"' + value.replace('"', '""') + '"'
            fields.append(value)
        if draw(st.integers(0, 9)) == 0:  # now and then a row of the wrong width
            fields = fields[: draw(st.integers(0, len(fields)))] + draw(st.lists(_cells, max_size=2))
        rows.append(sep.join(fields))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = newline.join([sep.join(header)] + rows) + draw(st.sampled_from(["", newline]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    raw = text.encode(encoding, errors="replace")
    if draw(st.integers(0, 4)) == 0:
        raw = raw[: draw(st.integers(0, len(raw)))]  # truncated mid-file, maybe mid-character
    return suffix, raw


@st.composite
def json_files(draw: st.DrawFn) -> tuple[str, bytes]:
    scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), _labels, _cells)
    value = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_cells, inner, max_size=3)), max_leaves=6)
    record = st.one_of(
        st.fixed_dictionaries({"text": value, "label": value}),
        st.fixed_dictionaries({"text": _cells, "label": _labels}),
        st.dictionaries(st.sampled_from(["text", "label", "split", "x"]), value, max_size=4),
        value,
    )
    records = draw(st.lists(record, max_size=40))
    if draw(st.booleans()):
        return ".jsonl", "\n".join(json.dumps(r) for r in records).encode()
    return draw(st.sampled_from([".json", ".jsonl"])), json.dumps(records).encode()


generated_files = st.one_of(
    delimited_files(),
    json_files(),
    st.tuples(st.sampled_from([".csv", ".tsv", ".jsonl", ".json", ".parquet"]), st.binary(max_size=300)),
)


@settings(
    max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(generated_files)
def test_loader_raises_only_data_errors(generated: tuple[str, bytes]) -> None:
    suffix, raw = generated
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / f"generated{suffix}"
        path.write_bytes(raw)
        try:
            splits = load_splits(path)
        except DataError as error:
            assert str(error).strip()
            assert str(path) in str(error) or "Cannot" in str(error) or "data" in str(error)
        else:
            assert set(splits.train.label) <= {0, 1}
            assert all(isinstance(text, str) and text.strip() for text in splits.train.text)
