"""Building an ensemble run from runs trained on the same data: checks, combination, run directory.

Nothing is scored again: every run stores its uncalibrated P(fake) for the validation and test
splits (``split_predictions.csv``, with source rows and labels). The members' calibrated scores
on validation choose and fit the combination (mean, or stacking by logistic regression), the
ensemble's own calibration and its threshold; the test split is then scored once, for the
record. Those stored rows are also the proof that the members saw the same split: runs whose
data settings, split or labels differ are refused, naming the option, before anything is written.

The run directory is written like a training's (staged in ``OUT.partial``, manifest last,
renamed into place) and holds a copy of every member (see :mod:`review_toolkit.runs.ensemble_run`).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from review_toolkit import __version__
from review_toolkit.errors import ConfigError, RunDirectoryError
from review_toolkit.data import split_seed_of
from review_toolkit.evaluation.metrics import classification_metrics, classification_report
from review_toolkit.evaluation.run_evaluation import SplitScores, load_split_predictions, save_split_predictions
from review_toolkit.inference.calibration import (
    DEFAULT_THRESHOLD,
    THRESHOLD_OBJECTIVES,
    Calibration,
    ThresholdChoice,
    choose_threshold,
    expected_calibration_error,
    fit_calibration,
)
from review_toolkit.inference.ensemble import COMBINE_METHODS, Combination, stacking_features
from review_toolkit.runs.checkpoints import CHECKPOINT_DIRECTORY
from review_toolkit.runs.ensemble_run import ENSEMBLE_KIND, is_ensemble
from review_toolkit.runs.layout import (
    CONFIG_FILE,
    MEMBERS_DIRECTORY,
    METRICS_FILE,
    REPORT_FILE,
    RUN_FILE,
    SPLIT_PREDICTIONS_FILE,
    RunWriter,
    read_json,
    read_run_config_file,
    require_run_directory,
    write_json,
)
from review_toolkit.runs.manifest import verify_run_directory
from review_toolkit.runs.model_card import write_model_card

COMBINE_CHOICES = (*COMBINE_METHODS, "auto")
STACKING_FOLDS = 5
DEFAULT_CALIBRATION = "temperature"

# The options that decide which reviews a run read and how they were split, with the train option naming each.
DATA_OPTIONS = {
    "data": "--data",
    "text_column": "--text-column",
    "label_column": "--label-column",
    "label_map": "--label-map",
    "split_column": "--split-column",
    "validation_data": "--validation-data",
    "test_data": "--test-data",
}
# Members may differ in --seed (the seed of training) as long as the split is the same.
SPLIT_SEED_KEYS = ("seed", "split_seed")


@dataclass
class Member:
    """A run to combine: its records and its stored validation / test scores."""

    name: str  # its folder under members/
    path: Path
    info: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, Any]
    scores: dict[str, SplitScores]

    def calibrated(self, split: str) -> np.ndarray:
        """The member's calibrated P(fake) on ``split``, as it would serve it."""
        return Calibration.from_dict(self.info.get("calibration")).apply(self.scores[split].p_raw)


@dataclass
class EnsembleResult:
    run_dir: Path
    metrics: dict[str, Any]
    report: str
    info: dict[str, Any]


