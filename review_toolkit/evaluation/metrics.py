"""Classification metrics, computed with scikit-learn, exposed as an ``evaluate.Metric``.

``evaluate.load("f1")`` fetches a script from the Hugging Face Hub, which a
machine without network cannot do; a Metric subclass that lives in this package
works everywhere and plugs into the same ``evaluate`` API.
"""

from __future__ import annotations

from typing import Any

import datasets
import evaluate
import numpy as np
from sklearn import metrics as sk_metrics

from review_toolkit.data import LABEL_NAMES

_DESCRIPTION = "Accuracy, macro precision/recall/F1, ROC AUC and per-class scores for fake-review detection."
_INPUTS = """
predictions: predicted label ids (0 = real, 1 = fake).
references: true label ids.
p_fake (optional keyword): probability of `fake` per example, for ROC AUC.
"""


class ReviewClassificationMetrics(evaluate.Metric):
    """The metrics every run reports, as one ``evaluate`` module."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions: list[int], references: list[int], p_fake: list[float] | None = None) -> dict[str, Any]:
        return classification_metrics(np.asarray(references), np.asarray(predictions), p_fake)


def classification_metrics(
    labels: np.ndarray, predictions: np.ndarray, p_fake: np.ndarray | list[float] | None = None
) -> dict[str, Any]:
    """Scores over the two classes; ROC AUC only when probabilities are given and both classes occur."""
    label_ids = list(range(len(LABEL_NAMES)))
    precision, recall, f1, support = sk_metrics.precision_recall_fscore_support(
        labels, predictions, labels=label_ids, zero_division=0
    )
    result: dict[str, Any] = {
        "accuracy": float(sk_metrics.accuracy_score(labels, predictions)),
        "f1_macro": float(np.mean(f1)),
        "precision_macro": float(np.mean(precision)),
        "recall_macro": float(np.mean(recall)),
        "roc_auc": None,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(LABEL_NAMES)
        },
        "n_examples": int(len(labels)),
    }
    if p_fake is not None and len(set(np.asarray(labels).tolist())) == 2:
        result["roc_auc"] = float(sk_metrics.roc_auc_score(labels, np.asarray(p_fake)))
    return result


def classification_report(labels: np.ndarray, predictions: np.ndarray) -> str:
    """scikit-learn's classification report, the research's layout."""
    return sk_metrics.classification_report(
        labels,
        predictions,
        labels=list(range(len(LABEL_NAMES))),
        target_names=list(LABEL_NAMES),
        digits=4,
        zero_division=0,
    )


_TRAINER_METRIC = None


def trainer_compute_metrics(eval_prediction: Any) -> dict[str, float]:
    """``compute_metrics`` for Trainer: macro F1 (the early-stopping metric), accuracy, AUC."""
    global _TRAINER_METRIC
    if _TRAINER_METRIC is None:
        _TRAINER_METRIC = ReviewClassificationMetrics()
    logits, labels = eval_prediction.predictions, eval_prediction.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    probabilities = _softmax(np.asarray(logits, dtype=np.float64))
    scores = _TRAINER_METRIC.compute(
        predictions=probabilities.argmax(-1), references=labels, p_fake=probabilities[:, 1]
    )
    return {key: scores[key] for key in ("f1_macro", "accuracy", "roc_auc") if scores[key] is not None}


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
