"""Scoring files of reviews in constant memory: read a chunk, score it, write it, in input order.

The readers of :mod:`review_toolkit.data.streams` yield chunks of rows and the
writer appends each scored chunk, so memory holds one chunk plus the model
whatever the size of the input.

Output goes to ``.NAME.PID.partial`` beside the target and is renamed at the
end: a failure or Ctrl-C leaves no half-written file (and an existing file of
that name untouched).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from review_toolkit.data.streams import STDIO, ReviewReader
from review_toolkit.errors import DataError
from review_toolkit.runtime import distributed
from review_toolkit.runtime.os_errors import require_writable_location

_SEPARATORS = {"csv": ",", "tsv": "\t"}


def return_freed_memory_promptly() -> None:
    """Make glibc hand large freed blocks back to the system at once (process-wide; for the CLI).

    Batches of reviews have ever-changing lengths, so every forward pass asks for tensors of new
    sizes; glibc's heap keeps what they free and fragments, and RSS creeps up chunk after chunk.
    Blocks of 4 MiB and more (the attention scores of a batch) served by mmap are returned when
    freed: RSS stays flat for a little more time; a lower threshold saves a little more memory
    for much more time (benchmarks/README.md, "Memory of predict on a CPU"). A no-op where libc
    has no mallopt.
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
    attention of a batch of long reviews costs far more memory (benchmarks/README.md, "Memory of
    predict on a CPU")."""
    import torch

    return 64 if torch.cuda.is_available() else 16
PREDICTION_COLUMNS = ("label", "p_fake")
RENAMED_PREDICTION_COLUMNS = ("predicted_label", "predicted_p_fake")


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

    def choose_names(self, columns: list[str] | None, name: str) -> list[str]:
        """Prediction columns that no input column has: ``label`` and ``p_fake``, else ``predicted_*``.

        ``columns`` are every column (every key) of the input when known beforehand, else those of
        the first chunk; ``write`` refuses any later record that has a chosen name, so no input
        field is ever overwritten.
        """
        taken = set(columns or ())
        for names in (PREDICTION_COLUMNS, RENAMED_PREDICTION_COLUMNS):
            if not taken & set(names):
                self.names = names
                break
        else:
            clashing = ", ".join(repr(n) for n in PREDICTION_COLUMNS + RENAMED_PREDICTION_COLUMNS if n in taken)
            raise DataError(
                f"{name} already has the columns {clashing}, so predictions have no name to go under without "
                "overwriting one. Rename or drop 'label'/'p_fake' or 'predicted_label'/'predicted_p_fake' in the input."
            )
        if self.names == PREDICTION_COLUMNS:
            return []
        clash = " or ".join(repr(n) for n in PREDICTION_COLUMNS if n in taken)
        return [
            f"The input already has a column named {clash}; predictions are written as "
            f"{RENAMED_PREDICTION_COLUMNS[0]!r} and {RENAMED_PREDICTION_COLUMNS[1]!r}."
        ]

    def write(
        self, rows: Any, labels: list[str], p_fake: np.ndarray, name: str, lines: list[int] | None = None
    ) -> None:
        """Append scored rows; ``lines`` are the input's line numbers of JSON Lines records (for messages)."""
        label_name, p_name = self.names
        if isinstance(rows, list):  # JSON Lines records
            records = rows
            for index, record in enumerate(records):
                taken = [key for key in (label_name, p_name) if key in record]
                if taken:
                    where = f"line {lines[index]}" if lines else f"record {self.rows + index + 1}"
                    raise DataError(
                        f"{name}: {where} has the key {taken[0]!r}, which the predictions are written under "
                        "(names chosen from the keys of the first records, which lack it). Nothing is overwritten: "
                        "rename that key, or give the input as a file (--input FILE), whose keys are all read "
                        "before the names are chosen."
                    )
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
    names_chosen = reader.columns is not None
    notes = writer.choose_names(reader.columns, reader.name) if names_chosen else []
    def p_fake_of(texts: list[str]) -> np.ndarray:
        return classifier.predict_proba(texts, batch_size=batch_size)

    progress = progress and distributed.is_main_process()
    with tqdm(total=reader.total, desc="Scoring reviews", unit="review", disable=not progress, file=sys.stderr) as bar:
        for rows, texts in reader.chunks():
            if not names_chosen:  # standard input: every key of the first chunk
                if isinstance(rows, list):
                    columns = list(dict.fromkeys(key for record in rows for key in record))
                else:
                    columns = [str(c) for c in rows.columns]
                notes += writer.choose_names(columns, reader.name)
                names_chosen = True
            p_fake = distributed.map_in_shards(p_fake_of, texts)  # one shard per process of a launch
            writer.write(rows, classifier.labels_for(p_fake), p_fake, reader.name, reader.chunk_lines)
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
    overwrite: bool = False,
) -> PredictSummary:
    """Check the input, load the model, score; the output file appears only when every row is written.

    An existing ``output`` is replaced only with ``overwrite``.
    """
    if output not in (None, STDIO):
        target = Path(output)
        if target.parent.exists() and not target.parent.is_dir():
            raise DataError(f"Cannot write --output {output}: {target.parent} is a file, not a folder. Choose another --output.")
        if not target.parent.is_dir():
            raise DataError(f"Cannot write {output}: the folder {target.parent} does not exist.")
        if target.is_dir():
            raise DataError(f"Cannot write --output {output}: it is a folder. Give a file name, e.g. {target / 'scored.csv'}.")
        require_writable_location(target, "--output")
    reader.check()  # the input's own problems first: they are what needs fixing
    if output not in (None, STDIO) and (Path(output).exists() or Path(output).is_symlink()) and not overwrite:
        raise DataError(f"{output} already exists. Pass --overwrite to replace it, or choose another --output.")
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
