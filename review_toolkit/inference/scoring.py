"""Scoring files of reviews in constant memory: read a chunk, score it, write it, in input order.

Readers yield chunks of rows (CSV / TSV through pandas' ``chunksize``, JSON
Lines line by line) and the writer appends each scored chunk, so memory holds
one chunk plus the model whatever the size of the input. A file given as input
is read once beforehand, cheaply and without the model, to check its text column
and count its rows (for the progress bar): a bad row is reported in seconds,
not after an hour of scoring. Standard input cannot be read twice, so it is
checked as it streams.

Output goes to ``.NAME.PID.partial`` beside the target and is renamed at the
end: a failure or Ctrl-C leaves no half-written file (and an existing file of
that name untouched).
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from review_toolkit.runtime import distributed
from review_toolkit.data.loading import _describe_rows, _is_blank
from review_toolkit.errors import DataError

STDIO = "-"
FORMATS = ("csv", "tsv", "jsonl")
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_SEPARATORS = {"csv": ",", "tsv": "\t"}
CHUNK_ROWS = 1024  # rows read, scored and written at a time


def return_freed_memory_promptly() -> None:
    """Make glibc hand large freed blocks back to the system at once (process-wide; for the CLI).

    Batches of reviews have ever-changing lengths, so every forward pass asks for tensors of new
    sizes; glibc's heap keeps what they free and fragments, and RSS creeps up chunk after chunk
    (MiniLM, batches of 16, 2,048 reviews: 0.91 -> 1.05 GiB over 8 chunks and still rising).
    Blocks of 4 MiB and more (the attention scores of a batch) served by mmap are returned when
    freed: RSS stays flat (0.86 GiB peak on the same reviews) for about 10 % more time; a 128 KiB
    threshold gave 0.79 GiB for 25-40 %. A no-op where libc has no mallopt.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 4 * 2**20)  # -3 = M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def default_batch_size() -> int:
    """Reviews per forward pass: 64 on a GPU; 16 on a CPU, where larger batches are no faster but the
    attention of a batch of long reviews costs far more memory (MiniLM, 256 tokens: peak RSS
    1.19 GiB at 64, 0.87 GiB at 16, same speed)."""
    import torch

    return 64 if torch.cuda.is_available() else 16
PREDICTION_COLUMNS = ("label", "p_fake")
RENAMED_PREDICTION_COLUMNS = ("predicted_label", "predicted_p_fake")


def format_of(path: str, option: str, given: str | None) -> str:
    """The format named by ``given``, else by the file's extension."""
    if given:
        return given
    suffix = Path(path).suffix.lower()
    if suffix in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffix]
    raise DataError(
        f"Cannot tell the format of {path} from its extension {suffix or '(none)'!r}: use .csv, .tsv or .jsonl, "
        f"or say it with {option}."
    )


# --------------------------------------------------------------------------- readers


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


def sniff_stdin(stream: IO[bytes], given: str | None) -> tuple[IO[bytes], str]:
    """The stream (nothing lost) and its format: JSON Lines when it starts with '{', else CSV or TSV."""
    prefix = stream.read(65536) or b""
    wrapped = io.BufferedReader(_PrefixedStream(prefix, stream))
    if given:
        return wrapped, given
    text = prefix.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if not text:
        raise DataError("Standard input is empty: no reviews to score.")
    if text.startswith("{"):
        return wrapped, "jsonl"
    header = text.split("\n", 1)[0]
    return wrapped, "tsv" if "\t" in header and "," not in header else "csv"


