"""The model card (``README.md``) of a run directory.

Written at train time, and again by ``evaluate`` when it changes the stored
calibration or threshold, so the card always describes what ``predict``
serves. Everything comes from the run's own records (config, run.json,
metrics): the card never claims more than was measured.
"""

from __future__ import annotations

import functools
import string
from pathlib import Path
from typing import Any

MODEL_CARD_FILE = "README.md"
TEMPLATES = Path(__file__).with_name("templates")
MODEL_CARD_TEMPLATE = "model_card.md"

# Options shown in the configuration table, in this order (others appear only when not default).
# Each plugin's options are listed with the plugin, not in the table.
_PLUGIN_OPTION_KEYS = {"backbone": "backbone_options", "method": "method_options", "head": "head_options"}
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
    export: dict[str, Any] | None = None,
) -> str:
    """The card's markdown text: ``templates/model_card.md`` filled from the run's records.

    ``export`` is the run's ONNX export record (``onnx/export.json``), if it has one.
    """
    data = info.get("data", {})
    sizes = data.get("sizes", {})
    calibration_method = (info.get("calibration") or {}).get("method", "none")
    calibrated = None if calibration_method in (None, "none") else calibration_method
    fields = {
        "backbone": info.get("backbone"),
        "method": info.get("method"),
        "head": info.get("head"),
        "toolkit_version": info.get("toolkit_version", ""),
        "data_source": data.get("source", "n/a"),
        "data_split": data.get("split", "n/a"),
        "train_size": sizes.get("train", "n/a"),
        "validation_size": sizes.get("validation", "n/a"),
        "test_size": sizes.get("test", "n/a"),
        "columns": _columns(config),
        "configuration_rows": "\n".join(_configuration_rows(config, info)),
        "plugin_lines": "\n".join(_plugin_lines(info)),
        "training_lines": "\n".join(_training_lines(info)),
        "test_examples": metrics.get("n_examples", sizes.get("test", "n/a")),
        "metrics_threshold": _fmt(metrics.get("threshold", 0.5), 3),
        **{key: _fmt(metrics.get(key)) for key in ("f1_macro", "accuracy", "precision_macro", "recall_macro", "roc_auc")},
        "report": report.rstrip(),
        "latest_evaluation": _latest_evaluation(evaluation),
        "scoring_lines": "\n".join(_scoring_lines(info, export)),
        "calibration_lines": "\n".join(_calibration_lines(info.get("calibration") or {"method": "none"})),
        "threshold": _fmt(float(info.get("threshold", 0.5)), 4),
        "threshold_rule": _threshold_rule(info.get("threshold_selection") or {"rule": "default"}),
        "max_length": info.get("max_length", "n/a"),
        "bundled_sample_note": _bundled_sample_note(data),
        "front_matter": _front_matter(info, metrics),
        "scored_p_fake": "`p_fake`, not calibrated" if calibrated is None else f"`p_fake` calibrated by {calibrated} scaling",
        "calibration_limit": (
            f"Probabilities are calibrated on a validation split of {sizes.get('validation', 'n/a')} reviews; with "
            "few validation reviews the calibration and any chosen threshold are themselves uncertain."
            if calibrated is not None else
            "Probabilities are the head's own, not calibrated (`evaluate --calibration temperature` fits a "
            f"calibration on the {sizes.get('validation', 'n/a')} validation reviews); any chosen threshold is "
            "uncertain with few validation reviews."
        ),
    }
    return _template().substitute(fields)


def _front_matter(info: dict[str, Any], metrics: dict[str, Any]) -> str:
    """The Hugging Face Hub's card metadata (YAML between ``---`` lines): what the Hub indexes a model by."""
    lines = [
        "library_name: review_toolkit",
        "pipeline_tag: text-classification",
        "tags:",
        *(f"- {tag}" for tag in ("review_toolkit", "fake-review-detection", "text-classification",
                                  f"backbone-{info.get('backbone')}", f"method-{info.get('method')}", f"head-{info.get('head')}")),
    ]
    checkpoint = str(info.get("checkpoint") or "")
    if _is_hub_id(checkpoint):  # a local path names nothing on the Hub
        lines.append(f"base_model: {checkpoint}")
    lines += ["metrics:", "- f1", "- accuracy"]
    if metrics.get("f1_macro") is not None:
        lines += [
            "model-index:",
            f"- name: {info.get('backbone')}-{info.get('method')}-{info.get('head')}",
            "  results:",
            "  - task: {type: text-classification, name: fake review detection}",
            "    metrics:",
            f"    - {{type: f1, name: macro F1 on the test split, value: {_fmt(metrics.get('f1_macro'))}}}",
            f"    - {{type: accuracy, name: accuracy on the test split, value: {_fmt(metrics.get('accuracy'))}}}",
        ]
    return "\n".join(lines)


def _is_hub_id(checkpoint: str) -> bool:
    parts = checkpoint.split("/")
    return len(parts) == 2 and all(parts) and not checkpoint.startswith((".", "~")) and not Path(checkpoint).exists()


@functools.cache
def _template() -> string.Template:
    return string.Template((TEMPLATES / MODEL_CARD_TEMPLATE).read_text(encoding="utf-8"))


def _columns(config: dict[str, Any]) -> str:
    columns = f"text `{config.get('text_column', 'text')}`, label `{config.get('label_column', 'label')}`"
    return columns + (f", label map {config['label_map']}" if config.get("label_map") else "")


