"""A leaderboard of runs: markdown table, CSV and bar chart, best macro F1 first.

Everything comes from what training recorded in each run (metrics.json: the
test split at training time; run.json: timings, memory, parameters), so
comparing never loads a model. Peak memory is the GPU's when the run used one,
else the process's resident set size; the ``memory`` column says which.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any, Iterable

from review_toolkit.errors import RunDirectoryError
from review_toolkit.runtime.os_errors import require_creatable_directory
from review_toolkit.runs.layout import (
    CHECKPOINT_DIRECTORY,
    CROSS_VALIDATION_FILE,
    FOLD_PREFIX,
    METRICS_FILE,
    PARTIAL_SUFFIX,
    RUN_FILE,
    read_json,
    read_run_config_file,
)

logger = logging.getLogger(__name__)

LEADERBOARD_DIRECTORY = "comparison"
MARKDOWN_FILE = "leaderboard.md"
CSV_FILE = "leaderboard.csv"
PLOT_FILE = "leaderboard.png"
# Folders of a run that are not the model: Trainer's resume state and evaluate's outputs.
_NOT_MODEL = (CHECKPOINT_DIRECTORY, "evaluation")

COLUMNS = (
    ("run", "run"),
    ("model", "model"),
    ("method", "method"),
    ("head", "head"),
    ("f1_macro", "macro F1"),
    ("accuracy", "accuracy"),
    ("threshold", "threshold"),
    ("data", "data"),
    ("test_size", "test reviews"),
    ("seed", "split seed"),
    ("training_seconds", "training time (s)"),
    ("peak_memory_gib", "peak memory (GiB)"),
    ("memory", "memory"),
    ("size_mib", "size on disk (MiB)"),
    ("trainable_parameters", "parameters trained"),
    ("embeddings_cached", "embeddings from cache"),
)


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories named directly, or found (at any depth) inside the folders given."""
    runs: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise RunDirectoryError(f"{path} does not exist. Give run directories or folders that contain them.")
        if (path / RUN_FILE).is_file():
            runs.append(path)
            continue
        if not path.is_dir():
            raise RunDirectoryError(f"{path} is not a directory. Give run directories or folders that contain them.")
        found = sorted(
            candidate.parent
            for candidate in path.rglob(RUN_FILE)
            if not any(part.endswith(PARTIAL_SUFFIX) or part.startswith(".") for part in candidate.parent.relative_to(path).parts)
            and not _inside_another_run(candidate.parent, path)
        )
        if not found:
            raise RunDirectoryError(
                f"{path} is neither a run directory nor a folder containing one (no {RUN_FILE} below it)."
            )
        runs.extend(found)
    unique: dict[Path, None] = {}
    for run in runs:
        unique.setdefault(run.resolve(), None)
    return [Path(run) for run in unique]


def _inside_another_run(run: Path, root: Path) -> bool:
    """A run within a run (an ensemble's members/): the ensemble is listed, not its copies of the members."""
    return any((folder / RUN_FILE).is_file() for folder in run.parents if folder == root or root in folder.parents)


def size_on_disk(run: Path) -> int:
    """Bytes of the run's files, without Trainer checkpoints or evaluation outputs."""
    total = 0
    for path in run.rglob("*"):
        relative = path.relative_to(run).parts
        if relative[0] in _NOT_MODEL or path.is_symlink() or not path.is_file():
            continue
        total += path.stat().st_size
    return total


def _run_name(run: Path, runs: list[Path]) -> str:
    names = [r.name for r in runs]
    if names.count(run.name) == 1:
        return run.name
    return f"{run.parent.name}/{run.name}"


# Values the table formats as numbers, by the file that records them.
_NUMBERS = {
    RUN_FILE: ("training_seconds", "peak_gpu_gib", "peak_rss_gib", "trainable_parameters", "threshold"),
    METRICS_FILE: ("f1_macro", "accuracy"),
}


def _records(run: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """run.json and metrics.json of ``run``, or None (with a warning naming the file) when either is unusable."""
    records = []
    for name in (RUN_FILE, METRICS_FILE):
        path = run / name
        try:
            record = read_json(path)
        except OSError as error:
            problem = f"cannot be read ({error.strerror or error})"
        except (ValueError, RecursionError) as error:
            problem = f"is not valid JSON ({str(error).splitlines()[0][:200]})"
        else:
            bad = [] if isinstance(record, dict) else None
            if bad is not None:
                bad = [key for key in _NUMBERS[name] if not _is_number_or_missing(record.get(key))]
            if bad is None:
                problem = f"holds {type(record).__name__}, not a JSON object"
            elif bad:
                problem = f"has {', '.join(repr(key) for key in bad)} that {'is' if len(bad) == 1 else 'are'} not a number"
            else:
                records.append(record)
                continue
        logger.warning("Skipping the run %s: %s %s. Evaluate or train it again to rewrite it.", run, path, problem)
        return None
    return records[0], records[1]


def _is_number_or_missing(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))


