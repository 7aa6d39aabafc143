"""``review-toolkit ensemble``: combine runs trained on the same data into one run."""

from __future__ import annotations

import click

from review_toolkit.cli.group import stops_on_interrupt


@click.command()
@click.argument("runs", metavar="RUN1 RUN2 ...", nargs=-1, required=True)
@click.option("--output-dir", required=True, help="Ensemble run directory to create.")
@click.option(
    "--combine",
    type=click.Choice(["auto", "mean", "stacking"]),
    default="auto",
    show_default=True,
    help="Mean of the members' calibrated P(fake), a stacking logistic regression fitted on validation, "
    "or whichever has the better validation macro F1.",
)
@click.option(
    "--threshold-for",
    type=click.Choice(["f1", "accuracy"]),
    help="Choose the threshold with the best macro F1 (or accuracy) on validation (default: 0.5, as train).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@stops_on_interrupt(lambda interrupt, **_: "Interrupted; no ensemble was written.")
def ensemble(runs: tuple[str, ...], output_dir: str, combine: str, threshold_for: str | None, overwrite: bool) -> None:
    """Combine runs trained on the same data (same data file, seed and split) into one servable run.

    The members' stored validation scores choose the combination; nothing is trained or scored
    again. The ensemble copies its members into OUTPUT_DIR/members/, so it is self-contained;
    predict, evaluate, compare, serve and load_run use it like any run.
    """
    from review_toolkit.train.ensemble import build_ensemble, describe

    result = build_ensemble(list(runs), output_dir, combine=combine, threshold_for=threshold_for, overwrite=overwrite)
    click.echo(result.report)
    for line in describe(result):
        click.echo(line)
