"""What a server may accept and how it batches: one place for the limits and their defaults.

Kept free of heavy imports so that the command line can read it without loading FastAPI or torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from review_toolkit.errors import ConfigError

#: accel.scoring_lanes.MAX_LANES, without importing torch.
MAX_GPU_STREAMS = 4


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of one server process (see ``review-toolkit serve --help``)."""

    # Tokens (after truncation to the run's max_length) scored together in one forward pass.
    # A single request larger than this is scored on its own rather than refused.
    max_batch_tokens: int = 8192
    # How long a batch waits for more requests: while another batch is being scored, at most this
    # long after its oldest request (sooner when the scorer is about to be free for it); while the
    # scorer is idle, until the clients it last answered are back or none arrives for this long
    # (a lone request not at all). See serve/batcher.py.
    max_wait_ms: float = 10.0
    # Requests queued or being scored at once; more are refused with 429 instead of queueing.
    max_concurrent_requests: int = 256
    # Batches scored at once; None: two where the model scores on a GPU (one is answered while the
    # next computes), one on a CPU (one batch already uses every core).
    batches_in_flight: int | None = None
    # CUDA streams those batches compute on (accel/scoring_lanes.py): on streams of their own
    # batches are computed side by side, on one, one after another. One by default: side by side,
    # each batch finishes later, and so its clients post their next requests later.
    gpu_streams: int = 1
    # Reviews in one request; more are refused with 413.
    max_inputs: int = 256
    # Bytes of one request body; more are refused with 413 before being read whole.
    max_body_bytes: int = 2 * 2**20
    # Reviews per forward pass inside a batch (the classifier's own batching).
    predict_batch_size: int = 64
    # Torch device for the model: "cpu", "cuda", "cuda:1"...; None: the toolkit's default.
    device: str | None = None
    # Compile the encoder's layers before the server reports ready (GPUs only; see predict --compile).
    compile: bool = False
    # What embeds: "torch", "onnx" (the run's ONNX export) or "auto" (the export on a CPU when there is one).
    backend: str = "auto"
    # Load a run that does not match its manifest (still never unpickles).
    allow_unverified: bool = False

    def __post_init__(self) -> None:
        for name in ("max_batch_tokens", "max_concurrent_requests", "max_inputs", "max_body_bytes", "predict_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}.")
        if self.batches_in_flight is not None and self.batches_in_flight < 1:
            raise ConfigError(f"batches_in_flight must be at least 1, not {self.batches_in_flight}.")
        if not 1 <= self.gpu_streams <= MAX_GPU_STREAMS:
            raise ConfigError(f"gpu_streams must be from 1 to {MAX_GPU_STREAMS}, not {self.gpu_streams}.")
        if self.backend != "auto":  # the default needs no check, nor the import
            from review_toolkit.inference.onnx_backend import BACKENDS

            if self.backend not in BACKENDS:
                raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}.")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms cannot be negative ({self.max_wait_ms}).")

    @classmethod
    def from_options(cls, **options: Any) -> "ServeSettings":
        """Settings from keyword options, ignoring those left as None; unknown names are refused."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"Unknown server setting(s): {', '.join(unknown)}. Known: {', '.join(sorted(known))}.")
        return cls(**{name: value for name, value in options.items() if value is not None})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
