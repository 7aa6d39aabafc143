"""What both model cards (a run's and an ensemble's) say the same way: numbers, columns, calibration, threshold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).with_name("templates")


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def metrics_front_matter(name: str, metrics: dict[str, Any]) -> list[str]:
    """The Hub front matter's metric lines: the metrics named, and the test-split values as a
    model-index entry called ``name`` when the run has them."""
    lines = ["metrics:", "- f1", "- accuracy"]
    if metrics.get("f1_macro") is not None:
        lines += [
            "model-index:",
            f"- name: {name}",
            "  results:",
            "  - task: {type: text-classification, name: fake review detection}",
            "    metrics:",
            f"    - {{type: f1, name: macro F1 on the test split, value: {fmt(metrics.get('f1_macro'))}}}",
            f"    - {{type: accuracy, name: accuracy on the test split, value: {fmt(metrics.get('accuracy'))}}}",
        ]
    return lines


def columns_text(config: dict[str, Any]) -> str:
    columns = f"text `{config.get('text_column', 'text')}`, label `{config.get('label_column', 'label')}`"
    return columns + (f", label map {config['label_map']}" if config.get("label_map") else "")


def latest_evaluation(evaluation: dict[str, Any] | None) -> str:
    """A paragraph on the latest ``evaluate`` (with the blank line after it), or nothing."""
    if not evaluation:
        return ""
    return (
        f"Latest `evaluate` ({evaluation.get('data', {}).get('description', 'test split')}, threshold "
        f"{fmt(evaluation.get('threshold'), 3)}): macro F1 {fmt(evaluation.get('f1_macro'))}, accuracy "
        f"{fmt(evaluation.get('accuracy'))}, ECE {fmt(evaluation.get('ece_after_calibration'))}.\n\n"
    )


def calibration_lines(calibration: dict[str, Any]) -> list[str]:
    if calibration.get("method", "none") == "none":
        lines = ["- Calibration: none; `p_fake` is the head's own probability."]
    else:
        lines = [
            f"- Calibration: {calibration['method']} scaling fitted on the validation split "
            f"(slope {fmt(calibration.get('slope'))}, intercept {fmt(calibration.get('intercept'))})."
        ]
    if calibration.get("note"):
        lines.append(f"- Note: {calibration['note']}.")
    if "validation_ece_before" in calibration:
        lines.append(
            f"- Expected calibration error on validation: {fmt(calibration.get('validation_ece_before'))} before, "
            f"{fmt(calibration.get('validation_ece_after'))} after."
        )
    if "test_ece_before" in calibration:
        lines.append(
            f"- On the test split: {fmt(calibration.get('test_ece_before'))} before, "
            f"{fmt(calibration.get('test_ece_after'))} after."
        )
    return lines


def threshold_rule(selection: dict[str, Any]) -> str:
    """How the decision threshold was chosen, in words."""
    rule = selection.get("rule", "default")
    return {
        "default": "the default 0.5",
        "f1": "best macro F1 on the validation split",
        "accuracy": "best accuracy on the validation split",
        "target_precision": f"the lowest threshold reaching precision {selection.get('target_precision')} for `fake` "
        f"on the validation split (reached {fmt(selection.get('validation_precision'))}, recall "
        f"{fmt(selection.get('validation_recall'))})",
        "fixed": "set by hand",
    }.get(rule, rule)


def bundled_sample_note(data: dict[str, Any]) -> str:
    if "bundled default" not in str(data.get("source", "")):
        return ""
    return (
        "- Trained on the small bundled sample: a demonstration model, not one to deploy. Train on the full "
        "data with `--data`.\n"
    )