def build_ensemble(
    runs: Sequence[str | Path],
    output_dir: str | Path,
    *,
    combine: str = "auto",
    threshold_for: str | None = None,
    overwrite: bool = False,
) -> EnsembleResult:
    """Combine ``runs`` into the ensemble run ``output_dir``; every refusal comes before anything is written."""
    started = time.perf_counter()
    if combine not in COMBINE_CHOICES:
        raise ConfigError(f"--combine must be one of {', '.join(COMBINE_CHOICES)}; got {combine!r}.")
    if threshold_for is not None and threshold_for not in THRESHOLD_OBJECTIVES:
        raise ConfigError(f"--threshold-for must be one of {', '.join(THRESHOLD_OBJECTIVES)}; got {threshold_for!r}.")
    if len(runs) < 2:
        raise ConfigError(
            f"An ensemble combines at least two runs; got {len(runs)}. Give two or more run directories "
            "trained on the same data (RUN1 RUN2 ...)."
        )
    members = _read_members(runs)
    _require_same_data(members)
    output = Path(output_dir).expanduser()
    _refuse_output_among_members(output, members)
    validation_labels = members[0].scores["validation"].labels
    validation = np.column_stack([member.calibrated("validation") for member in members])
    test = np.column_stack([member.calibrated("test") for member in members])
    combination = choose_combination(validation, validation_labels, combine, seed=_seed(members[0]))
    writer = RunWriter(output, overwrite=overwrite)  # refuses an existing run without --overwrite
    try:
        result = _write_ensemble(writer, members, combination, validation, test, threshold_for, started)
    except BaseException:
        writer.discard()
        raise
    return result


# --------------------------------------------------------------------------- members


def _read_members(runs: Sequence[str | Path]) -> list[Member]:
    members: list[Member] = []
    seen: dict[Path, str] = {}
    names: set[str] = set()
    for given in runs:
        path = require_run_directory(given)
        resolved = path.resolve()
        if resolved in seen:
            raise ConfigError(f"The run {given} is given twice (also as {seen[resolved]}); give each member once.")
        seen[resolved] = str(given)
        info = _read_record(path, RUN_FILE)
        if is_ensemble(info):
            raise ConfigError(
                f"{path} is itself an ensemble; ensembles do not nest. Give its member runs instead "
                f"(they are listed in {path / RUN_FILE})."
            )
        verify_run_directory(path)  # a damaged member is refused now, not when the ensemble loads
        scores = load_split_predictions(path)
        if scores is None:
            raise RunDirectoryError(
                f"{path} has no {SPLIT_PREDICTIONS_FILE} (its validation and test scores), which the ensemble is "
                "fitted on; it was trained by an older version. Train it again, then build the ensemble."
            )
        config = read_run_config_file(path)
        metrics = _read_record(path, METRICS_FILE)
        name = _unique_name(path.resolve().name, names)
        names.add(name)
        members.append(Member(name, path, info, config, metrics, scores))
    return members


def _read_record(path: Path, name: str) -> dict[str, Any]:
    try:
        record = read_json(path / name)
    except (OSError, ValueError) as error:
        raise RunDirectoryError(f"{path / name} cannot be read ({error}). Train the run again.") from None
    if not isinstance(record, dict):
        raise RunDirectoryError(f"{path / name} is not a JSON object. Train the run again.")
    return record


