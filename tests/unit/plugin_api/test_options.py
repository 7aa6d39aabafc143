"""Declared plugin options: converted, checked, refused by name, and handed to the plugin."""

from __future__ import annotations

import pytest

from review_toolkit import registry
from review_toolkit.config import TrainConfig, build_config
from review_toolkit.errors import ConfigError
from review_toolkit.plugin_api import PluginOption
from review_toolkit.plugin_api.options import resolve_options

DECLARED = (
    PluginOption("n_estimators", int, 200, "Trees in the forest.", minimum=1),
    PluginOption("learning_rate", float, 0.1, "Shrinkage."),
    PluginOption("bootstrap", bool, True, "Sample with replacement."),
    PluginOption("criterion", str, "gini", "Split quality.", choices=("gini", "entropy")),
    PluginOption("ngram_range", tuple[int, ...], (1, 2), "LOW,HIGH.", check=lambda v: None if len(v) == 2 else "needs two sizes"),
    PluginOption("max_depth", int, None, "Deepest split (not set: unlimited)."),
)


def resolve(**given):
    return resolve_options(DECLARED, given, plugin="head 'forest'")


def test_defaults_fill_in_and_text_from_the_command_line_is_parsed():
    values = resolve(n_estimators="300", learning_rate="0.05", bootstrap="no", ngram_range="1,3", max_depth="4")
    assert dict(values) == {
        "n_estimators": 300, "learning_rate": 0.05, "bootstrap": False, "criterion": "gini", "ngram_range": (1, 3),
        "max_depth": 4,
    }
    assert resolve()["max_depth"] is None  # not set: the plugin decides
    assert resolve(learning_rate=1)["learning_rate"] == 1.0 and resolve(ngram_range=[2, 4])["ngram_range"] == (2, 4)
    with pytest.raises(TypeError):
        values["n_estimators"] = 1  # the plugin reads its options, it does not change them


def test_an_unknown_option_names_the_nearest_one_and_lists_the_declared_ones():
    with pytest.raises(ConfigError) as caught:
        resolve(n_estimator=300)
    message = str(caught.value)
    assert message.startswith("Unknown option 'n_estimator' for head 'forest'. Did you mean 'n_estimators'?")
    assert "n_estimators (int, default 200): Trees in the forest." in message
    with pytest.raises(ConfigError, match="Unknown option 'r' for method 'frozen'. Options of method 'frozen': it declares none"):
        registry.create("method", "frozen", r=8)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"n_estimators": "many"}, "head 'forest': option 'n_estimators' expects int; got 'many' (str)."),
        ({"n_estimators": True}, "option 'n_estimators' expects int; got True (bool)."),
        ({"n_estimators": 2.5}, "option 'n_estimators' expects int; got 2.5 (float)."),
        ({"bootstrap": "maybe"}, "option 'bootstrap' expects bool; got 'maybe' (str)."),
        ({"ngram_range": "1,x"}, "option 'ngram_range' expects list of int; got '1,x' (str)."),
        ({"ngram_range": 3}, "option 'ngram_range' expects list of int; got 3 (int)."),
        ({"n_estimators": 0}, "option 'n_estimators' must be at least 1; got 0."),
        ({"criterion": "log"}, "option 'criterion' must be one of gini, entropy; got log."),
        ({"ngram_range": "1,2,3"}, "option 'ngram_range' needs two sizes; got 1,2,3."),
    ],
)
def test_a_wrong_value_names_the_option_and_what_it_expects(given, expected):
    with pytest.raises(ConfigError) as caught:
        resolve(**given)
    assert expected in str(caught.value)


def test_a_declaration_is_checked_when_the_plugin_module_is_imported():
    with pytest.raises(TypeError, match="type must be bool, int, float, str or tuple"):
        PluginOption("weights", dict, {}, "Per-class weights.")
    with pytest.raises(TypeError, match="must be a Python identifier"):
        PluginOption("max-depth", int, 3, "Depth.")


def test_registry_create_hands_the_plugin_its_options():
    head = registry.create("head", "mlp", hidden_sizes="64", dropout=0.2)
    assert head.options["hidden_sizes"] == (64,) and head.options["dropout"] == 0.2
    module = head.build(16, 2)
    assert [layer.out_features for layer in module if hasattr(layer, "out_features")] == [64, 2]
    assert registry.create("head", "mlp").options["hidden_sizes"] == (256, 128)  # defaults, not the last call's


def test_lora_options_belong_to_the_lora_methods_and_the_old_keys_set_them():
    lora = registry.create("method", "lora")
    assert dict(lora.options) == {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": None}
    assert registry.create("method", "qlora").declared_options == lora.declared_options
    with pytest.raises(ConfigError, match="option 'lora_dropout' must be in \\[0, 1\\); got 1.5"):
        registry.create("method", "lora", lora_dropout=1.5)

    config = TrainConfig.from_mapping(
        {"method": "lora", "lora_r": 8, "lora_alpha": 32, "lora_targets": ["query", "value"]}, source="old.yaml"
    )
    # lora_alpha 32 was written by every earlier config.yaml whatever the method: it says nothing.
    assert config.method_options == {"r": 8, "target_modules": ["query", "value"]}
    old_frozen = {"method": "frozen", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "lora_targets": None,
                  "head_options": {}}
    assert TrainConfig.from_mapping(old_frozen, source="old.yaml").method_options == {}


def test_flags_beat_the_file_option_by_option(tmp_path):
    config_file = tmp_path / "train.yaml"
    config_file.write_text(
        "method: lora\nmethod_options:\n  r: 4\n  lora_alpha: 8\nhead_options:\n  dropout: 0.3\nlora_dropout: 0.2\n"
    )
    config = build_config(config_file, {"lora_r": 12, "head_options": {"dropout": "0.4"}, "method_options": {}})
    assert config.method_options == {"r": 12, "lora_alpha": 8, "lora_dropout": 0.2}
    assert config.head_options == {"dropout": "0.4"}
    # A flag at the old default value is still an explicit choice.
    assert build_config(config_file, {"lora_r": 16}).method_options["r"] == 16
    with pytest.raises(ConfigError, match=r"train.yaml: head_options is \['dropout=0.3'\]; it must be a mapping"):
        TrainConfig.from_mapping({"head_options": ["dropout=0.3"]}, source="train.yaml")
