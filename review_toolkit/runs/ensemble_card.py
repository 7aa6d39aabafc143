"""The model card (``README.md``) of an ensemble run: its members, how they are combined, its metrics.

Written by ``review-toolkit ensemble`` and again by ``evaluate`` when it changes the stored
calibration or threshold (``write_model_card`` picks this card for an ensemble's run.json).
"""

from __future__ import annotations

import functools
import string
from typing import Any

from review_toolkit.runs import card_parts as cards

ENSEMBLE_CARD_TEMPLATE = "ensemble_card.md"


@functools.cache
def _template() -> string.Template:
    return string.Template((cards.TEMPLATES / ENSEMBLE_CARD_TEMPLATE).read_text(encoding="utf-8"))


def ensemble_card(
    config: dict[str, Any],
    info: dict[str, Any],
    metrics: dict[str, Any],
    report: str,
    evaluation: dict[str, Any] | None = None,
) -> str:
    """The card's markdown text: ``templates/ensemble_card.md`` filled from the ensemble's records."""
    data = info.get("data") or {}
    sizes = data.get("sizes") or {}
    members = info.get("members") or []
    combination = info.get("combination") or {}
    calibration_method = (info.get("calibration") or {}).get("method", "none")
    fields = {
        "front_matter": _front_matter(info, metrics),
        "member_count": len(members),
        "combination": combination.get("method", "n/a"),
        "toolkit_version": info.get("toolkit_version", ""),
        "member_rows": "\n".join(
            f"| {m.get('name')} | {m.get('backbone')} | {m.get('method')} | {m.get('head')} | `{m.get('base_model') or m.get('checkpoint')}` | "
            f"{cards.fmt(m.get('validation_f1_macro'))} | {cards.fmt(m.get('test_f1_macro'))} |"
            for m in members
        ),
        "combination_lines": "\n".join(_combination_lines(combination, members)),
        "data_source": data.get("source", "n/a"),
        "data_split": data.get("split", "n/a"),
        "train_size": sizes.get("train", "n/a"),
        "validation_size": sizes.get("validation", "n/a"),
        "test_size": sizes.get("test", "n/a"),
        "columns": cards.columns_text(config),
        "test_examples": metrics.get("n_examples", sizes.get("test", "n/a")),
        "metrics_threshold": cards.fmt(metrics.get("threshold", 0.5), 3),
        **{key: cards.fmt(metrics.get(key)) for key in ("f1_macro", "accuracy", "precision_macro", "recall_macro", "roc_auc")},
        "report": report.rstrip(),
        "latest_evaluation": cards.latest_evaluation(evaluation),
        "calibration_lines": "\n".join(cards.calibration_lines(info.get("calibration") or {"method": "none"})).replace(
            "the head's own probability", "the combination's own probability"
        ),
        "threshold": cards.fmt(float(info.get("threshold", 0.5)), 4),
        "threshold_rule": cards.threshold_rule(info.get("threshold_selection") or {"rule": "default"}),
        "scored_p_fake": "the combined `p_fake`"
        + ("" if calibration_method in (None, "none") else f", calibrated by {calibration_method} scaling"),
        "max_length": info.get("max_length", "n/a"),
        "bundled_sample_note": cards.bundled_sample_note(data),
    }
    return _template().substitute(fields)


def _combination_lines(combination: dict[str, Any], members: list[dict[str, Any]]) -> list[str]:
    if combination.get("method") == "stacking":
        weights = ", ".join(
            f"{m.get('name')} {cards.fmt(w)}" for m, w in zip(members, combination.get("weights") or [])
        )
        lines = [
            "- Stacking: a logistic regression on the members' calibrated logits, fitted on the validation split: "
            f"weights {weights}; intercept {cards.fmt(combination.get('intercept'))}."
        ]
    else:
        lines = ["- Mean of the members' calibrated `p_fake`."]
    scores = combination.get("validation_f1_macro") or {}
    if scores:
        listed = ", ".join(f"{name} {cards.fmt(value)}" for name, value in scores.items())
        lines.append(
            f"- Chosen by {combination.get('chosen_by', 'n/a')}; validation macro F1 at 0.5: {listed} "
            "(stacking's from 5-fold out-of-fold predictions)."
        )
    return lines


def _front_matter(info: dict[str, Any], metrics: dict[str, Any]) -> str:
    members = info.get("members") or []
    tags = ["review_toolkit", "fake-review-detection", "text-classification", "ensemble"]
    tags += sorted({f"backbone-{m.get('backbone')}" for m in members})
    lines = ["library_name: review_toolkit", "pipeline_tag: text-classification", "tags:", *(f"- {tag}" for tag in tags)]
    name = f"ensemble-{(info.get('combination') or {}).get('method')}-{len(members)}-runs"
    lines += cards.metrics_front_matter(name, metrics)
    return "\n".join(lines)
