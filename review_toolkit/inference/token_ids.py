"""Texts to token ids straight from the Rust ``tokenizers`` library behind a fast tokenizer.

A transformers fast tokenizer encodes in Rust, then converts every encoding to Python objects
(type ids, masks, overflow) that scoring never reads: on short reviews that conversion adds about
a fifth to the encoding, all of it holding the GIL, and a server pays it for every request.
Scoring needs the ids alone, so :func:`token_id_encoder` encodes with a private copy of the Rust
tokenizer, truncating as the wrapper does, and keeps the wrapper only where the two disagree on a
probe (a tokenizer without a Rust backend, or one whose Python side changes the ids).

That Rust tokenizer travels as JSON (:func:`portable_token_ids`): a process without transformers
or the model computes the same ids from it (serve's HTTP processes tokenize for the model process).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

TokenIdEncoder = Callable[[Sequence[str]], list[list[int]]]

# Short and long, accents, emoji, markup and runs of spaces: where a tokenizer's Python side
# (normalising, truncation side, special tokens) would give other ids than its Rust backend.
PROBE_TEXTS = (
    "Great kettle, boils fast.",
    "Terrible!!! It broke after   two days... support never answered. 0/10 :(",
    "Crème brûlée maker — works 👍 <br/> would buy again",
    "long review " * 400,
)

_encoders: dict[tuple[int, int], tuple[Any, TokenIdEncoder, dict[str, Any] | None]] = {}
_lock = threading.Lock()


def token_id_encoder(tokenizer: Any, max_length: int) -> TokenIdEncoder:
    """A function from texts to their token ids, as ``tokenizer(texts, truncation=True,
    max_length=max_length)["input_ids"]`` gives them, made once per tokenizer and length."""
    return _cached(tokenizer, max_length)[0]


def portable_token_ids(tokenizer: Any, max_length: int) -> dict[str, Any] | None:
    """What another process needs to compute ``token_id_encoder``'s ids without transformers: the
    Rust tokenizer as JSON with its truncation (for :func:`token_ids_from_portable`), or None where
    the ids come from the wrapper."""
    return _cached(tokenizer, max_length)[1]


def token_ids_from_portable(portable: dict[str, Any]) -> TokenIdEncoder:
    """The encoder ``portable_token_ids`` describes: the same ids, from the ``tokenizers`` library alone."""
    from tokenizers import Tokenizer

    return rust_token_ids(Tokenizer.from_str(portable["tokenizer"]), int(portable["max_length"]), direction=portable["direction"])


def _cached(tokenizer: Any, max_length: int) -> tuple[TokenIdEncoder, dict[str, Any] | None]:
    key = (id(tokenizer), int(max_length))
    with _lock:
        cached = _encoders.get(key)
        if cached is not None and cached[0] is tokenizer:
            return cached[1], cached[2]

    def wrapped(texts: Sequence[str]) -> list[list[int]]:
        return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]

    encoder, portable = wrapped, _portable(tokenizer, max_length)
    if portable is not None:
        rust = token_ids_from_portable(portable)
        if rust(PROBE_TEXTS) == [list(ids) for ids in wrapped(PROBE_TEXTS)]:
            encoder = rust
        else:
            portable = None
    with _lock:
        # The tokenizer is held with its encoder, so its id is not reused while the entry lives.
        _encoders[key] = (tokenizer, encoder, portable)
    return encoder, portable


def _portable(tokenizer: Any, max_length: int) -> dict[str, Any] | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        return None
    # Serialized, so each encoder built from it is a copy of its own: the wrapper changes its
    # backend's truncation and padding on every call.
    return {"tokenizer": backend.to_str(), "max_length": int(max_length), "direction": getattr(tokenizer, "truncation_side", "right")}


def rust_token_ids(rust: Any, max_length: int, *, direction: str = "right") -> TokenIdEncoder:
    """Texts to ids with a Rust ``tokenizers.Tokenizer`` (set here to truncate at ``max_length``, never pad)."""
    rust.no_padding()
    rust.enable_truncation(int(max_length), direction=direction)

    # Without offsets, which scoring never reads, where this version of tokenizers offers it (faster).
    encode_batch = getattr(rust, "encode_batch_fast", rust.encode_batch)

    def encode(texts: Sequence[str]) -> list[list[int]]:
        return [encoding.ids for encoding in encode_batch(list(texts))]

    return encode


def pad_right(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids padded on the right to the longest, and their attention mask (int64)."""
    width = max(len(row) for row in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for index, row in enumerate(ids):
        input_ids[index, : len(row)] = row
        mask[index, : len(row)] = 1
    return input_ids, mask


__all__ = [
    "PROBE_TEXTS", "TokenIdEncoder", "pad_right", "portable_token_ids", "rust_token_ids", "token_id_encoder",
    "token_ids_from_portable",
]
