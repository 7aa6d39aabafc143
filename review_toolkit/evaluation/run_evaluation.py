"""Evaluating a run: metrics, plots, calibration and the decision threshold.

At train time (:func:`calibrate_after_training`, called by the pipeline) the
head's uncalibrated P(fake) for the validation and test splits is stored in
the run as ``split_predictions.csv`` (split, source row, label, p_fake_raw), and
temperature scaling is fitted on validation. That file lets ``evaluate`` score
the test split, refit calibration and choose a threshold without loading the
model or re-reading the data. Runs without the file (older runs) are scored
again from their ``config.yaml``: the same data, columns and seed give the same
split.

``evaluate_run`` writes its outputs into ``RUN/evaluation/<name>/`` (or a folder
of the caller's choosing), staged and renamed so that it appears complete or not
at all: ``metrics.json``, ``report.txt``, ``predictions.csv`` and four PNG plots.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from review_toolkit.runtime import distributed
from review_toolkit.inference.calibration import (
    DEFAULT_THRESHOLD,
    Calibration,
    ThresholdChoice,
    choose_threshold,
    expected_calibration_error,
    fit_calibration,
)
from review_toolkit.data import LABEL_NAMES
from review_toolkit.errors import ConfigError, RunDirectoryError
from review_toolkit.evaluation.metrics import classification_metrics, classification_report
from review_toolkit.runs.layout import (
    CONFIG_FILE,
    EVALUATION_DIRECTORY,
    METRICS_FILE,
    REPORT_FILE,
    RUN_FILE,
    SPLIT_PREDICTIONS_FILE,
    read_json,
    require_run_directory,
)
from review_toolkit.runtime.os_errors import require_creatable_directory

DEFAULT_CALIBRATION = "temperature"
PLOT_FILES = {
    "confusion_matrix": "confusion_matrix.png",
    "roc_curve": "roc_curve.png",
    "precision_recall_curve": "precision_recall_curve.png",
    "calibration_curve": "calibration_curve.png",
}


# --------------------------------------------------------------------------- train time


def calibrate_after_training(
    staging: Path | None,
    classifier: Any,
    splits: Any,
    validation_p_fake: np.ndarray,
    test_p_fake: np.ndarray,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit temperature scaling on validation, store the raw split scores; return calibrated test P(fake).

    Sets ``classifier.calibration``. The returned dict goes into run.json. Temperature scaling
    keeps the 0.5 decision where it was, so test metrics at the default threshold are unchanged.
    ``staging`` None stores nothing (a process other than the main one of a distributed run).
    """
    validation_labels = splits.validation.label.to_numpy()
    test_labels = splits.test.label.to_numpy()
    calibration = fit_calibration(validation_p_fake, validation_labels, DEFAULT_CALIBRATION)
    calibrated_test = calibration.apply(test_p_fake)
    if len(test_labels):  # a cross-validation's refit has no test split
        calibration.details["test_ece_before"] = expected_calibration_error(test_labels, test_p_fake)
        calibration.details["test_ece_after"] = expected_calibration_error(test_labels, calibrated_test)
    classifier.calibration = calibration
    if staging is not None:
        save_split_predictions(
            staging,
            {"validation": (splits.validation, validation_p_fake), "test": (splits.test, test_p_fake)},
        )
    return calibrated_test, {"calibration": calibration.to_dict(), "threshold_selection": {"rule": "default"}}


def save_split_predictions(directory: Path, parts: dict[str, tuple[Any, np.ndarray]]) -> None:
    with open(directory / SPLIT_PREDICTIONS_FILE, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["split", "row", "label", "p_fake_raw"])
        for split, (frame, p_fake) in parts.items():
            for row, label, p in zip(frame["row"].tolist(), frame["label"].tolist(), np.asarray(p_fake).tolist()):
                writer.writerow([split, int(row), int(label), repr(float(p))])


@dataclass
class SplitScores:
    """Labels and uncalibrated P(fake) of one split (or of a labelled file)."""

    labels: np.ndarray
    p_raw: np.ndarray
    rows: np.ndarray
    description: str


def load_split_predictions(run: Path) -> dict[str, SplitScores] | None:
    path = run / SPLIT_PREDICTIONS_FILE
    if not path.is_file():
        return None
    import pandas as pd

    frame = pd.read_csv(path, dtype={"split": str}, float_precision="round_trip")
    result = {}
    for split in ("validation", "test"):
        part = frame[frame["split"] == split]
        result[split] = SplitScores(
            labels=part["label"].to_numpy(dtype=np.int64),
            p_raw=part["p_fake_raw"].to_numpy(dtype=np.float64),
            rows=part["row"].to_numpy(dtype=np.int64),
            description=f"{split} split",
        )
    return result