def leaderboard_rows(runs: list[Path]) -> list[dict[str, Any]]:
    """One row per run whose records are readable; runs with damaged records are skipped with a warning.

    The fold runs of a cross-validation (``train --folds``), when all of them are compared, make one
    row: the mean of each score, with its standard deviation over the folds.
    """
    singles, groups = _cross_validations(runs)
    rows = _run_rows(singles, runs)
    for directory, folds in groups.items():
        fold_rows = _run_rows(folds, folds)
        if len(fold_rows) == len(folds):
            rows.append(_cross_validation_row(directory, fold_rows))
        else:  # a fold's records are damaged (warned above): show the readable folds one by one
            rows.extend(_run_rows(folds, runs))
    rows.sort(key=lambda row: (-(row["f1_macro"] or 0.0), -(row["accuracy"] or 0.0), row["run"]))
    return rows


def _cross_validations(runs: list[Path]) -> tuple[list[Path], dict[Path, list[Path]]]:
    """Runs on their own, and the complete sets of fold runs by their cross-validation directory."""
    by_directory: dict[Path, list[Path]] = {}
    for run in runs:
        if run.name.startswith(FOLD_PREFIX) and (run.parent / CROSS_VALIDATION_FILE).is_file():
            by_directory.setdefault(run.parent, []).append(run)
    groups = {}
    for directory, folds in by_directory.items():
        try:
            expected = int(read_json(directory / CROSS_VALIDATION_FILE)["folds"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if len(folds) == expected:
            groups[directory] = sorted(folds, key=lambda run: run.name)
    grouped = {run for folds in groups.values() for run in folds}
    return [run for run in runs if run not in grouped], groups


def _cross_validation_row(directory: Path, fold_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One leaderboard row for a cross-validation: means (± std) of scores, totals of costs."""
    import numpy as np

    first = fold_rows[0]
    row = {key: first.get(key) for key in ("model", "method", "head", "data", "seed", "memory", "device",
                                           "trainable_parameters")}
    for key in ("f1_macro", "accuracy"):
        values = [fold[key] for fold in fold_rows if fold.get(key) is not None]
        row[key] = float(np.mean(values)) if values else None
        row[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
    sizes = [fold.get("test_size") for fold in fold_rows]
    memory = [fold["peak_memory_gib"] for fold in fold_rows if fold.get("peak_memory_gib") is not None]
    seconds = [fold["training_seconds"] for fold in fold_rows if fold.get("training_seconds") is not None]
    row.update({
        "run": f"{directory.name} ({len(fold_rows)} folds)",
        "path": str(directory),
        "threshold": None,  # one per fold
        "test_size": sum(sizes) if all(isinstance(size, int) for size in sizes) else None,
        "training_seconds": sum(seconds) if seconds else None,
        "peak_memory_gib": max(memory) if memory else None,
        "size_mib": round(sum(fold["size_mib"] for fold in fold_rows), 2),
        "embeddings_cached": all(bool(fold.get("embeddings_cached")) for fold in fold_rows),
        "folds": len(fold_rows),
    })
    return row


def _run_rows(runs: list[Path], all_runs: list[Path]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        records = _records(run)
        if records is None:
            continue
        info, metrics = records
        data = info.get("data") if isinstance(info.get("data"), dict) else {}
        sizes = data.get("sizes") if isinstance(data.get("sizes"), dict) else {}
        gpu = info.get("peak_gpu_gib")
        used_gpu = gpu is not None and gpu > 0
        rows.append(
            {
                "run": _run_name(run, all_runs),
                "path": str(run),
                "model": info.get("backbone"),
                "method": info.get("method"),
                "head": info.get("head"),
                "f1_macro": metrics.get("f1_macro"),
                "accuracy": metrics.get("accuracy"),
                "threshold": info.get("threshold"),
                "data": data.get("source"),
                "test_size": sizes.get("test"),
                "seed": _seed_of(run),
                "training_seconds": info.get("training_seconds"),
                "peak_memory_gib": gpu if used_gpu else info.get("peak_rss_gib"),
                "memory": "GPU" if used_gpu else "RSS",
                "size_mib": round(size_on_disk(run) / 2**20, 2),
                "trainable_parameters": info.get("trainable_parameters"),
                # A frozen run that found its embeddings cached did not pay for embedding in its time.
                "embeddings_cached": info.get("embeddings_cached"),
                "device": info.get("device"),
            }
        )
    return rows


def _seed_of(run: Path) -> int | None:
    """The split's seed, as the run's config.yaml records it (None where it cannot be read)."""
    from review_toolkit.data import split_seed_of
    from review_toolkit.errors import ReviewToolkitError

    try:
        config = read_run_config_file(run)
    except ReviewToolkitError:
        return None
    seed = split_seed_of(config)
    return seed if isinstance(seed, int) else None


def mixed_test_data(rows: list[dict[str, Any]]) -> str | None:
    """A warning when the runs were not tested on the same reviews (data file, test size or seed differ)."""
    rows = [row for row in rows if row.get("test_size") != 0]  # a refit has no test split to compare
    settings = {(row.get("data"), row.get("test_size"), row.get("seed")) for row in rows}
    if len(settings) <= 1:
        return None
    listed = "; ".join(f"{row['run']}: {row.get('data')} ({row.get('test_size')} test reviews, split seed {row.get('seed')})" for row in rows)
    return (
        "Warning: these runs were tested on different reviews, so their scores are not directly comparable "
        f"({listed}). Compare runs trained on the same data and split seed, or score them all on one file with "
        "`evaluate --data`."
    )


def _cell(key: str, row: dict[str, Any]) -> str:
    """A table cell; a cross-validation's score shows its standard deviation over the folds."""
    text = _format(key, row.get(key))
    std = row.get(f"{key}_std")
    return f"{text} ± {std:.4f}" if std is not None and row.get(key) is not None else text


def _format(key: str, value: Any) -> str:
    if value is None:
        return "-" if key == "embeddings_cached" else "n/a"
    if key in ("f1_macro", "accuracy", "threshold"):
        return f"{value:.4f}"
    if key == "data":
        return Path(str(value)).name if not str(value).startswith("bundled default") else "bundled sample"
    if key == "training_seconds":
        return f"{value:.1f}"
    if key == "peak_memory_gib":
        return f"{value:.2f}"
    if key == "size_mib":
        return f"{value:.2f}"
    if key == "trainable_parameters":
        return f"{value:,}"
    if key == "embeddings_cached":
        return "yes" if value else "no"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join("---:" if key not in ("run", "model", "method", "head", "memory", "data") else "---" for key, _ in COLUMNS) + "|"
    lines = [header, rule]
    for row in rows:
        lines.append("| " + " | ".join(_cell(key, row) for key, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    fields = [key for key, _ in COLUMNS] + ["f1_macro_std", "accuracy_std", "folds", "device", "path"]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def default_output_dir(runs: list[Path]) -> Path:
    parents = {run.resolve().parent for run in runs}
    if len(parents) == 1:
        return next(iter(parents)) / LEADERBOARD_DIRECTORY
    import os

    return Path(os.path.commonpath([str(p) for p in parents])) / LEADERBOARD_DIRECTORY


def write_leaderboard(rows: list[dict[str, Any]], output_dir: str | Path) -> Path:
    """leaderboard.md, .csv and .png in ``output_dir``, which appears with all three or not at all."""
    from review_toolkit.runtime.files import staged_directory
    from review_toolkit.evaluation.plots import leaderboard_plot

    target = Path(output_dir)
    require_creatable_directory(target, "--output-dir")
    target.parent.mkdir(parents=True, exist_ok=True)
    with staged_directory(target) as staging:
        (staging / MARKDOWN_FILE).write_text(markdown_table(rows), encoding="utf-8")
        (staging / CSV_FILE).write_text(csv_text(rows), encoding="utf-8")
        leaderboard_plot(staging / PLOT_FILE, rows)
    return target


def compare_runs(paths: Iterable[str | Path], output_dir: str | Path | None = None) -> tuple[list[dict[str, Any]], Path]:
    runs = find_runs(paths)
    rows = leaderboard_rows(runs)
    if not rows:
        raise RunDirectoryError(
            f"None of the {len(runs)} run(s) found has readable records (run.json, metrics.json); see the warnings "
            "above. Evaluate or train them again."
        )
    target = write_leaderboard(rows, output_dir or default_output_dir(runs))
    return rows, target
