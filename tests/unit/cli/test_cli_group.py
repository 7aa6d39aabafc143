"""The command group: lazy commands, the one interrupt handler, a --help that imports no model library."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from review_toolkit.cli.group import COMMANDS, EXIT_INTERRUPTED, cli, stops_on_interrupt


def test_every_command_is_listed_and_loads() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in result.output
        assert cli.get_command(click.Context(cli), name).name == name


def test_an_interrupt_prints_what_became_of_the_work_and_exits_130() -> None:
    @click.command()
    @click.option("--output")
    @stops_on_interrupt(lambda interrupt, output: f"Interrupted ({interrupt}); {output} was not written.")
    def work(output: str) -> None:
        raise KeyboardInterrupt("SIGTERM")

    result = CliRunner().invoke(work, ["--output", "scored.csv"])
    assert result.exit_code == EXIT_INTERRUPTED
    assert "Interrupted (SIGTERM); scored.csv was not written." in result.output


def test_help_imports_no_model_library() -> None:
    # predict --help lists the formats of the data table, which reads with pandas: no model library still.
    for arguments, heavy in (
        (["--help"], {"torch", "transformers", "pandas", "sklearn"}),
        (["train", "--help"], {"torch", "transformers", "pandas", "sklearn"}),
        (["tune", "--help"], {"torch", "transformers", "pandas", "sklearn", "optuna"}),
        (["predict", "--help"], {"torch", "transformers"}),
        (["export", "--help"], {"torch", "transformers", "onnxruntime"}),
        # Listing plugins imports their classes (torch, for the nn.Module ones), never a training library.
        (["plugins"], {"transformers", "peft", "bitsandbytes", "sklearn"}),
    ):
        completed = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "review_toolkit", *arguments], capture_output=True, text=True
        )
        assert completed.returncode == 0, completed.stderr[-2000:]
        imported = {line.split("|")[-1].strip().split(".")[0] for line in completed.stderr.splitlines() if "|" in line}
        assert not imported & heavy, arguments
