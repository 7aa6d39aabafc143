"""Writing a run's encoder as an ONNX model, optionally with int8 weights, for fast CPU scoring.

The exported graph is the whole :class:`~review_toolkit.plugin_api.PooledEncoder`: transformer,
masked mean pooling and projection, so it maps ``input_ids`` and ``attention_mask`` to the very
vectors the head was fitted on. The head stays what it is (a fitted head's arrays, or a torch
head), so only the encoder's arithmetic changes.

Three steps, each measured in benchmarks/README.md ("Fast CPU scoring"):

* ``torch.onnx.export`` (the TorchScript-based exporter: it handles Hugging Face encoders with
  dynamic batch and sequence axes);
* ONNX Runtime's transformer optimizer for BERT-style graphs: attention, LayerNorm and GELU fused
  into single kernels (other graphs are saved as exported; ORT_ENABLE_ALL still applies at load);
* for ``int8``: ONNX Runtime's dynamic quantization of the weights of the MatMuls and the fused
  attention, per output channel, with 7-bit ranges (``reduce_range``: CPUs without VNNI saturate
  8-bit multiply-adds), except the feed-forward output projections: their inputs, after GELU,
  have the outliers that cost the most accuracy when quantized.

Whether the result scores as the PyTorch model does is measured at export on sample texts
(:func:`parity`) and recorded in ``export.json`` beside the model.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from review_toolkit.errors import ConfigError
from review_toolkit.inference.onnx_backend import (
    EXPORT_FILE,
    PRECISIONS,
    TokenIds,
    embed_texts_onnx,
    onnx_scorer,
    model_file_name,
    require_onnxruntime,
)

OPSET = 17
# Texts the exported graph is traced with and compared on; long enough for several tokens.
TRACE_TEXTS = ("A sturdy kettle that boils fast.", "Terrible. It broke after two days and support never answered me.")


def _encoder_config(encoder: Any) -> Any:
    return getattr(getattr(encoder, "transformer", None), "config", None)


def _bert_shape(encoder: Any) -> tuple[int, int] | None:
    """(attention heads, hidden size) of a BERT-style transformer, which ORT's optimizer fuses; else None."""
    config = _encoder_config(encoder)
    if getattr(config, "model_type", None) not in ("bert", "roberta", "xlm-roberta", "distilbert", "electra"):
        return None
    return int(config.num_attention_heads), int(config.hidden_size)


def _eager_attention(encoder: Any) -> None:
    """Trace attention as plain matrix products and softmax: the pattern ORT's optimizer fuses into
    one Attention kernel (PyTorch's fused attention exports as a graph it does not recognise)."""
    transformer = getattr(encoder, "transformer", None)
    if hasattr(transformer, "set_attn_implementation"):
        try:
            transformer.set_attn_implementation("eager")
        except (ValueError, NotImplementedError):  # a model without an eager path exports as it is
            pass


def _export_graph(encoder: Any, tokenizer: Any, path: Path) -> None:
    import torch

    sample = tokenizer(list(TRACE_TEXTS), padding=True, return_tensors="pt")
    encoder = encoder.float().cpu().eval()
    _eager_attention(encoder)
    # The tracer warns about every Python-side shape check it freezes; the axes that matter are dynamic.
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder,
            (sample["input_ids"], sample["attention_mask"]),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["embeddings"],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                          "embeddings": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def _optimize(encoder: Any, exported: Path, target: Path) -> bool:
    """Fuse a BERT-style graph with ORT's transformer optimizer into ``target``; False if not BERT-style."""
    shape = _bert_shape(encoder)
    if shape is None:
        return False
    from onnxruntime.transformers.optimizer import optimize_model

    heads, hidden = shape
    optimized = optimize_model(str(exported), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=1)
    optimized.save_model_to_file(str(target))
    return True


def feed_forward_outputs(model_path: Path, feed_forward_width: int) -> list[str]:
    """Names of the MatMuls that project the feed-forward layer back (their weight has
    ``feed_forward_width`` input rows): the inputs of those come after GELU, with outliers that
    8-bit activations lose most to, so they keep float weights."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    shapes = {tensor.name: tuple(tensor.dims) for tensor in model.graph.initializer}
    return [
        node.name for node in model.graph.node
        if node.op_type == "MatMul" and len(shapes.get(node.input[1], ())) == 2 and shapes[node.input[1]][0] == feed_forward_width
    ]


def _quantize(source: Path, target: Path, feed_forward_width: int) -> list[str]:
    """int8 weights for every MatMul and fused Attention but the feed-forward outputs; returns those kept float."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = feed_forward_outputs(source, feed_forward_width)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice (on the root logger) to pre-process is for static quantization
    try:
        quantize_dynamic(
            str(source), str(target), per_channel=True, reduce_range=True, weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            # The fused graph's contrib ops have no ONNX type inference: their outputs are float.
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )
    finally:
        root.setLevel(level)
    return excluded


