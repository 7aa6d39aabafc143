"""The formats table: every extension maps to one reader, and each reader gives the same rows whole or in chunks."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from review_toolkit.data import formats, read_table
from review_toolkit.data.formats import DataSource, read_chunks
from review_toolkit.errors import DataError

ROWS = [{"text": f"review {i}, with a comma", "label": "fake" if i % 2 else "real"} for i in range(7)]


def write(path, fmt: str) -> None:
    frame = pd.DataFrame(ROWS)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(ROWS), encoding="utf-8")
    elif fmt == "lines":  # plain text: the reviews alone, one a line, blank lines between them skipped
        path.write_text("\n\n".join(row["text"] for row in ROWS) + "\n", encoding="utf-8")
    else:
        frame.to_parquet(path, row_group_size=3)


def test_each_extension_has_one_format_and_every_format_is_read() -> None:
    extensions = [ext for fmt in formats.FORMATS for ext in fmt.extensions]
    assert len(extensions) == len(set(extensions))
    assert set(formats.FILE_FORMAT_NAMES) == {"csv", "tsv", "jsonl", "json", "lines", "parquet"}
    for fmt in formats.FORMATS:
        assert fmt.description in formats.supported_formats()


@pytest.mark.parametrize("extension", sorted(formats.FORMATS_BY_EXTENSION))
def test_chunks_hold_the_rows_of_the_whole_table(tmp_path, extension) -> None:
    path = tmp_path / f"reviews{extension}"
    fmt = formats.FORMATS_BY_EXTENSION[extension]
    write(path, fmt.name)
    expected = [{"text": row["text"]} for row in ROWS] if fmt.own_text_column else ROWS

    chunks = list(read_chunks(DataSource.of_file(path), formats.format_of(path), chunk_rows=3))

    assert [len(chunk) for chunk in chunks] == [3, 3, 1]
    rows = [row for chunk in chunks for row in (chunk if isinstance(chunk, list) else chunk.to_dict("records"))]
    assert rows == expected
    assert read_table(path).to_dict("records") == expected


def test_a_header_without_rows_is_one_empty_chunk_that_names_its_columns(tmp_path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\n", encoding="utf-8")
    chunks = list(read_chunks(DataSource.of_file(path), formats.format_of(path)))
    assert len(chunks) == 1 and list(chunks[0].columns) == ["text", "label"] and chunks[0].empty


def test_a_stream_is_read_with_the_same_checks(tmp_path) -> None:
    stream = io.BytesIO(b'{"text": "fine"}\n[1, 2]\n')
    with pytest.raises(DataError, match="standard input: line 2 is a JSON array"):
        list(read_chunks(DataSource("standard input", stream=stream), formats.FORMATS_BY_NAME["jsonl"]))
    with pytest.raises(DataError, match="Parquet cannot be read from standard input"):
        list(read_chunks(DataSource("standard input", stream=io.BytesIO(b"PAR1")), formats.FORMATS_BY_NAME["parquet"]))


def test_an_unknown_extension_lists_the_formats(tmp_path) -> None:
    path = tmp_path / "reviews.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(DataError, match=r"unknown file type '\.xlsx'.*Parquet \(\.parquet, \.pq\).*--input-format"):
        formats.format_of(path, option="--input-format")
