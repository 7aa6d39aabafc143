"""What a search leaves beside its study: the trials table (CSV and markdown) and the trials plot."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

TRIALS_CSV = "trials.csv"
TRIALS_PLOT = "trials.png"
DEFAULTS_LABEL = "(defaults)"


def trial_rows(trials: list[Any], keys: list[str]) -> list[dict[str, Any]]:
    """One row per finished or failed trial of an Optuna study: number, state, validation F1, values, time."""
    rows = []
    for trial in trials:
        state = trial.state.name.lower()
        if state == "running" or state == "waiting":
            continue
        value = trial.value if state == "complete" else None
        if state == "pruned" and trial.intermediate_values:
            value = trial.intermediate_values[max(trial.intermediate_values)]  # the F1 it was stopped at
        row: dict[str, Any] = {
            "trial": trial.number,
            "state": "interrupted" if state == "fail" and "error" not in trial.user_attrs else state,
            "validation_f1_macro": None if value is None else round(float(value), 6),
        }
        defaults = bool(trial.user_attrs.get("defaults"))
        for key in keys:
            row[key] = DEFAULTS_LABEL if defaults else trial.params.get(key)
        duration = trial.duration.total_seconds() if trial.duration is not None else None
        row["seconds"] = None if duration is None else round(duration, 1)
        row["error"] = trial.user_attrs.get("error", "")
        rows.append(row)
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns = list(rows[0]) if rows else ["trial", "state", "validation_f1_macro", "seconds", "error"]
    staging = path.with_name(path.name + ".partial")
    with open(staging, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    staging.replace(path)


def markdown_table(rows: list[dict[str, Any]], best: int | None) -> str:
    """The trials as a markdown table; the best trial's number is starred."""
    if not rows:
        return "(no trials)"
    columns = [column for column in rows[0] if column != "error"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = []
        for column in columns:
            value = row[column]
            if column == "trial" and value == best:
                cells.append(f"**{value}**")
            elif isinstance(value, float):
                cells.append(f"{value:.4g}" if column != "validation_f1_macro" else f"{value:.4f}")
            else:
                cells.append("" if value is None else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_trials(rows: list[dict[str, Any]], path: Path) -> None:
    """Validation macro F1 per trial (pruned trials at the F1 they were stopped at) and the best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(7, 4))
    complete = [(row["trial"], row["validation_f1_macro"]) for row in rows if row["state"] == "complete"]
    pruned = [(row["trial"], row["validation_f1_macro"]) for row in rows
              if row["state"] == "pruned" and row["validation_f1_macro"] is not None]
    if complete:
        axes.scatter(*zip(*complete), label="trial", color="tab:blue", zorder=3)
    if pruned:
        axes.scatter(*zip(*pruned), label="pruned (F1 when stopped)", color="tab:gray", marker="x", zorder=3)
    best_so_far, best = [], -math.inf
    for number, value in sorted(complete):
        best = max(best, value)
        best_so_far.append((number, best))
    if best_so_far:
        axes.step(*zip(*best_so_far), where="post", label="best so far", color="tab:orange")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("trial")
    axes.set_ylabel("validation macro F1")
    axes.set_title("Hyperparameter search")
    axes.grid(alpha=0.3)
    if complete or pruned:
        axes.legend(loc="lower right")
    figure.tight_layout()
    staging = path.with_name(path.stem + ".partial" + path.suffix)
    figure.savefig(staging, dpi=100)
    plt.close(figure)
    staging.replace(path)
