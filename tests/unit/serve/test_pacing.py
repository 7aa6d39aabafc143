"""ServiceTimes: the batcher's estimate of how long the scorer takes over a batch of so many tokens."""

from __future__ import annotations

import pytest

from review_toolkit.serve.pacing import ServiceTimes


def cost(tokens: int, fixed: float = 0.001, per_token: float = 2e-6) -> float:
    return fixed + per_token * tokens


def test_nothing_observed_predicts_no_time() -> None:
    assert ServiceTimes().predict(2000) == 0.0


def test_it_learns_a_fixed_cost_and_a_cost_per_token() -> None:
    times = ServiceTimes()
    for tokens in [400, 1600, 900, 2500, 1200] * 20:
        times.observe(tokens, cost(tokens))
    assert times.predict(3000) == pytest.approx(cost(3000), rel=1e-6)
    assert times.predict(100) == pytest.approx(cost(100), rel=1e-6)


def test_batches_of_one_size_predict_their_mean_time() -> None:
    times = ServiceTimes()
    for seconds in (0.004, 0.006):
        times.observe(1000, seconds)
    assert times.predict(1000) == pytest.approx(0.005)


def test_it_follows_a_scorer_that_gets_slower() -> None:
    times = ServiceTimes()
    sizes = [400, 1600, 900, 2500, 1200]
    for tokens in sizes * 40:
        times.observe(tokens, cost(tokens))
    for tokens in sizes * 100:  # the machine got busier: every batch takes twice as long
        times.observe(tokens, 2 * cost(tokens))
    assert times.predict(2000) == pytest.approx(2 * cost(2000), rel=0.01)


def test_a_weight_outside_0_and_1_is_refused() -> None:
    with pytest.raises(ValueError, match="newest_weight"):
        ServiceTimes(newest_weight=0)
