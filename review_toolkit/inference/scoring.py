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
