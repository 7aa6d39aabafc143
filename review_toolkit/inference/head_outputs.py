"""What a head returns, checked: the contract holds on outputs, not only on the class.

A torch head whose module returns five logits would otherwise train (the loss accepts any width
of at least two) and serve the probability of its second class as P(fake); a fitted model whose
``predict_proba`` returns a vector would fail deep in indexing; a fitted state holding NaN would
print ``p_fake = nan``. Every score the toolkit reports passes through these checks, and each
failure is one ``PluginError`` naming the plugin (``registry.describe``).
"""

from __future__ import annotations

from typing import Any

from typing import TYPE_CHECKING

import numpy as np

from review_toolkit import registry
from review_toolkit.errors import PluginError

if TYPE_CHECKING:
    from torch import nn

PROBE_BATCH = 2


def build_head(head: Any, in_features: int, num_labels: int) -> nn.Module:
    """``head.build(...)``, checked once on a probe batch before any training or loading."""
    import torch
    from torch import nn

    where = registry.describe(head)
    try:
        module = head.build(in_features, num_labels)
    except KeyboardInterrupt:
        raise
    except Exception as error:
        raise PluginError(f"The {where} failed in build({in_features}, {num_labels}): {type(error).__name__}: {error}") from None
    if not isinstance(module, nn.Module):
        raise PluginError(f"The {where} returned {type(module).__name__} from build(); the contract is a torch.nn.Module.")
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            logits = module(torch.zeros(PROBE_BATCH, in_features))
    except KeyboardInterrupt:
        raise
    except Exception as error:
        raise PluginError(
            f"The {where}'s module fails on a [{PROBE_BATCH}, {in_features}] batch of vectors: "
            f"{type(error).__name__}: {error}"
        ) from None
    finally:
        module.train(was_training)
    check_logits(logits, PROBE_BATCH, num_labels, where)
    return module


def check_logits(logits: Any, batch: int, num_labels: int, where: str) -> None:
    """Refuse logits that are not a ``[batch, num_labels]`` tensor."""
    import torch

    shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else None
    if shape != (batch, num_labels):
        got = f"shape {list(shape)}" if shape is not None else type(logits).__name__
        raise PluginError(
            f"The {where} returned {got} for a batch of {batch} vectors; the contract is logits of shape "
            f"[batch, {num_labels}] (one per label: real, fake)."
        )


def checked_probabilities(probabilities: Any, rows: int, where: str) -> np.ndarray:
    """A fitted model's ``predict_proba``: ``[rows, 2]``, finite, within [0, 1]."""
    array = np.asarray(probabilities)
    if array.shape != (rows, 2) or not np.issubdtype(array.dtype, np.number):
        got = f"shape {list(array.shape)}" if np.issubdtype(array.dtype, np.number) else type(probabilities).__name__
        raise PluginError(
            f"The {where}: predict_proba returned {got} for {rows} vectors; the contract is a [{rows}, 2] "
            "array of probabilities (columns: real, fake)."
        )
    array = array.astype(np.float64, copy=False)
    require_scores(array, where, "predict_proba")
    return array


def require_scores(values: np.ndarray, where: str, what: str = "P(fake)") -> None:
    """Refuse any value that is not a finite probability: a NaN is never reported as a score."""
    bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1)) if values.ndim else np.array([0])
        example = values.reshape(len(values), -1)[rows[0]].tolist() if values.ndim else values.item()
        raise PluginError(
            f"The {where} gave {what} values that are not probabilities in [0, 1] for {len(rows)} of {len(values)} "
            f"reviews (review {rows[0] + 1}: {example}); they are refused, not reported. Its stored state (head.json / "
            "head.safetensors, calibration in run.json) may hold NaN or infinity: train the run again."
        )