def _configuration_rows(config: dict[str, Any], info: dict[str, Any]) -> list[str]:
    """The main options, then every other option that is not at its default, then the checkpoint."""
    from review_toolkit.config import TrainConfig

    defaults = TrainConfig().to_dict()
    shown = list(_MAIN_OPTIONS) + [
        key for key, value in config.items()
        if key not in _MAIN_OPTIONS and value != defaults.get(key)
        and key not in ("output_dir", "overwrite", "data", *_PLUGIN_OPTION_KEYS.values())
    ]
    # What the run used where the config said "default".
    resolved = {"head": info.get("head"), "max_length": info.get("max_length")}
    rows = []
    for key in shown:
        if key in config:
            value = config[key] if config[key] is not None else resolved.get(key)
            rows.append(f"| {key} | {'(default)' if value is None else f'`{value}`'} |")
    rows.append(f"| checkpoint | `{info.get('checkpoint')}` |")
    return rows


def _plugin_lines(info: dict[str, Any]) -> list[str]:
    """One line per plugin: where it came from and the options the run gave it (run.json's record)."""
    recorded = info.get("plugin_options") or {}
    lines = []
    for plugin in info.get("plugins", []):
        options = recorded.get(plugin.get("kind")) or {}
        listed = ", ".join(f"`{name}={_option_text(value)}`" for name, value in options.items())
        lines.append(
            f"- {plugin.get('kind')} `{plugin.get('name')}` from {plugin.get('distribution')} {plugin.get('version')}"
            + (f"; options {listed}" if listed else "")
        )
    return lines


def _option_text(value: Any) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _training_lines(info: dict[str, Any]) -> list[str]:
    memory = f"- Peak memory: process RSS {_fmt(info.get('peak_rss_gib'), 2)} GiB"
    if info.get("peak_gpu_gib") is not None:
        memory += f", GPU {_fmt(info.get('peak_gpu_gib'), 2)} GiB"
    trained = info.get("trainable_parameters", "n/a")
    lines = [
        f"- Time: {_fmt(info.get('training_seconds'), 1)} s on {info.get('device', 'n/a')}",
        memory,
        f"- Parameters trained: {trained:,}" if isinstance(trained, int) else f"- Parameters trained: {trained}",
    ]
    if "embeddings_cached" in info:
        lines.append(f"- Embeddings from cache: {info['embeddings_cached']}")
    return lines


def _latest_evaluation(evaluation: dict[str, Any] | None) -> str:
    """A paragraph on the latest ``evaluate`` (with the blank line after it), or nothing."""
    if not evaluation:
        return ""
    return (
        f"Latest `evaluate` ({evaluation.get('data', {}).get('description', 'test split')}, threshold "
        f"{_fmt(evaluation.get('threshold'), 3)}): macro F1 {_fmt(evaluation.get('f1_macro'))}, accuracy "
        f"{_fmt(evaluation.get('accuracy'))}, ECE {_fmt(evaluation.get('ece_after_calibration'))}.\n\n"
    )


def _scoring_lines(info: dict[str, Any], export: dict[str, Any] | None) -> list[str]:
    """What computed the test metrics above, and what scores on a CPU when the run has an export."""
    lines = [f"- Scored with: {info.get('scored_with', 'torch')} (the metrics above, at training time)."]
    if not export:
        return lines
    precision = export.get("precision", "fp32")
    parity = export.get("parity") or {}
    lines.append(
        f"- Scored with on a CPU: onnx {precision} (`onnx/{export.get('model_file')}`, ONNX Runtime"
        + (", int8 dynamic quantization" if precision == "int8" else "")
        + "): `predict`, `evaluate --data`, `serve` and `load_run` use it there; `--backend torch` uses the PyTorch model."
    )
    if parity:
        lines.append(
            f"- Parity at export on {parity.get('texts')} sample reviews: max |p_fake difference| "
            f"{_fmt(parity.get('max_abs_p_fake_difference'), 6)}, {parity.get('labels_changed')} labels changed."
        )
    test = export.get("test_split") or {}
    if test.get("measured"):
        lines.append(
            f"- On the test split with onnx {precision}: macro F1 {_fmt(test.get('f1_macro'))} "
            f"(torch: {_fmt(test.get('f1_macro_torch'))}, change {test.get('f1_macro_change', 0):+.4f}), "
            f"{test.get('labels_changed')} of {test.get('n_examples')} labels changed."
        )
    elif test:
        lines.append(f"- Test split not scored with the export: {test.get('reason')}.")
    return lines


def _calibration_lines(calibration: dict[str, Any]) -> list[str]:
    if calibration.get("method", "none") == "none":
        lines = ["- Calibration: none; `p_fake` is the head's own probability."]
    else:
        lines = [
            f"- Calibration: {calibration['method']} scaling fitted on the validation split "
            f"(slope {_fmt(calibration.get('slope'))}, intercept {_fmt(calibration.get('intercept'))})."
        ]
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
    return lines


def _threshold_rule(selection: dict[str, Any]) -> str:
    """How the decision threshold was chosen, in words."""
    rule = selection.get("rule", "default")
    return {
        "default": "the default 0.5",
        "f1": "best macro F1 on the validation split",
        "accuracy": "best accuracy on the validation split",
        "target_precision": f"the lowest threshold reaching precision {selection.get('target_precision')} for `fake` "
        f"on the validation split (reached {_fmt(selection.get('validation_precision'))}, recall "
        f"{_fmt(selection.get('validation_recall'))})",
        "fixed": "set by hand",
    }.get(rule, rule)


def _bundled_sample_note(data: dict[str, Any]) -> str:
    if "bundled default" not in str(data.get("source", "")):
        return ""
    return (
        "- Trained on the small bundled sample: a demonstration model, not one to deploy. Train on the full "
        "data with `--data`.\n"
    )


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

    from review_toolkit.inference.onnx_backend import read_export

    config_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    path = Path(directory) / MODEL_CARD_FILE
    write_text_atomic(path, model_card(config_dict, info, metrics, report, evaluation, export=read_export(Path(directory))))
    return path