class ReviewReader:
    """Chunks of input rows plus their texts. ``source`` is a path or a binary stream (stdin)."""

    def __init__(self, source: str | IO[bytes], fmt: str, text_column: str, name: str):
        self.source = source
        self.format = fmt
        self.text_column = text_column
        self.name = name  # how messages name the input
        self.total: int | None = None
        self.columns: list[str] | None = None  # known after check() or the first chunk

    @property
    def is_file(self) -> bool:
        return isinstance(self.source, str)

    # CSV / TSV ---------------------------------------------------------------------------------

    def _csv_chunks(self, usecols: list[str] | None = None) -> Iterator[Any]:
        import pandas as pd

        source = self.source
        try:
            reader = pd.read_csv(
                source,
                sep=_SEPARATORS[self.format],
                dtype=str,
                keep_default_na=False,
                chunksize=CHUNK_ROWS,
                encoding="utf-8-sig",
                usecols=usecols,
            )
            with reader:
                yield from reader
        except pd.errors.EmptyDataError:
            raise DataError(f"{self.name} is empty: it has no header and no rows.") from None
        except UnicodeDecodeError as error:
            raise DataError(f"{self.name} is not UTF-8 text ({error.reason}); save it as UTF-8.") from None
        except (pd.errors.ParserError, ValueError) as error:
            message = str(error).strip().removeprefix("Error tokenizing data. C error: ")
            raise DataError(
                f"Cannot parse {self.name} as {self.format.upper()}: {message}. A field that contains the separator, "
                'a double quote or a line break must be enclosed in double quotes, with quotes inside it doubled ("").'
            ) from None

    def _require_text_column(self, columns: list[str]) -> None:
        if self.text_column not in columns:
            from review_toolkit.data.loading import _closest_column

            close = _closest_column(self.text_column, [str(c) for c in columns])
            hint = f" Did you mean {close!r}?" if close else ""
            raise DataError(
                f"{self.name} has no column {self.text_column!r}. Columns found: {', '.join(map(repr, columns))}.{hint} "
                "Name the column holding the reviews with --text-column."
            )

    def _check_texts(self, texts: list[Any], first_row: int) -> None:
        blank = [first_row + i for i, value in enumerate(texts) if _is_blank(value)]
        if blank:
            where = _describe_rows(blank, self.name) if self.is_file else "rows " + ", ".join(map(str, blank[:10]))
            raise DataError(
                f"{self.name}: column {self.text_column!r} is empty or missing in {where}. "
                "Remove these rows or fill in their text."
            )

    # JSON Lines --------------------------------------------------------------------------------

    def _jsonl_records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(line number, record) for each non-blank line."""
        if self.is_file:
            handle: IO[str] = open(self.source, encoding="utf-8-sig", newline="")  # type: ignore[arg-type]
        else:
            handle = io.TextIOWrapper(self.source, encoding="utf-8-sig", newline="")  # type: ignore[arg-type]
        with handle:
            line_number = 0
            try:
                for line in handle:
                    line_number += 1
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as error:
                        raise DataError(
                            f"Cannot parse {self.name}: line {line_number} is not valid JSON ({error.msg} at column "
                            f"{error.colno}). JSON Lines input needs one JSON object per line."
                        ) from None
                    if not isinstance(record, dict):
                        raise DataError(
                            f"Cannot parse {self.name}: line {line_number} is not a JSON object like "
                            f'{{"{self.text_column}": "..."}}.'
                        )
                    if self.text_column not in record:
                        raise DataError(
                            f"{self.name}: line {line_number} has no key {self.text_column!r} (keys: "
                            f"{', '.join(map(repr, record))}). Name the key holding the reviews with --text-column."
                        )
                    if _is_blank(record[self.text_column]):
                        raise DataError(
                            f"{self.name}: line {line_number} has an empty {self.text_column!r}. Remove the line or "
                            "fill in its text."
                        )
                    yield line_number, record
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{self.name} is not UTF-8 text (after line {line_number}: {error.reason}); save it as UTF-8."
                ) from None

    # -------------------------------------------------------------------------------------------

    def check(self) -> int | None:
        """Validate a file without the model and count its rows; None for standard input."""
        if not self.is_file:
            return None
        path = Path(self.source)  # type: ignore[arg-type]
        if not path.exists():
            raise DataError(f"Input file not found: {path}. Check the path given with --input.")
        if not path.is_file():
            raise DataError(f"{path} is not a file. Give a CSV, TSV or JSON Lines file with --input.")
        count = 0
        if self.format == "jsonl":
            keys: dict[str, None] = {}
            for _, record in self._jsonl_records():
                count += 1
                keys.update(dict.fromkeys(record))
            self.columns = list(keys)
        else:
            import pandas as pd

            try:
                header = pd.read_csv(path, sep=_SEPARATORS[self.format], dtype=str, nrows=0, encoding="utf-8-sig")
            except pd.errors.EmptyDataError:
                raise DataError(f"{self.name} is empty: it has no header and no rows.") from None
            except UnicodeDecodeError as error:
                raise DataError(f"{self.name} is not UTF-8 text ({error.reason}); save it as UTF-8.") from None
            self.columns = [str(c) for c in header.columns]
            self._require_text_column(self.columns)
            for chunk in self._csv_chunks(usecols=[self.text_column]):
                self._check_texts(chunk[self.text_column].tolist(), count + 1)
                count += len(chunk)
        if count == 0:
            raise DataError(f"{self.name} has no reviews to score (no data rows).")
        self.total = count
        return count

    def chunks(self) -> Iterator[tuple[Any, list[str]]]:
        """(rows, texts) per chunk: a DataFrame for CSV / TSV, a list of dicts for JSON Lines."""
        seen = 0
        if self.format == "jsonl":
            batch: list[dict[str, Any]] = []
            for _, record in self._jsonl_records():
                batch.append(record)
                if len(batch) == CHUNK_ROWS:
                    yield batch, [_as_text(r[self.text_column]) for r in batch]
                    seen += len(batch)
                    batch = []
            if batch:
                seen += len(batch)
                yield batch, [_as_text(r[self.text_column]) for r in batch]
        else:
            for chunk in self._csv_chunks():
                if self.columns is None:
                    self.columns = [str(c) for c in chunk.columns]
                self._require_text_column(list(chunk.columns))
                texts = chunk[self.text_column].tolist()
                self._check_texts(texts, seen + 1)
                seen += len(chunk)
                yield chunk, [_as_text(t) for t in texts]
        if seen == 0:
            raise DataError(f"{self.name} has no reviews to score (no data rows).")


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


# --------------------------------------------------------------------------- writers


class ReviewWriter:
    """Appends scored chunks as CSV / TSV or JSON Lines to an open text handle."""

    def __init__(self, handle: IO[str], fmt: str, columns: list[str] | None = None):
        self.handle = handle
        self.format = fmt
        self.columns = columns  # the input's columns when known beforehand (JSON Lines: every key of the file)
        self.fieldnames: list[str] | None = None
        self.names: tuple[str, str] = PREDICTION_COLUMNS
        self.rows = 0

    def choose_names(self, columns: list[str] | None) -> list[str]:
        """Prediction columns: ``label`` and ``p_fake``, or ``predicted_*`` when the input has either."""
        if columns and any(name in columns for name in PREDICTION_COLUMNS):
            self.names = RENAMED_PREDICTION_COLUMNS
            return [
                f"The input already has a column named {' or '.join(repr(n) for n in PREDICTION_COLUMNS if n in columns)}; "
                f"predictions are written as {RENAMED_PREDICTION_COLUMNS[0]!r} and {RENAMED_PREDICTION_COLUMNS[1]!r}."
            ]
        return []

    def write(self, rows: Any, labels: list[str], p_fake: np.ndarray, name: str) -> None:
        label_name, p_name = self.names
        if isinstance(rows, list):  # JSON Lines records
            records = rows
        else:
            records = rows.to_dict(orient="records")
        if self.format == "jsonl":
            for record, label, p in zip(records, labels, p_fake.tolist()):
                record = dict(record)
                record[label_name] = label
                record[p_name] = p
                self.handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            import csv

            if self.fieldnames is None:
                self.fieldnames = list(self.columns or records[0].keys()) + [label_name, p_name]
                self._csv = csv.writer(self.handle, delimiter=_SEPARATORS[self.format], lineterminator="\n")
                self._csv.writerow(self.fieldnames)
            known = set(self.fieldnames)
            for record, label, p in zip(records, labels, p_fake.tolist()):
                extra = [key for key in record if key not in known]
                if extra:
                    raise DataError(
                        f"{name}: row {self.rows + 1} has key(s) {', '.join(map(repr, extra))} that earlier rows lack, "
                        f"so they have no {self.format.upper()} column. Write JSON Lines instead (--output FILE.jsonl)."
                    )
                values = [_cell(record.get(key, "")) for key in self.fieldnames[:-2]]
                self._csv.writerow(values + [label, repr(p)])
                self.rows += 1
            return
        self.rows += len(records)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and np.isnan(value):
        return ""
    return str(value)


# --------------------------------------------------------------------------- the loop


@dataclass
class PredictSummary:
    rows: int
    output: str
    notes: list[str]


def score_stream(
    classifier: Any,
    reader: ReviewReader,
    handle: IO[str],
    output_format: str,
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[int, list[str]]:
    """Score every chunk of ``reader`` and write it to ``handle`` in input order; (rows, notes)."""
    from tqdm.auto import tqdm

    writer = ReviewWriter(handle, output_format, reader.columns)
    notes = writer.choose_names(reader.columns)
    names_chosen = reader.columns is not None
    def p_fake_of(texts: list[str]) -> np.ndarray:
        return classifier.predict_proba(texts, batch_size=batch_size)

    progress = progress and distributed.is_main_process()
    with tqdm(total=reader.total, desc="Scoring reviews", unit="review", disable=not progress, file=sys.stderr) as bar:
        for rows, texts in reader.chunks():
            if not names_chosen:
                columns = list(rows[0].keys()) if isinstance(rows, list) else [str(c) for c in rows.columns]
                notes += writer.choose_names(columns)
                names_chosen = True
            elif isinstance(rows, list) and writer.names == PREDICTION_COLUMNS:
                clash = next((r for r in rows if any(n in r for n in PREDICTION_COLUMNS)), None)
                if clash is not None:
                    raise DataError(
                        f"{reader.name}: a record further down has a key 'label' or 'p_fake', which the predictions "
                        "would overwrite. Rename that key in the input."
                    )
            p_fake = distributed.map_in_shards(p_fake_of, texts)  # one shard per process of a launch
            writer.write(rows, classifier.labels_for(p_fake), p_fake, reader.name)
            bar.update(len(texts))
    return writer.rows, notes


def predict_to_output(
    classifier_factory: Any,
    reader: ReviewReader,
    output: str | None,
    output_format: str,
    *,
    stdout: IO[str] | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> PredictSummary:
    """Check the input, load the model, score; the output file appears only when every row is written."""
    if output not in (None, STDIO) and not Path(output).parent.is_dir():
        raise DataError(f"Cannot write {output}: the folder {Path(output).parent} does not exist.")
    reader.check()
    classifier = classifier_factory()
    batch_size = batch_size or default_batch_size()
    if not distributed.is_main_process():  # scores its shard of each chunk; the main process writes
        with open(os.devnull, "w", encoding="utf-8") as discard:
            rows, notes = score_stream(classifier, reader, discard, output_format, batch_size=batch_size, progress=False)
        return PredictSummary(rows, str(output), notes)
    if output is None or output == STDIO:
        handle = stdout or sys.stdout
        rows, notes = score_stream(classifier, reader, handle, output_format, batch_size=batch_size, progress=progress)
        handle.flush()
        return PredictSummary(rows, "standard output", notes)

    from review_toolkit.runtime.files import atomic_file

    target = Path(output)
    with atomic_file(target, newline="") as handle:
        rows, notes = score_stream(classifier, reader, handle, output_format, batch_size=batch_size, progress=progress)
    return PredictSummary(rows, str(target), notes)


class _TextsReader(ReviewReader):
    """Reviews given on the command line (--text), as rows with one column, ``text``."""

    def __init__(self, texts: list[str]):
        super().__init__(None, "csv", "text", "--text")  # type: ignore[arg-type]
        self.texts = texts
        self.columns = ["text"]

    def check(self) -> int:
        for number, text in enumerate(self.texts, start=1):
            if _is_blank(text):
                raise DataError(f"--text number {number} is empty; give the review's text.")
        self.total = len(self.texts)
        return self.total

    def chunks(self) -> Iterator[tuple[Any, list[str]]]:
        for start in range(0, len(self.texts), CHUNK_ROWS):
            part = self.texts[start : start + CHUNK_ROWS]
            yield [{"text": text} for text in part], part


def texts_reader(texts: list[str]) -> ReviewReader:
    return _TextsReader(texts)
