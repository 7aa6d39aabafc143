"""Reading, checking, labelling and splitting review data.

Everything the rest of the package needs from a data file goes through here:

* :func:`read_table` turns a CSV, TSV, JSON Lines, JSON, Parquet file or a directory saved with
  ``datasets`` into a :class:`pandas.DataFrame`.
* :func:`load_reviews` picks the text and label columns, checks them and maps the labels to
  ``1`` (fake) / ``0`` (real) with :func:`normalise_labels`.
* :func:`load_splits` / :func:`split_reviews` produce the train / validation / test splits.

Every problem the user can fix is raised as :class:`~review_toolkit.errors.DataError` (or
:class:`~review_toolkit.errors.ConfigError` for a bad option) with a message that names the file,
the column, the rows or the values at fault, so that the CLI can print it instead of a traceback.

Row numbers in messages are 1-based *data* row numbers: row 1 is the first review in the file.
For CSV / TSV that is the first row after the header, and messages add the line of the file as a
text editor shows it ("row 5 (line 6 of the file)"), which differs from row + 1 when an earlier
field spans several lines.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import logging
import math
import numbers
import pathlib
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from review_toolkit.errors import ConfigError, DataError

logger = logging.getLogger("review_toolkit.data")  # the name the docs give

__all__ = [
    "FAKE",
    "REAL",
    "LABEL_NAMES",
    "LABEL_ALIASES",
    "SUPPORTED_FORMATS",
    "LeakageWarning",
    "ReviewSplits",
    "default_data_path",
    "read_table",
    "normalise_labels",
    "parse_label_map",
    "load_reviews",
    "split_reviews",
    "load_splits",
    "load_splits_for",
]

LABEL_NAMES: tuple[str, str] = ("real", "fake")  # label id 0 = real, 1 = fake
FAKE, REAL = 1, 0

# Raw label values (after strip + casefold) that need no --label-map. "positive"/"negative" are
# deliberately absent: in review data they usually mean sentiment, not fake/real.
LABEL_ALIASES: dict[str, int] = {
    **dict.fromkeys(
        ["fake", "cg", "computer-generated", "generated", "deceptive", "spam", "1", "true", "yes"],
        FAKE,
    ),
    **dict.fromkeys(
        ["real", "or", "original", "genuine", "truthful", "authentic", "ham", "human", "0", "false", "no"],
        REAL,
    ),
}

# File suffix (lower case) -> reader name. A directory saved by `datasets` has no suffix.
SUPPORTED_FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_FORMATS_HELP = (
    "CSV (.csv), TSV (.tsv, .tab), JSON Lines (.jsonl, .ndjson, .json), "
    "JSON list of records (.json), Parquet (.parquet, .pq) or a directory saved with "
    "datasets' save_to_disk"
)

SPLIT_NAMES: tuple[str, str, str] = ("train", "validation", "test")
_SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.72, 0.08, 0.20)
DEFAULT_SEED = 42  # used when a caller passes seed=None (e.g. no --seed given)
# With separate files (load_splits mode c) the missing splits are carved from the training file.
_CARVED_VALIDATION_FRACTION = 0.10
_CARVED_TEST_FRACTION = 0.20

_MAX_LISTED = 10  # how many rows / values a message lists before "and N more"


class LeakageWarning(UserWarning):
    """The same review text appears in two splits, so evaluation scores will be optimistic."""


# --------------------------------------------------------------------------------------------
# Locating and reading files
# --------------------------------------------------------------------------------------------


def default_data_path() -> pathlib.Path:
    """Return the path of the bundled sample dataset (600 reviews, see ATTRIBUTION.md)."""
    return pathlib.Path(__file__).resolve().parent.parent / "default_data" / "reviews.csv"


def read_table(path: str | pathlib.Path) -> pd.DataFrame:
    """Read a data file or a saved ``datasets`` directory into a DataFrame with a 0-based RangeIndex.

    Text is kept as text: in CSV / TSV every cell is a string (a review reading "NA" stays "NA";
    an empty cell is ""). A ``DatasetDict`` directory is flattened, with a ``split`` column naming
    each row's split. Any problem is raised as :class:`DataError`.
    """
    path = pathlib.Path(path).expanduser()
    if not path.exists():
        raise DataError(f"Data file not found: {path}. Check the path given with --data.")
    if path.is_dir():
        return _read_saved_dataset(path)

    fmt = SUPPORTED_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"Cannot read {path}: unknown file type {path.suffix or '(no extension)'!r}. "
            f"Supported formats: {_FORMATS_HELP}."
        )
    if fmt == "parquet":
        df = _read_parquet(path)
    else:
        text = _read_utf8(path)
        if fmt in ("csv", "tsv"):
            df = _read_delimited(path, text, sep="," if fmt == "csv" else "\t")
        elif fmt == "jsonl":
            df = _records_to_frame(path, _parse_json_lines(path, text))
        else:
            df = _records_to_frame(path, _parse_json_document(path, text))
    return _require_rows(path, df)


def _read_utf8(path: pathlib.Path) -> str:
    """Return the file's text, without a UTF-8 byte-order mark; DataError if empty or not UTF-8."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    if not raw.strip():
        raise DataError(f"{path} is empty: it has no header and no data rows.")
    try:
        text = raw.decode("utf-8")  # plain utf-8 so that the error offset counts from the file start
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path} is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} cannot be decoded. "
            "Save the file as UTF-8 (for example 'CSV UTF-8' in a spreadsheet program, "
            "or `iconv -f latin1 -t utf-8`)."
        ) from None
    # Drop a byte-order mark, which would otherwise glue itself to the first column name
    # ("\ufefftext") and make the text column look missing.
    if text.startswith("\ufeff"):
        logger.info("%s starts with a UTF-8 byte-order mark; it was removed before parsing.", path)
    return text.removeprefix("\ufeff")


