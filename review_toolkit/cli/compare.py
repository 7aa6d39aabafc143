"""``review-toolkit compare``: a leaderboard of runs."""

from __future__ import annotations

import click


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--output-dir", help="Folder for leaderboard.md, .csv and .png (default: comparison/ beside the runs).")
def compare(paths: tuple[str, ...], output_dir: str | None) -> None:
    """Leaderboard of runs (run directories, or folders holding them), best macro F1 first."""
    from review_toolkit.evaluation.leaderboard import compare_runs, markdown_table, mixed_test_data

    rows, target = compare_runs(paths, output_dir)
    click.echo(markdown_table(rows))
    warning = mixed_test_data(rows)
    if warning:
        click.echo(warning, err=True)
    click.echo(f"leaderboard written to {target} (leaderboard.md, leaderboard.csv, leaderboard.png)")