def _rescore_splits(run: Path, config: Any, classifier_factory: Callable[[], Any], batch_size: int, progress: bool) -> dict[str, SplitScores]:
    """Score validation and test again for a run that did not store its split predictions."""
    from review_toolkit.data import load_splits_for

    splits = load_splits_for(config)
    classifier = classifier_factory()
    result = {}
    for split in ("validation", "test"):
        frame = getattr(splits, split)
        p_raw = _p_raw_in_shards(classifier, frame.text.tolist(), batch_size, progress)
        result[split] = SplitScores(frame.label.to_numpy(), p_raw, frame.row.to_numpy(), f"{split} split")
    return result


# --------------------------------------------------------------------------- evaluate


@dataclass
class EvaluationResult:
    output_dir: Path
    metrics: dict[str, Any]
    report: str
    run_updated: bool
    notes: list[str] = field(default_factory=list)


def read_run_config(run: Path) -> Any:
    import yaml

    from review_toolkit.config import TrainConfig

    values = yaml.safe_load((run / CONFIG_FILE).read_text(encoding="utf-8")) or {}
    return TrainConfig.from_mapping(values, source=str(run / CONFIG_FILE))


def _choose(
    calibration: Calibration,
    validation: SplitScores,
    *,
    threshold: float | None,
    threshold_for: str | None,
    target_precision: float | None,
    previous_threshold: float,
    previous_selection: dict[str, Any],
) -> ThresholdChoice:
    """The new threshold: given, chosen by the rule asked for, or the stored rule re-applied."""
    if threshold is not None:
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"--threshold must be between 0 and 1; got {threshold}.")
        return ThresholdChoice(float(threshold), "fixed")
    calibrated = calibration.apply(validation.p_raw)
    if threshold_for is not None or target_precision is not None:
        return choose_threshold(calibrated, validation.labels, objective=threshold_for, target_precision=target_precision)
    rule = previous_selection.get("rule", "default")
    if rule in ("f1", "accuracy"):
        return choose_threshold(calibrated, validation.labels, objective=rule)
    if rule == "target_precision":
        return choose_threshold(calibrated, validation.labels, target_precision=previous_selection["target_precision"])
    if rule == "fixed":
        return ThresholdChoice(previous_threshold, "fixed")
    return ThresholdChoice(DEFAULT_THRESHOLD, "default")


def evaluate_run(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    label_map: dict[str, str] | None = None,
    output_dir: str | Path | None = None,
    calibration: str | None = None,
    threshold_for: str | None = None,
    target_precision: float | None = None,
    threshold: float | None = None,
    save: bool = True,
    batch_size: int | None = None,
    progress: bool = False,
    allow_unverified: bool = False,
    backend: str = "auto",
) -> EvaluationResult:
    """Metrics and plots for a run on its test split (``data=None``) or on a labelled file.

    ``calibration``, ``threshold_for``, ``target_precision`` and ``threshold`` refit the calibration
    or choose a new threshold on the run's validation split; with ``save`` (the default) they are
    stored in run.json, so ``predict`` and ``load_run`` use them, and the model card is rewritten.

    The run is verified against its manifest first (as ``load_run`` does); what ``evaluate`` adds to
    or changes in a verified run is sealed into the manifest again afterwards, so the run still loads.
    A run that does not verify is refused unless ``allow_unverified``, and is then never re-sealed.
    """
    from review_toolkit.runs.manifest import verify_run_directory, write_manifest

    if sum(option is not None for option in (threshold_for, target_precision, threshold)) > 1:
        raise ConfigError("Give only one of --threshold, --threshold-for and --target-precision.")
    if batch_size is None:
        from review_toolkit.inference.scoring import default_batch_size

        batch_size = default_batch_size()
    run = require_run_directory(run_dir)
    # Where the outputs go must be writable before anything is scored (the default is inside the run).
    require_creatable_directory(Path(output_dir) if output_dir else run / EVALUATION_DIRECTORY / "test", "--output-dir")
    sealed = not verify_run_directory(run, allow_unverified=allow_unverified)
    evaluation = _RunUnderEvaluation(run, batch_size, progress, allow_unverified, backend)
    scores = evaluation.split_scores()
    changes_requested = any(option is not None for option in (calibration, threshold_for, target_precision, threshold))
    active_calibration, choice = evaluation.calibration_and_threshold(
        scores["validation"], calibration, threshold=threshold, threshold_for=threshold_for,
        target_precision=target_precision, refit=changes_requested,
    )
    if data is None and not len(scores["test"].labels):
        raise ConfigError(
            f"{run} has no test split: it was trained on all the data (the refit of a cross-validation, whose "
            "folds measured it). Score it on labelled reviews it was not trained on with --data FILE."
        )
    if data is None:
        source = evaluation.info.get("data", {}).get("source", evaluation.config.data or "the bundled data")
        evaluated, name = replace(scores["test"], description=f"test split of {source}"), "test"
    else:
        evaluated = evaluation.file_scores(data, text_column, label_column, label_map)
        name = Path(data).stem or "data"
    p_fake = active_calibration.apply(evaluated.p_raw)
    predictions = (p_fake >= choice.threshold).astype(int)
    metrics = _evaluation_metrics(run, evaluated, p_fake, predictions, scores["validation"], active_calibration, choice)
    # What computed these scores: the stored split predictions come from training.
    metrics["scored_with"] = (
        evaluation.classifier().scored_with if evaluation.loaded else evaluation.info.get("scored_with", "torch")
    )
    report = classification_report(evaluated.labels, predictions)

    target = Path(output_dir) if output_dir else run / EVALUATION_DIRECTORY / name
    run_updated = changes_requested and save
    if distributed.is_main_process():  # under a multi-GPU launch the others only helped score
        shown_data = "test split" if data is None else Path(data).name
        subtitle = (
            f"{evaluation.info.get('backbone')} + {evaluation.info.get('method')} + {evaluation.info.get('head')}, "
            f"{shown_data}, n={len(evaluated.labels)}"
        )
        _write_evaluation(target, evaluated, p_fake, predictions, metrics, report, active_calibration, subtitle, evaluation.notes)
        if run_updated:
            _store_in_run(
                run, evaluation.info, evaluation.config, active_calibration, choice, metrics if data is None else None
            )
        if sealed and (run_updated or _is_inside(target, run)):
            write_manifest(run)
    distributed.wait_for_everyone()
    return EvaluationResult(target, metrics, report, run_updated, evaluation.notes)


