"""The space tune searches: plugins' declarations, training options when Trainer trains, --space entries."""

from __future__ import annotations

import pytest

from review_toolkit.config import TrainConfig
from review_toolkit.errors import ConfigError
from review_toolkit.train.pipeline import Composition
from review_toolkit.train.search_space import build_space


def space_for(user_space=None, fixed=frozenset(), **options):
    config = TrainConfig(**options)
    return config, build_space(config, Composition.resolve(config), user_space=user_space, fixed=set(fixed))


def test_a_fitted_head_searches_its_own_options_only():
    _, space = space_for(method="frozen", head="svm")
    assert space.keys() == ["head.c_grid", "head.gamma_factors"]


def test_trainer_trained_runs_also_search_learning_rate_around_the_methods_default():
    _, space = space_for(method="lora", head="linear")
    assert space.keys() == ["method.r", "method.lora_alpha", "method.lora_dropout", "head.dropout", "learning_rate", "weight_decay"]
    rate = next(d.search for d in space.dimensions if d.key == "learning_rate")
    assert rate.log and rate.low == pytest.approx(5e-5) and rate.high == pytest.approx(5e-3)


def test_fixed_options_are_not_searched_and_a_space_file_adds_drops_and_overrides():
    _, space = space_for(
        {"epochs": {"low": 1, "high": 3}, "head.dropout": None, "method.r": {"choices": [2, 4]}},
        fixed={"learning_rate"}, method="lora", head="linear",
    )
    assert space.keys() == ["method.r", "method.lora_alpha", "method.lora_dropout", "weight_decay", "epochs"]
    assert next(d.search for d in space.dimensions if d.key == "method.r").choices == (2, 4)


def test_drawn_values_become_a_normal_training_configuration():
    config, space = space_for(method="frozen", head="logreg", head_options={"c_grid": [1.0]}, fixed=set())
    trial = space.apply(config, {"head.c_grid": 0.25})
    assert trial.head_options == {"c_grid": [0.25]}
    assert config.head_options == {"c_grid": [1.0]}  # the base configuration is untouched
    Composition.resolve(trial)


@pytest.mark.parametrize(("entry", "fragment"), [
    ({"epochs": {"low": 0, "high": 3}}, "includes 0"),
    ({"lr_scheduler": {"low": 1, "high": 3}}, "give choices"),
    ({"lr_scheduler": {"choices": ["cosine", "sideways"]}}, "'sideways'"),
    ({"learnin_rate": {"low": 1e-4, "high": 1e-3}}, "Did you mean 'learning_rate'"),
    ({"optimiser.x": {"low": 1, "high": 2}}, "not a plugin kind"),
])
def test_impossible_space_entries_are_refused_naming_the_entry(entry, fragment):
    with pytest.raises(ConfigError, match="--space: " + next(iter(entry)).replace(".", r"\.")) as caught:
        space_for(entry, method="lora", head="linear")
    assert fragment in str(caught.value)


def test_an_empty_space_is_refused():
    with pytest.raises(ConfigError, match="Nothing to search"):
        space_for({"head.c_grid": None}, method="frozen", head="logreg")
