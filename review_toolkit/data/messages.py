"""Pieces of messages about data: which rows, which lines of the file, which value.

Row numbers are 1-based *data* row numbers: row 1 is the first review in the file. For CSV / TSV
that is the first row after the header, and messages add the line of the file as a text editor
shows it ("row 5 (line 6 of the file)"), which differs from row + 1 when an earlier field spans
several lines. Which lines those are depends on the format: ``formats.describe_rows`` looks
them up.
"""

from __future__ import annotations

import csv
import difflib
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

MAX_LISTED = 10  # how many rows / values a message lists before "and N more"


def format_rows(rows: Sequence[int], lines: Sequence[int] | None = None) -> str:
    """Return e.g. "rows 3, 7 (lines 4, 8 of the file) and 2 more (4 in all)".

    ``rows`` are 1-based data row numbers; ``lines`` the file lines of the first ``MAX_LISTED`` of
    them, or None where the format has no lines to show (Parquet, a stream already consumed).
    """
    rows = list(rows)
    shown = rows[:MAX_LISTED]
    noun = "row" if len(rows) == 1 else "rows"
    result = f"{noun} {', '.join(map(str, shown))}"
    if lines:
        line_noun = "line" if len(shown) == 1 else "lines"
        result += f" ({line_noun} {', '.join(map(str, lines[: len(shown)]))} of the file)"
    else:
        result += " (counting records from 1)"
    if len(rows) > len(shown):
        result += f" and {len(rows) - len(shown)} more ({len(rows)} in all)"
    return result


def delimited_record_starts(text: str, sep: str, last_row: int) -> list[int]:
    """Start line of each CSV / TSV record (index 0 = header), skipping blank lines as pandas does."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    lines = text.split("\n")
    starts: list[int] = []
    previous_end = 0
    for record in reader:
        # pandas skips blank lines, but not a quoted empty field ("") alone on its line.
        quoted = '"' in "".join(lines[previous_end : reader.line_num])
        blank = len(record) <= 1 and not "".join(record).strip() and not quoted
        if not blank:
            starts.append(previous_end + 1)
            if len(starts) > last_row:
                break
        previous_end = reader.line_num
    return starts


def json_line_starts(text: str, last_row: int) -> list[int]:
    """Line of each non-blank line's record: JSON Lines, plain lines (index 0 = the header they lack)."""
    # split("\n") rather than splitlines(): U+2028 and friends may legally sit inside JSON strings.
    starts = [0]
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            starts.append(number)
            if len(starts) > last_row:
                break
    return starts


def first_rows(mask: pd.Series | np.ndarray) -> list[int]:
    """1-based positions where ``mask`` is true."""
    return [int(i) + 1 for i in np.flatnonzero(np.asarray(mask, dtype=bool))]


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def json_type(value: Any) -> str:
    names = {list: "array", dict: "object", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def is_blank(value: Any) -> bool:
    """No review text: empty or whitespace, None, a missing value."""
    if isinstance(value, str):
        return not value.strip()
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def closest_column(column: str, found: list[str]) -> str | None:
    """The column the user probably meant: same name in another case, else the closest spelling."""
    by_case = {c.casefold(): c for c in found}
    if column.casefold() in by_case:
        return by_case[column.casefold()]
    close = difflib.get_close_matches(column.casefold(), list(by_case), n=1, cutoff=0.5)
    return by_case[close[0]] if close else None


def missing_column_message(column: str, found: list[str], source: str) -> str:
    """``source`` has no ``column``: the columns it has, and the one probably meant."""
    message = f"{source} has no column {column!r}. Columns found: {', '.join(map(repr, found))}."
    if len(found) == 1 and any(sep in found[0] for sep in ",;\t|"):
        message += " Only one column was found: the file may use a different separator than its extension says."
    elif close := closest_column(column, found):
        message += f" Did you mean {close!r}?"
    return message
