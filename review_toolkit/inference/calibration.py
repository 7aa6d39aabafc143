"""Probabilities users can trust: calibration on the validation split and a chosen decision threshold.

A head's P(fake) is often over- or under-confident (an MLP trained with
cross-entropy, an SVM's decision values). A one- or two-parameter map on the
logit, fitted on the validation split, fixes most of that without touching the
ranking of reviews:

* ``temperature``: ``sigmoid(logit(p) / T)``. Leaves the 0.5 decision where it
  was, so test metrics at the default threshold do not move; only confidence
  changes. The default at train time.
* ``platt``: ``sigmoid(a * logit(p) + b)``. Can also correct a shifted boundary.
* ``none``: the head's own probabilities.

The fitted map is kept only when it lowers the expected calibration error on
validation; otherwise the run records ``none`` and says why, so calibrating
never makes the probabilities a run serves worse by the measure it reports.

The threshold is chosen on validation, on calibrated probabilities, either to
maximise macro F1 (or accuracy) or to reach a target precision for ``fake``
with the most recall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from review_toolkit.errors import ConfigError

CALIBRATION_METHODS = ("temperature", "platt", "none")
THRESHOLD_OBJECTIVES = ("f1", "accuracy")
DEFAULT_THRESHOLD = 0.5
ECE_BINS = 10
_EPSILON = 1e-12


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPSILON, 1.0 - _EPSILON)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    positive = z >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-z[positive]))
    exp = np.exp(z[~positive])
    out[~positive] = exp / (1.0 + exp)
    return out


@dataclass
class Calibration:
    """``p -> sigmoid(slope * logit(p) + intercept)``; identity when ``method`` is ``none``."""

    method: str = "none"
    slope: float = 1.0
    intercept: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)  # ECE before/after, sizes, notes

    def apply(self, p_fake: np.ndarray) -> np.ndarray:
        p_fake = np.asarray(p_fake, dtype=np.float64)
        if self.method == "none":
            return p_fake
        return _sigmoid(self.slope * _logit(p_fake) + self.intercept)

    @property
    def temperature(self) -> float | None:
        return 1.0 / self.slope if self.method == "temperature" and self.slope else None

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"method": self.method, "slope": self.slope, "intercept": self.intercept}
        if self.temperature is not None:
            result["temperature"] = self.temperature
        result.update(self.details)
        return result

    @classmethod
    def from_dict(cls, value: dict[str, Any] | None) -> "Calibration":
        if not value:
            return cls()
        method = value.get("method", "none")
        if method not in CALIBRATION_METHODS:
            raise ConfigError(f"Unknown calibration method {method!r} in run.json; expected one of {CALIBRATION_METHODS}.")
        known = {"method", "slope", "intercept", "temperature"}
        return cls(
            method=method,
            slope=float(value.get("slope", 1.0)),
            intercept=float(value.get("intercept", 0.0)),
            details={k: v for k, v in value.items() if k not in known},
        )


def expected_calibration_error(labels: np.ndarray, p_fake: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Weighted mean |fraction fake - mean P(fake)| over equal-width bins of P(fake)."""
    labels = np.asarray(labels, dtype=np.float64)
    p_fake = np.asarray(p_fake, dtype=np.float64)
    if len(labels) == 0:
        return float("nan")
    bins = np.minimum((p_fake * n_bins).astype(int), n_bins - 1)
    error = 0.0
    for b in range(n_bins):
        members = bins == b
        if members.any():
            error += members.sum() * abs(labels[members].mean() - p_fake[members].mean())
    return float(error / len(labels))


