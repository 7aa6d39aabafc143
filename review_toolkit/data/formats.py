"""The input formats: one table (extension -> format, reader, streams or not, help) and the readers.

Every command reads data through this table: ``train`` and ``evaluate --data`` read a whole file
with :func:`read_table`, ``predict`` reads it chunk by chunk with :func:`read_chunks`; both get
the same rows and the same one-line :class:`~review_toolkit.errors.DataError` for a bad file.
A reader yields chunks of at most ``chunk_rows`` rows, each a DataFrame (CSV, TSV, Parquet, a
saved dataset) or a list of dicts (JSON, which keeps every record's own keys and nested values);
a file without rows yields one empty chunk, so that messages can name its columns.

Adding a format means one reader function and one row of :data:`FORMATS`.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import pathlib
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, Union

import pandas as pd

from review_toolkit.data import messages
from review_toolkit.errors import DataError

logger = logging.getLogger("review_toolkit.data")  # the name the docs give



class Records(list):
    """A chunk of JSON records; ``lines`` holds the line of each (JSON Lines), for messages."""

    lines: list[int] | None = None


Chunk = Union[pd.DataFrame, Records, list[dict[str, Any]]]
CHUNK_ROWS = 1024  # rows predict reads, scores and writes at a time
_TABLE_CHUNK_ROWS = 65_536  # rows per chunk when a whole table is read
_BOM = b"\xef\xbb\xbf"
_SEPARATOR_QUOTING_HELP = (
    'A field that contains the separator must be enclosed in double quotes, with quotes inside it doubled ("").'
)
_QUOTING_HELP = (
    "A field that contains the separator, a double quote or a line break must be enclosed in "
    'double quotes, with quotes inside it doubled ("").'
)


@dataclass
class DataSource:
    """A file, or a binary stream read once (standard input); ``name`` is how messages call it."""

    name: str
    path: pathlib.Path | None = None
    stream: IO[bytes] | None = None

    @classmethod
    def of_file(cls, path: str | pathlib.Path) -> DataSource:
        path = pathlib.Path(path).expanduser()
        return cls(name=str(path), path=path)

    def open_binary(self) -> IO[bytes]:
        if self.path is None:
            assert self.stream is not None
            return self.stream
        try:
            return open(self.path, "rb")
        except OSError as exc:
            raise DataError(f"Cannot read {self.name}: {exc.strerror or exc}.") from None


@dataclass(frozen=True)
class Format:
    name: str
    extensions: tuple[str, ...]  # lower case, with the dot; none for a directory
    description: str  # for help texts and "Supported formats: ..."
    streams: bool  # read chunk by chunk in constant memory (else the whole input is held at once)
    read: Callable[[DataSource, int], Iterator[Chunk]]
    # How predict writes rows of this format when no output format is given, and the format of an
    # output file with one of these extensions; None: predict cannot write it.
    output_format: str | None
    # Start line of each data row in the file's text (index 0: the header), for messages; None:
    # the format has no lines an editor would show.
    line_starts: Callable[[str, int], list[int]] | None = None
    # The one column a format without a header gives its rows (plain lines); None: the file names them.
    own_text_column: str | None = None


# --------------------------------------------------------------------------- text and its errors


def _text_stream(source: DataSource) -> IO[str]:
    """The source as UTF-8 text without a byte-order mark, newlines as they are in the file."""
    handle = source.open_binary()
    buffered = handle if hasattr(handle, "peek") else io.BufferedReader(handle)  # type: ignore[arg-type]
    if buffered.peek(3)[:3] == _BOM:  # type: ignore[union-attr]
        # A byte-order mark would otherwise glue itself to the first column name ("\ufefftext").
        logger.info("%s starts with a UTF-8 byte-order mark; it was removed before parsing.", source.name)
        buffered.read(3)
    return io.TextIOWrapper(buffered, encoding="utf-8", newline="")  # type: ignore[arg-type]


def _not_utf8(source: DataSource, line: int | None = None, byte: int | None = None) -> DataError:
    """The error for text that is not UTF-8, naming the first bad byte and its line where known."""
    if line is None and source.path is not None:
        line, byte = _first_undecodable_byte(source.path)
    where = f": byte 0x{byte:02x} on line {line} cannot be decoded" if line is not None and byte is not None else ""
    return DataError(
        f"{source.name} is not UTF-8 text{where}. Save the file as UTF-8 (for example 'CSV UTF-8' in a "
        "spreadsheet program, or `iconv -f latin1 -t utf-8`)."
    )


def _first_undecodable_byte(path: pathlib.Path) -> tuple[int | None, int | None]:
    """(line, byte value) of the first byte that is not UTF-8, reading the file block by block."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:  # exc.object: the block after the bytes still undecided
                    return line + exc.object.count(b"\n", 0, exc.start), exc.object[exc.start]
                line += block.count(b"\n")
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return None, None  # the file ends inside a character
    except OSError:
        pass
    return None, None