def _read_delimited(path: pathlib.Path, text: str, *, sep: str) -> pd.DataFrame:
    """Parse CSV / TSV text with every cell as a string."""
    try:
        # keep_default_na=False: pandas would otherwise turn reviews like "NA", "null" or "n/a"
        # into missing values. Short rows still give NaN, which the column checks report.
        # index_col=False: with extra fields in the first data row pandas would otherwise quietly use
        # the first column as the index and shift every cell; it warns instead, and that is an error.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, index_col=False)
        for warning in caught:
            if issubclass(warning.category, pd.errors.ParserWarning):
                raise DataError(_explain_extra_fields(path, text, sep, len(frame.columns)))
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        return frame
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} has no header and no data rows.") from None
    except (pd.errors.ParserError, ValueError, csv.Error) as exc:
        raise DataError(_explain_csv_error(path, text, sep, str(exc))) from None


def _explain_extra_fields(path: pathlib.Path, text: str, sep: str, n_columns: int) -> str:
    """Message for rows with more fields than the header, found with the csv module."""
    rows = []
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
        next(reader, None)  # header
        data_row = 0
        for record in reader:
            if len(record) <= 1 and not "".join(record).strip():
                continue  # blank line, skipped by pandas too
            data_row += 1
            if len(record) > n_columns:
                rows.append(data_row)
    except csv.Error:
        rows = []
    where = _describe_rows(rows, str(path), text=text, sep=sep) if rows else "a row"
    return (
        f"Cannot parse {path}: {where} has more fields than the header's {n_columns}. A field that contains "
        'the separator must be enclosed in double quotes, with quotes inside it doubled ("").'
    )


def _explain_csv_error(path: pathlib.Path, text: str, sep: str, message: str) -> str:
    """Turn a pandas tokenizer message into one that names the row and the line of the file.

    pandas counts *records* (header = record 1 in "line N", header = row 0 in "row N"), not the
    lines an editor shows, so the line is looked up with the csv module.
    """
    message = message.strip().removeprefix("Error tokenizing data. C error: ")
    quoting_help = (
        "A field that contains the separator, a double quote or a line break must be enclosed in "
        'double quotes, with quotes inside it doubled ("").'
    )
    if m := re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message):
        expected, record, seen = (int(g) for g in m.groups())
        where = _describe_rows([record - 1], str(path), text=text, sep=sep)
        return (
            f"Cannot parse {path}: {where} has {seen} fields but the header has {expected}. "
            + quoting_help
        )
    if m := re.search(r"EOF inside string starting at row (\d+)", message):
        row = int(m.group(1))
        where = _describe_rows([row], str(path), text=text, sep=sep) if row else "the header"
        return (
            f"Cannot parse {path}: a quoted field starting at {where} is never closed "
            "(the file ends inside it). " + quoting_help
        )
    return f"Cannot parse {path} as {'CSV' if sep == ',' else 'TSV'}: {message}. {quoting_help}"


def _parse_json_lines(path: pathlib.Path, text: str) -> list[dict[str, Any]]:
    """Parse JSON Lines: one JSON object per non-blank line."""
    records = []
    # split("\n") rather than splitlines(): U+2028 and friends may legally sit inside JSON strings.
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"Cannot parse {path}: line {line_number} is not valid JSON ({exc.msg} at column {exc.colno}). "
                "JSON Lines files need one complete JSON object per line."
            ) from None
        except (ValueError, RecursionError) as exc:  # a number of thousands of digits, absurd nesting
            raise DataError(f"Cannot parse {path}: line {line_number} cannot be read as JSON ({_first_line(exc)}).") from None
        if not isinstance(record, dict):
            raise DataError(
                f"Cannot parse {path}: line {line_number} is a JSON {_json_type(record)}, "
                'not an object like {"text": "...", "label": "fake"}.'
            )
        records.append(record)
    return records