def _unique_name(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    return candidate


def _seed(member: Member) -> int:
    seed = member.config.get("seed")
    return seed if isinstance(seed, int) else 0


def _require_same_data(members: list[Member]) -> None:
    """Refuse members that did not read the same reviews, split the same way, with the same labels."""
    first = members[0]
    for other in members[1:]:
        for key, option in DATA_OPTIONS.items():
            if not _same_setting(key, first.config.get(key), other.config.get(key)):
                raise ConfigError(
                    f"{other.path} was trained with {option} {other.config.get(key)!r}, {first.path} with "
                    f"{first.config.get(key)!r}: an ensemble combines runs trained on the same data and split. "
                    f"Train the members with the same {option}."
                )
        if split_seed_of(first.config) != split_seed_of(other.config):
            raise ConfigError(
                f"{other.path} was split with seed {split_seed_of(other.config)}, {first.path} with "
                f"{split_seed_of(first.config)}: an ensemble combines runs trained on the same data and split. "
                "Train the members with the same --split-seed (or --seed); --seed alone may differ when "
                "--split-seed is the same."
            )
        for key, what in (("sizes", "split sizes"), ("split", "split")):
            mine, theirs = (member.info.get("data", {}).get(key) for member in (first, other))
            if mine != theirs:
                raise ConfigError(
                    f"{other.path} was trained on {what} {theirs!r}, {first.path} on {mine!r}: an ensemble "
                    "combines runs trained on the same data and split (--data, --split-seed)."
                )
        if first.info.get("label_names") != other.info.get("label_names"):
            raise ConfigError(
                f"{other.path} has labels {other.info.get('label_names')!r}, {first.path} "
                f"{first.info.get('label_names')!r}: an ensemble combines runs with the same labels (--label-map)."
            )
        for split in ("validation", "test"):
            mine, theirs = first.scores[split], other.scores[split]
            if not (np.array_equal(mine.rows, theirs.rows) and np.array_equal(mine.labels, theirs.labels)):
                raise ConfigError(
                    f"The {split} split stored in {other.path / SPLIT_PREDICTIONS_FILE} holds other reviews or labels "
                    f"than the one in {first.path / SPLIT_PREDICTIONS_FILE}: an ensemble combines runs trained on the "
                    "same data and split (--data, --split-seed, --label-map). Train the members on the same data."
                )


def _same_setting(key: str, mine: Any, theirs: Any) -> bool:
    """Equal settings; data files also when named differently (another relative path, a copy) but identical."""
    if mine == theirs:
        return True
    if key not in ("data", "validation_data", "test_data") or not (isinstance(mine, str) and isinstance(theirs, str)):
        return False
    first, second = Path(mine).expanduser(), Path(theirs).expanduser()
    if not (first.is_file() and second.is_file()):
        return False  # a directory (a saved dataset) or a path relative to where training ran: not comparable here
    from review_toolkit.runs.manifest import sha256_of

    return first.resolve() == second.resolve() or sha256_of(first) == sha256_of(second)


def _refuse_output_among_members(output: Path, members: list[Member]) -> None:
    """--output-dir must not be, contain or lie inside a member: replacing it would destroy what is copied."""
    target = output.resolve()
    for member in members:
        source = member.path.resolve()
        if target == source or source in target.parents or target in source.parents:
            raise ConfigError(
                f"--output-dir {output} is {'the member' if target == source else 'inside or around the member'} "
                f"{member.path}; write the ensemble to a folder of its own."
            )


# --------------------------------------------------------------------------- combination


def _macro_f1(labels: np.ndarray, p_fake: np.ndarray) -> float:
    predictions = (np.asarray(p_fake) >= DEFAULT_THRESHOLD).astype(int)
    return float(classification_metrics(labels, predictions)["f1_macro"])


def fit_stacking(member_p_fake: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> Combination:
    """Logistic regression on the members' calibrated logits; plain weights, no stored estimator."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0, max_iter=1000, random_state=seed)
    model.fit(stacking_features(member_p_fake), labels)
    return Combination("stacking", [float(w) for w in model.coef_[0]], float(model.intercept_[0]))


def _stacking_folds(labels: np.ndarray) -> int:
    """Cross-validation folds the validation split allows (each class in every fold); 0 when under 2."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=2)
    return int(min(STACKING_FOLDS, counts.min()))


def cross_validated_stacking(member_p_fake: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Out-of-fold stacking P(fake) on validation: a fair comparison with the mean, which fits nothing."""
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(n_splits=_stacking_folds(labels), shuffle=True, random_state=seed)
    out = np.zeros(len(labels), dtype=np.float64)
    for fit_rows, held_rows in folds.split(member_p_fake, labels):
        out[held_rows] = fit_stacking(member_p_fake[fit_rows], labels[fit_rows], seed=seed).apply(member_p_fake[held_rows])
    return out


def choose_combination(member_p_fake: np.ndarray, labels: np.ndarray, combine: str, *, seed: int = 0) -> Combination:
    """``mean``, ``stacking``, or (``auto``) whichever has the better validation macro F1 at 0.5.

    Stacking is judged on out-of-fold predictions (it is fitted on validation itself) and must
    beat the mean to be chosen; the one kept is then fitted on the whole validation split.
    """
    labels = np.asarray(labels, dtype=np.int64)
    scores = {"mean": _macro_f1(labels, member_p_fake.mean(axis=1))}
    if _stacking_folds(labels) >= 2:
        scores["stacking"] = _macro_f1(labels, cross_validated_stacking(member_p_fake, labels, seed=seed))
    elif combine == "stacking":
        raise ConfigError(
            "--combine stacking needs at least two fake and two real reviews in the validation split to fit and "
            "check the regression; use --combine mean, or train the members on more data."
        )
    if combine == "auto":
        chosen = "stacking" if scores.get("stacking", -1.0) > scores["mean"] else "mean"
    else:
        chosen = combine
    combination = fit_stacking(member_p_fake, labels, seed=seed) if chosen == "stacking" else Combination("mean")
    combination.details = {
        "chosen_by": "validation macro F1 (stacking cross-validated)" if combine == "auto" else "--combine",
        "validation_f1_macro": scores,
    }
    return combination


# --------------------------------------------------------------------------- writing


def _write_ensemble(
    writer: RunWriter,
    members: list[Member],
    combination: Combination,
    validation: np.ndarray,
    test: np.ndarray,
    threshold_for: str | None,
    started: float,
) -> EnsembleResult:
    staging = writer.open()
    first = members[0]
    validation_scores, test_scores = first.scores["validation"], first.scores["test"]
    validation_raw, test_raw = combination.apply(validation), combination.apply(test)
    calibration = fit_calibration(validation_raw, validation_scores.labels, DEFAULT_CALIBRATION)
    calibration.details["test_ece_before"] = expected_calibration_error(test_scores.labels, test_raw)
    calibration.details["test_ece_after"] = expected_calibration_error(test_scores.labels, calibration.apply(test_raw))
    if threshold_for is None:
        choice = ThresholdChoice(DEFAULT_THRESHOLD, "default")
    else:
        choice = choose_threshold(calibration.apply(validation_raw), validation_scores.labels, objective=threshold_for)
    test_p_fake = calibration.apply(test_raw)
    predictions = (test_p_fake >= choice.threshold).astype(int)
    metrics = classification_metrics(test_scores.labels, predictions, test_p_fake)
    metrics["threshold"] = choice.threshold
    report = classification_report(test_scores.labels, predictions)

    (staging / MEMBERS_DIRECTORY).mkdir()
    for member in members:
        # Trainer checkpoints are for resuming a training, never read by load_run: left behind.
        shutil.copytree(
            member.path,
            staging / MEMBERS_DIRECTORY / member.name,
            ignore=lambda folder, names, root=member.path: [CHECKPOINT_DIRECTORY] if Path(folder) == root else [],
        )
    config = {key: first.config.get(key) for key in (*DATA_OPTIONS, *SPLIT_SEED_KEYS) if key in first.config}
    _write_yaml(staging / CONFIG_FILE, config)
    save_split_predictions(
        staging,
        {
            split: (_frame(scores), raw)
            for split, scores, raw in (("validation", validation_scores, validation_raw), ("test", test_scores, test_raw))
        },
    )
    info = _ensemble_info(members, combination, calibration, choice, validation, time.perf_counter() - started)
    write_json(staging / METRICS_FILE, metrics)
    (staging / REPORT_FILE).write_text(report, encoding="utf-8")
    write_model_card(staging, config, info, metrics, report)
    write_json(staging / RUN_FILE, info)  # last: its presence marks a complete run
    final = writer.commit()
    return EnsembleResult(final, metrics, report, info)


def _frame(scores: SplitScores) -> Any:
    import pandas as pd

    return pd.DataFrame({"row": scores.rows, "label": scores.labels})


def _write_yaml(path: Path, values: dict[str, Any]) -> None:
    import yaml

    header = "# The data the ensemble's members were trained on (an ensemble is built, not trained: see run.json).\n"
    path.write_text(header + yaml.safe_dump(values, sort_keys=False), encoding="utf-8")


def _ensemble_info(
    members: list[Member],
    combination: Combination,
    calibration: Calibration,
    choice: ThresholdChoice,
    validation: np.ndarray,
    seconds: float,
) -> dict[str, Any]:
    """run.json of the ensemble: its members, how they are combined, and the fields every run has."""
    labels = members[0].scores["validation"].labels
    listed = []
    for number, member in enumerate(members):
        threshold = float(member.info.get("threshold", DEFAULT_THRESHOLD))
        predictions = (validation[:, number] >= threshold).astype(int)
        listed.append(
            {
                "name": member.name,
                "path": f"{MEMBERS_DIRECTORY}/{member.name}",
                "built_from": str(member.path.resolve()),
                **{key: member.info.get(key) for key in ("backbone", "method", "head", "checkpoint", "max_length")},
                # A Hub id, or a path relative to the member's run directory, as the member records it.
                "base_model": member.info.get("base_model"),
                "threshold": threshold,
                "validation_f1_macro": float(classification_metrics(labels, predictions)["f1_macro"]),
                "test_f1_macro": member.metrics.get("f1_macro"),
                "training_seconds": member.info.get("training_seconds"),
            }
        )
    plugins: dict[tuple[Any, Any], dict[str, Any]] = {}
    for member in members:
        for plugin in member.info.get("plugins") or []:
            if isinstance(plugin, dict):
                plugins.setdefault((plugin.get("kind"), plugin.get("name")), plugin)
    gpu = [m.info["peak_gpu_gib"] for m in members if isinstance(m.info.get("peak_gpu_gib"), (int, float))]
    trained = [m.info.get("trainable_parameters") for m in members]
    return {
        "kind": ENSEMBLE_KIND,
        "toolkit_version": __version__,
        "backbone": ENSEMBLE_KIND,
        "method": combination.method,
        "head": f"{len(members)} runs",
        "members": listed,
        "combination": combination.to_dict(),
        "checkpoint": None,
        "max_length": max(int(m.info.get("max_length") or 0) for m in members),
        "label_names": members[0].info.get("label_names"),
        "threshold": choice.threshold,
        "threshold_selection": choice.to_dict(),
        "data": members[0].info.get("data"),
        "calibration": calibration.to_dict(),
        "plugins": list(plugins.values()),
        # What it cost: the members' trainings (the ensemble itself only reads their scores).
        "training_seconds": round(sum(float(m.info.get("training_seconds") or 0.0) for m in members), 2),
        "ensemble_seconds": round(seconds, 2),
        "peak_rss_gib": max(float(m.info.get("peak_rss_gib") or 0.0) for m in members),
        **({"peak_gpu_gib": max(gpu)} if gpu else {}),
        "device": members[0].info.get("device"),
        **({"trainable_parameters": sum(trained)} if all(isinstance(t, int) for t in trained) else {}),
    }


def describe(result: EnsembleResult) -> list[str]:
    """What the ensemble command prints: members, the combination chosen and why, test metrics."""
    info, metrics = result.info, result.metrics
    lines = []
    for member in info["members"]:
        test = member.get("test_f1_macro")
        lines.append(
            f"member {member['name']}: {member['backbone']} + {member['method']} + {member['head']}, validation macro F1 "
            f"{member['validation_f1_macro']:.4f}, test {test:.4f}" if isinstance(test, (int, float)) else
            f"member {member['name']}: validation macro F1 {member['validation_f1_macro']:.4f}"
        )
    combination = info["combination"]
    scores = ", ".join(f"{name} {value:.4f}" for name, value in combination["validation_f1_macro"].items())
    lines.append(f"combination: {combination['method']} (chosen by {combination['chosen_by']}; validation macro F1: {scores})")
    selection = info["threshold_selection"]
    lines.append(
        f"calibration: {info['calibration']['method']}; threshold {info['threshold']:.4f} "
        f"({selection['rule'].replace('_', ' ')})"
    )
    auc = f"{metrics['roc_auc']:.4f}" if metrics.get("roc_auc") is not None else "n/a"
    lines.append(f"test split: macro F1 {metrics['f1_macro']:.4f}  accuracy {metrics['accuracy']:.4f}  ROC AUC {auc}")
    lines.append(f"ensemble written to {result.run_dir}")
    return lines