def _file_text(path: pathlib.Path) -> str | None:
    """The file's text for a message (row -> line lookups); None where it cannot be read."""
    try:
        return path.read_bytes().decode("utf-8").removeprefix("\ufeff")
    except (OSError, UnicodeDecodeError):
        return None


# --------------------------------------------------------------------------- CSV / TSV


def _delimited_reader(sep: str) -> Callable[[DataSource, int], Iterator[Chunk]]:
    def read(source: DataSource, chunk_rows: int) -> Iterator[Chunk]:
        return _read_delimited(source, chunk_rows, sep)

    return read


def _read_delimited(source: DataSource, chunk_rows: int, sep: str) -> Iterator[Chunk]:
    """Chunks of a CSV / TSV input with every cell as a string (a review reading "NA" stays "NA")."""
    handle = _text_stream(source)
    seen = 0
    with handle:
        try:
            # keep_default_na=False: pandas would otherwise turn reviews like "NA", "null" or "n/a"
            # into missing values. Short rows still give "" / NaN, which the column checks report.
            # index_col=False: with extra fields in a row pandas would otherwise quietly use the
            # first column as the index and shift every cell; it warns instead, and that is an error.
            reader = _parse(
                lambda: pd.read_csv(
                    handle, sep=sep, dtype=str, keep_default_na=False, index_col=False, chunksize=chunk_rows
                ),
                source, sep, seen,
            )
            with reader:
                while (chunk := _parse(lambda: next(reader, None), source, sep, seen)) is not None:
                    if len(chunk) or seen == 0:  # a header without rows is one empty chunk
                        yield chunk
                    seen += len(chunk)
        except pd.errors.EmptyDataError:
            raise DataError(f"{source.name} is empty: it has no header and no data rows.") from None
        except UnicodeDecodeError:
            raise _not_utf8(source) from None
        except (pd.errors.ParserError, ValueError, csv.Error) as exc:
            raise DataError(_explain_csv_error(source, sep, str(exc), seen)) from None