def _parse_json_document(path: pathlib.Path, text: str) -> list[dict[str, Any]]:
    """Parse a .json file: a list of records, or JSON Lines saved under a .json name."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip().startswith("["):
            raise DataError(
                f"Cannot parse {path}: invalid JSON on line {exc.lineno}, column {exc.colno} ({exc.msg})."
            ) from None
        # "Extra data" after the first object is what JSON Lines looks like to json.loads.
        return _parse_json_lines(path, text)
    except (ValueError, RecursionError) as exc:  # a number of thousands of digits, absurd nesting
        raise DataError(f"Cannot parse {path}: it cannot be read as JSON ({_first_line(exc)}).") from None
    if isinstance(document, dict):
        document = [document]  # a JSON Lines file with a single record
    if not isinstance(document, list):
        raise DataError(
            f"Cannot parse {path}: expected a list of records or JSON Lines, got a JSON {_json_type(document)}."
        )
    for index, record in enumerate(document, start=1):
        if not isinstance(record, dict):
            raise DataError(
                f"Cannot parse {path}: record {index} of the list is a JSON {_json_type(record)}, "
                'not an object like {"text": "...", "label": "fake"}.'
            )
    return document


def _json_type(value: Any) -> str:
    names = {list: "array", dict: "object", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _records_to_frame(path: pathlib.Path, records: list[dict[str, Any]]) -> pd.DataFrame:
    if not records:
        raise DataError(f"{path} contains no records.")
    return pd.DataFrame.from_records(records)


def _read_parquet(path: pathlib.Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises a zoo of types (ArrowInvalid, OSError, ...)
        raise DataError(f"Cannot read {path} as Parquet: {_first_line(exc)}") from None


def _read_saved_dataset(path: pathlib.Path) -> pd.DataFrame:
    """Read a directory written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    markers = ("dataset_dict.json", "dataset_info.json", "state.json")
    if not any((path / marker).is_file() for marker in markers):
        raise DataError(
            f"{path} is a directory but not a dataset saved with datasets' save_to_disk "
            f"(it has none of {', '.join(markers)}). Pass a data file instead; supported formats: "
            f"{_FORMATS_HELP}."
        )
    import datasets  # lazy: importing datasets is slow and only this format needs it

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise DataError(f"Cannot load the saved dataset in {path}: {_first_line(exc)}") from None

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
        return _require_rows(path, pd.concat(frames, ignore_index=True))
    return _require_rows(path, _dataset_to_frame(loaded))


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


