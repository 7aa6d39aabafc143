"""`train` refuses a bad option, from a flag or a config file, with one `Error:` line and writes nothing."""

from __future__ import annotations

import pathlib

import pytest
from click.testing import CliRunner

from review_toolkit.cli import cli

# name -> (config file text or None, flags, fragments the one error line must hold)
BAD_OPTIONS: dict[str, tuple[str | None, list[str], list[str]]] = {
    "learning rate as a word in the file": ("learning_rate: fast\n", [], ["learning_rate is 'fast'", "finite number greater than 0"]),
    "epochs as a word in the file": ('epochs: "three"\n', [], ["epochs is 'three'", "finite number greater than 0"]),
    "label_map as a list in the file": ("label_map: [CG, OR]\n", [], ["label_map is ['CG', 'OR']", "mapping"]),
    "label_map to a bad target in the file": ("label_map: {CG: bogus}\n", [], ["label_map maps 'CG' to 'bogus'", "'fake' or 'real'"]),
    "fractional batch size in the file": ("batch_size: 2.5\n", [], ["batch_size is 2.5", "integer of at least 1"]),
    "boolean as text in the file": ("overwrite: maybe\n", [], ["overwrite is 'maybe'", "true or false"]),
    "infinite epochs flag": (None, ["--epochs", "inf"], ["--epochs is 'inf'", "finite number greater than 0"]),
    "nan learning rate flag": (None, ["--learning-rate", "nan"], ["--learning-rate is 'nan'", "finite number"]),
    "epochs flag as a word": (None, ["--epochs", "three"], ["--epochs is 'three'"]),
    "negative max steps flag": (None, ["--max-steps", "-5"], ["--max-steps is '-5'", "integer of at least 1"]),
    "fractional max steps flag": (None, ["--max-steps", "2.5"], ["--max-steps is '2.5'", "integer"]),
    "unknown scheduler flag": (None, ["--lr-scheduler", "bogus"], ["--lr-scheduler is 'bogus'", "one of", "cosine"]),
    "unknown optimizer flag": (None, ["--optimizer", "bogus"], ["--optimizer is 'bogus'", "one of", "adamw_torch"]),
    "unknown scheduler in the file": ("lr_scheduler: cosin\n", [], ["lr_scheduler is 'cosin' (did you mean 'cosine'?)"]),
    "negative seed flag": (None, ["--seed", "-1"], ["--seed is '-1'", "at least 0", "below 4,294,967,296"]),
    "seed of 2**32 or more": (None, ["--seed", "5000000000"], ["--seed is '5000000000'", "below 4,294,967,296"]),
    "seed too large in the file": ("seed: 5000000000\n", [], ["seed is 5000000000", "below 4,294,967,296"]),
    "lora dropout of 1": (None, ["--method", "lora", "--lora-dropout", "1"], ["method 'lora': option 'lora_dropout' must be in [0, 1)"]),
    "unknown option in the file": ("learning_rat: 0.1\n", [], ["unknown option(s) 'learning_rat'", "did you mean 'learning_rate'"]),
    "nested value under head_options": (
        "head_options:\n  C: {deeper: 1}\n", [], ["head_options: C is {'deeper': 1}", "number, text, true/false"]
    ),
    "head_options as a list": ("head_options: [1, 2]\n", [], ["head_options is [1, 2]", "mapping"]),
    "YAML alias bomb": (
        "a: &a [x, x, x, x, x, x, x, x, x]\n"
        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
        "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "head_options: {e: [*d, *d, *d, *d, *d, *d, *d, *d, *d]}\n",
        [],
        ["is not valid YAML", "expands to more than 10,000 values"],
    ),
    "YAML alias that contains itself": ("head_options: &a {x: *a}\n", [], ["is not valid YAML", "refers to a node that contains it"]),
    "YAML nested too deep": ("head_options: " + "[" * 30 + "]" * 30 + "\n", [], ["is not valid YAML", "deeper than 20 levels"]),
    "config file over 1 MiB": ("# padding\n" * 110_000 + "epochs: 1\n", [], ["bytes; a YAML file of options may be at most 1,048,576 bytes"]),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_a_bad_option_is_one_error_line_and_writes_nothing(tmp_path: pathlib.Path, case: str) -> None:
    config_text, flags, fragments = BAD_OPTIONS[case]
    output = tmp_path / "runs" / "run"
    arguments = ["train", "--output-dir", str(output), "--cache-dir", str(tmp_path / "cache"), "--quiet", *flags]
    if config_text is not None:
        config = tmp_path / "options.yaml"
        config.write_text(config_text, encoding="utf-8")
        arguments += ["--config", str(config)]

    result = CliRunner().invoke(cli, arguments)

    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert "Traceback" not in result.output
    if config_text is not None:
        assert str(config) in result.output  # the message names the file
    for fragment in fragments:
        assert fragment in result.output, f"{fragment!r} not in {result.output!r}"
    assert not (tmp_path / "runs").exists()


def test_a_learning_rate_written_1e_3_passes_the_checks(tmp_path: pathlib.Path) -> None:
    """The file's learning_rate (text to PyYAML) is accepted: the one error is the flag's."""
    config = tmp_path / "options.yaml"
    config.write_text("learning_rate: 1e-3\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["train", "--config", str(config), "--max-steps", "-5", "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert result.output == "Error: --max-steps is '-5'; it must be an integer of at least 1.\n"
    assert not (tmp_path / "run").exists()


def test_yaml_that_spells_numbers_as_text_is_read_as_numbers(tmp_path: pathlib.Path) -> None:
    """PyYAML reads 1e-3 (no decimal point) as a string: it is taken as the number it spells."""
    from review_toolkit.config import build_config

    config = tmp_path / "options.yaml"
    config.write_text('learning_rate: 1e-3\nbatch_size: "16"\nepochs: 2\n', encoding="utf-8")
    built = build_config(config, {"max_steps": "7"})
    assert built.learning_rate == pytest.approx(0.001) and isinstance(built.learning_rate, float)
    assert built.batch_size == 16 and built.epochs == 2.0 and built.max_steps == 7


def test_every_config_flag_is_made_from_its_field(tmp_path: pathlib.Path) -> None:
    """Each TrainConfig field with a flag is a `train` option with the field's help; flags of
    lists and label maps arrive parsed."""
    import dataclasses

    import click

    from review_toolkit.cli.train import flag_of, train
    from review_toolkit.config import TrainConfig

    options = {parameter.name: parameter for parameter in train.params if isinstance(parameter, click.Option)}
    for field in dataclasses.fields(TrainConfig):
        flag = flag_of(field)
        if flag is None:
            assert field.name not in options
            continue
        assert options[field.name].opts == [flag.split("/")[0]], field.name
        assert options[field.name].help == field.metadata["help"]

    from review_toolkit.cli.train import _flag_values

    values = _flag_values({"method_options": ("r=8", "target_modules=query,value"), "label_map": "CG=fake,OR=real", "seed": "3"})
    assert values == {
        "method_options": {"r": "8", "target_modules": "query,value"}, "label_map": {"CG": "fake", "OR": "real"}, "seed": "3",
    }


def test_a_config_with_a_few_aliases_still_loads(tmp_path: pathlib.Path) -> None:
    from review_toolkit.config import build_config

    config = tmp_path / "options.yaml"
    config.write_text("head_options: &shared {C: 0.5, max_iter: 200}\ntext_column: &column review\nsplit_column: *column\n")
    built = build_config(config, {})
    assert built.head_options == {"C": 0.5, "max_iter": 200} and built.split_column == "review"


def test_train_keeps_every_flag_spelling() -> None:
    """Scripts call these flags: generating them from TrainConfig must not rename or drop one."""
    from review_toolkit.cli.train import train

    spellings = {opt for parameter in train.params for opt in parameter.opts + parameter.secondary_opts}
    assert spellings >= {
        "--config", "--backbone", "--method", "--head", "--model", "--trust-remote-code", "--data", "--text-column",
        "--label-column", "--label-map", "--split-column", "--validation-data", "--test-data", "--seed",
        "--output-dir", "--overwrite", "--cache-dir", "--epochs", "--max-steps", "--learning-rate", "--batch-size",
        "--gradient-accumulation-steps", "--max-length", "--max-tokens-per-batch", "--pad-to-max-length",
        "--pack-sequences", "--no-pack-sequences", "--cuda-graphs", "--no-cuda-graphs", "--gradient-checkpointing",
        "--compile", "--optimizer", "--lr-scheduler", "--early-stopping-patience", "--class-weight", "--lora-r",
        "--lora-alpha", "--lora-dropout", "--lora-targets", "--resume-from", "--quiet", "--backbone-option",
        "--method-option", "--head-option",
    }
