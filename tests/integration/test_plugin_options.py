"""Plugin options end to end: set on the command line, recorded in the run, used again by load_run."""

from __future__ import annotations

import json

import numpy as np
import yaml
from click.testing import CliRunner

from review_toolkit.cli import cli
from review_toolkit.runs.loader import load_run
from review_toolkit.runs.manifest import write_manifest


def train(*arguments: str):
    return CliRunner().invoke(cli, ["train", "--quiet", *arguments])


def test_lora_flags_and_method_options_reach_the_adapters_and_the_run_records_what_was_used(
    tiny_bert, small_reviews, tmp_path, one_torch_thread
):
    run = tmp_path / "run"
    result = train(
        "--backbone", "bert", "--model", tiny_bert, "--method", "lora", "--data", str(small_reviews),
        "--max-steps", "1", "--lora-r", "4", "--method-option", "lora_alpha=8",
        "--method-option", "target_modules=query,value", "--head-option", "dropout=0.2", "--output-dir", str(run),
    )
    assert result.exit_code == 0, result.output
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 8 and set(adapter["target_modules"]) == {"query", "value"}

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["method_options"] == {"r": 4, "lora_alpha": 8, "lora_dropout": 0.05, "target_modules": ["query", "value"]}
    assert config["head_options"] == {"dropout": 0.2} and config["head"] == "linear"
    assert config["learning_rate"] == 5e-4  # the lora method's default, recorded as used
    assert "lora_r" not in config
    info = json.loads((run / "run.json").read_text())
    assert info["plugin_options"]["method"] == config["method_options"] and info["learning_rate"] == 5e-4
    card = (run / "README.md").read_text()
    assert "method `lora` from review_toolkit" in card and "`r=4`, `lora_alpha=8`" in card
    assert "`target_modules=query,value`" in card and "| learning_rate | `0.0005` |" in card

    # The run trains again from its own config.yaml, and loads with the options it records.
    again = tmp_path / "again"
    assert train("--config", str(run / "config.yaml"), "--output-dir", str(again)).exit_code == 0
    assert json.loads((again / "adapter" / "adapter_config.json").read_text())["r"] == 4
    texts = ["Great kettle, boils fast.", "The lid cracked after a week."]
    assert load_run(run).predict_proba(texts).shape == (2,)


def test_option_mistakes_are_one_line_errors_that_name_the_option(tmp_path):
    common = ["--method", "frozen", "--output-dir", str(tmp_path / "run")]
    cases = [
        (["--head", "logreg", "--head-option", "c_grd=1"], "Error: Unknown option 'c_grd' for head 'logreg'. Did you mean 'c_grid'?"),
        (["--head", "logreg", "--head-option", "c_grid=small"], "Error: head 'logreg': option 'c_grid' expects list of float; got 'small' (str)."),
        (["--method-option", "r=8"], "Error: Unknown option 'r' for method 'frozen'."),
    ]
    for arguments, expected in cases:
        result = train(*common, *arguments)
        assert result.exit_code == 1 and expected in result.output, result.output
        assert "Traceback" not in result.output
    malformed = train(*common, "--backbone-option", "pooling")  # a usage error: click's exit status 2
    assert malformed.exit_code == 2 and "Error: --backbone-option 'pooling': expected NAME=VALUE." in malformed.output
    assert "Traceback" not in malformed.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_a_run_written_before_plugin_options_still_loads(tiny_bert, small_reviews, tmp_path, one_torch_thread):
    run = tmp_path / "run"
    result = train(
        "--backbone", "bert", "--model", tiny_bert, "--data", str(small_reviews), "--head-option", "c_grid=0.1,1",
        "--output-dir", str(run),
    )
    assert result.exit_code == 0, result.output
    texts = ["Great kettle, boils fast.", "The lid cracked after a week."]
    expected = load_run(run).predict_proba(texts)

    # config.yaml as earlier releases wrote it: the lora_* keys, an empty head_options, no other *_options.
    config = yaml.safe_load((run / "config.yaml").read_text())
    for key in ("backbone_options", "method_options", "head_options"):
        del config[key]
    config.update(lora_r=16, lora_alpha=32, lora_dropout=0.05, lora_targets=None, head_options={}, learning_rate=None)
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    write_manifest(run)
    # The head's chosen C is in its saved arrays, so the defaults it now gets score the same.
    np.testing.assert_array_equal(load_run(run).predict_proba(texts), expected)