def _require_rows(path: pathlib.Path, df: pd.DataFrame) -> pd.DataFrame:
    if len(df) == 0:
        columns = ", ".join(map(str, df.columns)) or "none"
        raise DataError(f"{path} has a header (columns: {columns}) but no data rows.")
    return df.reset_index(drop=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# --------------------------------------------------------------------------------------------
# Describing rows in messages
# --------------------------------------------------------------------------------------------


def _describe_rows(
    rows: Sequence[int], source: str, *, text: str | None = None, sep: str | None = None
) -> str:
    """Return e.g. "rows 3, 7 (lines 4, 8 of the file) and 2 more (4 in all)".

    ``rows`` are 1-based data row numbers. When ``source`` is a CSV / TSV / JSON Lines file the
    matching lines of the file are added, since that is what an editor shows.
    """
    rows = list(rows)
    shown = rows[:_MAX_LISTED]
    noun = "row" if len(rows) == 1 else "rows"
    result = f"{noun} {', '.join(map(str, shown))}"
    lines = _lines_of_rows(shown, source, text=text, sep=sep)
    if lines:
        line_noun = "line" if len(shown) == 1 else "lines"
        result += f" ({line_noun} {', '.join(map(str, lines))} of the file)"
    else:
        result += " (counting records from 1)"
    if len(rows) > len(shown):
        result += f" and {len(rows) - len(shown)} more ({len(rows)} in all)"
    return result


def _lines_of_rows(
    rows: Sequence[int], source: str, *, text: str | None = None, sep: str | None = None
) -> list[int] | None:
    """Map 1-based data rows to 1-based file lines, or None when that is unknown or not applicable.

    Only done when a message is built, so reading the file a second time costs nothing normally.
    """
    if not rows:
        return None
    path = pathlib.Path(source)
    fmt = SUPPORTED_FORMATS.get(path.suffix.lower())
    if fmt not in ("csv", "tsv", "jsonl"):
        return None
    try:
        if text is None:
            text = path.read_bytes().decode("utf-8").removeprefix("\ufeff")
        if fmt == "jsonl":
            starts = [n for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
            starts.insert(0, 0)  # no header: data row 1 is the first non-blank line
        else:
            starts = _record_start_lines(text, sep or ("," if fmt == "csv" else "\t"), max(rows))
        return [starts[row] for row in rows]
    except (OSError, UnicodeDecodeError, csv.Error, IndexError):
        return None


def _record_start_lines(text: str, sep: str, last_row: int) -> list[int]:
    """Start line of each CSV record (index 0 = header), skipping blank lines as pandas does."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    starts: list[int] = []
    previous_end = 0
    for record in reader:
        blank = len(record) <= 1 and not "".join(record).strip()  # pandas skips blank lines
        if not blank:
            starts.append(previous_end + 1)
            if len(starts) > last_row:
                break
        previous_end = reader.line_num
    return starts


def _first_rows(mask: pd.Series | np.ndarray) -> list[int]:
    """1-based positions where ``mask`` is true."""
    return [int(i) + 1 for i in np.flatnonzero(np.asarray(mask, dtype=bool))]


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


def parse_label_map(text: str | None) -> dict[str, str] | None:
    """Parse ``--label-map`` text such as ``"CG=fake,OR=real"`` into ``{"CG": "fake", "OR": "real"}``.

    Returns None for None or blank text. Values must be ``fake`` or ``real`` (any case).
    """
    if text is None or not text.strip():
        return None
    result: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        raw, equals, target = item.rpartition("=")  # rpartition: a raw value may contain "="
        raw, target = raw.strip(), target.strip().lower()
        if not equals or not raw:
            raise ConfigError(
                f"--label-map: {item!r} is not VALUE=fake or VALUE=real "
                "(expected e.g. --label-map 'CG=fake,OR=real')."
            )
        if target not in LABEL_NAMES:
            raise ConfigError(
                f"--label-map: {item!r} maps {raw!r} to {target!r}; the target must be 'fake' or 'real'."
            )
        if result.get(raw, target) != target:
            raise ConfigError(f"--label-map: {raw!r} is mapped to both 'fake' and 'real'.")
        result[raw] = target
    return result or None


def normalise_labels(
    values: pd.Series,
    label_map: Mapping[str, str] | None,
    *,
    source: str,
    label_column: str,
) -> pd.Series:
    """Map raw labels to ``1`` (fake) / ``0`` (real) and return them as an int64 Series.

    Without ``label_map`` the known aliases in :data:`LABEL_ALIASES` are accepted, case-insensitive
    and whitespace-stripped; ints, floats and bools work too (1 / 1.0 / True = fake). A
    ``label_map`` ({"raw value": "fake" | "real"}) replaces the aliases entirely.

    ``values`` must be the label column as read (all rows, in file order): row numbers in messages
    are positions in it, counted from 1. ``source`` (the file) and ``label_column`` are for messages.
    Raises :class:`DataError` for missing labels, unknown values or a single class.
    """
    mapping = _resolve_label_map(label_map) if label_map is not None else LABEL_ALIASES
    keys = pd.Series([_label_key(v) for v in values], index=values.index, dtype=object)

    missing = keys.isna().to_numpy()
    if missing.any():
        raise DataError(
            f"{source}: column {label_column!r} has no label in {_describe_rows(_first_rows(missing), source)}. "
            "Every review needs a label (fake or real): fill them in or remove those rows."
        )

    ids = keys.map(mapping)
    unknown = ids.isna().to_numpy()
    if unknown.any():
        raise DataError(_unknown_labels_message(values, keys, unknown, label_map, source, label_column))

    ids = ids.astype("int64").rename("label")
    _require_both_classes(ids, source, label_column, label_map)
    return ids


_MISSING_LABELS = frozenset({"", "nan", "na", "n/a", "null", "none", "<na>"})


def _label_key(value: Any) -> str | None:
    """Canonical lookup key for a raw label: stripped, casefolded, 1.0 -> "1"; None if missing."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        if math.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else str(value)
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    key = str(value).strip().casefold()
    if key in _MISSING_LABELS:  # empty, or a missing value spelled out by a spreadsheet or pandas
        return None
    # "1.0" / "0.0" appear when a 0/1 column went through a float dtype on the way.
    if re.fullmatch(r"[+-]?\d+\.0*", key):
        key = str(int(float(key)))
    return key


def _resolve_label_map(label_map: Mapping[str, str]) -> dict[str, int]:
    """Turn {"CG": "fake", ...} into {"cg": 1, ...}, validating the targets."""
    resolved: dict[str, int] = {}
    for raw, target in label_map.items():
        key = _label_key(raw)
        name = str(target).strip().lower()
        if key is None or name not in LABEL_NAMES:
            raise ConfigError(
                f"--label-map: {raw!r}={target!r} is invalid; use VALUE=fake or VALUE=real "
                "with a non-empty VALUE."
            )
        label_id = LABEL_NAMES.index(name)
        if resolved.get(key, label_id) != label_id:
            raise ConfigError(f"--label-map: {raw!r} (ignoring case) is mapped to both 'fake' and 'real'.")
        resolved[key] = label_id
    if not resolved:
        raise ConfigError("--label-map is empty; give at least VALUE=fake and OTHER=real.")
    return resolved


def _unknown_labels_message(
    values: pd.Series,
    keys: pd.Series,
    unknown: np.ndarray,
    label_map: Mapping[str, str] | None,
    source: str,
    label_column: str,
) -> str:
    # Distinct unknown keys in order of first appearance: first position and count of each.
    first_position: dict[str, int] = {}
    counts: dict[str, int] = {}
    for position in np.flatnonzero(unknown):
        key = keys.iloc[position]
        first_position.setdefault(key, int(position))
        counts[key] = counts.get(key, 0) + 1
    shown = list(first_position.items())[:_MAX_LISTED]
    lines = _lines_of_rows([position + 1 for _, position in shown], source)  # one scan of the file
    listed = []
    for i, (key, position) in enumerate(shown):
        where = f"row {position + 1}" + (f" (line {lines[i]} of the file)" if lines else "")
        rows = "1 row" if counts[key] == 1 else f"{counts[key]} rows"
        listed.append(f"{values.iloc[position]!r} in {rows}, first {where}")
    hidden = len(first_position) - len(listed)
    more = f" and {hidden} more" if hidden else ""
    if label_map is None:
        known = ", ".join(k for k, v in LABEL_ALIASES.items() if v == FAKE)
        known_real = ", ".join(k for k, v in LABEL_ALIASES.items() if v == REAL)
        accepted = f"Known labels (any case): fake = {known}; real = {known_real}."
    else:
        accepted = (
            f"The label map given ({', '.join(f'{k}={v}' for k, v in label_map.items())}) is the only "
            "mapping used, so it must name every value."
        )
    distinct = list(dict.fromkeys(keys.dropna()))
    mapping = _resolve_label_map(label_map) if label_map is not None else LABEL_ALIASES
    n_classes = len({mapping[key] for key in distinct if key in mapping}) + len(first_position)
    if n_classes > 2:  # more classes than fake and real: say that the toolkit is binary
        shown_values = ", ".join(repr(value) for value in distinct[:_MAX_LISTED])
        shown_values += f" and {len(distinct) - _MAX_LISTED} more" if len(distinct) > _MAX_LISTED else ""
        return (
            f"{source}: column {label_column!r} has {len(distinct)} different labels ({shown_values}), but "
            "review_toolkit trains binary fake-vs-real classifiers only. Not fake or real: "
            f"{'; '.join(listed)}{more}. {accepted} Map every value to fake or real with "
            "--label-map 'VALUE=fake,OTHER=real' (one VALUE=fake|real per value; label_map={...} in Python), "
            "or remove the rows of the other classes."
        )
    return (
        f"{source}: column {label_column!r} has labels that are neither fake nor real: "
        f"{'; '.join(listed)}{more}. {accepted} Say what each value means with "
        "--label-map 'VALUE=fake,OTHER=real' (label_map={'VALUE': 'fake', 'OTHER': 'real'} in Python)."
    )


def _require_both_classes(
    label_ids: pd.Series, source: str, label_column: str, label_map: Mapping[str, str] | None = None
) -> None:
    n_fake = int((label_ids == FAKE).sum())
    n_real = int((label_ids == REAL).sum())
    if n_fake and n_real:
        return
    hint = " Check the --label-map given." if label_map is not None else ""
    raise DataError(
        f"{source}: column {label_column!r} has only one class ({n_fake} fake, {n_real} real). "
        f"Both fake and real examples are needed to train and evaluate a classifier.{hint}"
    )


# --------------------------------------------------------------------------------------------
# Loading reviews
# --------------------------------------------------------------------------------------------


def load_reviews(
    path: str | pathlib.Path | None = None,
    *,
    text_column: str = "text",
    label_column: str = "label",
    label_map: Mapping[str, str] | str | None = None,
    split_column: str | None = None,
) -> pd.DataFrame:
    """Load a review file as a DataFrame with columns ``text`` (str), ``label`` (0 real / 1 fake)
    and ``row`` (1-based data row in the file, for messages).

    ``path`` None means the bundled default dataset. ``label_map`` may be a dict or the
    ``--label-map`` text. With ``split_column`` the result also has a ``split`` column holding
    ``train`` / ``validation`` / ``test`` (aliases val, valid, dev accepted) — see :func:`load_splits`.
    """
    path, source = _resolve_path(path)
    if isinstance(label_map, str):
        label_map = parse_label_map(label_map)
    if text_column == label_column:
        raise ConfigError(f"The text column and the label column are both {text_column!r}; they must differ.")

    table = read_table(path)
    wanted = {"text_column": text_column, "label_column": label_column, "split_column": split_column}
    for option, column in wanted.items():
        if column:
            _require_column(table, column, source, option)

    result = pd.DataFrame(
        {
            "text": _clean_texts(table[text_column], source, text_column),
            "label": normalise_labels(table[label_column], label_map, source=source, label_column=label_column),
            "row": np.arange(1, len(table) + 1, dtype="int64"),
        }
    )
    if split_column:
        result["split"] = _normalise_split_names(table[split_column], source, split_column)
    result.attrs["source"] = source  # lets split_reviews name the file in its messages
    return result


def _resolve_path(path: str | pathlib.Path | None) -> tuple[pathlib.Path, str]:
    """Return the path to read and how messages name it."""
    if path is None:
        return default_data_path(), str(default_data_path())
    path = pathlib.Path(path).expanduser()
    return path, str(path)


def _describe_source(path: str | pathlib.Path | None) -> str:
    """Name of a data source for ReviewSplits.source and run records."""
    return f"bundled default ({default_data_path()})" if path is None else str(pathlib.Path(path).expanduser())


def _require_column(table: pd.DataFrame, column: str, source: str, option: str) -> None:
    if column in table.columns:
        return
    found = [str(c) for c in table.columns]
    message = f"{source} has no column {column!r}. Columns found: {', '.join(map(repr, found))}."
    if len(found) == 1 and any(sep in found[0] for sep in ",;\t|"):
        message += " Only one column was found: the file may use a different separator than its extension says."
    elif close := _closest_column(column, found):
        message += f" Did you mean {close!r}?"
    message += f" Name the right column with {option}= (--{option.replace('_', '-')} on the command line)."
    raise DataError(message)


def _closest_column(column: str, found: list[str]) -> str | None:
    """The column the user probably meant: same name in another case, else the closest spelling."""
    by_case = {c.casefold(): c for c in found}
    if column.casefold() in by_case:
        return by_case[column.casefold()]
    close = difflib.get_close_matches(column.casefold(), list(by_case), n=1, cutoff=0.5)
    return by_case[close[0]] if close else None


def _clean_texts(texts: pd.Series, source: str, text_column: str) -> pd.Series:
    """Check that every review has text; convert non-strings (e.g. JSON numbers) with str()."""
    empty = np.array([_is_blank(value) for value in texts], dtype=bool)
    if empty.any():
        raise DataError(
            f"{source}: column {text_column!r} is empty or missing in {_describe_rows(_first_rows(empty), source)}. "
            "Remove these rows or fill in their text."
        )
    cleaned = pd.Series([v if isinstance(v, str) else str(v) for v in texts], dtype=object, index=texts.index)
    long = np.array([len(text) > _LONG_REVIEW_CHARACTERS for text in cleaned], dtype=bool)
    if long.any():
        # Not an error: every backbone truncates to its maximum number of tokens, so only the start
        # of such a review is used. Worth a word, as it can also mean an unclosed quote upstream.
        logger.warning(
            "%s: column %r has %d review(s) over %d characters (longest: %d, in %s); only their first "
            "tokens, up to the backbone's maximum length, are used.",
            source,
            text_column,
            int(long.sum()),
            _LONG_REVIEW_CHARACTERS,
            max(len(text) for text in cleaned),
            _describe_rows(_first_rows(long), source),
        )
    return cleaned


_LONG_REVIEW_CHARACTERS = 100_000


def _is_blank(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def _normalise_split_names(values: pd.Series, source: str, split_column: str) -> pd.Series:
    keys = pd.Series([("" if _is_blank(v) else str(v).strip().casefold()) for v in values], dtype=object)
    names = keys.map(_SPLIT_ALIASES)
    unknown = names.isna().to_numpy()
    if unknown.any():
        listed = []
        distinct = keys[unknown].drop_duplicates()
        for position, key in list(distinct.items())[:_MAX_LISTED]:
            shown = repr(values.iloc[position]) if key else "(empty)"
            listed.append(f"{shown} first in {_describe_rows([position + 1], source)}")
        raise DataError(
            f"{source}: column {split_column!r} has values that are not a split name: {'; '.join(listed)}. "
            "Use train, validation (or val, valid, dev) and test."
        )
    return names.astype(object).set_axis(values.index)


# --------------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------------


@dataclass
class ReviewSplits:
    """Train / validation / test DataFrames, each with columns ``text``, ``label`` and ``row``."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    source: str  # the file path, or "bundled default (<path>)", or one entry per file
    method: str = field(default="")  # how the splits were made, for run records

    def sizes(self) -> dict[str, int]:
        """Number of reviews in each split."""
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def split_reviews(
    df: pd.DataFrame,
    *,
    seed: int | None = DEFAULT_SEED,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> ReviewSplits:
    """Split reviews (as from :func:`load_reviews`) into train / validation / test, stratified by label.

    Deterministic for a given ``seed``. The test part is taken first, then validation from the rest,
    so that (0.72, 0.08, 0.20) of 600 rows gives 432 / 48 / 120.
    """
    f_train, f_val, f_test = _check_fractions(fractions)
    seed = DEFAULT_SEED if seed is None else seed
    source = str(df.attrs.get("source", "the data"))
    df = _review_columns(df)
    try:
        rest, test = _carve(df, f_test, seed, part="test", source=source)
        train, validation = _carve(rest, f_val / (f_train + f_val), seed, part="validation", source=source)
    except DataError:
        # Re-word in terms of the whole data set, which is what the user knows.
        raise DataError(
            f"{source}: the data is too small for a stratified {f_train:.0%}/{f_val:.0%}/{f_test:.0%} "
            f"train/validation/test split with both classes in every split: it has {len(df)} reviews "
            f"({_class_counts(df)}), so validation would get about {len(df) * f_val:.0f} and test about "
            f"{len(df) * f_test:.0f}. Use more data or give the splits as separate files."
        ) from None
    return ReviewSplits(
        train=train,
        validation=validation,
        test=test,
        source=source,
        method=f"random stratified split {f_train:.0%}/{f_val:.0%}/{f_test:.0%} (seed {seed})",
    )


def _check_fractions(fractions: Iterable[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or any(not 0 < f < 1 for f in values) or not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise ConfigError(
            f"Split fractions must be three numbers between 0 and 1 (train, validation, test) "
            f"that add up to 1; got {fractions!r}."
        )
    return values  # type: ignore[return-value]


def _review_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Keep text, label and row (added as 1..n if absent), with a fresh index."""
    missing = [c for c in ("text", "label") if c not in df.columns]
    if missing:
        raise DataError(
            f"Cannot split reviews: column(s) {', '.join(missing)} missing; expected the output of "
            f"load_reviews (columns found: {', '.join(map(str, df.columns))})."
        )
    out = df[["text", "label"]].copy()
    out["row"] = df["row"].to_numpy() if "row" in df.columns else np.arange(1, len(df) + 1)
    return out.reset_index(drop=True)


def _carve(
    df: pd.DataFrame, fraction: float, seed: int, *, part: str, source: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``fraction`` of ``df`` off as ``part``, stratified by label; both halves keep both classes."""
    counts = _class_counts(df)
    too_small = DataError(
        f"{source}: too few reviews to carve a {part} split of {fraction:.0%} with both classes in "
        f"every split: {len(df)} reviews to split ({counts}). Each of train, validation and test needs "
        "fake and real examples; use more data or give the splits as separate files."
    )
    try:
        rest, carved = train_test_split(df, test_size=fraction, stratify=df["label"], random_state=seed)
    except ValueError:  # sklearn: "least populated class has only 1 member" and the like
        raise too_small from None
    if rest["label"].nunique() < 2 or carved["label"].nunique() < 2:
        raise too_small
    return rest.reset_index(drop=True), carved.reset_index(drop=True)


def _class_counts(df: pd.DataFrame) -> str:
    return f"{int((df['label'] == FAKE).sum())} fake, {int((df['label'] == REAL).sum())} real"


def load_splits(
    data: str | pathlib.Path | None = None,
    *,
    text_column: str = "text",
    label_column: str = "label",
    label_map: Mapping[str, str] | str | None = None,
    seed: int | None = DEFAULT_SEED,
    split_column: str | None = None,
    validation_data: str | pathlib.Path | None = None,
    test_data: str | pathlib.Path | None = None,
) -> ReviewSplits:
    """Load reviews and return train / validation / test splits.

    Three ways, by the arguments given:

    a. ``data`` only (None = bundled default): random stratified 72 / 8 / 20 split.
    b. ``split_column``: that column of ``data`` says train / validation / test for each row. A
       missing validation split is carved from train (8/80 of it); a missing test split is an error.
    c. ``validation_data`` and/or ``test_data``: separate files; ``data`` is the training file and
       a missing split is carved from it (test 20 %, then validation 10 % of what remains).

    Texts found in two splits trigger a :class:`LeakageWarning`.
    """
    seed = DEFAULT_SEED if seed is None else seed  # None: no seed given, keep splits reproducible
    if isinstance(label_map, str):
        label_map = parse_label_map(label_map)
    if split_column and (validation_data is not None or test_data is not None):
        raise ConfigError(
            "Give either a split column or separate validation/test files, not both."
        )
    columns = dict(text_column=text_column, label_column=label_column, label_map=label_map)
    data_source = _resolve_path(data)[1]

    if split_column:
        splits = _splits_from_column(data, split_column, seed, columns)
        split_sources = dict.fromkeys(SPLIT_NAMES, data_source)
    elif validation_data is not None or test_data is not None:
        splits, split_sources = _splits_from_files(data, validation_data, test_data, seed, columns)
    else:
        reviews = load_reviews(data, **columns)
        splits = split_reviews(reviews, seed=seed)
        splits.source = _describe_source(data)
        split_sources = dict.fromkeys(SPLIT_NAMES, data_source)

    _warn_about_leakage(splits, split_sources)
    return splits


def _splits_from_column(
    data: str | pathlib.Path | None, split_column: str, seed: int, columns: dict[str, Any]
) -> ReviewSplits:
    reviews = load_reviews(data, split_column=split_column, **columns)
    source = _resolve_path(data)[1]
    parts = {name: _review_columns(reviews[reviews["split"] == name]) for name in SPLIT_NAMES}
    found = ", ".join(f"{name} ({len(part)})" for name, part in parts.items() if len(part)) or "none"

    for needed in ("train", "test"):
        if parts[needed].empty:
            raise DataError(
                f"{source}: no row has {needed!r} in column {split_column!r} (found: {found}). "
                "Mark the rows to use as test data with 'test' and the training rows with 'train'."
            )
    method = f"split column {split_column!r}"
    if parts["validation"].empty:
        # 8/80: the same validation share of train+validation as the default 72/8/20 split.
        parts["train"], parts["validation"] = _carve(
            parts["train"], 0.08 / 0.80, seed, part="validation", source=f"{source} (train split)"
        )
        method += f"; validation carved from train (10%, seed {seed})"
    for name, part in parts.items():
        _require_both_classes(part["label"], f"{source} ({name} split)", columns["label_column"])
    return ReviewSplits(**parts, source=_describe_source(data), method=method)


def _splits_from_files(
    data: str | pathlib.Path | None,
    validation_data: str | pathlib.Path | None,
    test_data: str | pathlib.Path | None,
    seed: int,
    columns: dict[str, Any],
) -> tuple[ReviewSplits, dict[str, str]]:
    for option, path in (("--validation-data", validation_data), ("--test-data", test_data)):
        if path is not None and not _resolve_path(path)[0].exists():
            raise DataError(f"Data file not found: {_resolve_path(path)[1]}. Check the path given with {option}.")
    train_source = _resolve_path(data)[1]
    train = _review_columns(load_reviews(data, **columns))
    carved_from = f"{train_source} (training file)"
    method = []

    # Test first, from the whole training file, so "20 %" means 20 % of that file.
    if test_data is not None:
        test = _review_columns(load_reviews(test_data, **columns))
    else:
        train, test = _carve(train, _CARVED_TEST_FRACTION, seed, part="test", source=carved_from)
        method.append(f"test carved from the training file ({_CARVED_TEST_FRACTION:.0%}, seed {seed})")
    if validation_data is not None:
        validation = _review_columns(load_reviews(validation_data, **columns))
    else:
        train, validation = _carve(train, _CARVED_VALIDATION_FRACTION, seed, part="validation", source=carved_from)
        method.append(f"validation carved from train ({_CARVED_VALIDATION_FRACTION:.0%}, seed {seed})")

    sources = {
        "train": train_source,
        "validation": _resolve_path(validation_data)[1] if validation_data is not None else train_source,
        "test": _resolve_path(test_data)[1] if test_data is not None else train_source,
    }
    description = "; ".join(
        [f"train: {_describe_source(data)}"]
        + [f"{name}: {sources[name]}" for name in ("validation", "test") if sources[name] != train_source]
    )
    splits = ReviewSplits(
        train=train,
        validation=validation,
        test=test,
        source=description,
        method="separate files" + (f"; {'; '.join(method)}" if method else ""),
    )
    return splits, sources


def _warn_about_leakage(splits: ReviewSplits, sources: Mapping[str, str]) -> None:
    """Warn when a text (compared after strip) is in two splits: the later split's scores would be
    inflated by examples the model has effectively seen."""
    frames = {"train": splits.train, "validation": splits.validation, "test": splits.test}
    for earlier, later in (("train", "validation"), ("train", "test"), ("validation", "test")):
        seen: dict[str, int] = {}
        for text, row in zip(frames[earlier]["text"].str.strip(), frames[earlier]["row"]):
            seen.setdefault(text, int(row))  # name the first occurrence
        later_texts = frames[later]["text"].str.strip()
        leaked = later_texts.isin(seen.keys()).to_numpy()
        count = int(leaked.sum())
        if not count:
            continue
        first = int(np.flatnonzero(leaked)[0])
        text = later_texts.iloc[first]
        snippet = text if len(text) <= 60 else text[:57] + "..."
        verb = "text of the" if count == 1 else "texts of the"
        appear = "appears" if count == 1 else "appear"
        warnings.warn(
            f"{count} {verb} {later} split also {appear} in {earlier} (leakage: {later} scores will be "
            f"optimistic); first: row {frames[later]['row'].iloc[first]} of {sources[later]} is the same "
            f"text as row {seen[text]} of {sources[earlier]}: {snippet!r}. Remove the duplicates.",
            LeakageWarning,
            stacklevel=3,
        )


def load_splits_for(config: Any) -> ReviewSplits:
    """The splits a training configuration (``TrainConfig`` or a run's config) describes."""
    return load_splits(
        config.data,
        text_column=config.text_column,
        label_column=config.label_column,
        label_map=config.label_map,
        seed=config.seed,
        split_column=config.split_column,
        validation_data=config.validation_data,
        test_data=config.test_data,
    )
