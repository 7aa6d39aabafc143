"""Loading labelled reviews: the text and label columns of a file, checked, and their splits.

* :func:`load_reviews` picks the text and label columns of a file (read with
  :func:`~review_toolkit.data.formats.read_table`), checks them and maps the labels to ``1``
  (fake) / ``0`` (real) with :func:`~review_toolkit.data.labels.normalise_labels`.
* :func:`load_splits` / :func:`load_splits_for` produce the train / validation / test splits.

Every problem the user can fix is raised as :class:`~review_toolkit.errors.DataError` (or
:class:`~review_toolkit.errors.ConfigError` for a bad option) with a message that names the file,
the column, the rows or the values at fault, so that the CLI can print it instead of a traceback.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from review_toolkit.data.formats import describe_rows, read_table
from review_toolkit.data.labels import normalise_labels, parse_label_map, require_both_classes
from review_toolkit.data.messages import first_rows, is_blank, missing_column_message
from review_toolkit.data.splits import (
    CARVED_TEST_FRACTION,
    CARVED_VALIDATION_FRACTION,
    DEFAULT_SEED,
    SPLIT_NAMES,
    ReviewSplits,
    carve,
    check_folds,
    fold_splits,
    refit_splits,
    normalise_split_names,
    review_columns,
    split_reviews,
    warn_about_leakage,
)
from review_toolkit.errors import ConfigError, DataError

logger = logging.getLogger("review_toolkit.data")  # the name the docs give


def default_data_path() -> pathlib.Path:
    """Return the path of the bundled sample dataset (600 reviews, see ATTRIBUTION.md)."""
    return pathlib.Path(__file__).resolve().parent.parent / "default_data" / "reviews.csv"


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
        result["split"] = normalise_split_names(table[split_column], source, split_column)
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
    message = missing_column_message(column, [str(c) for c in table.columns], source)
    raise DataError(message + f" Name the right column with {option}= (--{option.replace('_', '-')} on the command line).")


def _clean_texts(texts: pd.Series, source: str, text_column: str) -> pd.Series:
    """Check that every review has text; convert non-strings (e.g. JSON numbers) with str()."""
    empty = np.array([is_blank(value) for value in texts], dtype=bool)
    if empty.any():
        raise DataError(
            f"{source}: column {text_column!r} is empty or missing in {describe_rows(first_rows(empty), source)}. "
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
            describe_rows(first_rows(long), source),
        )
    return cleaned


_LONG_REVIEW_CHARACTERS = 100_000


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

    warn_about_leakage(splits, split_sources)
    return splits


def _splits_from_column(
    data: str | pathlib.Path | None, split_column: str, seed: int, columns: dict[str, Any]
) -> ReviewSplits:
    reviews = load_reviews(data, split_column=split_column, **columns)
    source = _resolve_path(data)[1]
    parts = {name: review_columns(reviews[reviews["split"] == name]) for name in SPLIT_NAMES}
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
        parts["train"], parts["validation"] = carve(
            parts["train"], 0.08 / 0.80, seed, part="validation", source=f"{source} (train split)"
        )
        method += f"; validation carved from train (10%, seed {seed})"
    for name, part in parts.items():
        require_both_classes(part["label"], f"{source} ({name} split)", columns["label_column"])
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
    train = review_columns(load_reviews(data, **columns))
    carved_from = f"{train_source} (training file)"
    method = []

    # Test first, from the whole training file, so "20 %" means 20 % of that file.
    if test_data is not None:
        test = review_columns(load_reviews(test_data, **columns))
    else:
        train, test = carve(train, CARVED_TEST_FRACTION, seed, part="test", source=carved_from)
        method.append(f"test carved from the training file ({CARVED_TEST_FRACTION:.0%}, seed {seed})")
    if validation_data is not None:
        validation = review_columns(load_reviews(validation_data, **columns))
    else:
        train, validation = carve(train, CARVED_VALIDATION_FRACTION, seed, part="validation", source=carved_from)
        method.append(f"validation carved from train ({CARVED_VALIDATION_FRACTION:.0%}, seed {seed})")

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


def split_seed_of(config: Any) -> Any:
    """The seed that splits the data: ``split_seed`` when set, else the run's ``seed``
    (of a ``TrainConfig``, or of a run's config.yaml read as a mapping)."""
    def setting(name: str) -> Any:
        return config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)

    split_seed = setting("split_seed")
    return setting("seed") if split_seed is None else split_seed


def load_splits_for(config: Any) -> ReviewSplits:
    """The splits a training configuration (``TrainConfig`` or a run's config) describes.

    A fold of a cross-validation (``folds`` and ``fold`` set) is tested on that fold; fold 0, its
    refit, trains on all the data with no test split.
    """
    if getattr(config, "folds", None) and getattr(config, "fold", None) is not None:
        reviews = load_reviews(
            config.data, text_column=config.text_column, label_column=config.label_column, label_map=config.label_map
        )
        if config.fold == 0:  # the refit of a cross-validation: every review trains or validates
            splits = refit_splits(reviews, seed=split_seed_of(config))
        else:
            splits = fold_splits(reviews, config.folds, config.fold, seed=split_seed_of(config))
        splits.source = _describe_source(config.data)
        warn_about_leakage(splits, dict.fromkeys(SPLIT_NAMES, _resolve_path(config.data)[1]))
        return splits
    return load_splits(
        config.data,
        text_column=config.text_column,
        label_column=config.label_column,
        label_map=config.label_map,
        seed=split_seed_of(config),
        split_column=config.split_column,
        validation_data=config.validation_data,
        test_data=config.test_data,
    )
