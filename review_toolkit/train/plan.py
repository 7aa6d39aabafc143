"""Training several combinations from one YAML plan, then comparing them.

A plan::

    output_dir: runs/compare_frozen_heads   # parent of the runs (default: runs/<plan file name>)
    shared:                                 # train options every run gets
      backbone: minilm
      method: frozen
      data: ../shared/data/fake_reviews.csv
    runs:                                   # one entry per run; its options override shared ones
      - head: logreg
      - head: svm
      - {head: mlp, name: minilm-mlp}       # name: the run's folder (default BACKBONE-METHOD-HEAD)
    ensemble:                               # optional: combine runs of the plan once they are trained
      name: ensemble                        # its folder under output_dir (default: ensemble)
      members: [minilm-frozen-logreg, minilm-mlp]   # run names (default: every run of the plan)
      combine: auto                         # mean | stacking | auto, as `review-toolkit ensemble --combine`
      threshold_for: f1                     # optional, as `review-toolkit ensemble --threshold-for`

Keys are ``train`` options with ``_`` or ``-`` (as in ``--config`` files); relative
paths are relative to the current directory, as on the command line.

Every run, and the ensemble, is checked (options, plugin combination, members
trained on the same data, existing output) before the first one starts, so a typo in the third entry does not surface after an
hour of training. Each run trains in its own process: its peak memory is its
own, and a crash in one does not take the others down. Frozen runs on the same
backbone and data share the on-disk embedding cache, so the backbone embeds
the reviews once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from review_toolkit.config import TrainConfig, read_yaml_mapping
from review_toolkit.data import load_splits_for, split_seed_of
from review_toolkit.errors import ConfigError, ReviewToolkitError
from review_toolkit.runs.layout import RUN_FILE

PLAN_KEYS = {"output_dir", "shared", "runs", "ensemble"}
ENSEMBLE_KEYS = {"name", "members", "combine", "threshold_for"}


@dataclass
class PlannedRun:
    name: str
    config: TrainConfig
    output_dir: Path


@dataclass
class PlannedEnsemble:
    """The plan's ``ensemble:`` section, checked: built from ``members`` once they are trained."""

    name: str
    members: list[PlannedRun]
    output_dir: Path
    combine: str = "auto"
    threshold_for: str | None = None


@dataclass
class PlanOutcome:
    trained: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (name, why)


# The options that decide which reviews a run reads and how they are split.
_DATA_OPTIONS = (
    "data", "text_column", "label_column", "label_map", "split_column", "validation_data", "test_data", "seed",
    "split_seed",
)


def _options(values: Any, where: str) -> dict[str, Any]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of option: value, not {type(values).__name__}.")
    return {str(key).replace("-", "_"): value for key, value in values.items()}


def load_plan(
    path: str | Path,
    *,
    output_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[PlannedRun]:
    """Read and check a plan; ``overrides`` (e.g. ``data`` from the command line) beat the plan's shared options."""
    from review_toolkit.config import merge_option_layers
    from review_toolkit.train.pipeline import Composition

    path = Path(path)
    raw = _read_plan(path)
    unknown = sorted(set(raw) - PLAN_KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(map(repr, unknown))}. A plan has 'shared' (options for every run), "
            "'runs' (a list of per-run options) and optionally 'output_dir'."
        )
    shared = _options(raw.get("shared"), f"{path}: 'shared'")
    shared.update({key: value for key, value in (overrides or {}).items() if value is not None})
    entries = raw.get("runs")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: 'runs' must be a non-empty list, e.g. runs: [{{head: logreg}}, {{head: svm}}].")
    parent = Path(output_dir or raw.get("output_dir") or Path("runs") / path.stem)

    planned: list[PlannedRun] = []
    for number, entry in enumerate(entries, start=1):
        where = f"{path}: run {number}"
        options = _options(entry, where)
        name = options.pop("name", None)
        if "output_dir" in options:
            raise ConfigError(f"{where}: give the run a 'name' (its folder under {parent}) instead of 'output_dir'.")
        config = TrainConfig.from_mapping(merge_option_layers(shared, options), source=where)
        try:
            composition = Composition.resolve(config)  # plugins exist and fit together, before anything trains
        except ReviewToolkitError as error:
            raise ConfigError(f"{where}: {error}") from None
        config.head = config.head or composition.head.name
        name = str(name or f"{config.backbone}-{config.method}-{config.head}")
        if not name or Path(name).name != name or name.startswith("."):
            raise ConfigError(f"{where}: name {name!r} must be a plain folder name.")
        config.output_dir = str(parent / name)
        planned.append(PlannedRun(name, config, parent / name))
    names = [run.name for run in planned]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(
            f"{path}: several runs would write to {', '.join(duplicates)}; give them distinct 'name' values."
        )
    return planned


