"""The model card (``README.md``) of a run directory.

Written at train time, and again by ``evaluate`` when it changes the stored
calibration or threshold, so the card always describes what ``predict``
serves. Everything comes from the run's own records (config, run.json,
metrics): the card never claims more than was measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODEL_CARD_FILE = "README.md"

# Options shown in the configuration table, in this order (others appear only when not default).
_MAIN_OPTIONS = ("backbone", "method", "head", "model", "max_length", "seed", "epochs", "learning_rate", "batch_size", "class_weight")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def model_card(
    config: dict[str, Any],
    info: dict[str, Any],
    metrics: dict[str, Any],
    report: str,
    evaluation: dict[str, Any] | None = None,
) -> str:
    """The card's markdown text."""
    from review_toolkit.config import TrainConfig

    backbone, method, head = info.get("backbone"), info.get("method"), info.get("head")
    data = info.get("data", {})
    sizes = data.get("sizes", {})
    calibration = info.get("calibration") or {"method": "none"}
    selection = info.get("threshold_selection") or {"rule": "default"}
    threshold = info.get("threshold", 0.5)
    defaults = TrainConfig().to_dict()

    lines = [
        f"# {backbone} + {method} + {head}: fake-review classifier",
        "",
        "Scores a product review with the probability that it is computer-generated (`fake`) rather than "
        "written by a person (`real`). Trained and written by `review_toolkit` "
        f"{info.get('toolkit_version', '')}.",
        "",
        "## Use",
        "",
        "```bash",
        "review-toolkit predict --run THIS_DIR --text \"Great kettle, boils fast.\"",
        "review-toolkit predict --run THIS_DIR --input reviews.csv --output scored.csv",
        "review-toolkit evaluate --run THIS_DIR            # plots and metrics on the test split",
        "```",
        "",
        "```python",
        "from review_toolkit import load_run",
        "predictions = load_run(\"THIS_DIR\").predict([\"Great kettle, boils fast.\"])  # label, p_fake",
        "```",
        "",
        "## Data and split",
        "",
        f"- Source: {data.get('source', 'n/a')}",
        f"- Split: {data.get('split', 'n/a')}",
        f"- Sizes: train {sizes.get('train', 'n/a')}, validation {sizes.get('validation', 'n/a')}, "
        f"test {sizes.get('test', 'n/a')} reviews",
        f"- Columns: text `{config.get('text_column', 'text')}`, label `{config.get('label_column', 'label')}`"
        + (f", label map {config['label_map']}" if config.get("label_map") else ""),
        "",
        "## Configuration",
        "",
        "| option | value |",
        "| --- | --- |",
    ]
    shown = list(_MAIN_OPTIONS) + [
        key for key, value in config.items()
        if key not in _MAIN_OPTIONS and value != defaults.get(key) and key not in ("output_dir", "overwrite", "data")
    ]
    resolved = {"head": head, "max_length": info.get("max_length")}  # what the run used where the config said "default"
    for key in shown:
        if key in config:
            value = config[key] if config[key] is not None else resolved.get(key)
            lines.append(f"| {key} | {'(default)' if value is None else f'`{value}`'} |")
    lines.append(f"| checkpoint | `{info.get('checkpoint')}` |")
    lines += ["", "Plugins:", ""]
    for plugin in info.get("plugins", []):
        lines.append(
            f"- {plugin.get('kind')} `{plugin.get('name')}` from {plugin.get('distribution')} {plugin.get('version')}"
        )
    lines += [
        "",
        "## Training",
        "",
        f"- Time: {_fmt(info.get('training_seconds'), 1)} s on {info.get('device', 'n/a')}",
        f"- Peak memory: process RSS {_fmt(info.get('peak_rss_gib'), 2)} GiB"
        + (f", GPU {_fmt(info.get('peak_gpu_gib'), 2)} GiB" if info.get("peak_gpu_gib") is not None else ""),
        f"- Parameters trained: {info.get('trainable_parameters', 'n/a'):,}"
        if isinstance(info.get("trainable_parameters"), int)
        else f"- Parameters trained: {info.get('trainable_parameters', 'n/a')}",
        f"- Embeddings from cache: {info['embeddings_cached']}" if "embeddings_cached" in info else "",
        "",
        "## Metrics",
        "",
        f"On the test split ({metrics.get('n_examples', sizes.get('test', 'n/a'))} reviews) at training time, "
        f"threshold {_fmt(metrics.get('threshold', 0.5) if 'threshold' in metrics else 0.5, 3)}:",
        "",
        "| macro F1 | accuracy | macro precision | macro recall | ROC AUC |",
        "| --- | --- | --- | --- | --- |",
        f"| {_fmt(metrics.get('f1_macro'))} | {_fmt(metrics.get('accuracy'))} | {_fmt(metrics.get('precision_macro'))} "
        f"| {_fmt(metrics.get('recall_macro'))} | {_fmt(metrics.get('roc_auc'))} |",
        "",
        "```",
        report.rstrip(),
        "```",
        "",
    ]
    if evaluation:
        lines += [
            f"Latest `evaluate` ({evaluation.get('data', {}).get('description', 'test split')}, threshold "
            f"{_fmt(evaluation.get('threshold'), 3)}): macro F1 {_fmt(evaluation.get('f1_macro'))}, accuracy "
            f"{_fmt(evaluation.get('accuracy'))}, ECE {_fmt(evaluation.get('ece_after_calibration'))}.",
            "",
        ]
    lines += ["## Probabilities and decision threshold", ""]
    if calibration.get("method", "none") == "none":
        lines.append("- Calibration: none; `p_fake` is the head's own probability.")
    else:
        lines.append(
            f"- Calibration: {calibration['method']} scaling fitted on the validation split "
            f"(slope {_fmt(calibration.get('slope'))}, intercept {_fmt(calibration.get('intercept'))})."
        )
    if calibration.get("note"):
        lines.append(f"- Note: {calibration['note']}.")
    if "validation_ece_before" in calibration:
        lines.append(
            f"- Expected calibration error on validation: {_fmt(calibration.get('validation_ece_before'))} before, "
            f"{_fmt(calibration.get('validation_ece_after'))} after."
        )
    if "test_ece_before" in calibration:
        lines.append(
            f"- On the test split: {_fmt(calibration.get('test_ece_before'))} before, "
            f"{_fmt(calibration.get('test_ece_after'))} after."
        )
    rule = selection.get("rule", "default")
    rule_text = {
        "default": "the default 0.5",
        "f1": "best macro F1 on the validation split",
        "accuracy": "best accuracy on the validation split",
        "target_precision": f"the lowest threshold reaching precision {selection.get('target_precision')} for `fake` "
        f"on the validation split (reached {_fmt(selection.get('validation_precision'))}, recall "
        f"{_fmt(selection.get('validation_recall'))})",
        "fixed": "set by hand",
    }.get(rule, rule)
    lines += [
        f"- Decision threshold: {_fmt(float(threshold), 4)} on calibrated `p_fake` ({rule_text}); `predict` labels a "
        "review `fake` when `p_fake >= threshold`. Change it with `review-toolkit evaluate --run THIS_DIR "
        "--threshold-for f1` or `--target-precision 0.95`.",
        "",
        "## Intended use and limitations",
        "",
        "- Intended use: flagging reviews that are likely machine-generated so that a person can look at them, "
        "and measuring how much generated text a collection holds. It is not evidence on its own that a "
        "particular person wrote a fake review; do not act against individuals on its output alone.",
        "- What it learned: the difference between the two classes in its training data. The bundled and "
        "reference data contrast human Amazon reviews with GPT-2-generated ones; text from other generators "
        "(newer LLMs), other sites, other product categories or other languages may score very differently, "
        "and scores are only as good as the test split above says for data like the training data.",
        f"- Long reviews are truncated to {info.get('max_length', 'n/a')} tokens.",
        "- Probabilities are calibrated on a validation split of "
        f"{sizes.get('validation', 'n/a')} reviews; with few validation reviews the calibration and any chosen "
        "threshold are themselves uncertain. Re-check them with `evaluate --data` on labelled data from the "
        "place you deploy.",
    ]
    if "bundled default" in str(data.get("source", "")):
        lines.append(
            "- Trained on the small bundled sample: a demonstration model, not one to deploy. Train on the full "
            "data with `--data`."
        )
    lines.append("")
    return "\n".join(line for line in lines if line is not None) + "\n"


def write_model_card(
    directory: str | Path,
    config: Any,
    info: dict[str, Any],
    metrics: dict[str, Any],
    report: str,
    evaluation: dict[str, Any] | None = None,
) -> Path:
    """Write ``README.md`` into a run directory (atomically)."""
    from review_toolkit.runtime.files import write_text_atomic

    config_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    path = Path(directory) / MODEL_CARD_FILE
    write_text_atomic(path, model_card(config_dict, info, metrics, report, evaluation))
    return path
