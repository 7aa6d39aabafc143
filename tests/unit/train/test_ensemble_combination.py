"""Choosing how an ensemble combines its members, on validation scores alone (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from review_toolkit.errors import ConfigError
from review_toolkit.inference.ensemble import Combination
from review_toolkit.train.ensemble import choose_combination


def _scores(seed: int = 0, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """A member that knows the labels well, one that knows them a little, one that guesses."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n // 2)
    good = np.clip(0.5 + (labels - 0.5) * 0.6 + rng.normal(0, 0.2, n), 0.01, 0.99)
    weak = np.clip(0.5 + (labels - 0.5) * 0.2 + rng.normal(0, 0.2, n), 0.01, 0.99)
    noise = rng.uniform(0.01, 0.99, n)
    return np.column_stack([good, weak, noise]), labels


def test_auto_keeps_the_combination_with_the_better_validation_score():
    members, labels = _scores()
    combination = choose_combination(members, labels, "auto")
    scores = combination.details["validation_f1_macro"]
    assert set(scores) == {"mean", "stacking"}
    best = "stacking" if scores["stacking"] > scores["mean"] else "mean"
    assert combination.method == best


def test_stacking_weighs_an_informative_member_above_a_guessing_one():
    members, labels = _scores(seed=1)
    combination = choose_combination(members, labels, "stacking")
    good, weak, noise = combination.weights
    assert good > weak > abs(noise)
    restored = Combination.from_dict(combination.to_dict(), members=3, where="run.json")
    np.testing.assert_allclose(restored.apply(members), combination.apply(members))


def test_stacking_is_refused_when_validation_is_too_small_to_check_it():
    members, labels = np.array([[0.2, 0.3], [0.8, 0.7], [0.6, 0.9]]), np.array([0, 1, 1])
    with pytest.raises(ConfigError, match="--combine stacking"):
        choose_combination(members, labels, "stacking")
    assert choose_combination(members, labels, "auto").method == "mean"
