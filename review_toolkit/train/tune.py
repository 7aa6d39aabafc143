"""Hyperparameter search: Optuna trials, each a normal run, scored on the validation split's macro F1.

``tune(config, space, settings)`` searches the dimensions of a ``SearchSpace`` around the
training configuration ``config``:

- The first trial of a new study trains the defaults (the configuration as given), so the best
  configuration found is never worse on validation than not searching.
- Every trial is a run trained by ``train.pipeline.train`` in ``DIR/trials/NNN``; its validation
  macro F1 (from the run's stored split predictions, at the run's threshold) is the objective. The
  test split is never looked at to choose.
- Trainer-trained trials (fine-tuning, torch heads) report validation F1 after each epoch and are
  stopped when Optuna's median pruner finds them behind the others at that epoch; fitted heads train
  in one step and are not pruned.
- The study lives in an Optuna RDB storage (``DIR/study.db``, SQLite) that records each trial as it
  finishes: a killed search loses only the trial that was running, and the same command continues it.
  ``trials`` is the total budget of the study, so a second run with a larger one adds the difference.

Optuna's TPE sampler is seeded with ``config.seed`` (plus the number of trials a resumed study holds). Trainer's ``hyperparameter_search`` is not used: it
would bypass the pipeline that makes each trial a complete run (calibration, split predictions, run
files); the pruning callback gives the same per-epoch pruning.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from review_toolkit.config import TrainConfig
from review_toolkit.data import load_splits_for
from review_toolkit.errors import ConfigError, ReviewToolkitError
from review_toolkit.evaluation.metrics import classification_metrics
from review_toolkit.evaluation.run_evaluation import load_split_predictions
from review_toolkit.runs.layout import CONFIG_FILE, METRICS_FILE, PARTIAL_SUFFIX, RUN_FILE, read_json
from review_toolkit.runs.lock import DirectoryLock
from review_toolkit.train.search_space import SearchSpace
from review_toolkit.train.tune_report import TRIALS_CSV, TRIALS_PLOT, markdown_table, plot_trials, trial_rows, write_csv

STUDY_NAME = "review-toolkit-tune"
STUDY_FILE = "study.db"
TRIALS_DIRECTORY = "trials"
BEST_DIRECTORY = "best"
BEST_CONFIG_FILE = "best_config.yaml"
SETUP_ATTRIBUTE = "setup"  # the study's configuration and space: a resumed search must be the same search
MAX_FAILURES_IN_A_ROW = 3  # then the search stops: the configuration, not bad luck, is at fault
# Options that change where things go, not what a trial trains: a resumed search may differ in them.
_NOT_PART_OF_THE_SEARCH = ("output_dir", "overwrite", "cache_dir", "report_to", "logging_dir", "resume_from")
INSTALL_HINT = 'pip install "review-toolkit[tune]"'


@dataclass
class TuneSettings:
    output_dir: Path
    trials: int = 20
    timeout: float | None = None  # seconds after which no new trial starts (one always does)
    storage: str | None = None  # an Optuna storage URL; default sqlite:///DIR/study.db
    keep_trials: str = "best"  # "best": only the best trial's run stays under trials/; "all": every run
    progress: bool = False


@dataclass
class TuneResult:
    output_dir: Path
    rows: list[dict[str, Any]]
    best_trial: int
    best_value: float
    best_run: Path
    best_config: Path
    table: str
    test_metrics: dict[str, Any]
    defaults: dict[str, Any] | None  # the defaults trial: validation and test macro F1, when it finished
    new_trials: int = 0
    stopped_by_timeout: bool = False
    failures: list[str] = field(default_factory=list)


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError(f"Hyperparameter search needs Optuna, which is not installed: {INSTALL_HINT}") from None
    return optuna


def validation_f1(run_dir: Path) -> float:
    """Macro F1 of a run on its validation split, from the split predictions the run stored."""
    scores = load_split_predictions(run_dir)
    if scores is None or not len(scores["validation"].labels):
        raise ConfigError(f"{run_dir} has no validation predictions to score; a search needs a validation split.")
    threshold = float(read_json(run_dir / RUN_FILE).get("threshold", 0.5))
    validation = scores["validation"]
    predictions = (validation.p_raw >= threshold).astype(int)
    return float(classification_metrics(validation.labels, predictions, validation.p_raw)["f1_macro"])


def check_before_training(config: TrainConfig, space: SearchSpace) -> None:
    """Refuse, before anything trains, a search whose trials could not all be configured.

    Each corner of the space (every range at its low end, then at its high end; the first and last
    choices) is applied and its plugins looked up with the options it gives them; then the data is read.
    """
    from review_toolkit.train.pipeline import Composition

    for end in (0, -1):
        drawn = {}
        for dimension in space.dimensions:
            search = dimension.search
            drawn[dimension.key] = (search.low, search.high)[end] if search.is_range else list(search.choices or ())[end]
        corner = space.apply(config, drawn)
        corner.validate(source="the search space")
        Composition.resolve(corner)
    load_splits_for(config)


def tune(
    config: TrainConfig, space: SearchSpace, settings: TuneSettings, *, echo: Callable[[str], None] = print
) -> TuneResult:
    """Run (or continue) the search and write its outputs into ``settings.output_dir``."""
    optuna = import_optuna()
    check_before_training(config, space)
    output_dir = settings.output_dir
    lock = DirectoryLock(output_dir, purpose="search").acquire()  # one search per folder at a time
    try:
        created = not output_dir.exists()
        output_dir.mkdir(parents=True, exist_ok=True)
        try:
            study = _open_study(optuna, config, space, settings)
        except ConfigError:
            if created and not any(output_dir.iterdir()):
                output_dir.rmdir()  # a refused search leaves nothing behind
            raise
        _close_interrupted_trials(optuna, study)
        _remove_unfinished_runs(optuna, study, output_dir)
        search = _Search(optuna, study, config, space, settings, echo)
        search.run()
        return _write_outputs(optuna, study, space, settings, search)
    finally:
        lock.release()


def _setup(config: TrainConfig, space: SearchSpace) -> dict[str, Any]:
    values = {key: value for key, value in config.to_dict().items() if key not in _NOT_PART_OF_THE_SEARCH}
    return json.loads(json.dumps({"config": values, "space": space.as_dict()}, default=str))


def _open_study(optuna: Any, config: TrainConfig, space: SearchSpace, settings: TuneSettings) -> Any:
    storage = settings.storage or f"sqlite:///{(settings.output_dir / STUDY_FILE).resolve()}"
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the search prints its own line per trial
    try:
        study = optuna.create_study(
            study_name=STUDY_NAME,
            storage=storage,
            direction="maximize",
            pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
            load_if_exists=True,
        )
    except (ImportError, ValueError, optuna.exceptions.OptunaError) as error:
        raise ConfigError(f"--storage {storage}: Optuna cannot open it ({' '.join(str(error).split())}).") from None
    except Exception as error:  # the database driver's own errors (a locked or damaged file, a bad URL)
        first_line = (str(error).splitlines() or [""])[0]
        raise ConfigError(f"--storage {storage}: cannot open the study ({type(error).__name__}: {first_line}).") from None
    # A resumed study reseeded alike would draw the same random start-up values again: the seed moves
    # on by the trials the study holds (still the same sequence for the same history).
    study.sampler = optuna.samplers.TPESampler(seed=(config.seed + len(study.trials)) % 2**32)
    setup = _setup(config, space)
    recorded = study.user_attrs.get(SETUP_ATTRIBUTE)
    if recorded is None:
        study.set_user_attr(SETUP_ATTRIBUTE, setup)
    elif recorded != setup:
        raise ConfigError(
            f"{storage} holds a different search ({_first_difference(recorded, setup)}). Continue it with the same "
            "options, or give another --output-dir (or --storage) for a new search."
        )
    return study


def _first_difference(recorded: dict[str, Any], current: dict[str, Any]) -> str:
    for part in ("config", "space"):
        old, new = recorded.get(part, {}), current.get(part, {})
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                where = key if part == "config" else f"the search of {key}"
                return f"{where}: {old.get(key)!r} there, {new.get(key)!r} now"
    return "its options differ"


def _close_interrupted_trials(optuna: Any, study: Any) -> None:
    """Trials left running by a killed search never finish: mark them failed (with no error: interrupted).

    The folder's lock says no other search of this folder is running, so a running trial is a dead one's.
    """
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def _remove_unfinished_runs(optuna: Any, study: Any, output_dir: Path) -> None:
    """The runs of trials that did not finish (pruned, failed, interrupted: a checkpoint kept for a resume
    that a search never makes) are removed; the study keeps their rows."""
    complete = optuna.trial.TrialState.COMPLETE
    for trial in study.get_trials(deepcopy=False):
        if trial.state != complete:
            for path in (_trial_dir(output_dir, trial.number), _staging(_trial_dir(output_dir, trial.number))):
                shutil.rmtree(path, ignore_errors=True)


def is_interrupted(trial: Any) -> bool:
    """A failed trial without an error: stopped by Ctrl-C, SIGTERM or a killed process; it uses no budget."""
    return trial.state.name == "FAIL" and "error" not in trial.user_attrs


def _trial_dir(output_dir: Path, number: int) -> Path:
    return output_dir / TRIALS_DIRECTORY / f"{number:03d}"


def _staging(path: Path) -> Path:
    return Path(str(path) + PARTIAL_SUFFIX)


def _trains_with_trainer(config: TrainConfig) -> bool:
    from review_toolkit.train.pipeline import Composition

    composition = Composition.resolve(config)
    return composition.method.trains_backbone or composition.head.trains_with_trainer


def pruning_callback(optuna: Any, trial: Any) -> Any:
    """A TrainerCallback that reports each epoch's validation macro F1 and stops a hopeless trial."""
    from transformers import TrainerCallback

    class ReportValidationF1(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # noqa: ANN001 (Trainer's signature)
            value = (metrics or {}).get("eval_f1_macro")
            if value is None:
                return
            epoch = int(round(state.epoch or 0))
            trial.report(float(value), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation macro F1 {value:.4f} after epoch {epoch}")

    return ReportValidationF1()


class TrialFailed(ReviewToolkitError):
    """A trial that could not train (its error is in the trial's user attributes); the search goes on."""


class _Search:
    """The trial loop: budget and time checks, one line per trial, the best run kept."""

    def __init__(self, optuna, study, config, space, settings, echo):
        self.optuna, self.study, self.config, self.space, self.settings, self.echo = (
            optuna, study, config, space, settings, echo
        )
        self.prunable = _trains_with_trainer(config)
        self.new_trials = 0
        self.stopped_by_timeout = False
        self.failures: list[str] = []

    def counted(self) -> int:
        """Trials that used the budget: finished, pruned or failed by an error (not interrupted ones)."""
        states = self.optuna.trial.TrialState
        return sum(
            1 for trial in self.study.get_trials(deepcopy=False)
            if trial.state in (states.COMPLETE, states.PRUNED)
            or (trial.state == states.FAIL and not is_interrupted(trial))
        )

    def run(self) -> None:
        if not self.study.get_trials(deepcopy=False):
            self.study.enqueue_trial({}, user_attrs={"defaults": True})
        started = time.monotonic()
        failures_in_a_row = 0
        done = self.counted()
        if done >= self.settings.trials:
            self.echo(f"The study already has {done} trials (budget {self.settings.trials}); nothing to add.")
        while self.counted() < self.settings.trials:
            # As Optuna's own timeout: checked between trials, so every command runs at least one.
            spent = time.monotonic() - started
            if self.new_trials and self.settings.timeout is not None and spent >= self.settings.timeout:
                self.stopped_by_timeout = True
                self.echo(f"Time budget of {self.settings.timeout:g} s spent; no further trial starts.")
                break
            self.study.optimize(self.objective, n_trials=1, catch=(ReviewToolkitError,), gc_after_trial=False)
            gc.collect()
            self.new_trials += 1
            trial = self.study.get_trials(deepcopy=False)[-1]
            failures_in_a_row = failures_in_a_row + 1 if trial.state == self.optuna.trial.TrialState.FAIL else 0
            self.report(trial)
            self.keep_best_only()
            if failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
                raise ConfigError(
                    f"{MAX_FAILURES_IN_A_ROW} trials in a row failed; the last: {trial.user_attrs.get('error')}"
                )

    def objective(self, trial: Any) -> float:
        defaults = bool(trial.user_attrs.get("defaults"))
        drawn = {} if defaults else self.space.suggest(trial)
        trial_config = self.space.apply(self.config, drawn)
        run_dir = _trial_dir(self.settings.output_dir, trial.number)
        trial_config = dataclasses.replace(trial_config, output_dir=str(run_dir), overwrite=True, resume_from=None)
        callbacks = [pruning_callback(self.optuna, trial)] if self.prunable else []
        from review_toolkit.train.pipeline import train

        try:
            result = train(trial_config, progress=self.settings.progress, callbacks=callbacks)
        except ReviewToolkitError as error:
            trial.set_user_attr("error", str(error))
            raise
        except (MemoryError, RuntimeError) as error:
            import torch

            if not isinstance(error, (MemoryError, torch.OutOfMemoryError)):
                raise  # a fault of the toolkit or a plugin, not of this trial's values
            # Out of memory: smaller values (a lower rank, a narrower head) may fit; the search goes on.
            trial.set_user_attr("error", f"out of memory ({' '.join(str(error).split())[:200]})")
            raise TrialFailed(trial.user_attrs["error"]) from None
        value = validation_f1(result.run_dir)
        trial.set_user_attr("test_f1_macro", float(result.metrics["f1_macro"]))
        return value

    def report(self, trial: Any) -> None:
        states = self.optuna.trial.TrialState
        label = "defaults" if trial.user_attrs.get("defaults") else ", ".join(
            f"{key}={_short(value)}" for key, value in trial.params.items()
        )
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        position = f"trial {trial.number} ({self.counted()}/{self.settings.trials})"
        if trial.state == states.COMPLETE:
            best = self.study.best_trial
            self.echo(f"{position}: validation macro F1 {trial.value:.4f} (best {best.value:.4f}, trial "
                      f"{best.number}) in {seconds:.1f} s; {label}")
        elif trial.state == states.PRUNED:
            self.echo(f"{position}: pruned after epoch {max(trial.intermediate_values or [0])} in {seconds:.1f} s; {label}")
        else:
            why = trial.user_attrs.get("error", "an error")
            self.failures.append(f"trial {trial.number}: {why}")
            self.echo(f"{position}: FAILED: {why}; {label}")

    def keep_best_only(self) -> None:
        """Remove the runs of trials other than the best (their rows stay in the study and the table)."""
        if self.settings.keep_trials != "best":
            return
        best = _best_number(self.optuna, self.study)
        folder = self.settings.output_dir / TRIALS_DIRECTORY
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            number = path.name.removesuffix(PARTIAL_SUFFIX)
            if number.isdigit() and path.is_dir() and int(number) != best:
                shutil.rmtree(path, ignore_errors=True)


def _best_number(optuna: Any, study: Any) -> int | None:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return study.best_trial.number if complete else None


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _write_outputs(optuna: Any, study: Any, space: SearchSpace, settings: TuneSettings, search: _Search) -> TuneResult:
    output_dir = settings.output_dir
    trials = study.get_trials(deepcopy=False)
    rows = trial_rows(trials, space.keys())
    write_csv(rows, output_dir / TRIALS_CSV)
    plot_trials(rows, output_dir / TRIALS_PLOT)
    best_number = _best_number(optuna, study)
    table = markdown_table(rows, best_number)
    if best_number is None:
        raise ConfigError(
            f"No trial finished ({len(rows)} tried; see {output_dir / TRIALS_CSV}). "
            + (search.failures[-1] if search.failures else "Give a larger --trials or --timeout.")
        )
    best = study.best_trial
    best_trial_dir = _trial_dir(output_dir, best.number)
    best_run = _copy_best_run(best_trial_dir, output_dir / BEST_DIRECTORY)
    best_config = _write_best_config(best_run, output_dir / BEST_CONFIG_FILE, best.number, best.value, len(rows))
    defaults_trial = next((trial for trial in trials if trial.user_attrs.get("defaults")), None)
    defaults = None
    if defaults_trial is not None and defaults_trial.state == optuna.trial.TrialState.COMPLETE:
        defaults = {"trial": defaults_trial.number, "validation_f1_macro": defaults_trial.value,
                    "test_f1_macro": defaults_trial.user_attrs.get("test_f1_macro")}
    return TuneResult(
        output_dir=output_dir, rows=rows, best_trial=best.number, best_value=float(best.value), best_run=best_run,
        best_config=best_config, table=table, test_metrics=read_json(best_run / METRICS_FILE), defaults=defaults,
        new_trials=search.new_trials, stopped_by_timeout=search.stopped_by_timeout, failures=search.failures,
    )


def _copy_best_run(trial_dir: Path, best_dir: Path) -> Path:
    """DIR/best: a copy of the best trial's run (staged, then put in place), unless it is that run already."""
    if (best_dir / CONFIG_FILE).is_file():
        recorded = yaml.safe_load((best_dir / CONFIG_FILE).read_text(encoding="utf-8")) or {}
        if recorded.get("output_dir") == str(trial_dir) or not trial_dir.is_dir():
            return best_dir
    if not (trial_dir / RUN_FILE).is_file():
        raise ConfigError(f"The best trial's run {trial_dir} is missing; {best_dir} is kept as it was.")
    staging = _staging(best_dir)
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(trial_dir, staging)
    previous = best_dir.with_name(best_dir.name + ".previous")
    if best_dir.exists():
        shutil.rmtree(previous, ignore_errors=True)
        best_dir.rename(previous)
    staging.rename(best_dir)
    shutil.rmtree(previous, ignore_errors=True)
    return best_dir


def _write_best_config(best_run: Path, path: Path, number: int, value: float, tried: int) -> Path:
    """best_config.yaml: the best run's config.yaml, ready for ``train --config`` (a new output folder)."""
    values = yaml.safe_load((best_run / CONFIG_FILE).read_text(encoding="utf-8")) or {}
    values.update({"output_dir": None, "overwrite": False, "resume_from": None})
    header = (
        f"# The best of {tried} trials of review-toolkit tune: trial {number}, validation macro F1 {value:.4f}.\n"
        "# Reproduce it with: review-toolkit train --config THIS_FILE --output-dir RUN\n"
    )
    staging = path.with_name(path.name + PARTIAL_SUFFIX)
    staging.write_text(header + yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    staging.replace(path)
    return path
