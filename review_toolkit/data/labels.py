"""Labels: the two classes, the raw values that mean each, and ``--label-map``.

Label id 1 is fake and 0 is real (:data:`LABEL_NAMES` gives the names by id). Raw labels are
mapped with the aliases of :data:`LABEL_ALIASES` or, when given, a label map that replaces them.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from review_toolkit.data.formats import describe_rows, lines_of_rows
from review_toolkit.data.messages import MAX_LISTED, first_rows
from review_toolkit.errors import ConfigError, DataError

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
            f"{source}: column {label_column!r} has no label in {describe_rows(first_rows(missing), source)}. "
            "Every review needs a label (fake or real): fill them in or remove those rows."
        )

    ids = keys.map(mapping)
    unknown = ids.isna().to_numpy()
    if unknown.any():
        raise DataError(_unknown_labels_message(values, keys, unknown, label_map, source, label_column))

    ids = ids.astype("int64").rename("label")
    require_both_classes(ids, source, label_column, label_map)
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
    shown = list(first_position.items())[:MAX_LISTED]
    lines = lines_of_rows([position + 1 for _, position in shown], source)  # one scan of the file
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
        shown_values = ", ".join(repr(value) for value in distinct[:MAX_LISTED])
        shown_values += f" and {len(distinct) - MAX_LISTED} more" if len(distinct) > MAX_LISTED else ""
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


def require_both_classes(
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


