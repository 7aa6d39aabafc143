"""Cross-validation: ``train --folds K`` trains one run per stratified fold and summarises them.

Layout of ``OUTPUT_DIR``::

    fold-1/ ... fold-K/   each a complete run, tested on its fold; its config.yaml records
                          ``folds`` and ``fold``, so evaluate and --config give the same split
    final/                with --refit: the run to deploy, trained on all the data (fold 0: a validation
                          split for early stopping, threshold and calibration, no test split)
    oof_predictions.csv   every review once: row, text, label, p_fake, predicted, fold
    cv.json               per-fold metrics, mean and std of each, out-of-fold metrics (written last)

The whole directory is staged in ``OUTPUT_DIR.partial`` and renamed into place when every fold
(and the refit) is done, so an interrupted or failed cross-validation leaves nothing that looks
complete; it is trained again from the start (folds are not resumed one by one).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from review_toolkit.config import TrainConfig
from review_toolkit.data import LABEL_NAMES, load_reviews
from review_toolkit.data.splits import check_folds, review_columns
from review_toolkit.evaluation.metrics import classification_metrics
from review_toolkit.runs.layout import (
    CONFIG_FILE,
    CROSS_VALIDATION_FILE,
    FOLD_PREFIX,
    OUT_OF_FOLD_FILE,
    REFIT_DIRECTORY,
    SPLIT_PREDICTIONS_FILE,
    RunWriter,
    write_json,
)
from review_toolkit.runs.manifest import write_manifest
from review_toolkit.train.pipeline import Composition, TrainResult, default_output_dir, train

#: The metrics the printed table shows (every numeric metric is in cv.json).
SHOWN_METRICS = (("f1_macro", "macro F1"), ("accuracy", "accuracy"), ("roc_auc", "ROC AUC"))


@dataclass
class CrossValidationResult:
    directory: Path
    summary: dict[str, Any]  # what cv.json holds
    folds: list[TrainResult]
    refit: TrainResult | None


def cross_validate(
    config: TrainConfig,
    *,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    on_fold: Callable[[int, TrainResult], None] | None = None,
) -> CrossValidationResult:
    """Train ``config.folds`` runs, one tested on each fold, into ``config.output_dir``; summarise them."""
    config.validate()
    if not config.folds or config.fold is not None:
        raise ValueError("cross_validate needs a config with folds set and fold unset")
    Composition.resolve(config)  # a bad plugin or option is refused before any fold trains
    reviews = review_columns(load_reviews(
        config.data, text_column=config.text_column, label_column=config.label_column, label_map=config.label_map
    ))  # fmt: skip
    check_folds(reviews, config.folds, source=str(config.data or "the bundled sample"))
    output_dir = Path(config.output_dir) if config.output_dir else default_output_dir(config)
    writer = RunWriter(output_dir, overwrite=config.overwrite)
    try:
        staging = writer.open()
        results = []
        for fold in range(1, config.folds + 1):
            result = train(_fold_config(config, staging, fold), progress=progress, callbacks=callbacks)
            results.append(result)
            if on_fold is not None:
                on_fold(fold, result)
        refit = None
        if config.refit:
            refit_config = dataclasses.replace(
                config, fold=0, refit=False, overwrite=False, output_dir=str(staging / REFIT_DIRECTORY)
            )
            refit = train(refit_config, progress=progress, callbacks=callbacks)
        out_of_fold = _write_out_of_fold(staging, results, reviews)
        summary = _summary(config, results, out_of_fold, refit is not None)
        for name in [f"{FOLD_PREFIX}{fold}" for fold in range(1, config.folds + 1)] + ([REFIT_DIRECTORY] if refit else []):
            _record_final_location(staging / name, output_dir / name)
        write_json(staging / CROSS_VALIDATION_FILE, summary)  # last: its presence marks a complete CV
        writer.commit(manifest=False)  # each run inside carries its own manifest
    except BaseException as error:
        writer.abandon(error)
        raise
    directory = writer.final
    for result in results + ([refit] if refit else []):
        result.run_dir = directory / result.run_dir.name
    return CrossValidationResult(directory, summary, results, refit)


def _fold_config(config: TrainConfig, staging: Path, fold: int) -> TrainConfig:
    return dataclasses.replace(
        config, fold=fold, refit=False, overwrite=False, output_dir=str(staging / f"{FOLD_PREFIX}{fold}")
    )


def _record_final_location(run: Path, final: Path) -> None:
    """A run trained inside the staging folder records where it will be, not the staging path."""
    import yaml

    path = run / CONFIG_FILE
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    values["output_dir"] = str(final)
    path.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    write_manifest(run)  # the run changed on purpose: its manifest follows


def _write_out_of_fold(staging: Path, results: list[TrainResult], reviews: Any) -> dict[str, np.ndarray]:
    """oof_predictions.csv: each review's calibrated P(fake) from the fold that tested it."""
    texts = dict(zip(reviews["row"].tolist(), reviews["text"].tolist()))
    rows, labels, p_fake, predicted, folds = [], [], [], [], []
    for fold, result in enumerate(results, start=1):
        with open(result.run_dir / SPLIT_PREDICTIONS_FILE, newline="", encoding="utf-8") as handle:
            tested = [line for line in csv.DictReader(handle) if line["split"] == "test"]
        raw = np.array([float(line["p_fake_raw"]) for line in tested], dtype=np.float64)
        calibrated = result.classifier.calibration.apply(raw)
        rows += [int(line["row"]) for line in tested]
        labels += [int(line["label"]) for line in tested]
        p_fake += calibrated.tolist()
        predicted += (calibrated >= result.classifier.threshold).astype(int).tolist()
        folds += [fold] * len(tested)
    order = np.argsort(rows, kind="stable")
    with open(staging / OUT_OF_FOLD_FILE, "w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["row", "text", "label", "p_fake", "predicted", "fold"])
        for i in order:
            out.writerow([rows[i], texts.get(rows[i], ""), LABEL_NAMES[labels[i]], repr(float(p_fake[i])),
                          LABEL_NAMES[predicted[i]], folds[i]])
    return {
        "labels": np.asarray(labels)[order], "p_fake": np.asarray(p_fake)[order],
        "predicted": np.asarray(predicted)[order],
    }


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float | None]:
    """Every metric of a metrics.json as one number: per-class ones become ``f1_fake`` and the like."""
    flat: dict[str, float | None] = {}
    for key, value in metrics.items():
        if key in ("n_examples", "threshold"):
            continue
        if isinstance(value, dict):
            for label, scores in value.items():
                for name, score in (scores or {}).items():
                    if name != "support" and _number(score):
                        flat[f"{name}_{label}"] = float(score)
        elif value is None or _number(value):
            flat[key] = None if value is None else float(value)
    return flat


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def mean_and_std(values: list[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof 1) over the folds where the metric exists."""
    present = [value for value in values if value is not None]
    if not present:
        return {"mean": None, "std": None, "per_fold": values}
    std = float(np.std(present, ddof=1)) if len(present) > 1 else 0.0
    return {"mean": float(np.mean(present)), "std": std, "per_fold": values}


def _summary(config: TrainConfig, results: list[TrainResult], oof: dict[str, np.ndarray], refit: bool) -> dict[str, Any]:
    per_fold = [flat_metrics(result.metrics) for result in results]
    names = list(dict.fromkeys(name for metrics in per_fold for name in metrics))
    first = results[0].info
    return {
        "folds": config.folds,
        "seed": config.seed,
        "stratified": True,
        "data": first["data"]["source"],
        "reviews": int(len(oof["labels"])),
        "backbone": first["backbone"],
        "method": first["method"],
        "head": first["head"],
        "std": "sample standard deviation over the folds (ddof 1)",
        "metrics": {name: mean_and_std([metrics.get(name) for metrics in per_fold]) for name in names},
        "fold_runs": [
            {"fold": fold, "run": result.run_dir.name, "sizes": result.info["data"]["sizes"],
             "threshold": result.info.get("threshold"), "training_seconds": result.info.get("training_seconds")}
            for fold, result in enumerate(results, start=1)
        ],
        # All out-of-fold predictions scored together (each at its fold's threshold).
        "out_of_fold": flat_metrics(classification_metrics(oof["labels"], oof["predicted"], oof["p_fake"])),
        "refit": REFIT_DIRECTORY if refit else None,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The table ``train --folds`` prints: one row per fold, then mean ± std."""
    metrics = summary["metrics"]
    header = "| fold | " + " | ".join(title for _, title in SHOWN_METRICS) + " |"
    lines = [header, "|---:|" + "---:|" * len(SHOWN_METRICS)]
    for index in range(summary["folds"]):
        cells = [_cell(metrics.get(key, {}).get("per_fold", [None] * summary["folds"])[index]) for key, _ in SHOWN_METRICS]
        lines.append(f"| {index + 1} | " + " | ".join(cells) + " |")
    lines.append("| mean ± std | " + " | ".join(plus_minus(metrics.get(key)) for key, _ in SHOWN_METRICS) + " |")
    return "\n".join(lines)


def plus_minus(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("mean") is None:
        return "n/a"
    return f"{entry['mean']:.4f} ± {entry['std']:.4f}"


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
