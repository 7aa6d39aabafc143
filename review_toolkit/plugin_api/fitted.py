"""Fitted models stored as plain arrays, so loading a run never unpickles code.

scikit-learn estimators are normally saved with pickle, which executes
whatever the file says when loaded. The fitted heads here keep only the
arrays needed to score new vectors (scaler statistics, coefficients, support
vectors) in safetensors, plus a small JSON of scalars, and score with numpy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from review_toolkit.errors import PluginError
from review_toolkit.plugin_api.contracts import ARRAYS_FILE, PARAMETERS_FILE


def save_arrays(directory: Path, arrays: dict[str, np.ndarray], parameters: dict[str, Any]) -> None:
    """``arrays`` into ``directory/head.safetensors``, ``parameters`` into ``directory/head.json``.

    Arrays keep their dtype (save float64 to score in float64: a float32 copy scores
    differently); only numeric and bool arrays can be stored. ``parameters`` must be
    JSON values (numbers, strings, bools, None, lists and dicts of them): convert numpy
    scalars with ``float()`` / ``int()``. JSON stores a float exactly, so a reloaded
    scalar equals the saved one.
    """
    directory = Path(directory)
    stored = {}
    for key, value in arrays.items():
        array = np.ascontiguousarray(value)
        if array.dtype.kind not in "biuf":
            raise PluginError(f"save_arrays: array {key!r} has dtype {array.dtype}; only numeric and bool arrays can be stored.")
        stored[key] = array
    try:
        text = json.dumps(parameters, indent=2, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise PluginError(
            f"save_arrays: parameters must be JSON values (use float() / int() for numpy scalars, no NaN): {error}"
        ) from error
    save_file(stored, str(directory / ARRAYS_FILE))
    (directory / PARAMETERS_FILE).write_text(text, encoding="utf-8")


def load_arrays(directory: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """What ``save_arrays`` wrote into ``directory``: the arrays (dtypes as saved) and the parameters."""
    directory = Path(directory)
    arrays = load_file(str(directory / ARRAYS_FILE))
    parameters = json.loads((directory / PARAMETERS_FILE).read_text(encoding="utf-8"))
    return arrays, parameters


def sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


def as_probabilities(p_fake: np.ndarray) -> np.ndarray:
    """``[n, 2]`` float64 from P(fake) per row: column 0 = real (``1 - p``), column 1 = fake."""
    p_fake = np.asarray(p_fake, dtype=np.float64).reshape(-1)
    return np.stack([1.0 - p_fake, p_fake], axis=1)


class Standardizer:
    """Zero mean, unit variance per feature (scikit-learn's StandardScaler, as arrays)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray):
        self.mean = mean
        self.scale = scale

    @classmethod
    def fit(cls, features: np.ndarray) -> "Standardizer":
        mean = features.mean(axis=0)
        scale = features.std(axis=0)
        scale[scale == 0] = 1.0
        return cls(mean, scale)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
