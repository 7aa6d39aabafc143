"""PNG figures for evaluation and comparison, drawn with matplotlib's file-only backend.

Each function writes one file and closes its figure, so a long session of
evaluations does not accumulate open figures (or need a display).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from review_toolkit.data import LABEL_NAMES

DPI = 120


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)


def confusion_matrix_plot(path: Path, matrix: np.ndarray, *, threshold: float, subtitle: str) -> None:
    """Counts and row percentages; rows are the true class, columns the predicted one."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    # From 0, so that close counts keep distinct shades and the text colour below stays readable.
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(int(matrix.max()), 1))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    totals = matrix.sum(axis=1, keepdims=True).clip(min=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            dark = matrix[i, j] > matrix.max() / 2
            ax.text(
                j, i, f"{matrix[i, j]}\n({matrix[i, j] / totals[i, 0]:.1%})",
                ha="center", va="center", color="white" if dark else "black", fontsize=12,
            )
    ax.set_xticks(range(len(LABEL_NAMES)), [f"predicted {name}" for name in LABEL_NAMES])
    ax.set_yticks(range(len(LABEL_NAMES)), [f"true {name}" for name in LABEL_NAMES])
    ax.set_title(f"Confusion matrix (threshold {threshold:.3f})\n{subtitle}", fontsize=10)
    _save(fig, path)


def roc_curve_plot(path: Path, labels: np.ndarray, p_fake: np.ndarray, *, threshold: float, subtitle: str) -> float:
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fpr, tpr, _ = roc_curve(labels, p_fake)
    auc = float(roc_auc_score(labels, p_fake))
    predicted = p_fake >= threshold
    point = (predicted[labels == 0].mean(), predicted[labels == 1].mean())
    fig, ax = plt.subplots(figsize=(5.2, 4.8))
    ax.plot(fpr, tpr, lw=2, label=f"ROC curve (AUC = {auc:.4f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="chance")
    ax.plot(*point, "o", color="crimson", label=f"threshold {threshold:.3f}")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("False positive rate (real flagged as fake)")
    ax.set_ylabel("True positive rate (fake caught)")
    ax.set_title(f"ROC curve\n{subtitle}", fontsize=10)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    _save(fig, path)
    return auc


def precision_recall_plot(path: Path, labels: np.ndarray, p_fake: np.ndarray, *, threshold: float, subtitle: str) -> float:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    plt = _pyplot()
    precision, recall, _ = precision_recall_curve(labels, p_fake)
    ap = float(average_precision_score(labels, p_fake))
    predicted = p_fake >= threshold
    tp = int((predicted & (labels == 1)).sum())
    point_precision = tp / max(int(predicted.sum()), 1)
    point_recall = tp / max(int((labels == 1).sum()), 1)
    fig, ax = plt.subplots(figsize=(5.2, 4.8))
    ax.step(recall, precision, where="post", lw=2, label=f"precision-recall (AP = {ap:.4f})")
    ax.axhline(float(np.mean(labels)), ls="--", color="grey", label="share of fake (chance)")
    ax.plot(point_recall, point_precision, "o", color="crimson", label=f"threshold {threshold:.3f}")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("Recall (fake caught)")
    ax.set_ylabel("Precision (flagged that are fake)")
    ax.set_title(f"Precision-recall curve for 'fake'\n{subtitle}", fontsize=10)
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    _save(fig, path)
    return ap


def calibration_plot(
    path: Path,
    labels: np.ndarray,
    p_raw: np.ndarray,
    p_calibrated: np.ndarray,
    *,
    ece_raw: float,
    ece_calibrated: float,
    method: str,
    subtitle: str,
) -> None:
    """Reliability diagram (fraction fake vs mean P(fake) per bin) before and after calibration."""
    from review_toolkit.inference.calibration import ECE_BINS, reliability_bins

    plt = _pyplot()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.4, 6.4), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfectly calibrated")
    curves = [("uncalibrated", p_raw, ece_raw, "tab:orange")]
    if method != "none":
        curves.append((f"{method} scaling", p_calibrated, ece_calibrated, "tab:blue"))
    for name, p, ece, colour in curves:
        mean_p, frac, _ = reliability_bins(labels, p)
        ax.plot(mean_p, frac, "o-", color=colour, label=f"{name} (ECE {ece:.4f})")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("Fraction of reviews that are fake")
    ax.set_title(f"Calibration (reliability) curve, {ECE_BINS} bins\n{subtitle}", fontsize=10)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    edges = np.linspace(0, 1, ECE_BINS + 1)
    for name, p, _, colour in curves:
        hist.hist(p, bins=edges, alpha=0.5, color=colour, label=name)
    hist.set_xlim(-0.02, 1.02)
    hist.set_xlabel("Predicted P(fake)")
    hist.set_ylabel("Reviews")
    _save(fig, path)


def leaderboard_plot(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Macro F1 and training time per run, best run on top."""
    plt = _pyplot()
    names = [row["run"] for row in rows][::-1]
    scored = [row["f1_macro"] for row in rows][::-1]  # None: a run without a test split (a refit)
    f1 = [value or 0.0 for value in scored]
    seconds = [row["training_seconds"] or 0.0 for row in rows][::-1]
    height = max(2.6, 0.55 * len(rows) + 1.4)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, height), sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    bars = left.barh(names, f1, color="tab:blue")
    left.bar_label(bars, labels=["no test split" if value is None else f"{value:.4f}" for value in scored], padding=3, fontsize=9)
    low = min((value for value in scored if value is not None), default=0.0)
    start = max(0.0, low - 0.1)
    left.set_xlim(start, 1.0 + (1.0 - start) * 0.12)
    # A bar chart whose axis does not start at 0 exaggerates differences: the label says so.
    left.set_xlabel("Macro F1 on the test split" + (f" (axis starts at {start:.2f}, not 0)" if start > 0 else ""))
    left.set_title("Macro F1 (higher is better)")
    bars = right.barh(names, seconds, color="tab:gray")
    right.bar_label(bars, labels=[f"{value:.1f} s" for value in seconds], padding=3, fontsize=9)
    right.set_xlim(0, (max(seconds) if seconds else 1.0) * 1.3 or 1.0)
    right.set_xlabel("Training time (s)")
    right.set_title("Training time (lower is better)")
    fig.suptitle("Run comparison")
    _save(fig, path)