def reliability_bins(labels: np.ndarray, p_fake: np.ndarray, n_bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean P(fake), fraction fake and count per non-empty bin (the points of a reliability diagram)."""
    labels = np.asarray(labels, dtype=np.float64)
    p_fake = np.asarray(p_fake, dtype=np.float64)
    bins = np.minimum((p_fake * n_bins).astype(int), n_bins - 1)
    mean_p, frac, count = [], [], []
    for b in range(n_bins):
        members = bins == b
        if members.any():
            mean_p.append(p_fake[members].mean())
            frac.append(labels[members].mean())
            count.append(int(members.sum()))
    return np.array(mean_p), np.array(frac), np.array(count)


def _negative_log_likelihood(slope: float, intercept: float, z: np.ndarray, y: np.ndarray) -> float:
    s = slope * z + intercept
    # log(1 + exp(s)) - y * s, computed stably
    return float(np.mean(np.logaddexp(0.0, s) - y * s))


def fit_calibration(p_fake: np.ndarray, labels: np.ndarray, method: str = "temperature") -> Calibration:
    """Fit ``method`` on validation probabilities by minimising log loss; keep it only if ECE drops."""
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"Unknown calibration {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}.")
    p_fake = np.asarray(p_fake, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    ece_before = expected_calibration_error(labels, p_fake)
    details: dict[str, Any] = {"fitted_on": "validation", "n_validation": int(len(labels)), "validation_ece_before": ece_before}
    if method == "none":
        return Calibration("none", details={**details, "validation_ece_after": ece_before})
    if len(np.unique(labels)) < 2:
        return Calibration(
            "none",
            details={**details, "validation_ece_after": ece_before, "note": "validation has one class; not calibrated"},
        )
    from scipy.optimize import minimize, minimize_scalar

    z = _logit(p_fake)
    if method == "temperature":
        # Optimise log T so the temperature stays positive.
        found = minimize_scalar(
            lambda log_t: _negative_log_likelihood(math.exp(-log_t), 0.0, z, labels), bounds=(-5.0, 5.0), method="bounded"
        )
        slope, intercept = math.exp(-float(found.x)), 0.0
    else:
        found = minimize(lambda v: _negative_log_likelihood(v[0], v[1], z, labels), x0=np.array([1.0, 0.0]), method="L-BFGS-B")
        slope, intercept = float(found.x[0]), float(found.x[1])
    candidate = Calibration(method, slope, intercept)
    ece_after = expected_calibration_error(labels, candidate.apply(p_fake))
    if ece_after > ece_before:
        return Calibration(
            "none",
            details={
                **details,
                "validation_ece_after": ece_before,
                "note": f"{method} scaling raised validation ECE ({ece_before:.4f} -> {ece_after:.4f}); left uncalibrated",
            },
        )
    candidate.details = {**details, "validation_ece_after": ece_after}
    return candidate


@dataclass
class ThresholdChoice:
    threshold: float
    rule: str  # "default", "f1", "accuracy", "target_precision", "fixed"
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, **self.details}


def _confusion_at(p_sorted_desc: np.ndarray, y_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each cut after the k-th highest distinct score: tp, fp, fn, tn and the cut's threshold."""
    distinct = np.r_[np.flatnonzero(np.diff(p_sorted_desc)), len(p_sorted_desc) - 1]  # last index of each score
    tp = np.cumsum(y_sorted)[distinct]
    fp = (distinct + 1) - tp
    positives = y_sorted.sum()
    negatives = len(y_sorted) - positives
    fn = positives - tp
    tn = negatives - fp
    # Predict fake for p >= threshold: midway between this score and the next lower one.
    scores = p_sorted_desc[distinct]
    lower = np.r_[p_sorted_desc[distinct[:-1] + 1], -np.inf]
    thresholds = np.where(np.isfinite(lower), (scores + lower) / 2.0, scores)
    return tp, fp, fn, tn, thresholds


def choose_threshold(
    p_fake: np.ndarray,
    labels: np.ndarray,
    *,
    objective: str | None = None,
    target_precision: float | None = None,
) -> ThresholdChoice:
    """Pick the decision threshold on validation (calibrated) probabilities.

    ``target_precision``: the lowest threshold whose precision for ``fake`` reaches the target,
    i.e. the most fake reviews caught at that precision. ``objective``: the threshold with the best
    macro F1 (``f1``) or accuracy; ties go to the threshold nearest 0.5.
    """
    p_fake = np.asarray(p_fake, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if target_precision is not None and objective is not None:
        raise ConfigError("Give either --threshold-for or --target-precision, not both.")
    if len(p_fake) == 0 or len(np.unique(labels)) < 2:
        raise ConfigError("Choosing a threshold needs validation data with both fake and real reviews.")
    order = np.argsort(-p_fake, kind="stable")
    tp, fp, fn, tn, thresholds = _confusion_at(p_fake[order], labels[order])
    n = len(labels)
    if target_precision is not None:
        if not 0.0 < target_precision <= 1.0:
            raise ConfigError(f"--target-precision must be in (0, 1]; got {target_precision}.")
        precision = tp / np.maximum(tp + fp, 1)
        feasible = np.flatnonzero(precision >= target_precision - 1e-12)
        if feasible.size == 0:
            raise ConfigError(
                f"No threshold reaches precision {target_precision:g} for 'fake' on the validation split "
                f"({n} reviews); the best reachable is {precision.max():.4f}. Ask for a lower --target-precision, "
                "or use --threshold-for f1."
            )
        k = int(feasible[-1])  # lowest threshold = most recall among those reaching the target
        recall = tp[k] / max(tp[k] + fn[k], 1)
        return ThresholdChoice(
            float(thresholds[k]),
            "target_precision",
            {
                "target_precision": target_precision,
                "validation_precision": float(precision[k]),
                "validation_recall": float(recall),
                "n_validation": n,
            },
        )
    objective = objective or "f1"
    if objective not in THRESHOLD_OBJECTIVES:
        raise ConfigError(f"--threshold-for must be one of {', '.join(THRESHOLD_OBJECTIVES)}; got {objective!r}.")
    if objective == "accuracy":
        scores = (tp + tn) / n
    else:
        f1_fake = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
        f1_real = 2 * tn / np.maximum(2 * tn + fn + fp, 1)
        scores = (f1_fake + f1_real) / 2
    best = np.flatnonzero(np.isclose(scores, scores.max(), rtol=0, atol=1e-12))
    k = int(best[np.argmin(np.abs(thresholds[best] - DEFAULT_THRESHOLD))])
    return ThresholdChoice(
        float(thresholds[k]),
        objective,
        {f"validation_{'f1_macro' if objective == 'f1' else 'accuracy'}": float(scores[k]), "n_validation": n},
    )