class _RunUnderEvaluation:
    """A run's records, its split scores and (loaded only if needed) its classifier."""

    def __init__(self, run: Path, batch_size: int, progress: bool, allow_unverified: bool, backend: str = "auto") -> None:
        self.run = run
        self.backend = backend
        self.batch_size = batch_size
        self.progress = progress
        self.allow_unverified = allow_unverified
        self.info = read_json(run / RUN_FILE)
        self.config = read_run_config(run)
        self.notes: list[str] = []
        self._classifier: Any = None

    @property
    def loaded(self) -> bool:
        return self._classifier is not None

    def classifier(self) -> Any:
        if self._classifier is None:
            from review_toolkit.runs.loader import load_run

            self._classifier = load_run(self.run, allow_unverified=self.allow_unverified, backend=self.backend)
        return self._classifier

    def split_scores(self) -> dict[str, SplitScores]:
        """Validation and test P(fake) as stored at train time, or scored again for runs without them."""
        scores = load_split_predictions(self.run)
        if scores is None:
            self.notes.append(
                f"{self.run} has no {SPLIT_PREDICTIONS_FILE}; validation and test were scored again from {CONFIG_FILE}."
            )
            scores = _rescore_splits(self.run, self.config, self.classifier, self.batch_size, self.progress)
        return scores

    def calibration_and_threshold(
        self,
        validation: SplitScores,
        calibration: str | None,
        *,
        threshold: float | None,
        threshold_for: str | None,
        target_precision: float | None,
        refit: bool,
    ) -> tuple[Calibration, ThresholdChoice]:
        """The calibration (refitted on validation when asked) and the threshold: chosen anew
        when ``refit``, else the stored one."""
        stored_calibration = Calibration.from_dict(self.info.get("calibration"))
        stored_threshold = float(self.info.get("threshold", DEFAULT_THRESHOLD))
        stored_selection = self.info.get("threshold_selection") or {"rule": "default"}
        active = fit_calibration(validation.p_raw, validation.labels, calibration) if calibration else stored_calibration
        if not refit:
            details = {key: value for key, value in stored_selection.items() if key != "rule"}
            return active, ThresholdChoice(stored_threshold, stored_selection.get("rule", "default"), details)
        choice = _choose(
            active,
            validation,
            threshold=threshold,
            threshold_for=threshold_for,
            target_precision=target_precision,
            previous_threshold=stored_threshold,
            previous_selection=stored_selection,
        )
        return active, choice

    def file_scores(
        self, data: str | Path, text_column: str | None, label_column: str | None, label_map: dict[str, str] | None
    ) -> SplitScores:
        """Uncalibrated P(fake) of a labelled file's reviews, read with the run's columns unless given."""
        from review_toolkit.data import load_reviews

        reviews = load_reviews(
            data,
            text_column=text_column or self.config.text_column,
            label_column=label_column or self.config.label_column,
            label_map=label_map if label_map is not None else self.config.label_map,
        )
        p_raw = _p_raw_in_shards(self.classifier(), reviews.text.tolist(), self.batch_size, self.progress)
        return SplitScores(reviews.label.to_numpy(), p_raw, reviews.row.to_numpy(), str(data))


