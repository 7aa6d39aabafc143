"""Tests for review_toolkit.data: reading files, labels, error messages and splits."""

from __future__ import annotations

import json
import re
import warnings

import pandas as pd
import pytest

from review_toolkit.data import (
    FAKE,
    LABEL_NAMES,
    REAL,
    LeakageWarning,
    ReviewSplits,
    default_data_path,
    load_reviews,
    load_splits,
    normalise_labels,
    parse_label_map,
    read_table,
    split_reviews,
)
from review_toolkit.errors import ConfigError, DataError

# Small table used by the format tests. "NA" must survive as text, not become a missing value.
ROWS = [
    {"text": "Great kettle, boils fast.", "label": "real"},
    {"text": "NA", "label": "fake"},
    {"text": "Comma, \"quotes\" and\na line break.", "label": "real"},
    {"text": "This product is the best product I have ever.", "label": "fake"},
]
EXPECTED_TEXTS = [row["text"] for row in ROWS]
EXPECTED_LABELS = [REAL, FAKE, REAL, FAKE]


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def balanced_frame(n_per_class: int, prefix: str = "review") -> pd.DataFrame:
    """n fake + n real reviews with distinct texts, interleaved."""
    return pd.DataFrame(
        {
            "text": [f"{prefix} number {i}" for i in range(2 * n_per_class)],
            "label": ["fake", "real"] * n_per_class,
        }
    )


# --------------------------------------------------------------------------- constants, default data


def test_label_constants():
    assert LABEL_NAMES[FAKE] == "fake" and LABEL_NAMES[REAL] == "real"
    assert (FAKE, REAL) == (1, 0)


def test_bundled_default_data_is_balanced_sample():
    path = default_data_path()
    assert path.is_file() and path.name == "reviews.csv"
    assert (path.parent / "ATTRIBUTION.md").is_file()
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(raw.columns) == ["text", "label"]

    df = load_reviews()
    assert list(df.columns) == ["text", "label", "row"]
    assert len(df) == 1000
    assert df["label"].value_counts().to_dict() == {FAKE: 500, REAL: 500}
    assert df["label"].dtype == "int64"
    assert df["row"].tolist() == list(range(1, 1001))
    assert all(isinstance(t, str) and t.strip() for t in df["text"])
    # labels line up with the file
    assert (df["label"] == (raw["label"] == "fake").astype(int)).all()


# --------------------------------------------------------------------------- formats


def _write_csv(path, sep=","):
    pd.DataFrame(ROWS).to_csv(path, sep=sep, index=False)


def _write_jsonl(path):
    write(path, "\n".join(json.dumps(r) for r in ROWS) + "\n")


@pytest.mark.parametrize(
    "name, writer",
    [
        ("data.csv", _write_csv),
        ("data.tsv", lambda p: _write_csv(p, sep="\t")),
        ("data.tab", lambda p: _write_csv(p, sep="\t")),
        ("data.jsonl", _write_jsonl),
        ("data.ndjson", _write_jsonl),
        ("lines.json", _write_jsonl),  # JSON Lines under a .json name
        ("list.json", lambda p: write(p, json.dumps(ROWS))),
        ("data.parquet", lambda p: pd.DataFrame(ROWS).to_parquet(p)),
        ("data.pq", lambda p: pd.DataFrame(ROWS).to_parquet(p)),
    ],
)
def test_reads_each_file_format(tmp_path, name, writer):
    path = tmp_path / name
    writer(path)
    table = read_table(path)
    assert list(table.columns) == ["text", "label"]
    assert table["text"].tolist() == EXPECTED_TEXTS

    df = load_reviews(path)
    assert df["text"].tolist() == EXPECTED_TEXTS
    assert df["label"].tolist() == EXPECTED_LABELS
    assert df["row"].tolist() == [1, 2, 3, 4]


