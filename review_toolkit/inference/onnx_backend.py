"""Scoring with a run's ONNX export (``RUN/onnx/``) through ONNX Runtime on the CPU.

Neither torch nor a transformers model is imported on this path: the tokenizer and ONNX Runtime
are all that scoring needs, which is what makes ``predict --text`` start in a second or two.
Reviews are batched by length as on the PyTorch CPU path (padded tokens are what a CPU pays for).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from review_toolkit.errors import ConfigError, RunDirectoryError

ONNX_DIRECTORY = "onnx"
EXPORT_FILE = "export.json"
PRECISIONS = ("fp32", "int8")
BACKENDS = ("auto", "torch", "onnx")
ONNX_EXTRA_HINT = "Install it with: pip install 'review_toolkit[onnx]' (or pip install onnxruntime onnx)."


def model_file_name(precision: str) -> str:
    return "encoder.onnx" if precision == "fp32" else f"encoder.{precision}.onnx"


def onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def require_onnxruntime(what: str = "The ONNX backend") -> None:
    if not onnxruntime_available():
        raise ConfigError(f"{what} needs ONNX Runtime, which is not installed. {ONNX_EXTRA_HINT}")


def read_export(run: Path) -> dict[str, Any] | None:
    """What ``RUN/onnx/export.json`` records, or None when the run has no ONNX export."""
    path = Path(run) / ONNX_DIRECTORY / EXPORT_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("precision") not in PRECISIONS or not isinstance(record.get("model_file"), str):
            raise ValueError("no precision or model_file")
    except (OSError, ValueError, AttributeError) as error:
        raise RunDirectoryError(
            f"{path} is not a review_toolkit ONNX export record ({error}). Export again with "
            f"'review-toolkit export --run {run} --format onnx'."
        ) from error
    return record


class TokenIds:
    """Texts to token ids as the run's tokenizer makes them, truncated to ``max_length``.

    The Rust ``tokenizers`` library reads the run's ``tokenizer.json`` in milliseconds, without
    transformers (which imports torch); the export checks that it gives the ids the run's own
    tokenizer gives, and records which of the two scoring uses (``export.json``, "tokenizer").
    """

    def __init__(self, directory: str | Path, *, max_length: int, pad_id: int, library: str = "tokenizers"):
        self.max_length = max_length
        self.pad_token_id = pad_id
        self.library = library
        if library == "tokenizers":
            from tokenizers import Tokenizer

            from review_toolkit.inference.token_ids import rust_token_ids

            self._fast = rust_token_ids(Tokenizer.from_file(str(Path(directory) / "tokenizer.json")), max_length)
        else:
            from transformers import AutoTokenizer

            self._slow = AutoTokenizer.from_pretrained(str(directory))

    def __call__(self, texts: list[str], *, truncation: bool = True, max_length: int | None = None, **_: Any) -> dict[str, list[list[int]]]:
        """``{"input_ids": [...]}`` as a Hugging Face tokenizer returns it (what the server counts tokens
        with), always truncated to the run's ``max_length``, the only length the graph was checked at."""
        if self.library == "tokenizers":
            return {"input_ids": self._fast(texts)}
        return {"input_ids": self._slow(list(texts), truncation=True, max_length=self.max_length)["input_ids"]}


_session_threads: int | None = None


def set_session_threads(threads: int | None) -> None:
    """Threads of each ONNX Runtime session this process opens from now on (None: one per core,
    ONNX Runtime's default): what ``torch.set_num_threads`` is to torch, for processes that share
    the cores (``serve --workers``, ``--threads``)."""
    global _session_threads
    _session_threads = threads


class OnnxEncoder:
    """An exported encoder: padded ``input_ids`` and ``attention_mask`` in, pooled vectors out (float32)."""

    backend = "onnx"

    def __init__(
        self,
        path: str | Path,
        *,
        embedding_size: int,
        precision: str,
        feed_forward_width: int = 4096,
        threads: int | None = None,
    ):
        require_onnxruntime()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = threads or _session_threads
        if threads:
            options.intra_op_num_threads = threads
        self.path = Path(path)
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.embedding_size = embedding_size
        self.precision = precision
        self.feed_forward_width = feed_forward_width  # bounds the CPU batches (inference.cpu_batches)

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        (vectors,) = self.session.run(
            ["embeddings"],
            {"input_ids": np.asarray(input_ids, dtype=np.int64), "attention_mask": np.asarray(attention_mask, dtype=np.int64)},
        )
        return vectors.astype(np.float32, copy=False)


def embed_texts_onnx(
    encoder: OnnxEncoder,
    tokenizer: TokenIds,
    texts: list[str],
    *,
    batch_size: int = 64,
    progress: bool = False,
    description: str = "Embedding reviews",
    token_ids: list[list[int]] | None = None,
) -> np.ndarray:
    """Pooled vectors for ``texts`` in input order, in length-sorted batches bounded by padded tokens
    (``token_ids``: the texts' ids from ``tokenizer``, when already computed)."""
    from tqdm.auto import tqdm

    from review_toolkit.inference.cpu_batches import cpu_token_budget_batches
    from review_toolkit.inference.token_ids import pad_right

    if not texts:
        raise ValueError("embed_texts_onnx needs at least one text")
    encoded = token_ids if token_ids is not None else tokenizer(list(texts))["input_ids"]
    result = np.empty((len(texts), encoder.embedding_size), dtype=np.float32)
    batches = cpu_token_budget_batches([len(ids) for ids in encoded], batch_size, encoder.feed_forward_width)
    for batch in tqdm(batches, desc=description, disable=not progress, unit="batch"):
        input_ids, mask = pad_right([encoded[i] for i in batch], tokenizer.pad_token_id)
        result[batch] = encoder(input_ids, mask)
    return result


def onnx_scorer(model: Path, record: dict[str, Any], tokenizer_directory: Path, max_length: int) -> tuple[OnnxEncoder, TokenIds]:
    """The session and the tokenizer that an export record describes."""
    encoder = OnnxEncoder(
        model,
        embedding_size=int(record["embedding_size"]),
        precision=record["precision"],
        feed_forward_width=int(record.get("feed_forward_width") or 4096),
    )
    token_ids = TokenIds(
        tokenizer_directory,
        max_length=max_length,
        pad_id=int(record.get("pad_token_id") or 0),
        library=record.get("tokenizer", "transformers"),
    )
    return encoder, token_ids


def load_onnx_encoder(run: Path, record: dict[str, Any], max_length: int) -> tuple[OnnxEncoder, TokenIds]:
    """The session and the tokenizer of the run's export (``RUN/onnx/``)."""
    run = Path(run)
    return onnx_scorer(
        run / ONNX_DIRECTORY / record["model_file"], record, run / record.get("tokenizer_directory", "tokenizer"), max_length
    )