def _evaluation_metrics(
    run: Path,
    evaluated: SplitScores,
    p_fake: np.ndarray,
    predictions: np.ndarray,
    validation: SplitScores,
    calibration: Calibration,
    choice: ThresholdChoice,
) -> dict[str, Any]:
    """metrics.json of an evaluation: the scores, what was scored, and the calibration and threshold used."""
    labels = evaluated.labels
    metrics = _metrics(labels, predictions, evaluated.p_raw, p_fake)
    validation_calibrated = calibration.apply(validation.p_raw)
    metrics.update(
        {
            "data": {
                "description": evaluated.description,
                "n_examples": int(len(labels)),
                "n_fake": int((labels == 1).sum()),
                "n_real": int((labels == 0).sum()),
            },
            "run": str(run),
            "threshold": choice.threshold,
            "threshold_selection": choice.to_dict(),
            "calibration": {
                **calibration.to_dict(),
                "validation_ece_before": expected_calibration_error(validation.labels, validation.p_raw),
                "validation_ece_after": expected_calibration_error(validation.labels, validation_calibrated),
            },
        }
    )
    return metrics


def _write_evaluation(
    target: Path,
    evaluated: SplitScores,
    p_fake: np.ndarray,
    predictions: np.ndarray,
    metrics: dict[str, Any],
    report: str,
    calibration: Calibration,
    subtitle: str,
    notes: list[str],
) -> None:
    """Plots, metrics.json, report.txt and predictions.csv, all in place at once or not at all."""
    from review_toolkit.runtime.files import staged_directory

    target.parent.mkdir(parents=True, exist_ok=True)
    with staged_directory(target) as staging:
        metrics["plots"] = _write_plots(
            staging, evaluated.labels, evaluated.p_raw, p_fake, predictions, metrics, calibration, subtitle, notes
        )
        _write_json(staging / METRICS_FILE, metrics)
        (staging / REPORT_FILE).write_text(report, encoding="utf-8")
        _write_predictions(staging / "predictions.csv", evaluated, p_fake, predictions)