def test_csv_keeps_na_text_and_reports_truly_empty_cell(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\nNA,fake\nnull,real\n,fake\n")
    table = read_table(path)
    assert table["text"].tolist() == ["NA", "null", ""]
    with pytest.raises(DataError, match=r"row 3 \(line 4 of the file\)"):
        load_reviews(path)


def test_csv_with_byte_order_mark(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("text,label\ngood,fake\nbad,real\n".encode("utf-8-sig"))
    assert list(read_table(path).columns) == ["text", "label"]
    assert load_reviews(path)["label"].tolist() == [FAKE, REAL]


def test_jsonl_with_byte_order_mark_and_single_object_json(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes('{"text": "a", "label": "fake"}\n{"text": "b", "label": "real"}\n'.encode("utf-8-sig"))
    assert load_reviews(path)["label"].tolist() == [FAKE, REAL]
    single = write(tmp_path / "one.json", '{"text": "only", "label": "fake"}')
    assert read_table(single).to_dict("records") == [{"text": "only", "label": "fake"}]


def test_json_text_that_is_not_a_string_is_converted(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"text": 42, "label": 1}\n\n{"text": "ok", "label": 0}\n')
    df = load_reviews(path)
    assert df["text"].tolist() == ["42", "ok"]
    assert df["label"].tolist() == [FAKE, REAL]


def test_reads_saved_dataset_and_dataset_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    train = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": ["fake", "real", "real"]})
    # class_encode_column orders names alphabetically (fake = 0): ids must not be read as 0 = real.
    train = train.class_encode_column("label")
    train.save_to_disk(str(tmp_path / "single"))
    single = load_reviews(tmp_path / "single")
    assert single["text"].tolist() == ["a", "b", "c"]
    assert single["label"].tolist() == [FAKE, REAL, REAL]

    test = datasets.Dataset.from_dict({"text": ["d", "e"], "label": ["real", "fake"]})
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dict"))
    table = read_table(tmp_path / "dict")
    assert table["split"].tolist() == ["train", "train", "train", "test", "test"]
    assert table["text"].tolist() == ["a", "b", "c", "d", "e"]
    df = load_reviews(tmp_path / "dict", split_column="split")
    assert df["label"].tolist() == [FAKE, REAL, REAL, REAL, FAKE]
    assert df["split"].tolist() == ["train"] * 3 + ["test"] * 2
    assert "split" not in load_reviews(tmp_path / "dict").columns  # only kept when asked for


def test_directory_that_is_not_a_dataset(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="save_to_disk") as info:
        read_table(tmp_path / "plain")
    assert "plain" in str(info.value)


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    "raw, expected",
    [
        (["CG", "OR", " cg ", "Or"], [FAKE, REAL, FAKE, REAL]),
        ([1, 0, 1], [FAKE, REAL, FAKE]),
        (["1", "0", "1.0", "0.0"], [FAKE, REAL, FAKE, REAL]),
        ([1.0, 0.0], [FAKE, REAL]),
        ([True, False], [FAKE, REAL]),
        (["deceptive", "truthful", "DECEPTIVE"], [FAKE, REAL, FAKE]),
        (["Fake", "REAL", "spam", "ham", "generated", "human", "yes", "no"], [1, 0, 1, 0, 1, 0, 1, 0]),
    ],
)
def test_label_aliases(raw, expected):
    out = normalise_labels(pd.Series(raw, dtype=object), None, source="f.csv", label_column="label")
    assert out.tolist() == expected
    assert out.dtype == "int64"


def test_positive_is_not_an_alias():
    with pytest.raises(DataError, match="'positive'"):
        normalise_labels(pd.Series(["positive", "negative"]), None, source="f.csv", label_column="label")


def test_parse_label_map():
    assert parse_label_map("CG=fake,OR=real") == {"CG": "fake", "OR": "real"}
    assert parse_label_map(" pos = FAKE , neg=real ") == {"pos": "fake", "neg": "real"}
    assert parse_label_map(None) is None
    assert parse_label_map("  ") is None
    for bad in ["CG=fake,OR=maybe", "CG", "=fake", "a=fake,a=real"]:
        with pytest.raises(ConfigError, match="--label-map"):
            parse_label_map(bad)


def test_label_map_takes_precedence_and_is_the_only_mapping(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\na,pos\nb,neg\nc,POS\n")
    df = load_reviews(path, label_map="pos=fake,neg=real")
    assert df["label"].tolist() == [FAKE, REAL, FAKE]
    # An explicit map can invert a known alias ...
    swapped = write(tmp_path / "s.csv", "text,label\na,0\nb,1\n")
    assert load_reviews(swapped, label_map={"0": "fake", "1": "real"})["label"].tolist() == [FAKE, REAL]
    # ... and replaces the aliases: "fake" is unknown when the map does not name it.
    mixed = write(tmp_path / "m.csv", "text,label\na,pos\nb,fake\n")
    with pytest.raises(DataError, match="'fake' in 1 row, first row 2"):
        load_reviews(mixed, label_map={"pos": "fake", "neg": "real"})


def test_unknown_labels_are_listed_with_rows_and_label_map_hint(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\na,fake\nb,positive\nc,real\nd,negative\ne,positive\n")
    with pytest.raises(DataError) as info:
        load_reviews(path)
    message = str(info.value)
    assert str(path) in message and "'label'" in message
    assert "'positive' in 2 rows, first row 2 (line 3 of the file)" in message
    assert "'negative' in 1 row, first row 4 (line 5 of the file)" in message
    assert "--label-map 'VALUE=fake,OTHER=real'" in message


def test_missing_labels_name_the_rows(tmp_path):
    lines = ["text,label"] + [f"t{i},{'' if i % 2 else 'fake'}" for i in range(30)] + ["x,real"]
    path = write(tmp_path / "d.csv", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        load_reviews(path)
    message = str(info.value)
    assert "rows 2, 4, 6, 8, 10, 12, 14, 16, 18, 20 (lines 3, 5," in message
    assert "and 5 more (15 in all)" in message
    assert str(path) in message


def test_one_class_only(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\na,fake\nb,CG\nc,1\n")
    with pytest.raises(DataError, match=r"3 fake, 0 real") as info:
        load_reviews(path)
    assert "both fake and real" in str(info.value).lower()


# --------------------------------------------------------------------------- file and column errors


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(DataError, match="--data") as info:
        load_reviews(path)
    assert str(path) in str(info.value)


def test_unknown_extension(tmp_path):
    path = write(tmp_path / "d.xlsx", "whatever")
    with pytest.raises(DataError) as info:
        read_table(path)
    message = str(info.value)
    assert "'.xlsx'" in message
    for fmt in (".csv", ".tsv", ".jsonl", ".parquet", "save_to_disk"):
        assert fmt in message


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path, content):
    path = write(tmp_path / "d.csv", content)
    with pytest.raises(DataError, match="empty") as info:
        read_table(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "name, content",
    [("d.csv", "text,label\n"), ("d.tsv", "text\tlabel\n"), ("d.jsonl", "\n\n"), ("d.json", "[]")],
)
def test_header_only_or_no_records(tmp_path, name, content):
    path = write(tmp_path / name, content)
    with pytest.raises(DataError, match="no data rows|no records|empty") as info:
        read_table(path)
    assert str(path) in str(info.value)


def test_header_only_names_columns(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\n")
    with pytest.raises(DataError, match=r"columns: text, label\) but no data rows"):
        read_table(path)


def test_bad_utf8_names_the_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\ngood,fake\ncaf\xe9 ok,real\n")
    with pytest.raises(DataError, match="not UTF-8") as info:
        read_table(path)
    assert "line 3" in str(info.value) and str(path) in str(info.value)


def test_bad_csv_row_names_row_and_line(tmp_path):
    # The quoted field spans two lines, so the bad row 3 sits on line 5 of the file.
    path = write(tmp_path / "d.csv", 'text,label\na,fake\n"b\nc",real\nx,y,real\n')
    with pytest.raises(DataError) as info:
        read_table(path)
    message = str(info.value)
    assert str(path) in message
    assert "row 3 (line 5 of the file) has 3 fields but the header has 2" in message


def test_unclosed_quote_names_the_line(tmp_path):
    path = write(tmp_path / "d.csv", 'text,label\na,fake\n"never closed,real\nb,fake\n')
    with pytest.raises(DataError, match=r"row 2 \(line 3 of the file\) is never closed"):
        read_table(path)


def test_bad_json_lines_names_the_line(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"text": "a", "label": "fake"}\n\n{"text": "b", label: 1}\n')
    with pytest.raises(DataError, match="line 3 is not valid JSON") as info:
        read_table(path)
    assert str(path) in str(info.value)
    with pytest.raises(DataError, match="line 2 is a JSON array"):
        read_table(write(tmp_path / "e.jsonl", '{"text": "a"}\n[1, 2]\n'))


def test_bad_json_document_and_bad_parquet(tmp_path):
    with pytest.raises(DataError, match="line 2, column"):
        read_table(write(tmp_path / "d.json", '[{"text": "a"},\n {"text": }]'))
    with pytest.raises(DataError, match="Parquet") as info:
        read_table(write(tmp_path / "d.parquet", "not parquet"))
    assert "d.parquet" in str(info.value)


def test_missing_column_lists_columns_and_suggests(tmp_path):
    path = write(tmp_path / "d.csv", "review_text,Label\na,fake\nb,real\n")
    with pytest.raises(DataError) as info:
        load_reviews(path, text_column="review")
    message = str(info.value)
    assert str(path) in message and "'review'" in message
    assert "Columns found: 'review_text', 'Label'" in message
    assert "Did you mean 'review_text'?" in message

    with pytest.raises(DataError, match="Did you mean 'Label'"):
        load_reviews(path, text_column="review_text")
    assert load_reviews(path, text_column="review_text", label_column="Label")["label"].tolist() == [FAKE, REAL]


def test_wrong_separator_hint(tmp_path):
    path = write(tmp_path / "d.csv", "text;label\na;fake\n")
    with pytest.raises(DataError, match="different separator"):
        load_reviews(path)


def test_empty_text_rows_are_named(tmp_path):
    path = write(tmp_path / "d.csv", 'text,label\nok,fake\n"   ",real\n"two\nlines",fake\n,real\nfine,real\n')
    with pytest.raises(DataError) as info:
        load_reviews(path)
    message = str(info.value)
    assert str(path) in message and "'text'" in message
    assert "rows 2, 4 (lines 3, 6 of the file)" in message
    assert "Remove these rows or fill in their text" in message


def test_missing_text_in_jsonl_and_parquet(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n{"label": 0}\n{"text": null, "label": 0}\n')
    with pytest.raises(DataError, match=r"rows 2, 3 \(lines 2, 3 of the file\)"):
        load_reviews(path)
    pq = tmp_path / "d.parquet"
    pd.DataFrame({"text": ["a", None, "c"], "label": [1, 0, 0]}).to_parquet(pq)
    with pytest.raises(DataError, match="row 2 "):
        load_reviews(pq)


# --------------------------------------------------------------------------- random splits


def test_default_split_sizes_and_stratification():
    splits = load_splits()
    assert isinstance(splits, ReviewSplits)
    sizes = splits.sizes()
    assert set(sizes) == {"train", "validation", "test"}
    assert abs(sizes["train"] - 720) <= 1
    assert abs(sizes["validation"] - 80) <= 1
    assert abs(sizes["test"] - 200) <= 1
    assert sum(sizes.values()) == 1000
    for part in (splits.train, splits.validation, splits.test):
        assert list(part.columns) == ["text", "label", "row"]
        counts = part["label"].value_counts()
        assert set(counts.index) == {FAKE, REAL}
        assert abs(counts[FAKE] - counts[REAL]) <= 1  # 50/50 data stays 50/50
    rows = pd.concat([splits.train["row"], splits.validation["row"], splits.test["row"]])
    assert sorted(rows) == list(range(1, 1001))  # a partition of the file
    assert "bundled default" in splits.source


def test_split_is_deterministic_for_a_seed():
    df = load_reviews()
    a, b = split_reviews(df, seed=7), split_reviews(df, seed=7)
    c = split_reviews(df, seed=8)
    # seed=None (no --seed given) means the default seed, not a random split
    assert load_splits(seed=None).test["row"].tolist() == load_splits(seed=42).test["row"].tolist()
    for name in ("train", "validation", "test"):
        assert getattr(a, name)["row"].tolist() == getattr(b, name)["row"].tolist()
    assert set(a.test["row"]) != set(c.test["row"])


def test_split_fractions(tmp_path):
    df = load_reviews()
    splits = split_reviews(df, fractions=(0.5, 0.25, 0.25))
    assert splits.sizes() == {"train": 500, "validation": 250, "test": 250}
    with pytest.raises(ConfigError):
        split_reviews(df, fractions=(0.5, 0.5, 0.5))


def test_too_small_to_split(tmp_path):
    path = tmp_path / "small.csv"
    balanced_frame(4).to_csv(path, index=False)
    with pytest.raises(DataError, match="too small") as info:
        load_splits(path)
    message = str(info.value)
    assert "8 reviews (4 fake, 4 real)" in message and str(path) in message


# --------------------------------------------------------------------------- split column


def _split_file(tmp_path, splits, name="d.csv"):
    df = balanced_frame(len(splits) // 2)
    df["part"] = splits
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def test_split_column(tmp_path):
    parts = ["train"] * 60 + ["dev"] * 10 + ["VAL"] * 10 + ["test"] * 20
    splits = load_splits(_split_file(tmp_path, parts), split_column="part")
    assert splits.sizes() == {"train": 60, "validation": 20, "test": 20}
    assert splits.test["row"].tolist() == list(range(81, 101))
    for part in (splits.train, splits.validation, splits.test):
        assert set(part["label"]) == {FAKE, REAL}


def test_split_column_without_validation_carves_it_from_train(tmp_path):
    parts = ["train"] * 80 + ["test"] * 20
    splits = load_splits(_split_file(tmp_path, parts), split_column="part")
    assert splits.sizes() == {"train": 72, "validation": 8, "test": 20}
    assert set(splits.validation["row"]) < set(range(1, 81))
    assert set(splits.validation["label"]) == {FAKE, REAL}


def test_split_column_errors(tmp_path):
    no_test = _split_file(tmp_path, ["train"] * 20 + ["validation"] * 4, "no_test.csv")
    with pytest.raises(DataError, match="no row has 'test' in column 'part'"):
        load_splits(no_test, split_column="part")

    unknown = _split_file(tmp_path, ["train"] * 16 + ["holdout"] * 2 + ["test"] * 4 + [""] * 2, "unknown.csv")
    with pytest.raises(DataError) as info:
        load_splits(unknown, split_column="part")
    message = str(info.value)
    assert "'holdout' first in row 17" in message and "(empty) first in row 23" in message

    with pytest.raises(DataError, match="no column 'split'"):
        load_splits(unknown, split_column="split")
    with pytest.raises(ConfigError):
        load_splits(unknown, split_column="part", test_data=unknown)


# --------------------------------------------------------------------------- separate files


def _write(tmp_path, name, df):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def test_separate_validation_and_test_files(tmp_path):
    train = _write(tmp_path, "train.csv", balanced_frame(50, "train"))
    val = _write(tmp_path, "val.csv", balanced_frame(5, "val"))
    test = _write(tmp_path, "test.csv", balanced_frame(10, "test"))

    both = load_splits(train, validation_data=val, test_data=test)
    assert both.sizes() == {"train": 100, "validation": 10, "test": 20}
    assert both.test["text"].str.startswith("test").all()
    assert "val.csv" in both.source and "test.csv" in both.source

    only_test = load_splits(train, test_data=test)  # validation: 10 % of the training file
    assert only_test.sizes() == {"train": 90, "validation": 10, "test": 20}
    assert only_test.validation["text"].str.startswith("train").all()

    only_val = load_splits(train, validation_data=val)  # test: 20 % of the training file
    assert only_val.sizes() == {"train": 80, "validation": 10, "test": 20}
    assert only_val.test["text"].str.startswith("train").all()
    for part in (only_val.train, only_val.validation, only_val.test):
        assert set(part["label"]) == {FAKE, REAL}


def test_separate_file_errors_name_that_file(tmp_path):
    train = _write(tmp_path, "train.csv", balanced_frame(20, "train"))
    with pytest.raises(DataError, match=r"missing_test\.csv.*--test-data"):
        load_splits(train, test_data=tmp_path / "missing_test.csv")
    one_class = write(tmp_path / "test.csv", "text,label\nx,fake\ny,fake\n")
    with pytest.raises(DataError, match=r"test\.csv.*2 fake, 0 real"):
        load_splits(train, test_data=one_class)


# --------------------------------------------------------------------------- leakage


def test_leakage_warning_between_files(tmp_path):
    train_df = balanced_frame(20, "train")
    train_df.loc[7, "text"] = " shared review "
    train_df.loc[12, "text"] = "shared review"  # a later copy: the message names the first one
    test_df = balanced_frame(5, "test")
    test_df.loc[3, "text"] = "shared review\n"  # same text after strip
    train = _write(tmp_path, "train.csv", train_df)
    test = _write(tmp_path, "test.csv", test_df)
    with pytest.warns(LeakageWarning, match=r"1 text of the test split also appears in train") as record:
        load_splits(train, validation_data=_write(tmp_path, "val.csv", balanced_frame(3, "val")), test_data=test)
    message = str(record[0].message)
    assert "row 4 of" in message and "test.csv" in message and "row 8 of" in message


def test_leakage_warning_from_duplicates_in_one_file(tmp_path):
    df = balanced_frame(50)
    df = pd.concat([df, df.iloc[:20]], ignore_index=True)  # 20 exact duplicates
    path = _write(tmp_path, "dup.csv", df)
    with pytest.warns(LeakageWarning, match=re.escape("(leakage")):
        load_splits(path)


def test_no_leakage_warning_on_default_data():
    with warnings.catch_warnings():
        warnings.simplefilter("error", LeakageWarning)
        load_splits()
