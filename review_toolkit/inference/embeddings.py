"""Embedding extraction for frozen encoders (cached on disk by :mod:`review_toolkit.inference.embedding_cache`)."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from review_toolkit.inference.cpu_batches import CPU_ACTIVATION_BYTES, cpu_token_budget_batches  # noqa: F401


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, so little padding is computed."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def feed_forward_width(encoder: torch.nn.Module) -> int:
    """The widest hidden size of the encoder's transformer (BERT-style or T5), 4,096 if it names none."""
    config = getattr(getattr(encoder, "transformer", None), "config", None)
    return getattr(config, "intermediate_size", None) or getattr(config, "d_ff", None) or 4096


def inference_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 matrix products on GPUs that have them (several times faster); float32 elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        use_shape_agnostic_attention()
        return torch.autocast("cuda", dtype=torch.bfloat16)
    # Not on CPUs without AMX, even with avx512_bf16: there bf16 matrix products are slower than
    # float32 ones (benchmarks/README.md, "CPU embedding").
    return contextlib.nullcontext()


def use_shape_agnostic_attention() -> None:
    """Keep PyTorch's attention off the cuDNN backend on GPUs.

    cuDNN builds an execution plan for every new input shape, on the CPU, at
    every call with a new shape; length-sorted batches bring a new sequence length
    almost every batch, and those plans cost more than the attention itself
    (benchmarks/README.md, "cuDNN attention and varying lengths"). The flash and
    memory-efficient kernels take any shape as it comes.
    """
    if torch.cuda.is_available():
        torch.backends.cuda.enable_cudnn_sdp(False)


def model_device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.inference_mode()
def embed_texts(
    encoder: torch.nn.Module,
    tokenizer: Any,
    texts: list[str],
    *,
    max_length: int,
    batch_size: int = 64,
    progress: bool = True,
    description: str = "Embedding reviews",
) -> np.ndarray:
    """Pooled vectors for ``texts`` in input order, computed in length-sorted batches."""
    encoder.eval()
    device = model_device(encoder)
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    result: np.ndarray | None = None
    if device.type == "cpu":
        batches = cpu_token_budget_batches(lengths, batch_size, feed_forward_width(encoder))
    else:
        batches = length_sorted_batches(lengths, batch_size)
    for batch in tqdm(batches, desc=description, disable=not progress, unit="batch"):
        features = tokenizer.pad({"input_ids": [encoded["input_ids"][i] for i in batch]}, return_tensors="pt")
        with inference_autocast(device):
            vectors = encoder(
                input_ids=features["input_ids"].to(device), attention_mask=features["attention_mask"].to(device)
            )
        vectors = vectors.float().cpu().numpy()
        if result is None:
            result = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
        result[batch] = vectors
    if result is None:
        raise ValueError("embed_texts needs at least one text")
    return result
