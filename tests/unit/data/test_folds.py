"""Stratified, seeded K-fold splits: every review tested once, train/validation never the fold itself."""

from __future__ import annotations

import pandas as pd
import pytest

from review_toolkit.data.splits import fold_splits
from review_toolkit.errors import ConfigError


def reviews(fake: int, real: int) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"review {i}" for i in range(fake + real)], "label": [1] * fake + [0] * real})


def test_each_review_is_in_exactly_one_test_fold_and_never_trains_on_it():
    data = reviews(60, 40)
    tested = []
    for fold in range(1, 6):
        splits = fold_splits(data, 5, fold, seed=7)
        test, rest = set(splits.test["row"]), set(splits.train["row"]) | set(splits.validation["row"])
        assert not test & rest and len(test | rest) == 100
        assert splits.test["label"].sum() == 12  # stratified: 60 fake / 5 folds
        tested += list(splits.test["row"])
    assert sorted(tested) == list(range(1, 101))


def test_folds_are_reproducible_by_seed():
    data = reviews(30, 30)
    assert list(fold_splits(data, 3, 2, seed=1).test["row"]) == list(fold_splits(data, 3, 2, seed=1).test["row"])
    assert list(fold_splits(data, 3, 2, seed=1).test["row"]) != list(fold_splits(data, 3, 2, seed=2).test["row"])


def test_more_folds_than_the_smallest_class_is_refused():
    with pytest.raises(ConfigError, match=r"--folds 6: .*5 fake, 20 real.*--folds 5 or fewer"):
        fold_splits(reviews(5, 20), 6, 1)
