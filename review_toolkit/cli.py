"""The ``review-toolkit`` command line (also ``python -m review_toolkit``).

Every problem the user can fix is a ``ReviewToolkitError`` and ends as a
one-screen ``Error: ...`` message with exit status 1, never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from review_toolkit.errors import ReviewToolkitError

EXIT_INTERRUPTED = 130


class FriendlyGroup(click.Group):
    """Turns the toolkit's own errors into click errors: message, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ReviewToolkitError as error:
            raise click.ClickException(str(error)) from error


def _quiet_libraries() -> None:
    """Library chatter (hub warnings, weight-loading reports) hides the toolkit's own output."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("datasets").setLevel(logging.ERROR)


@click.group(cls=FriendlyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="review_toolkit")
def cli() -> None:
    """Train, evaluate and serve fake-review classifiers from pluggable parts."""


def _split_list(value: str | None) -> list[str] | None:
    return [item.strip() for item in value.split(",") if item.strip()] if value else None


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file of options; flags override it.")
@click.option("--backbone", help="Backbone plugin (default: minilm).")
@click.option("--method", help="Method plugin: frozen, full, lora, qlora, ... (default: frozen).")
@click.option("--head", help="Head plugin (default: logreg for frozen, linear for training methods).")
@click.option("--model", help="Checkpoint for the backbone: hub id or local directory.")
@click.option("--trust-remote-code", is_flag=True, default=None, help="Allow model code downloaded with the checkpoint to run.")
@click.option("--data", help="Labelled reviews: CSV, TSV, JSON Lines, Parquet or a saved datasets directory (default: bundled sample).")
@click.option("--text-column", help="Column holding the review text (default: text).")
@click.option("--label-column", help="Column holding the label (default: label).")
@click.option("--label-map", help="Explicit label mapping, e.g. 'CG=fake,OR=real'.")
@click.option("--split-column", help="Column saying train / validation / test for each row.")
@click.option("--validation-data", help="A separate validation file.")
@click.option("--test-data", help="A separate test file.")
@click.option("--seed", type=int, help="Random seed for the split and training (default: 42).")
@click.option("--output-dir", help="Run directory to create (default: runs/BACKBONE-METHOD-HEAD).")
@click.option("--overwrite", is_flag=True, default=None, help="Replace an existing run directory.")
@click.option("--cache-dir", help="Where frozen embeddings are cached (default: ~/.cache/review_toolkit).")
@click.option("--epochs", type=float, help="Training epochs (default: 4).")
@click.option("--learning-rate", type=float, help="Learning rate (default: the method's own).")
@click.option("--batch-size", type=int, help="Training batch size per device (default: 32).")
@click.option("--gradient-accumulation-steps", type=int, help="Batches per optimizer step (default: 1).")
@click.option("--max-length", type=int, help="Truncate reviews to this many tokens (default: the backbone's maximum).")
@click.option("--optimizer", help="TrainingArguments optim name (default: the method's own).")
@click.option("--lr-scheduler", help="Learning-rate schedule: linear, cosine, ... (default: linear).")
@click.option("--early-stopping-patience", type=int, help="Epochs without validation F1 gain before stopping (default: 2; 0 turns it off).")
@click.option("--class-weight", type=click.Choice(["balanced"]), help="Weight classes inversely to their frequency.")
@click.option("--lora-r", type=int, help="LoRA rank (default: 16).")
@click.option("--lora-alpha", type=int, help="LoRA alpha (default: 32).")
@click.option("--lora-dropout", type=float, help="LoRA dropout (default: 0.05).")
@click.option("--lora-targets", help="Comma-separated module names for LoRA (default: the backbone's).")
@click.option("--resume-from", help="Continue training from a run directory or checkpoint (for more epochs, or after an interruption).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train(config_file: str | None, quiet: bool, **options: Any) -> None:
    """Train a classifier and write its run directory."""
    _quiet_libraries()
    from review_toolkit.config import build_config
    from review_toolkit.data import parse_label_map
    from review_toolkit.pipeline import default_output_dir, train as run_training

    options["label_map"] = parse_label_map(options["label_map"])
    options["lora_targets"] = _split_list(options["lora_targets"])
    config = build_config(config_file, options)
    output_dir = config.output_dir or str(default_output_dir(config))
    config.output_dir = output_dir
    try:
        result = run_training(config, progress=not quiet)
    except KeyboardInterrupt:
        click.echo(
            f"\nInterrupted. Checkpoints, if any were written, are in {output_dir}.partial; "
            f"continue with --resume-from {output_dir}.partial.",
            err=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    _print_summary(result)


def _print_summary(result: Any) -> None:
    info, metrics = result.info, result.metrics
    click.echo("")
    click.echo(f"{info['backbone']} + {info['method']} + {info['head']} on {info['data']['source']}")
    click.echo(f"test split: {info['data']['sizes']['test']} reviews")
    click.echo("")
    click.echo(result.report)
    auc = f"{metrics['roc_auc']:.4f}" if metrics.get("roc_auc") is not None else "n/a"
    click.echo(f"macro F1 {metrics['f1_macro']:.4f}  accuracy {metrics['accuracy']:.4f}  ROC AUC {auc}")
    click.echo(f"trained in {info['training_seconds']:.1f} s; run saved to {result.run_dir}")


@cli.command()
@click.option("--run", "run_dir", required=True, help="Run directory written by 'train'.")
@click.option("--text", "texts", multiple=True, required=True, help="A review to score; repeat for several.")
def predict(run_dir: str, texts: tuple[str, ...]) -> None:
    """Print the label and P(fake) of each review."""
    _quiet_libraries()
    from review_toolkit.pipeline import load_run

    classifier = load_run(run_dir)
    for text, prediction in zip(texts, classifier.predict(list(texts))):
        click.echo(f"{prediction.label}\tp_fake={prediction.p_fake:.4f}\t{text}")


@cli.command()
def plugins() -> None:
    """List every installed plugin: kind, name, distribution, version and description."""
    from review_toolkit.registry import list_plugins

    rows = list_plugins()
    if not rows:
        click.echo("No plugins installed. Reinstall review_toolkit to get the built-in ones.")
        return
    header = ("KIND", "NAME", "DISTRIBUTION", "VERSION", "DESCRIPTION")
    table = [header]
    for row in rows:
        status = "BLOCKED" if row.blocked else (f"BROKEN: {row.error}" if row.error else row.description)
        table.append((row.source.kind, row.source.name, row.source.distribution, row.source.version, status))
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    for line in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line[:4], widths)) + "  " + line[4])


def main() -> None:
    cli(prog_name="review-toolkit")


if __name__ == "__main__":
    main()
