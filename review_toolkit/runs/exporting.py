"""``export --format onnx``: a run's encoder as ONNX inside the run (``RUN/onnx/``), sealed into its manifest.

The export appears whole or not at all (staged beside it, then renamed), replaces an earlier one,
and is covered by the manifest like every other file of the run: a verified run is verified again
and re-sealed; a run that does not verify is refused (its files may not be what training wrote).
The model card then says what scores on a CPU, with the parity measured at export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from review_toolkit.errors import ConfigError
from review_toolkit.inference.onnx_backend import EXPORT_FILE, ONNX_DIRECTORY, read_export, require_onnxruntime
from review_toolkit.runs.layout import (
    EVALUATION_DIRECTORY, METRICS_FILE, REPORT_FILE, RUN_FILE, read_json, read_run_config_file, require_run_directory,
)
from review_toolkit.runs.manifest import verify_run_directory, write_manifest

# Real reviews of the bundled sample, so that parity is measured on text like the run's.
PARITY_TEXTS = 32


def _refuse(run: Path, why: str) -> ConfigError:
    return ConfigError(f"Cannot export {run} to ONNX: {why}")


def export_run(run_dir: str | Path, *, precision: str = "fp32") -> dict[str, Any]:
    """Export the run's encoder; return the record written to ``RUN/onnx/export.json``."""
    run = require_run_directory(run_dir)
    require_onnxruntime("Exporting to ONNX")
    verify_run_directory(run)  # strict: the export is sealed into the manifest
    info = read_json(run / RUN_FILE)
    config = read_run_config_file(run)
    if config.get("trust_remote_code"):
        raise _refuse(run, "it was trained with --trust-remote-code; model code from a checkpoint is not exported.")
    from review_toolkit.runs.loader import load_run

    classifier = load_run(run, device="cpu", backend="torch")
    if classifier.featurizer is not None:
        raise _refuse(
            run, f"its backbone {info.get('backbone')!r} is a featurizer, not a neural encoder; it already scores "
            "on the CPU without one."
        )
    method = info.get("method")
    if "4-bit" in classifier.scored_with:
        raise _refuse(
            run, f"its {method} encoder holds 4-bit (bitsandbytes) weights, which ONNX cannot hold. Train it with "
            "--method lora to export it."
        )
    encoder = classifier.encoder
    if not hasattr(getattr(encoder, "transformer", None), "config"):
        raise _refuse(run, f"its encoder ({type(encoder).__name__}) is not a Hugging Face transformer with mean pooling.")
    _merge_adapters(encoder)
    from review_toolkit.data import default_data_path
    from review_toolkit.data.formats import read_table
    from review_toolkit.inference.embeddings import feed_forward_width
    from review_toolkit.inference.onnx_export import export_encoder
    from review_toolkit.runtime.files import staged_directory

    texts = classifier.backbone.prepare_texts(read_table(default_data_path())["text"].astype(str).tolist()[:PARITY_TEXTS])
    with staged_directory(run / ONNX_DIRECTORY) as staging:
        try:
            record = export_encoder(
                encoder, classifier.tokenizer, run / "tokenizer", staging,
                precision=precision, max_length=int(info["max_length"]), feed_forward_width=feed_forward_width(encoder),
                parity_texts=texts, p_fake_of=classifier.p_fake_from_embeddings, threshold=classifier.threshold,
            )
        except (ConfigError, OSError):
            raise
        except Exception as error:  # the exporter's or the optimizer's own failure: one line, naming the run
            first = (str(error).strip() or type(error).__name__).splitlines()[0][:300]
            raise _refuse(run, f"the exporter failed ({type(error).__name__}: {first}).") from error
    refresh_model_card(run)
    write_manifest(run)
    return record


def _merge_adapters(encoder: Any) -> None:
    """LoRA adapters folded into the base weights: the exported graph is a plain transformer."""
    transformer = encoder.transformer
    if hasattr(transformer, "merge_and_unload"):
        encoder.transformer = transformer.merge_and_unload()


def record_test_parity(run_dir: str | Path, parity: dict[str, Any]) -> None:
    """Add the test-split comparison to ``export.json``, re-seal the run and refresh its card."""
    from review_toolkit.runtime.files import write_text_atomic

    run = Path(run_dir)
    verify_run_directory(run)
    record = read_export(run)
    record["test_split"] = parity
    write_text_atomic(run / ONNX_DIRECTORY / EXPORT_FILE, json.dumps(record, indent=2) + "\n")
    refresh_model_card(run)
    write_manifest(run)


def refresh_model_card(run: Path) -> None:
    """Rewrite README.md from the run's records (it names the export that now scores on CPUs)."""
    from review_toolkit.runs.model_card import write_model_card

    metrics = read_json(run / METRICS_FILE) if (run / METRICS_FILE).is_file() else {}
    report = (run / REPORT_FILE).read_text(encoding="utf-8") if (run / REPORT_FILE).is_file() else ""
    latest = run / EVALUATION_DIRECTORY / "test" / METRICS_FILE
    evaluation = read_json(latest) if latest.is_file() else None
    write_model_card(run, read_run_config_file(run), read_json(run / RUN_FILE), metrics, report, evaluation=evaluation)
