"""``review-toolkit tune``: search a composition's options on validation macro F1 with Optuna.

It takes every ``train`` flag: those given fix an option for every trial (``--head-option
c_grid=0.5``, ``--learning-rate 1e-4``); the others are searched where a plugin declares a search
or a ``--space`` file names them (``review_toolkit.train.search_space``). ``--output-dir`` is the
search's folder: the study, the trials, the table, the plot, the best run and its config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from review_toolkit.cli.group import quiet_libraries, stops_on_interrupt
from review_toolkit.cli.train import _flag_values, _SectionedCommand, config_options, flag_of
from review_toolkit.config import OPTION_FIELDS, config_fields
from review_toolkit.errors import ConfigError

# train flags that mean nothing for a search: each trial is a new run in the search's own folder.
_TRAIN_ONLY = {"overwrite", "resume_from"}


def _interrupted(interrupt: KeyboardInterrupt, **_: Any) -> str:
    return ("Interrupted. Every finished trial is kept in the study; run the same command again to continue "
            "(the trial that was running starts afresh).")


@click.command(cls=_SectionedCommand)
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="YAML file of train options, fixed for every trial; flags override it.")
@click.option("--space", "space_file", type=click.Path(dir_okay=False),
              help="YAML search space: NAME: {low, high, log, step} or {choices: [...]}, or null to not search it.")
@click.option("--trials", default="20", metavar="N", help="Trials in the study in all, the defaults trial included (default: 20).")
@click.option("--timeout", metavar="SECONDS", help="Seconds after which no new trial starts; the first always does (default: none).")
@click.option("--storage", metavar="URL", help="Optuna storage URL (default: sqlite:///OUTPUT_DIR/study.db).")
@click.option("--keep-trials", type=click.Choice(["best", "all"]), default="best",
              help="Keep the run of every trial under OUTPUT_DIR/trials, or only the best's (default: best).")
@config_options
@click.option("--quiet", is_flag=True, help="No progress bars.")
def tune(
    config_file: str | None,
    space_file: str | None,
    trials: str,
    timeout: str | None,
    storage: str | None,
    keep_trials: str,
    quiet: bool,
    **options: Any,
) -> None:
    """Search the method's, head's and training options on validation macro F1; keep the best as a run."""
    from review_toolkit.config import build_config, load_config_file
    from review_toolkit.runtime.os_errors import naming_path

    budget = _positive(trials, "--trials", int)
    time_budget = _positive(timeout, "--timeout", float) if timeout is not None else None
    search_dir = options.pop("output_dir")
    flag_values = _flag_values(options)
    flags = {field.name: flag_of(field).split("/")[0] for field in config_fields().values() if flag_of(field)}
    with naming_path(config_file or "--config"):
        config = build_config(config_file, flag_values, flags=flags)
        file_values = load_config_file(config_file) if config_file else {}
    fixed = _fixed_keys(config, {**file_values, **flag_values})

    from review_toolkit.train.pipeline import Composition
    from review_toolkit.train.search_space import build_space, read_space_file
    from review_toolkit.train.tune import TuneSettings, import_optuna

    import_optuna()  # a missing Optuna is said before anything else is read
    composition = Composition.resolve(config)
    config.head = config.head or composition.head.name
    user_space = read_space_file(space_file) if space_file else None
    space = build_space(config, composition, user_space=user_space, fixed=fixed,
                        where=f"{space_file}" if space_file else "--space")
    output_dir = Path(search_dir or Path("runs") / f"tune-{config.backbone}-{config.method}-{config.head}")
    settings = TuneSettings(output_dir=output_dir, trials=budget, timeout=time_budget, storage=storage,
                            keep_trials=keep_trials, progress=not quiet)
    quiet_libraries(progress=not quiet)
    click.echo(f"Searching {', '.join(f'{d.key} ({d.search.describe()})' for d in space.dimensions)}; "
               f"{budget} trials in all -> {output_dir}", err=True)
    result = _search(config, space, settings)
    _print_summary(result)


for _parameter in tune.params:  # the train flags' own help speaks of one run
    if _parameter.name == "output_dir":
        _parameter.help = "The search's folder: study, trials, table, plot, best run (default: runs/tune-B-M-H)."
tune.params = [parameter for parameter in tune.params if parameter.name not in _TRAIN_ONLY]


@stops_on_interrupt(_interrupted)
def _search(config: Any, space: Any, settings: Any) -> Any:
    from review_toolkit.train.tune import tune as run_search

    return run_search(config, space, settings, echo=lambda line: click.echo(line, err=True))


def _positive(text: str, flag: str, kind: type) -> Any:
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or value <= 0 or value != value:
        noun = "a whole number" if kind is int else "a number of seconds"
        raise ConfigError(f"{flag} is {text!r}; it must be {noun} above 0.")
    return value


def _fixed_keys(config: Any, given: dict[str, Any]) -> set[str]:
    """Options given a value (by a flag or the --config file), as --space names them: not searched."""
    fixed = {name for name, value in given.items() if value not in (None, (), {}) and name not in OPTION_FIELDS}
    for field_name in OPTION_FIELDS:
        kind = field_name.removesuffix("_options")
        fixed |= {f"{kind}.{name}" for name in getattr(config, field_name)}
    return fixed


def _print_summary(result: Any) -> None:
    click.echo("")
    click.echo(result.table)
    click.echo("")
    metrics = result.test_metrics
    click.echo(f"best: trial {result.best_trial}, validation macro F1 {result.best_value:.4f}; run: {result.best_run}")
    auc = f"{metrics['roc_auc']:.4f}" if metrics.get("roc_auc") is not None else "n/a"
    click.echo(f"best run on the test split: macro F1 {metrics['f1_macro']:.4f}  accuracy {metrics['accuracy']:.4f}  "
               f"ROC AUC {auc}")
    if result.defaults is not None:
        defaults = result.defaults
        test = defaults.get("test_f1_macro")
        click.echo(f"defaults (trial {defaults['trial']}): validation macro F1 {defaults['validation_f1_macro']:.4f}"
                   + (f", test macro F1 {test:.4f}" if test is not None else ""))
    click.echo(f"best configuration: {result.best_config} "
               f"(review-toolkit train --config {result.best_config} --output-dir RUN)")
    click.echo(f"trials: {result.output_dir / 'trials.csv'}, plot: {result.output_dir / 'trials.png'}")
