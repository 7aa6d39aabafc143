"""Search declarations on plugin options: impossible ones are refused where they are declared."""

from __future__ import annotations

import pytest

from review_toolkit import registry
from review_toolkit.plugin_api import PluginOption, Search
from review_toolkit.plugin_api.search import search_from_mapping


@pytest.mark.parametrize(
    ("declaration", "fragment"),
    [
        (dict(low=1.0, high=0.1), "low (1) is above high (0.1)"),
        (dict(low=0.0, high=1.0, log=True), "log range must start above 0"),
        (dict(low=0.1), "needs both low and high"),
        (dict(low=0.1, high=1.0, choices=(1,)), "not both"),
        (dict(choices=()), "at least one value"),
        (dict(low=1.0, high=2.0, step=0.0), "step must be above 0"),
    ],
)
def test_an_impossible_search_is_refused_when_declared(declaration, fragment):
    with pytest.raises(TypeError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        Search(**declaration)


def test_a_search_giving_values_the_option_refuses_is_refused_with_the_option():
    with pytest.raises(TypeError, match="'r'.*includes 0.*at least 1"):
        PluginOption("r", int, 8, "Rank.", minimum=1, search=Search(low=0, high=8))
    with pytest.raises(TypeError, match="whole numbers"):
        PluginOption("r", int, 8, "Rank.", minimum=1, search=Search(low=1.5, high=8))
    with pytest.raises(TypeError, match="give choices"):
        PluginOption("kind", str, "a", "Kind.", search=Search(low=1, high=2))


def test_a_number_drawn_for_a_grid_option_is_a_grid_of_one_and_choices_read_as_text():
    grid = PluginOption("c_grid", tuple[float, ...], (0.1, 1.0), "Grid.", search=Search(low=0.01, high=10, log=True))
    assert grid.search_value(0.5) == (0.5,)
    sizes = PluginOption("hidden_sizes", tuple[int, ...], (256,), "Widths.", search=Search(choices=("128", "256,128")))
    assert sizes.search_value("256,128") == (256, 128)


def test_a_space_file_entry_names_itself_in_its_message():
    assert search_from_mapping({"low": "1e-5", "high": 1e-3, "log": True}, where="x").low == 1e-5
    assert search_from_mapping({"choices": [[256, 128], [64]]}, where="x").choices == ("256,128", "64")
    with pytest.raises(ValueError, match="space.yaml: head.c: unknown key 'hi'"):
        search_from_mapping({"low": 1, "hi": 2}, where="space.yaml: head.c")
    with pytest.raises(ValueError, match="must be a mapping"):
        search_from_mapping([1, 2], where="x")


@pytest.mark.parametrize(("kind", "name", "searched"), [
    ("head", "logreg", {"c_grid"}),
    ("head", "svm", {"c_grid", "gamma_factors"}),
    ("head", "mlp", {"hidden_sizes", "dropout"}),
    ("head", "linear", {"dropout"}),
    ("method", "lora", {"r", "lora_alpha", "lora_dropout"}),
])
def test_built_in_plugins_declare_their_searches(kind, name, searched):
    plugin, _ = registry.get(kind, name)
    assert {option.name for option in plugin.declared_options if option.search is not None} == searched
