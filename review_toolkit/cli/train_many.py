"""``review-toolkit train-many``: every run of a YAML plan, then their comparison."""

from __future__ import annotations

import click

from review_toolkit.cli.group import stops_on_interrupt


@click.command("train-many")
@click.argument("plan_file", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--output-dir", help="Parent folder of the runs (default: the plan's output_dir, else runs/<plan name>).")
@click.option("--data", help="Data for every run, overriding the plan's shared data.")
@click.option("--text-column", help="Column holding the review text, for every run (as in train).")
@click.option("--label-column", help="Column holding the label, for every run (as in train).")
@click.option("--label-map", help="Explicit label mapping for every run, e.g. 'CG=fake,OR=real' (as in train).")
@click.option("--cache-dir", help="Embedding cache for every run, overriding the plan's.")
@click.option("--overwrite", is_flag=True, help="Train runs whose folders exist again, replacing them.")
@click.option("--skip-existing", is_flag=True, help="Keep finished runs whose folders exist; train the rest.")
@click.option("--stop-on-error", is_flag=True, help="Stop at the first failed run (default: train the others).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@stops_on_interrupt(
    lambda interrupt, **_: "Interrupted. Runs already finished are kept; run the plan again with --skip-existing."
)
def train_many(
    plan_file: str,
    output_dir: str | None,
    data: str | None,
    text_column: str | None,
    label_column: str | None,
    label_map: str | None,
    cache_dir: str | None,
    overwrite: bool,
    skip_existing: bool,
    stop_on_error: bool,
    quiet: bool,
) -> None:
    """Train every run of a YAML plan (shared options + a list of runs), then print the comparison.

    A plan's optional `ensemble:` section (name, members, combine, threshold_for) combines runs
    of the plan once they are trained, as `review-toolkit ensemble` does.
    """
    from review_toolkit.evaluation.leaderboard import compare_runs, markdown_table, mixed_test_data
    from review_toolkit.data import parse_label_map
    from review_toolkit.train.plan import build_planned_ensemble, check_data, load_ensemble_plan, load_plan, run_plan

    overrides = {
        "data": data, "text_column": text_column, "label_column": label_column,
        "label_map": parse_label_map(label_map), "cache_dir": cache_dir,
    }
    planned = load_plan(plan_file, output_dir=output_dir, overrides=overrides)
    ensemble = load_ensemble_plan(plan_file, planned)  # its members' data settings agree, before anything trains
    check_data(planned)  # a bad column or label fails here, before the first run's process starts
    echo = lambda line: click.echo(line, err=True)  # noqa: E731
    outcome = run_plan(
        planned,
        overwrite=overwrite,
        skip_existing=skip_existing,
        stop_on_error=stop_on_error,
        quiet=quiet,
        echo=echo,
        ensemble=ensemble,
    )
    finished = outcome.trained + outcome.skipped
    if ensemble is not None and not (stop_on_error and outcome.failed):
        built = build_planned_ensemble(ensemble, outcome, overwrite=overwrite, skip_existing=skip_existing, echo=echo)
        finished += [built] if built is not None else []
    if finished:
        rows, target = compare_runs(finished, planned[0].output_dir.parent / "comparison")
        click.echo("")
        click.echo(markdown_table(rows))
        warning = mixed_test_data(rows)
        if warning:
            click.echo(warning, err=True)
        click.echo(f"leaderboard written to {target}")
    if outcome.failed:
        failures = "; ".join(f"{name}: {why}" for name, why in outcome.failed)
        total = len(planned) + (ensemble is not None)  # the ensemble counts as one more run of the plan
        raise click.ClickException(f"{len(outcome.failed)} of {total} runs failed: {failures}")
