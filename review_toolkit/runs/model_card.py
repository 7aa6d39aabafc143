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

from review_toolkit.runs.ensemble_card import ensemble_card
from review_toolkit.runs.card_parts import (
    TEMPLATES,
    bundled_sample_note,
    calibration_lines,
    columns_text,
    fmt,
    latest_evaluation,
    metrics_front_matter,
    threshold_rule,
)
from review_toolkit.runtime.hub import is_hub_id

MODEL_CARD_FILE = "README.md"
MODEL_CARD_TEMPLATE = "model_card.md"

# Options shown in the configuration table, in this order (others appear only when not default).
# Each plugin's options are listed with the plugin, not in the table.
_PLUGIN_OPTION_KEYS = {"backbone": "backbone_options", "method": "method_options", "head": "head_options"}
_MAIN_OPTIONS = ("backbone", "method", "head", "model", "max_length", "seed", "epochs", "learning_rate", "batch_size", "class_weight")


def model_card(
    config: dict[str, Any],
    info: dict[str, Any],
    metrics: dict[str, Any],
    report: str,
    evaluation: dict[str, Any] | None = None,
    export: dict[str, Any] | None = None,
) -> str:
    """The card's markdown text: ``templates/model_card.md`` filled from the run's records.

    ``export`` is the run's ONNX export record (``onnx/export.json``), if it has one. An ensemble's
    run.json gets the ensemble's card (:mod:`review_toolkit.runs.ensemble_card`).
    """
    if info.get("kind") == "ensemble":
        return ensemble_card(config, info, metrics, report, evaluation)
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
        "columns": columns_text(config),
        "configuration_rows": "\n".join(_configuration_rows(config, info)),
        "plugin_lines": "\n".join(_plugin_lines(info)),
        "training_lines": "\n".join(_training_lines(info)),
        "test_examples": metrics.get("n_examples", sizes.get("test", "n/a")),
        "metrics_threshold": fmt(metrics.get("threshold", 0.5), 3),
        **{key: fmt(metrics.get(key)) for key in ("f1_macro", "accuracy", "precision_macro", "recall_macro", "roc_auc")},
        "report": report.rstrip(),
        "latest_evaluation": latest_evaluation(evaluation),
        "scoring_lines": "\n".join(_scoring_lines(info, export)),
        "calibration_lines": "\n".join(calibration_lines(info.get("calibration") or {"method": "none"})),
        "threshold": fmt(float(info.get("threshold", 0.5)), 4),
        "threshold_rule": threshold_rule(info.get("threshold_selection") or {"rule": "default"}),
        "max_length": info.get("max_length", "n/a"),
        "bundled_sample_note": bundled_sample_note(data),
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
    checkpoint = _base_model(info)
    if is_hub_id(checkpoint):  # a local path names nothing on the Hub
        lines.append(f"base_model: {checkpoint}")
    lines += metrics_front_matter(f"{info.get('backbone')}-{info.get('method')}-{info.get('head')}", metrics)
    return "\n".join(lines)


def _base_model(info: dict[str, Any]) -> str:
    """The base checkpoint by Hub id or relative to the run (runs before ``base_model``: as recorded)."""
    return str(info.get("base_model") or info.get("checkpoint") or "")


@functools.cache
def _template() -> string.Template:
    return string.Template((TEMPLATES / MODEL_CARD_TEMPLATE).read_text(encoding="utf-8"))




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
            if key == "model" and value is not None and not is_hub_id(str(value)) and info.get("base_model"):
                value = info["base_model"]  # a local path as the checkpoint row names it, not this machine's
            rows.append(f"| {key} | {'(default)' if value is None else f'`{value}`'} |")
    rows.append(f"| checkpoint | `{_base_model(info)}` |")
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
    memory = f"- Peak memory: process RSS {fmt(info.get('peak_rss_gib'), 2)} GiB"
    if info.get("peak_gpu_gib") is not None:
        memory += f", GPU {fmt(info.get('peak_gpu_gib'), 2)} GiB"
    trained = info.get("trainable_parameters", "n/a")
    lines = [
        f"- Time: {fmt(info.get('training_seconds'), 1)} s on {info.get('device', 'n/a')}",
        memory,
        f"- Parameters trained: {trained:,}" if isinstance(trained, int) else f"- Parameters trained: {trained}",
    ]
    if "embeddings_cached" in info:
        lines.append(f"- Embeddings from cache: {info['embeddings_cached']}")
    return lines




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
            f"{fmt(parity.get('max_abs_p_fake_difference'), 6)}, {parity.get('labels_changed')} labels changed."
        )
    test = export.get("test_split") or {}
    if test.get("measured"):
        lines.append(
            f"- On the test split with onnx {precision}: macro F1 {fmt(test.get('f1_macro'))} "
            f"(torch: {fmt(test.get('f1_macro_torch'))}, change {test.get('f1_macro_change', 0):+.4f}), "
            f"{test.get('labels_changed')} of {test.get('n_examples')} labels changed."
        )
    elif test:
        lines.append(f"- Test split not scored with the export: {test.get('reason')}.")
    return lines






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