def _p_raw_in_shards(classifier: Any, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
    """Uncalibrated P(fake) in input order; each process of a multi-GPU launch scores a shard."""
    progress = progress and distributed.is_main_process()
    return distributed.map_in_shards(
        lambda shard: classifier.predict_proba(shard, batch_size=batch_size, progress=progress, calibrated=False), texts
    )


def _is_inside(path: Path, directory: Path) -> bool:
    path, directory = path.resolve(), directory.resolve()
    return path == directory or directory in path.parents


def _metrics(labels: np.ndarray, predictions: np.ndarray, p_raw: np.ndarray, p_fake: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import average_precision_score, brier_score_loss, confusion_matrix, log_loss

    metrics = classification_metrics(labels, predictions, p_fake)
    both = len(np.unique(labels)) == 2
    metrics["average_precision"] = float(average_precision_score(labels, p_fake)) if both else None
    metrics["brier_score"] = float(brier_score_loss(labels, p_fake, pos_label=1))
    metrics["log_loss"] = float(log_loss(labels, np.clip(p_fake, 1e-12, 1 - 1e-12), labels=[0, 1]))
    metrics["ece_before_calibration"] = expected_calibration_error(labels, p_raw)
    metrics["ece_after_calibration"] = expected_calibration_error(labels, p_fake)
    matrix = confusion_matrix(labels, predictions, labels=[0, 1])
    metrics["confusion_matrix"] = {"labels": list(LABEL_NAMES), "rows_true_columns_predicted": matrix.tolist()}
    return metrics


def _write_plots(
    directory: Path,
    labels: np.ndarray,
    p_raw: np.ndarray,
    p_fake: np.ndarray,
    predictions: np.ndarray,
    metrics: dict[str, Any],
    calibration: Calibration,
    subtitle: str,
    notes: list[str],
) -> dict[str, str]:
    from review_toolkit.evaluation import plots

    written = {}
    threshold = metrics["threshold"]
    matrix = np.asarray(metrics["confusion_matrix"]["rows_true_columns_predicted"])
    plots.confusion_matrix_plot(directory / PLOT_FILES["confusion_matrix"], matrix, threshold=threshold, subtitle=subtitle)
    written["confusion_matrix"] = PLOT_FILES["confusion_matrix"]
    if len(np.unique(labels)) == 2:
        plots.roc_curve_plot(directory / PLOT_FILES["roc_curve"], labels, p_fake, threshold=threshold, subtitle=subtitle)
        plots.precision_recall_plot(
            directory / PLOT_FILES["precision_recall_curve"], labels, p_fake, threshold=threshold, subtitle=subtitle
        )
        written["roc_curve"] = PLOT_FILES["roc_curve"]
        written["precision_recall_curve"] = PLOT_FILES["precision_recall_curve"]
    else:
        notes.append("The data has one class only: no ROC or precision-recall curve (they need both).")
    plots.calibration_plot(
        directory / PLOT_FILES["calibration_curve"],
        labels,
        p_raw,
        p_fake,
        ece_raw=metrics["ece_before_calibration"],
        ece_calibrated=metrics["ece_after_calibration"],
        method=calibration.method,
        subtitle=subtitle,
    )
    written["calibration_curve"] = PLOT_FILES["calibration_curve"]
    return written


def _write_predictions(path: Path, scores: SplitScores, p_fake: np.ndarray, predictions: np.ndarray) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "label", "predicted", "p_fake", "p_fake_uncalibrated"])
        for row, label, predicted, p, raw in zip(scores.rows.tolist(), scores.labels.tolist(), predictions.tolist(), p_fake.tolist(), scores.p_raw.tolist()):
            writer.writerow([row, LABEL_NAMES[int(label)], LABEL_NAMES[int(predicted)], repr(p), repr(raw)])


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, default=_json_default) + "\n", encoding="utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _store_in_run(
    run: Path,
    info: dict[str, Any],
    config: Any,
    calibration: Calibration,
    choice: ThresholdChoice,
    test_evaluation: dict[str, Any] | None,
) -> None:
    """Write the new calibration and threshold into run.json and refresh the model card, each atomically."""
    from review_toolkit.runs.model_card import write_model_card
    from review_toolkit.runtime.files import atomic_file

    if not (run / RUN_FILE).is_file():
        raise RunDirectoryError(f"{run / RUN_FILE} disappeared while evaluating; the run was not updated.")
    updated = dict(info)
    updated["threshold"] = choice.threshold
    updated["threshold_selection"] = choice.to_dict()
    updated["calibration"] = calibration.to_dict()
    with atomic_file(run / RUN_FILE) as handle:
        handle.write(json.dumps(updated, indent=2, default=_json_default) + "\n")
    metrics = read_json(run / METRICS_FILE) if (run / METRICS_FILE).is_file() else {}
    report = (run / REPORT_FILE).read_text(encoding="utf-8") if (run / REPORT_FILE).is_file() else ""
    write_model_card(run, config, updated, metrics, report, evaluation=test_evaluation)


def summary_lines(result: EvaluationResult) -> list[str]:
    """What the CLI prints after the report."""
    m = result.metrics
    calibration = m["calibration"]
    selection = m["threshold_selection"]
    auc = f"{m['roc_auc']:.4f}" if m.get("roc_auc") is not None else "n/a"
    lines = [
        f"macro F1 {m['f1_macro']:.4f}  accuracy {m['accuracy']:.4f}  ROC AUC {auc}  "
        f"(threshold {m['threshold']:.4f}, {selection['rule'].replace('_', ' ')})",
        f"calibration: {calibration['method']}; ECE on validation {calibration['validation_ece_before']:.4f} -> "
        f"{calibration['validation_ece_after']:.4f}; on {m['data']['description']} "
        f"{m['ece_before_calibration']:.4f} -> {m['ece_after_calibration']:.4f}",
    ]
    if calibration.get("note"):
        lines.append(f"note: {calibration['note']}")
    if selection["rule"] == "target_precision":
        lines.append(
            f"threshold reaches precision {selection['validation_precision']:.4f} (target {selection['target_precision']}) "
            f"with recall {selection['validation_recall']:.4f} on validation"
        )
    lines += result.notes
    if m.get("scored_with"):
        lines.append(f"scored with: {m['scored_with']}")
    lines.append(f"evaluation written to {result.output_dir}")
    if result.run_updated:
        lines.append(
            f"stored threshold {m['threshold']:.4f} and calibration '{calibration['method']}' in "
            f"{Path(m['run']) / RUN_FILE}; predict and load_run use them"
        )
    return lines
