"""Train / validation / test splits of loaded reviews, and the check for texts in two splits."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from review_toolkit.data.formats import describe_rows
from review_toolkit.data.labels import FAKE, REAL
from review_toolkit.data.messages import MAX_LISTED, is_blank
from review_toolkit.errors import ConfigError, DataError

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
CARVED_VALIDATION_FRACTION = 0.10
CARVED_TEST_FRACTION = 0.20


class LeakageWarning(UserWarning):
    """The same review text appears in two splits, so evaluation scores will be optimistic."""


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
    df = review_columns(df)
    try:
        rest, test = carve(df, f_test, seed, part="test", source=source)
        train, validation = carve(rest, f_val / (f_train + f_val), seed, part="validation", source=source)
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


#: Each fold's validation share of its training folds: the default split's (8 of 72 + 8).
FOLD_VALIDATION_FRACTION = DEFAULT_FRACTIONS[1] / (DEFAULT_FRACTIONS[0] + DEFAULT_FRACTIONS[1])


def check_folds(df: pd.DataFrame, folds: int, *, source: str) -> None:
    """Refuse ``folds`` that would leave a fold without both classes (fewer reviews of a class than folds)."""
    smallest = int(df["label"].value_counts().reindex([FAKE, REAL], fill_value=0).min())
    if folds > smallest:
        raise ConfigError(
            f"--folds {folds}: {source} has {_class_counts(df)}; stratified folds need at least as many reviews of "
            f"each class as folds, so that every fold holds both. Use --folds {max(smallest, 2)} or fewer, or more data."
        )


def fold_splits(df: pd.DataFrame, folds: int, fold: int, *, seed: int | None = DEFAULT_SEED) -> ReviewSplits:
    """The splits of fold ``fold`` (1..folds) of a stratified, seeded K-fold cross-validation.

    Test is the fold itself; validation (10 %, stratified, as in the default split) is carved from
    the other folds, and the rest trains. Every review is in exactly one fold's test split.
    """
    from sklearn.model_selection import StratifiedKFold

    seed = DEFAULT_SEED if seed is None else seed
    source = str(df.attrs.get("source", "the data"))
    df = review_columns(df)
    check_folds(df, folds, source=source)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    train_rows, test_rows = list(splitter.split(np.zeros(len(df)), df["label"].to_numpy()))[fold - 1]
    test = df.iloc[test_rows].reset_index(drop=True)
    train, validation = carve(
        df.iloc[train_rows].reset_index(drop=True), FOLD_VALIDATION_FRACTION, seed,
        part="validation", source=f"{source} (training folds of fold {fold})",
    )
    return ReviewSplits(
        train=train,
        validation=validation,
        test=test,
        source=source,
        method=(
            f"fold {fold} of {folds}: stratified {folds}-fold cross-validation (seed {seed}); validation carved "
            f"from the other folds ({FOLD_VALIDATION_FRACTION:.0%})"
        ),
    )


def refit_splits(df: pd.DataFrame, *, seed: int | None = DEFAULT_SEED) -> ReviewSplits:
    """All the reviews of a cross-validation for its deployable run: train and a stratified 10 %
    validation split (threshold, calibration, early stopping), no test split: the folds measured it."""
    seed = DEFAULT_SEED if seed is None else seed
    source = str(df.attrs.get("source", "the data"))
    df = review_columns(df)
    train, validation = carve(df, FOLD_VALIDATION_FRACTION, seed, part="validation", source=source)
    return ReviewSplits(
        train=train,
        validation=validation,
        test=df.iloc[0:0].reset_index(drop=True),
        source=source,
        method=(
            f"all the data, validation carved ({FOLD_VALIDATION_FRACTION:.0%}, seed {seed}); no test split: "
            "the cross-validation's folds are its estimate"
        ),
    )


def _check_fractions(fractions: Iterable[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or any(not 0 < f < 1 for f in values) or not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise ConfigError(
            f"Split fractions must be three numbers between 0 and 1 (train, validation, test) "
            f"that add up to 1; got {fractions!r}."
        )
    return values  # type: ignore[return-value]


def review_columns(df: pd.DataFrame) -> pd.DataFrame:
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


def carve(
    df: pd.DataFrame, fraction: float, seed: int, *, part: str, source: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``fraction`` of ``df`` off as ``part``, stratified by label; both halves keep both classes."""
    counts = _class_counts(df)
    too_small = DataError(
        f"{source}: too few reviews to carve a {part} split of {fraction:.0%} with both classes in "
        f"every split: {len(df)} reviews to split ({counts}). Each of train, validation and test needs "
        "fake and real examples; use more data or give the splits as separate files."
    )
    from sklearn.model_selection import train_test_split  # lazy: scikit-learn takes seconds to import

    try:
        rest, carved = train_test_split(df, test_size=fraction, stratify=df["label"], random_state=seed)
    except ValueError:  # sklearn: "least populated class has only 1 member" and the like
        raise too_small from None
    if rest["label"].nunique() < 2 or carved["label"].nunique() < 2:
        raise too_small
    return rest.reset_index(drop=True), carved.reset_index(drop=True)


def _class_counts(df: pd.DataFrame) -> str:
    return f"{int((df['label'] == FAKE).sum())} fake, {int((df['label'] == REAL).sum())} real"



def normalise_split_names(values: pd.Series, source: str, split_column: str) -> pd.Series:
    keys = pd.Series([("" if is_blank(v) else str(v).strip().casefold()) for v in values], dtype=object)
    names = keys.map(_SPLIT_ALIASES)
    unknown = names.isna().to_numpy()
    if unknown.any():
        listed = []
        distinct = keys[unknown].drop_duplicates()
        for position, key in list(distinct.items())[:MAX_LISTED]:
            shown = repr(values.iloc[position]) if key else "(empty)"
            listed.append(f"{shown} first in {describe_rows([position + 1], source)}")
        raise DataError(
            f"{source}: column {split_column!r} has values that are not a split name: {'; '.join(listed)}. "
            "Use train, validation (or val, valid, dev) and test."
        )
    return names.astype(object).set_axis(values.index)



def warn_about_leakage(splits: ReviewSplits, sources: Mapping[str, str]) -> None:
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

