"""Reviews to score, read chunk by chunk from a file, standard input or the command line.

The rows come from the readers of :mod:`review_toolkit.data.formats` (the ones ``train`` uses),
so a file ``train`` refuses is refused here with the same message. A file is read once
beforehand, cheaply and without the model, to check its text column and count its rows (for a
progress bar): a bad row is reported in seconds, not after an hour of scoring. Standard input
cannot be read twice, so it is checked as it streams.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from review_toolkit.data import formats
from review_toolkit.data.formats import Chunk, DataSource, Format, chunk_columns, describe_rows, read_chunks
from review_toolkit.data.messages import MAX_LISTED, is_blank, missing_column_message
from review_toolkit.errors import DataError

STDIO = "-"
_PARQUET_MAGIC = b"PAR1"


class _PrefixedStream(io.RawIOBase):
    """Bytes already read (to sniff the format) followed by the rest of a stream."""

    def __init__(self, prefix: bytes, rest: IO[bytes]):
        self.prefix = prefix
        self.rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.prefix:
            n = min(len(buffer), len(self.prefix))
            buffer[:n] = self.prefix[:n]
            self.prefix = self.prefix[n:]
            return n
        data = self.rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


_COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


def sniff_stdin(stream: IO[bytes], given: str | None, text_column: str = "text") -> tuple[IO[bytes], Format]:
    """The stream (nothing lost) and its format: JSON Lines when it starts with '{'; CSV or TSV
    when its first line is a header (it names ``text_column``, or every field looks like a column
    name); otherwise plain lines, one review each."""
    prefix = stream.read(65536) or b""
    wrapped = io.BufferedReader(_PrefixedStream(prefix, stream))
    if given:
        return wrapped, formats.FORMATS_BY_NAME[given]
    if prefix.startswith(_PARQUET_MAGIC):
        raise DataError("Parquet cannot be read from standard input; give the file's path with --input.")
    text = prefix.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if not text:
        raise DataError("Standard input is empty: no reviews to score.")
    if text.startswith("{"):
        return wrapped, formats.FORMATS_BY_NAME["jsonl"]
    header = text.splitlines()[0]
    separator = "\t" if "\t" in header and "," not in header else ","
    fields = [field.strip().strip('"') for field in header.split(separator)]
    if text_column in fields or (len(fields) > 1 and all(_COLUMN_NAME.match(field) for field in fields)):
        return wrapped, formats.FORMATS_BY_NAME["tsv" if separator == "\t" else "csv"]
    return wrapped, formats.FORMATS_BY_NAME["lines"]


class ReviewReader:
    """Chunks of input rows plus their texts, from a file (``path``) or a binary stream."""

    def __init__(self, source: DataSource, fmt: Format, text_column: str):
        self.source = source
        self.format = fmt
        self.text_column = fmt.own_text_column or text_column
        self.name = source.name  # how messages name the input
        self.total: int | None = None
        self.columns: list[str] | None = None  # known after check() or the first chunk
        self.chunk_lines: list[int] | None = None  # JSON Lines: the line of each record of the last chunk
        self.note: str | None = None  # how the input was understood, where that was a guess

    @classmethod
    def of_file(cls, path: str, text_column: str, input_format: str | None = None) -> ReviewReader:
        fmt = formats.format_of(path, input_format, option="--input-format")
        return cls(DataSource.of_file(path), fmt, text_column)

    @classmethod
    def of_stdin(cls, stream: IO[bytes], text_column: str, input_format: str | None = None) -> ReviewReader:
        wrapped, fmt = sniff_stdin(stream, input_format, text_column)
        reader = cls(DataSource("standard input", stream=wrapped), fmt, text_column)
        if fmt.name == "lines" and input_format is None:
            reader.note = (
                f"Standard input read as plain text, one review per line (its first line names no column "
                f"{text_column!r}); give --input-format csv if it is a table."
            )
        return reader

    @property
    def is_file(self) -> bool:
        return self.source.path is not None

    def check(self) -> int | None:
        """Validate a file without the model and count its rows; None for standard input."""
        if not self.is_file:
            return None
        path = self.source.path
        assert path is not None
        if not path.exists():
            raise DataError(f"Input file not found: {path}. Check the path given with --input.")
        count = 0
        keys: dict[str, None] = {}
        for _, texts, columns in self._checked_chunks():
            count += len(texts)
            keys.update(dict.fromkeys(columns))
        self.columns = list(keys)
        self.total = count
        return count

    def chunks(self) -> Iterator[tuple[Chunk, list[str]]]:
        """(rows, texts) per chunk: a DataFrame for CSV / TSV / Parquet, a list of dicts for JSON."""
        for rows, texts, columns in self._checked_chunks():
            if self.columns is None:
                self.columns = columns
            self.chunk_lines = getattr(rows, "lines", None)
            yield rows, texts

    def _checked_chunks(self) -> Iterator[tuple[Chunk, list[str], list[str]]]:
        seen = 0
        for chunk in read_chunks(self.source, self.format, formats.CHUNK_ROWS):
            columns = chunk_columns(chunk)
            if isinstance(chunk, list):
                texts = self._record_texts(chunk, seen)
            else:
                if self.text_column not in chunk.columns:
                    self._missing_text_column(columns)
                texts = chunk[self.text_column].tolist()
                self._check_texts(texts, seen + 1)
            if not texts:
                continue
            seen += len(texts)
            yield chunk, [_as_text(text) for text in texts], columns
        if seen == 0:
            raise DataError(f"{self.name} has no reviews to score (no data rows).")

    def _record_texts(self, records: list[dict[str, Any]], seen: int) -> list[Any]:
        """The text of each JSON record; records lack keys one by one, so each is checked."""
        texts = []
        for number, record in enumerate(records, start=seen + 1):
            if self.text_column not in record:
                where = describe_rows([number], self.name) if self.is_file else f"record {number}"
                raise DataError(
                    f"{self.name}: {where} has no key {self.text_column!r} (keys: "
                    f"{', '.join(map(repr, record))}). Name the key holding the reviews with --text-column."
                )
            texts.append(record[self.text_column])
        self._check_texts(texts, seen + 1)
        return texts

    def _missing_text_column(self, columns: list[str]) -> None:
        raise DataError(
            missing_column_message(self.text_column, columns, self.name)
            + " Name the column holding the reviews with --text-column."
        )

    def _check_texts(self, texts: list[Any], first_row: int) -> None:
        blank = [first_row + i for i, value in enumerate(texts) if is_blank(value)]
        if blank:
            where = describe_rows(blank, self.name) if self.is_file else "rows " + ", ".join(map(str, blank[:MAX_LISTED]))
            raise DataError(
                f"{self.name}: column {self.text_column!r} is empty or missing in {where}. "
                "Remove these rows or fill in their text."
            )


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


class _TextsReader(ReviewReader):
    """Reviews given on the command line (--text), as rows with one column, ``text``."""

    def __init__(self, texts: list[str]):
        super().__init__(DataSource("--text"), formats.FORMATS_BY_NAME["csv"], "text")
        self.texts = texts
        self.columns = ["text"]

    @property
    def is_file(self) -> bool:
        return False

    def check(self) -> int:
        for number, text in enumerate(self.texts, start=1):
            if is_blank(text):
                raise DataError(f"--text number {number} is empty; give the review's text.")
        self.total = len(self.texts)
        return self.total

    def chunks(self) -> Iterator[tuple[Chunk, list[str]]]:
        for start in range(0, len(self.texts), formats.CHUNK_ROWS):
            part = self.texts[start : start + formats.CHUNK_ROWS]
            yield [{"text": text} for text in part], part


def texts_reader(texts: list[str]) -> ReviewReader:
    return _TextsReader(texts)


def output_format_for(path: str | None, given: str | None, input_format: Format | None) -> str:
    """predict's output format: ``given``, else the output file's extension, else the input's."""
    if given:
        return given
    if path not in (None, STDIO):
        fmt = formats.FORMATS_BY_EXTENSION.get(Path(path).suffix.lower())  # type: ignore[arg-type]
        if fmt is None or fmt.output_format is None:
            raise DataError(
                f"Cannot tell the format to write {path} in from its extension {Path(path).suffix or '(none)'!r}: "  # type: ignore[arg-type]
                f"use {', '.join('.' + name for name in formats.OUTPUT_FORMAT_NAMES)}, or say it with --output-format."
            )
        return fmt.output_format
    return (input_format.output_format if input_format else None) or "csv"
