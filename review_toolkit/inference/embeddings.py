"""Embedding extraction for frozen encoders (cached on disk by :mod:`review_toolkit.inference.embedding_cache`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from review_toolkit.accel.gpu_scoring import QueuedVectors, embed_on_gpu, queue_on_gpu, replays_one_graph, scores_in_bf16
from review_toolkit.inference.cpu_batches import CPU_ACTIVATION_BYTES, cpu_token_budget_batches  # noqa: F401
from review_toolkit.inference.token_ids import pad_right, token_id_encoder


def feed_forward_width(encoder: torch.nn.Module) -> int:
    """The widest hidden size of the encoder's transformer (BERT-style or T5), 4,096 if it names none."""
    config = getattr(getattr(encoder, "transformer", None), "config", None)
    return getattr(config, "intermediate_size", None) or getattr(config, "d_ff", None) or 4096


#: Reviews of the first chunk: the GPU starts once these are tokenized, split over the threads (a
#: few milliseconds). Smaller first chunks, and so more and smaller rows, measured slower
#: (benchmarks/README.md, "Tokenizing overlaps the GPU").
TOKENIZED_FIRST_CHUNK = 128
#: Reviews per task of the tokenizing threads.
TOKENIZED_PIECE = 128
#: Reviews of the largest chunk the GPU takes at once; chunks grow to it from the first, four times
#: larger each (rows and batches are cut within a chunk, and padded batches cut from few reviews
#: pad more: benchmarks/README.md, "GPU scoring").
TOKENIZED_CHUNK = 8192


def chunk_sizes(total: int, first: int = TOKENIZED_FIRST_CHUNK, largest: int = TOKENIZED_CHUNK) -> list[int]:
    """Sizes of consecutive chunks of ``total`` reviews: ``first``, four times that, ... up to ``largest``."""
    sizes, size = [], first
    while total > 0:
        sizes.append(min(size, total))
        total -= sizes[-1]
        size = min(size * 4, largest)
    return sizes


def tokenized_ahead(
    tokenizer: Any,
    texts: list[str],
    *,
    max_length: int,
    first: int = TOKENIZED_FIRST_CHUNK,
    piece: int = TOKENIZED_PIECE,
    largest: int = TOKENIZED_CHUNK,
) -> Iterator[list[np.ndarray]]:
    """Token ids of ``texts`` (int64 arrays) in consecutive chunks (``chunk_sizes``), tokenized
    ahead of the consumer.

    Each chunk is tokenized in pieces of at most ``piece`` reviews by worker threads, in order,
    and handed over once its pieces are done; a small chunk is split over all the workers, so
    that the first chunks arrive as soon as the GPU can take them. Fast tokenizers release the
    GIL while they encode: the GPU's work on one chunk (launched from this thread) and the
    tokenizing of the next ones overlap instead of taking turns. The workers also make the
    arrays, so the launching thread does not.
    """
    token_ids = token_id_encoder(tokenizer, max_length)

    def encode(start: int, size: int) -> list[np.ndarray]:
        return [np.asarray(ids, dtype=np.int64) for ids in token_ids(texts[start : start + size])]

    workers = min(8, os.cpu_count() or 1)
    chunks: list[list[tuple[int, int]]] = []
    start = 0
    for size in chunk_sizes(len(texts), first, largest):
        step = min(piece, -(-size // workers))
        chunks.append([(offset, min(step, start + size - offset)) for offset in range(start, start + size, step)])
        start += size
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="review-toolkit-tokenizer") as pool:
        pending = [[pool.submit(encode, *task) for task in chunk] for chunk in chunks]
        try:
            for futures in pending:
                yield [ids for future in futures for ids in future.result()]
        finally:
            for future in (future for futures in pending for future in futures):
                future.cancel()


def queue_embedding(encoder: torch.nn.Module, tokenizer: Any, token_ids: list[list[int]]) -> QueuedVectors | None:
    """What ``embed_texts`` computes for already tokenized reviews, queued on the GPU now where that
    costs the caller's thread little: one row replayed from a recorded graph
    (``accel.gpu_scoring.replays_one_graph``). Returns the queued vectors (``wait()`` for them in
    any thread, then take their ``result()`` once), or None where the work would take more to
    queue: use ``embed_texts``."""
    device = model_device(encoder)
    if encoder.training or not token_ids or not replays_one_graph(encoder, device, [len(ids) for ids in token_ids]):
        return None
    return queue_on_gpu(encoder, [token_ids], pad_token_id=tokenizer.pad_token_id, device=device)


def _padded(tokenizer: Any, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch and its mask: in numpy on the right (the usual side, and cheap), else as the tokenizer pads."""
    if getattr(tokenizer, "padding_side", "right") == "right" and tokenizer.pad_token_id is not None:
        input_ids, mask = pad_right(ids, tokenizer.pad_token_id)
        return torch.from_numpy(input_ids), torch.from_numpy(mask)
    features = tokenizer.pad({"input_ids": ids}, return_tensors="pt")
    return features["input_ids"], features["attention_mask"]


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
    token_ids: list[list[int]] | None = None,
) -> np.ndarray:
    """Pooled vectors for ``texts`` in input order (``token_ids``: theirs, if already computed).

    On a GPU in bf16, in packed rows or token-budget batches (``review_toolkit.accel.gpu_scoring``);
    elsewhere in float32, in length-sorted batches sized for CPUs.
    """
    if encoder.training:  # eval() walks every module: a server's small batches would pay it each time
        encoder.eval()
    device = model_device(encoder)
    if scores_in_bf16(device):
        if token_ids is not None:
            chunks = [token_ids]  # nothing to overlap: one chunk cuts the fullest rows and batches
        else:
            chunks = tokenized_ahead(tokenizer, texts, max_length=max_length)
        if not progress:  # a server's batches: no bar to make at every call
            return embed_on_gpu(encoder, chunks, pad_token_id=tokenizer.pad_token_id, device=device)
        with tqdm(total=len(texts), desc=description, unit="review") as bar:
            return embed_on_gpu(encoder, chunks, pad_token_id=tokenizer.pad_token_id, device=device, progress=bar)
    encoded = token_ids if token_ids is not None else token_id_encoder(tokenizer, max_length)(texts)
    lengths = [len(ids) for ids in encoded]
    result: np.ndarray | None = None
    # Not bf16 on CPUs, even with avx512_bf16: without AMX, bf16 matrix products are slower than
    # float32 ones there (benchmarks/README.md, "CPU embedding").
    batches = cpu_token_budget_batches(lengths, batch_size, feed_forward_width(encoder))
    for batch in tqdm(batches, desc=description, disable=not progress, unit="batch"):
        input_ids, attention_mask = _padded(tokenizer, [encoded[i] for i in batch])
        vectors = encoder(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
        vectors = vectors.float().cpu().numpy()
        if result is None:
            result = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
        result[batch] = vectors
    if result is None:
        raise ValueError("embed_texts needs at least one text")
    return result