def _parse(step: Callable[[], Any], source: DataSource, sep: str, seen: int) -> Any:
    """Run one step of pandas' parser; its warning about rows longer than the header is an error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        result = step()
    for warning in caught:
        if issubclass(warning.category, pd.errors.ParserWarning):
            n_columns = len(result.columns) if isinstance(result, pd.DataFrame) else None
            raise DataError(_explain_extra_fields(source, sep, n_columns, seen))
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return result


def _explain_extra_fields(source: DataSource, sep: str, n_columns: int | None, seen: int) -> str:
    """Message for rows with more fields than the header, found again with the csv module."""
    text = _file_text(source.path) if source.path is not None else None
    rows: list[int] = []
    if text is not None:
        try:
            reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
            header = next(reader, [])
            n_columns = len(header)
            data_row = 0
            for record in reader:
                if len(record) <= 1 and not "".join(record).strip():
                    continue  # blank line, skipped by pandas too
                data_row += 1
                if len(record) > n_columns:
                    rows.append(data_row)
        except csv.Error:
            rows = []
    if rows:
        where = describe_rows(rows, source.name, text=text) + (" has" if len(rows) == 1 else " have")
    else:  # standard input, read once: only the chunk is known
        where = f"a row after row {seen} has" if seen else "a row has"
    header = f"the header's {n_columns}" if n_columns else "the header"
    return f"Cannot parse {source.name}: {where} more fields than {header}. {_SEPARATOR_QUOTING_HELP}"


def _explain_csv_error(source: DataSource, sep: str, message: str, seen: int) -> str:
    """Turn a pandas tokenizer message into one that names the row and the line of the file.

    pandas counts *records* (header = record 1 in "line N", header = row 0 in "row N"), not the
    lines an editor shows, so the line is looked up with the csv module.
    """
    message = message.strip().removeprefix("Error tokenizing data. C error: ")
    text = _file_text(source.path) if source.path is not None else None
    if m := re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message):
        expected, record, seen_fields = (int(g) for g in m.groups())
        where = describe_rows([record - 1], source.name, text=text, sep=sep)
        return (
            f"Cannot parse {source.name}: {where} has {seen_fields} fields but the header has {expected}. "
            + _QUOTING_HELP
        )
    if m := re.search(r"EOF inside string starting at row (\d+)", message):
        row = int(m.group(1))
        where = describe_rows([row], source.name, text=text, sep=sep) if row else "the header"
        return (
            f"Cannot parse {source.name}: a quoted field starting at {where} is never closed "
            "(the file ends inside it). " + _QUOTING_HELP
        )
    return f"Cannot parse {source.name} as {'CSV' if sep == ',' else 'TSV'}: {message}. {_QUOTING_HELP}"


# --------------------------------------------------------------------------- JSON Lines and JSON


def _read_json_lines(source: DataSource, chunk_rows: int) -> Iterator[Chunk]:
    """Chunks of records, one JSON object per non-blank line, read line by line."""
    handle = source.open_binary()
    batch, lines = Records(), []
    any_line = False
    with handle:
        # Binary lines end at b"\n" only, as the lines of messages count them: U+2028 and friends
        # may legally sit inside JSON strings.
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _not_utf8(source, number, raw[exc.start]) from None
            if not line.strip():
                continue
            any_line = True
            batch.append(_json_record(line, number, source.name))
            lines.append(number)
            if len(batch) == chunk_rows:
                batch.lines = lines
                yield batch
                batch, lines = Records(), []
    if not any_line:
        raise DataError(f"{source.name} is empty: it has no records.")
    if batch:
        batch.lines = lines
        yield batch


def _json_record(line: str, number: int, name: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"Cannot parse {name}: line {number} is not valid JSON ({exc.msg} at column {exc.colno}). "
            "JSON Lines files need one complete JSON object per line."
        ) from None
    except (ValueError, RecursionError) as exc:  # a number of thousands of digits, absurd nesting
        raise DataError(f"Cannot parse {name}: line {number} cannot be read as JSON ({messages.first_line(exc)}).") from None
    if not isinstance(record, dict):
        raise DataError(
            f"Cannot parse {name}: line {number} is a JSON {messages.json_type(record)}, "
            'not an object like {"text": "...", "label": "fake"}.'
        )
    return record


def _read_json(source: DataSource, chunk_rows: int) -> Iterator[Chunk]:
    """A .json input: a list of records (held whole), or JSON Lines saved under a .json name."""
    with source.open_binary() as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise _not_utf8(source, raw.count(b"\n", 0, exc.start) + 1, raw[exc.start]) from None
    if not text.strip():
        raise DataError(f"{source.name} is empty: it has no records.")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip().startswith("["):
            raise DataError(
                f"Cannot parse {source.name}: invalid JSON on line {exc.lineno}, column {exc.colno} ({exc.msg})."
            ) from None
        # "Extra data" after the first object is what JSON Lines looks like to json.loads.
        yield from _read_json_lines(DataSource(source.name, stream=io.BytesIO(raw)), chunk_rows)
        return
    except (ValueError, RecursionError) as exc:  # a number of thousands of digits, absurd nesting
        raise DataError(f"Cannot parse {source.name}: it cannot be read as JSON ({messages.first_line(exc)}).") from None
    if isinstance(document, dict):
        document = [document]  # a JSON Lines file with a single record
    if not isinstance(document, list):
        raise DataError(
            f"Cannot parse {source.name}: expected a list of records or JSON Lines, got a JSON "
            f"{messages.json_type(document)}."
        )
    for index, record in enumerate(document, start=1):
        if not isinstance(record, dict):
            raise DataError(
                f"Cannot parse {source.name}: record {index} of the list is a JSON {messages.json_type(record)}, "
                'not an object like {"text": "...", "label": "fake"}.'
            )
    for start in range(0, max(len(document), 1), chunk_rows):
        yield document[start : start + chunk_rows]


# --------------------------------------------------------------------------- plain lines

LINES_COLUMN = "text"


def _read_lines(source: DataSource, chunk_rows: int) -> Iterator[Chunk]:
    """One review per line, no header; blank lines separate nothing and are skipped."""
    try:
        with _text_stream(source) as handle:
            rows: list[str] = []
            yielded = False
            for line in handle:
                text = line.rstrip("\r\n")
                if not text.strip():
                    continue
                rows.append(text)
                if len(rows) == chunk_rows:
                    yield pd.DataFrame({LINES_COLUMN: rows})
                    rows, yielded = [], True
            if rows or not yielded:
                yield pd.DataFrame({LINES_COLUMN: rows}, dtype=str)
    except UnicodeDecodeError:
        raise _not_utf8(source) from None


# --------------------------------------------------------------------------- Parquet and saved datasets


def _read_parquet(source: DataSource, chunk_rows: int) -> Iterator[Chunk]:
    """Chunks of a Parquet file, read batch by batch (row group by row group) with pyarrow."""
    if source.path is None:
        raise DataError(f"Parquet cannot be read from {source.name}; give the file's path instead.")
    import pyarrow.parquet as pq  # lazy: only this format needs it

    try:
        parquet = pq.ParquetFile(source.path)
        batches = parquet.iter_batches(batch_size=chunk_rows)
        first = True
        for batch in batches:
            yield batch.to_pandas()
            first = False
        if first:
            yield parquet.schema_arrow.empty_table().to_pandas()
    except DataError:
        raise
    except Exception as exc:  # pyarrow raises a zoo of types (ArrowInvalid, OSError, ...)
        raise DataError(f"Cannot read {source.name} as Parquet: {messages.first_line(exc)}") from None


_DATASET_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")


def _read_saved_dataset(source: DataSource, chunk_rows: int) -> Iterator[Chunk]:
    """A directory written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` (held whole)."""
    path = source.path
    if path is None or not any((path / marker).is_file() for marker in _DATASET_MARKERS):
        raise DataError(
            f"{source.name} is a directory but not a dataset saved with datasets' save_to_disk "
            f"(it has none of {', '.join(_DATASET_MARKERS)}). Pass a data file instead; supported formats: "
            f"{supported_formats()}."
        )
    import datasets  # lazy: importing datasets is slow and only this format needs it

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise DataError(f"Cannot load the saved dataset in {path}: {messages.first_line(exc)}") from None

    if isinstance(loaded, datasets.DatasetDict):
        frames = []
        for split_name, split in loaded.items():
            frame = _dataset_to_frame(split)
            if "split" in frame.columns:
                raise DataError(
                    f"{path} is a DatasetDict whose data already has a column 'split'; it clashes "
                    "with the column that names each row's split. Rename that column."
                )
            frames.append(frame.assign(split=split_name))
        if not frames:
            raise DataError(f"{path} is a DatasetDict without any split.")
        frame = pd.concat(frames, ignore_index=True)
    else:
        frame = _dataset_to_frame(loaded)
    for start in range(0, max(len(frame), 1), chunk_rows):
        yield frame.iloc[start : start + chunk_rows]


def _dataset_to_frame(dataset: Any) -> pd.DataFrame:
    """Convert a ``datasets.Dataset``, turning ClassLabel ids back into their names.

    Without this a ClassLabel with names ["fake", "real"] (the alphabetical order that
    ``class_encode_column`` produces) would give 0 = fake, and the 0/1 aliases would silently
    swap the classes.
    """
    import datasets

    frame = dataset.to_pandas()
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.ClassLabel):
            names = dict(enumerate(feature.names))
            frame[name] = frame[name].map(names)  # -1 ("no label") becomes missing
    return frame.reset_index(drop=True)


# --------------------------------------------------------------------------- the table


def _csv_starts(text: str, last_row: int) -> list[int]:
    return messages.delimited_record_starts(text, ",", last_row)


def _tsv_starts(text: str, last_row: int) -> list[int]:
    return messages.delimited_record_starts(text, "\t", last_row)


FORMATS: tuple[Format, ...] = (
    Format("csv", (".csv",), "CSV (.csv)", True, _delimited_reader(","), "csv", _csv_starts),
    Format("tsv", (".tsv", ".tab"), "TSV (.tsv, .tab)", True, _delimited_reader("\t"), "tsv", _tsv_starts),
    Format("jsonl", (".jsonl", ".ndjson"), "JSON Lines (.jsonl, .ndjson)", True, _read_json_lines, "jsonl",
           messages.json_line_starts),
    Format("json", (".json",), "a JSON list of records or JSON Lines (.json)", False, _read_json, "jsonl"),
    Format("lines", (".txt",), "plain text, one review per line (.txt)", True, _read_lines, "csv",
           messages.json_line_starts, own_text_column=LINES_COLUMN),
    Format("parquet", (".parquet", ".pq"), "Parquet (.parquet, .pq)", True, _read_parquet, None),
    Format("dataset", (), "a directory saved with datasets' save_to_disk", False, _read_saved_dataset, None),
)
FORMATS_BY_NAME: dict[str, Format] = {fmt.name: fmt for fmt in FORMATS}
FORMATS_BY_EXTENSION: dict[str, Format] = {ext: fmt for fmt in FORMATS for ext in fmt.extensions}
FILE_FORMAT_NAMES: tuple[str, ...] = tuple(fmt.name for fmt in FORMATS if fmt.extensions)
OUTPUT_FORMAT_NAMES: tuple[str, ...] = tuple(dict.fromkeys(fmt.output_format for fmt in FORMATS if fmt.output_format))


def supported_formats() -> str:
    """"CSV (.csv), TSV (.tsv, .tab), ... or a directory saved with ..." for messages and help."""
    descriptions = [fmt.description for fmt in FORMATS]
    return ", ".join(descriptions[:-1]) + " or " + descriptions[-1]


def format_of(path: str | pathlib.Path, given: str | None = None, *, option: str | None = None) -> Format:
    """The format named ``given``, else the one of the path: a directory, or by extension."""
    if given:
        return FORMATS_BY_NAME[given]
    path = pathlib.Path(path).expanduser()
    if path.is_dir():
        return FORMATS_BY_NAME["dataset"]
    fmt = FORMATS_BY_EXTENSION.get(path.suffix.lower())
    if fmt is None:
        say = f" or name the format with {option}" if option else ""
        raise DataError(
            f"Cannot read {path}: unknown file type {path.suffix or '(no extension)'!r}. "
            f"Supported formats: {supported_formats()}{say}."
        )
    return fmt


def read_chunks(source: DataSource, fmt: Format, chunk_rows: int | None = None) -> Iterator[Chunk]:
    """The chunks of ``source`` read as ``fmt`` (at least one, empty for a file without rows)."""
    return fmt.read(source, chunk_rows or CHUNK_ROWS)


def chunk_columns(chunk: Chunk) -> list[str]:
    """A chunk's column names (JSON: every key of its records, in order of appearance)."""
    if isinstance(chunk, list):
        return list({key: None for record in chunk for key in record})
    return [str(column) for column in chunk.columns]


def read_table(path: str | pathlib.Path, *, option: str = "--data") -> pd.DataFrame:
    """Read a data file or a saved ``datasets`` directory into a DataFrame with a 0-based RangeIndex.

    Text is kept as text: in CSV / TSV every cell is a string (a review reading "NA" stays "NA";
    an empty cell is ""). A ``DatasetDict`` directory is flattened, with a ``split`` column naming
    each row's split. Any problem is raised as :class:`DataError`; ``option`` is the one that named
    the file, for a file that does not exist.
    """
    path = pathlib.Path(path).expanduser()
    if not path.exists():
        raise DataError(f"Data file not found: {path}. Check the path given with {option}.")
    source = DataSource.of_file(path)
    chunks = list(read_chunks(source, format_of(path), _TABLE_CHUNK_ROWS))
    if not chunks:
        raise DataError(f"{path} has no data rows.")
    if all(isinstance(chunk, list) for chunk in chunks):
        records = [record for chunk in chunks for record in chunk]
        if not records:
            raise DataError(f"{path} contains no records.")
        frame = pd.DataFrame.from_records(records)
    else:
        frame = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]
    if len(frame) == 0:
        columns = ", ".join(map(str, frame.columns)) or "none"
        raise DataError(f"{path} has a header (columns: {columns}) but no data rows.")
    return frame.reset_index(drop=True)


# --------------------------------------------------------------------------- rows in messages


def lines_of_rows(
    rows: Sequence[int], source: str, *, text: str | None = None, sep: str | None = None
) -> list[int] | None:
    """Map 1-based data rows to 1-based file lines, or None when that is unknown or not applicable.

    Only done when a message is built, so reading the file a second time costs nothing normally.
    """
    if not rows:
        return None
    path = pathlib.Path(source)
    fmt = FORMATS_BY_EXTENSION.get(path.suffix.lower())
    if fmt is None or fmt.line_starts is None:
        return None
    if text is None:
        text = _file_text(path)
        if text is None:
            return None
    try:
        if sep is not None and fmt.name in ("csv", "tsv"):
            starts = messages.delimited_record_starts(text, sep, max(rows))
        else:
            starts = fmt.line_starts(text, max(rows))
        return [starts[row] for row in rows]
    except (csv.Error, IndexError):
        return None


def describe_rows(rows: Sequence[int], source: str, *, text: str | None = None, sep: str | None = None) -> str:
    """Return e.g. "rows 3, 7 (lines 4, 8 of the file) and 2 more (4 in all)" for rows of ``source``."""
    shown = list(rows)[: messages.MAX_LISTED]
    return messages.format_rows(rows, lines_of_rows(shown, source, text=text, sep=sep))