def torch_embeddings(encoder: Any, tokenizer: Any, texts: list[str], max_length: int) -> np.ndarray:
    """The PyTorch encoder's vectors for ``texts`` (one padded batch), the reference of :func:`parity`."""
    import torch

    batch = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).float().numpy()


def export_encoder(
    encoder: Any,
    tokenizer: Any,
    tokenizer_directory: Path,
    destination: Path,
    *,
    precision: str,
    max_length: int,
    feed_forward_width: int,
    parity_texts: list[str],
    p_fake_of: Any,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Write ``destination/<model file>`` and ``destination/export.json``; return what export.json says.

    ``tokenizer_directory`` is the run's saved tokenizer (``export.json`` names it relative to the
    run: the destination's parent). ``p_fake_of(vectors)`` maps encoder vectors to the run's
    calibrated P(fake): parity is measured on what a user sees, not only on the vectors.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"--quantize must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
    require_onnxruntime("Exporting to ONNX")
    import onnx
    import onnxruntime
    import torch

    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="review-toolkit-onnx-") as scratch:
        exported = Path(scratch) / "exported.onnx"
        _export_graph(encoder, tokenizer, exported)
        optimized = Path(scratch) / "optimized.onnx"
        fused = _optimize(encoder, exported, optimized)
        source = optimized if fused else exported
        model_path = destination / model_file_name(precision)
        kept_float: list[str] = []
        if precision == "int8":
            kept_float = _quantize(source, model_path, feed_forward_width)
        else:
            shutil.copyfile(source, model_path)
    onnx.checker.check_model(str(model_path))
    record: dict[str, Any] = {
        "format": "onnx",
        "precision": precision,
        "model_file": model_path.name,
        "opset": OPSET,
        "embedding_size": int(encoder.embedding_size),
        "feed_forward_width": int(feed_forward_width),
        "fused": fused,
        "quantization": {**QUANTIZATION, "float_matmuls": len(kept_float)} if precision == "int8" else None,
        "tokenizer_directory": tokenizer_directory.name,
        "tokenizer": _tokenizer_library(tokenizer, tokenizer_directory, parity_texts, max_length),
        "pad_token_id": int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
    }
    onnx_encoder, token_ids = onnx_scorer(model_path, record, tokenizer_directory, max_length)
    reference = torch_embeddings(encoder, tokenizer, parity_texts, max_length)
    exported_vectors = embed_texts_onnx(onnx_encoder, token_ids, parity_texts)
    record["parity"] = parity(reference, exported_vectors, p_fake_of, threshold)
    (destination / EXPORT_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


QUANTIZATION = {
    "method": "dynamic", "weights": "int8", "per_channel": True, "reduce_range": True,
    "quantized": "MatMul and fused Attention weights, except the feed-forward output projections",
}


def _tokenizer_library(tokenizer: Any, directory: Path, texts: list[str], max_length: int) -> str:
    """"tokenizers" when the run's tokenizer.json alone gives the run's tokenizer's ids, else "transformers"."""
    if not (directory / "tokenizer.json").is_file():
        return "transformers"
    try:
        fast = TokenIds(directory, max_length=max_length, pad_id=0, library="tokenizers")
        expected = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        return "tokenizers" if fast(list(texts))["input_ids"] == [list(ids) for ids in expected] else "transformers"
    except Exception:  # any tokenizer.json the Rust library cannot read: transformers will
        return "transformers"


def parity(reference: np.ndarray, exported: np.ndarray, p_fake_of: Any, threshold: float = 0.5) -> dict[str, Any]:
    """How far the exported vectors, and the P(fake) computed from them, are from PyTorch's."""
    reference = reference.astype(np.float64)
    exported = exported.astype(np.float64)
    cosine = (reference * exported).sum(1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(exported, axis=1)
    ).clip(min=1e-12)
    p_reference, p_exported = p_fake_of(reference.astype(np.float32)), p_fake_of(exported.astype(np.float32))
    return {
        "texts": int(len(reference)),
        "max_abs_embedding_difference": float(np.abs(reference - exported).max()),
        "min_cosine": float(cosine.min()),
        "max_abs_p_fake_difference": float(np.abs(p_reference - p_exported).max()),
        "labels_changed": int(((p_reference >= threshold) != (p_exported >= threshold)).sum()),
    }


__all__ = ["OPSET", "export_encoder", "feed_forward_outputs", "parity", "torch_embeddings"]
