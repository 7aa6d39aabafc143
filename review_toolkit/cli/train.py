"""``review-toolkit train``: compose, train and save a classifier.

Its options are made from ``TrainConfig``'s fields (``review_toolkit.config``): each field's
metadata gives the flag, its help and its section; the values are checked by the same
``check_option`` that checks a config file, so a flag and a config line are refused alike.
Fields described with ``flag=None`` are config-file-only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click

from review_toolkit.cli.group import is_main_process, quiet_libraries, stops_on_interrupt
from review_toolkit.config import LEGACY_METHOD_OPTIONS, TrainConfig, config_fields, field_type
from review_toolkit.runtime.os_errors import naming_path


class _Unchecked(click.ParamType):
    """Shows the value's type in help (FLOAT, INTEGER) and passes the text on unchanged:
    ``check_option`` converts and checks it, with the same message as for a config file."""

    def __init__(self, name: str):
        self.name = name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return value


_METAVARS = {int: _Unchecked("integer"), float: _Unchecked("float")}


def flag_of(field: dataclasses.Field) -> str | None:
    """The flag of a TrainConfig field ("--name", "--name/--no-name"), or None (config files only)."""
    flag = field.metadata.get("flag", "")
    if flag is None:
        return None
    return flag or "--" + field.name.replace("_", "-")


def _split_list(value: str | None) -> list[str] | None:
    return [item.strip() for item in value.split(",") if item.strip()] if value else None


def _parse_label_map(value: str | None) -> dict[str, str] | None:
    from review_toolkit.data import parse_label_map  # lazy: reading data imports pandas

    return parse_label_map(value)


def _parse_assignments(values: tuple[str, ...], flag: str) -> dict[str, str] | None:
    """Repeated NAME=VALUE flags as a mapping (values stay text; the option's check reads them)."""
    parsed: dict[str, str] = {}
    for item in values:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise click.UsageError(f"{flag} {item!r}: expected NAME=VALUE.")
        parsed[name.strip()] = value.strip()
    return parsed or None


# How the text of a flag becomes the field's value, for fields whose flag is not the value itself.
_FLAG_PARSERS: dict[str, Callable[[Any], Any]] = {"label_map": _parse_label_map}


def config_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add one click option per TrainConfig field that has a flag, in field order."""
    for field in reversed(dataclasses.fields(TrainConfig)):
        flag = flag_of(field)
        if flag is None:
            continue
        kind, _ = field_type(field.name)
        settings: dict[str, Any] = {"help": field.metadata["help"]}
        if kind is bool:
            settings["default"] = None  # not given: the config file's value, else the field's default
            if "/" not in flag:  # an on/off pair ("--a/--no-a") is a flag already
                settings["is_flag"] = True
        elif kind in _METAVARS:
            settings["type"] = _METAVARS[kind]
        elif isinstance(field.metadata.get("choices"), tuple) and kind is str:
            settings["metavar"] = "[" + "|".join(field.metadata["choices"]) + "]"
        elif kind is dict and field.name not in _FLAG_PARSERS:
            settings["multiple"] = True
            settings["metavar"] = "NAME=VALUE"
            settings["default"] = ()
        if field.metadata.get("group"):
            settings["cls"] = _SectionedOption
            settings["section"] = field.metadata["group"]
        command = click.option(flag, field.name, **settings)(command)
    return command


def _flag_values(options: dict[str, Any]) -> dict[str, Any]:
    """The flags' values as fields hold them: lists split at commas, NAME=VALUE pairs as mappings."""
    fields = config_fields()
    values = {}
    for name, value in options.items():
        kind, _ = field_type(name)
        if name in _FLAG_PARSERS:
            value = _FLAG_PARSERS[name](value)
        elif kind is list:
            value = _split_list(value)
        elif kind is dict:
            value = _parse_assignments(value, flag_of(fields[name]) or name)
        values[name] = value
    return values


class _SectionedOption(click.Option):
    """An option that knows the section of ``train --help`` it is listed in."""

    def __init__(self, *args: Any, section: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.section = section


class _SectionedCommand(click.Command):
    """Lists options under their TrainConfig sections, the others (--config, --quiet) first."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {"Options": []}
        for parameter in self.get_params(ctx):
            record = parameter.get_help_record(ctx)
            if record is not None:
                sections.setdefault(getattr(parameter, "section", "Options"), []).append(record)
        for title, records in sections.items():
            with formatter.section(title):
                formatter.write_dl(records)


_LORA_SECTION = "Adapters (lora, qlora): aliases of --method-option"
# The flags of earlier releases, kept: each sets one of the lora methods' options (config.LEGACY_METHOD_OPTIONS).
_LORA_ALIASES = {
    "lora_r": ("--lora-r", {"type": int, "help": "LoRA rank: --method-option r=N (default: 16)."}),
    "lora_alpha": ("--lora-alpha", {"type": int, "help": "LoRA alpha: --method-option lora_alpha=N (default: 32)."}),
    "lora_dropout": ("--lora-dropout", {"type": float, "help": "LoRA dropout: --method-option lora_dropout=X (default: 0.05)."}),
    "lora_targets": ("--lora-targets", {
        "help": "Comma-separated module names for LoRA: --method-option target_modules=A,B (default: the backbone's).",
    }),
}
assert set(_LORA_ALIASES) == set(LEGACY_METHOD_OPTIONS)


def lora_alias_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for name, (flag, settings) in reversed(list(_LORA_ALIASES.items())):
        command = click.option(flag, name, cls=_SectionedOption, section=_LORA_SECTION, **settings)(command)
    return command


def _interrupted(interrupt: KeyboardInterrupt, config: TrainConfig, **_: Any) -> str:
    from review_toolkit.runs.layout import describe_interrupted_run

    if config.folds and config.fold is None:
        cause = interrupt.args[0] if interrupt.args and isinstance(interrupt.args[0], str) else ""
        return (
            f"Interrupted{f' ({cause})' if cause else ''}. A cross-validation is kept only once every fold is done, "
            f"so nothing was written to {config.output_dir}; run the command again to start over."
        )
    return describe_interrupted_run(config.output_dir, interrupt)


@stops_on_interrupt(_interrupted)  # SIGINT / SIGTERM during training: checkpoint after the current step, then stop
def _train_and_report(config: TrainConfig, quiet: bool) -> None:
    from review_toolkit.train.pipeline import train as run_training
    from review_toolkit.train.tracking import EpochLines

    # Without progress bars, one line per epoch says how training goes.
    epoch_lines = [EpochLines(lambda line: click.echo(line, err=True))] if quiet else []
    if config.folds and config.fold is None:
        _cross_validate_and_report(config, quiet, epoch_lines)
        return
    result = run_training(config, progress=not quiet, callbacks=epoch_lines)
    if is_main_process():  # one report, not one per process of a multi-GPU launch
        _print_summary(result)


def _cross_validate_and_report(config: TrainConfig, quiet: bool, callbacks: list[Any]) -> None:
    from review_toolkit.train.cross_validation import SHOWN_METRICS, cross_validate, format_summary, plus_minus

    def fold_done(fold: int, result: Any) -> None:
        if is_main_process():
            metrics = result.metrics
            auc = f"{metrics['roc_auc']:.4f}" if metrics.get("roc_auc") is not None else "n/a"
            click.echo(
                f"fold {fold}/{config.folds}: macro F1 {metrics['f1_macro']:.4f}  accuracy {metrics['accuracy']:.4f}  "
                f"ROC AUC {auc}  ({result.info['data']['sizes']['test']} test reviews)"
            )

    result = cross_validate(config, progress=not quiet, callbacks=callbacks, on_fold=fold_done)
    if not is_main_process():
        return
    summary = result.summary
    click.echo("")
    click.echo(
        f"{summary['backbone']} + {summary['method']} + {summary['head']} on {summary['data']}: "
        f"{summary['folds']}-fold cross-validation (stratified, seed {summary['seed']}), {summary['reviews']} reviews"
    )
    click.echo("")
    click.echo(format_summary(summary))
    click.echo("")
    click.echo("  ".join(f"{title} {plus_minus(summary['metrics'].get(key))}" for key, title in SHOWN_METRICS))
    refit = f", {summary['refit']}/" if summary["refit"] else ""
    click.echo(
        f"runs saved to {result.directory} (fold-1..{summary['folds']}/{refit}, cv.json, oof_predictions.csv)"
    )


@click.command(cls=_SectionedCommand)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file of options; flags override it.")
@config_options
@lora_alias_options
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train(config_file: str | None, quiet: bool, **options: Any) -> None:
    """Train a classifier and write its run directory."""
    flags = {field.name: flag_of(field).split("/")[0] for field in config_fields().values() if flag_of(field)}
    flags.update({name: flag for name, (flag, _) in _LORA_ALIASES.items()})
    aliases = {name: options.pop(name) for name in _LORA_ALIASES}
    aliases["lora_targets"] = _split_list(aliases["lora_targets"])
    config_values = {**_flag_values(options), **aliases}
    from review_toolkit.config import build_config

    with naming_path(config_file or "--config"):  # a read error of the config file names it
        config = build_config(config_file, config_values, flags=flags)
    quiet_libraries(progress=not quiet)
    from review_toolkit.runs.layout import run_of_staging
    from review_toolkit.train.pipeline import default_output_dir

    if not config.output_dir and config.resume_from and run_of_staging(config.resume_from):
        config.output_dir = str(run_of_staging(config.resume_from))  # finish RUN.partial as RUN
    config.output_dir = config.output_dir or str(default_output_dir(config))
    _train_and_report(config, quiet)


def _print_summary(result: Any) -> None:
    info, metrics = result.info, result.metrics
    click.echo("")
    click.echo(f"{info['backbone']} + {info['method']} + {info['head']} on {info['data']['source']}")
    click.echo(f"test split: {info['data']['sizes']['test']} reviews")
    click.echo("")
    click.echo(result.report)
    if metrics.get("f1_macro") is None:
        click.echo(metrics.get("note", "no test metrics"))
    else:
        auc = f"{metrics['roc_auc']:.4f}" if metrics.get("roc_auc") is not None else "n/a"
        click.echo(f"macro F1 {metrics['f1_macro']:.4f}  accuracy {metrics['accuracy']:.4f}  ROC AUC {auc}")
    click.echo(f"trained in {info['training_seconds']:.1f} s; run saved to {result.run_dir}")