def load_ensemble_plan(path: str | Path, planned: list[PlannedRun]) -> PlannedEnsemble | None:
    """The plan's ``ensemble:`` section checked against its runs (None when there is none).

    Refused before anything trains: unknown keys or runs, fewer than two members, an unknown
    combination, members whose data settings differ (naming the option), a name taken by a run.
    """
    from review_toolkit.train.ensemble import COMBINE_CHOICES, DATA_OPTIONS
    from review_toolkit.inference.calibration import THRESHOLD_OBJECTIVES

    path = Path(path)
    section = _read_plan(path).get("ensemble")
    if section is None:
        return None
    where = f"{path}: 'ensemble'"
    options = _options(section, where)
    unknown = sorted(set(options) - ENSEMBLE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; it takes {', '.join(sorted(ENSEMBLE_KEYS))}.")
    by_name = {run.name: run for run in planned}
    names = options.get("members", list(by_name))
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ConfigError(f"{where}: 'members' must be a list of run names, e.g. members: [{', '.join(by_name)}].")
    missing = [name for name in names if name not in by_name]
    if missing:
        raise ConfigError(
            f"{where}: member(s) {', '.join(map(repr, missing))} are not runs of the plan; its runs are "
            f"{', '.join(by_name)} (a run's name is its 'name', else BACKBONE-METHOD-HEAD)."
        )
    if len(set(names)) < 2:
        raise ConfigError(f"{where}: 'members' must name at least two different runs; got {names!r}.")
    combine = options.get("combine", "auto")
    if combine not in COMBINE_CHOICES:
        raise ConfigError(f"{where}: 'combine' must be one of {', '.join(COMBINE_CHOICES)}; got {combine!r}.")
    threshold_for = options.get("threshold_for")
    if threshold_for is not None and threshold_for not in THRESHOLD_OBJECTIVES:
        raise ConfigError(f"{where}: 'threshold_for' must be one of {', '.join(THRESHOLD_OBJECTIVES)}; got {threshold_for!r}.")
    name = str(options.get("name", "ensemble"))
    if not name or Path(name).name != name or name.startswith("."):
        raise ConfigError(f"{where}: name {name!r} must be a plain folder name.")
    if name in by_name:
        raise ConfigError(f"{where}: name {name!r} is also a run's folder; give the ensemble another 'name'.")
    members = [by_name[member] for member in dict.fromkeys(names)]
    first = members[0]
    for member in members[1:]:
        for option in DATA_OPTIONS:
            if getattr(first.config, option) != getattr(member.config, option):
                raise ConfigError(
                    f"{where}: runs {first.name!r} and {member.name!r} would be trained with different {option} "
                    f"({getattr(first.config, option)!r}, {getattr(member.config, option)!r}); an ensemble combines "
                    f"runs trained on the same data and split. Set {option} under 'shared'."
                )
        if split_seed_of(first.config) != split_seed_of(member.config):
            raise ConfigError(
                f"{where}: runs {first.name!r} and {member.name!r} would be split with different seeds "
                f"({split_seed_of(first.config)}, {split_seed_of(member.config)}); an ensemble combines runs trained on "
                "the same data and split. Set split_seed under 'shared' to vary seed per run."
            )
    return PlannedEnsemble(name, members, first.output_dir.parent / name, combine, threshold_for)


def build_planned_ensemble(
    ensemble: PlannedEnsemble, outcome: PlanOutcome, *, overwrite: bool, skip_existing: bool, echo: Callable[[str], None] = print
) -> Path | None:
    """Build the plan's ensemble once its members are finished; None when it was skipped or cannot be built."""
    from review_toolkit.train.ensemble import build_ensemble

    finished = set(outcome.trained + outcome.skipped)
    missing = [member.name for member in ensemble.members if member.output_dir not in finished]
    if missing:
        echo(f"ensemble {ensemble.name}: not built, its member(s) {', '.join(missing)} did not finish")
        outcome.failed.append((ensemble.name, f"member(s) {', '.join(missing)} did not finish"))
        return None
    if skip_existing and not overwrite and (ensemble.output_dir / RUN_FILE).is_file():
        echo(f"ensemble {ensemble.name}: exists, skipped")
        return ensemble.output_dir
    try:
        result = build_ensemble(
            [member.output_dir for member in ensemble.members],
            ensemble.output_dir,
            combine=ensemble.combine,
            threshold_for=ensemble.threshold_for,
            overwrite=overwrite,
        )
    except ReviewToolkitError as error:
        echo(f"ensemble {ensemble.name}: FAILED: {error}")
        outcome.failed.append((ensemble.name, str(error)))
        return None
    echo(
        f"ensemble {ensemble.name}: {result.info['combination']['method']} of {len(ensemble.members)} runs, test macro F1 "
        f"{result.metrics['f1_macro']:.4f} -> {result.run_dir}"
    )
    return result.run_dir


def _read_plan(path: Path) -> dict[str, Any]:
    return read_yaml_mapping(
        path, what="Plan file", missing_hint="", mapping_hint="be a mapping with 'shared' and 'runs'"
    )


def check_outputs(
    planned: list[PlannedRun], *, overwrite: bool, skip_existing: bool, ensemble: PlannedEnsemble | None = None
) -> None:
    """Refuse, before anything trains, to write where something already is (unless told how)."""
    if overwrite:
        return
    outputs = [run.output_dir for run in planned] + ([ensemble.output_dir] if ensemble is not None else [])
    runs = [output for output in outputs if (output / RUN_FILE).is_file()]
    others = [output for output in outputs if output.exists() and output not in runs]
    if others:
        raise ConfigError(
            f"{', '.join(map(str, others))} already exist(s) and is not a finished run. Move it away, or pass "
            "--overwrite to replace it."
        )
    if runs and not skip_existing:
        raise ConfigError(
            f"{len(runs)} run folder(s) already exist: {', '.join(map(str, runs))}. "
            "Pass --skip-existing to keep them and train the rest, or --overwrite to train them again."
        )


def check_data(planned: list[PlannedRun]) -> None:
    """Read each distinct data setting of the plan once and check its columns, labels and split."""
    seen: set[str] = set()
    for run in planned:
        config = run.config
        setting = repr([getattr(config, name) for name in _DATA_OPTIONS])
        if setting in seen:
            continue
        seen.add(setting)
        try:
            load_splits_for(config)
        except ReviewToolkitError as error:
            raise ConfigError(f"run {run.name!r}: {error}") from None


def run_plan(
    planned: list[PlannedRun],
    *,
    overwrite: bool = False,
    skip_existing: bool = False,
    stop_on_error: bool = False,
    quiet: bool = False,
    echo: Callable[[str], None] = print,
    ensemble: PlannedEnsemble | None = None,
) -> PlanOutcome:
    """Train each planned run in a child process, in order (``ensemble``'s folder is checked with theirs)."""
    check_outputs(planned, overwrite=overwrite, skip_existing=skip_existing, ensemble=ensemble)
    outcome = PlanOutcome()
    for number, run in enumerate(planned, start=1):
        if skip_existing and not overwrite and (run.output_dir / RUN_FILE).is_file():
            echo(f"[{number}/{len(planned)}] {run.name}: exists, skipped")
            outcome.skipped.append(run.output_dir)
            continue
        config = run.config
        config.overwrite = overwrite
        echo(f"[{number}/{len(planned)}] {run.name}: training {config.backbone} + {config.method} + {config.head}")
        run.output_dir.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        error = _train_in_child(config, quiet=quiet)
        if error is None:
            echo(f"[{number}/{len(planned)}] {run.name}: done in {time.perf_counter() - started:.1f} s -> {run.output_dir}")
            outcome.trained.append(run.output_dir)
        else:
            echo(f"[{number}/{len(planned)}] {run.name}: FAILED: {error}")
            outcome.failed.append((run.name, error))
            if stop_on_error:
                break
    return outcome


def _train_in_child(config: TrainConfig, *, quiet: bool) -> str | None:
    """``review-toolkit train --config`` in a child process; None on success, else why not.

    On an interruption the child is given the chance to stop cleanly (the ``train`` command keeps a
    checkpoint to resume from): a terminal's Ctrl-C reaches it directly, so it is waited for; any other
    signal (SIGTERM from a scheduler, a second Ctrl-C) is passed on as SIGTERM.
    """
    descriptor, config_path = tempfile.mkstemp(prefix="review-toolkit-plan-", suffix=".yaml")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            yaml.safe_dump(config.to_dict(), handle, sort_keys=False)
        command = [sys.executable, "-m", "review_toolkit", "train", "--config", config_path]
        if quiet:
            command.append("--quiet")
        process = subprocess.Popen(command)
        try:
            returncode = process.wait()
        except KeyboardInterrupt as interrupt:
            if str(interrupt) != "SIGINT":
                process.send_signal(signal.SIGTERM)
            try:
                process.wait()
            except KeyboardInterrupt:
                process.send_signal(signal.SIGTERM)
                process.wait()
            raise
        return None if returncode == 0 else f"exit status {returncode} (its messages are above)"
    finally:
        Path(config_path).unlink(missing_ok=True)

