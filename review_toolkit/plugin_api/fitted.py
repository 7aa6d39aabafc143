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

ARRAYS_FILE = "head.safetensors"
PARAMETERS_FILE = "head.json"


def save_arrays(directory: Path, arrays: dict[str, np.ndarray], parameters: dict[str, Any]) -> None:
    save_file({key: np.ascontiguousarray(value) for key, value in arrays.items()}, str(directory / ARRAYS_FILE))
    (directory / PARAMETERS_FILE).write_text(json.dumps(parameters, indent=2), encoding="utf-8")


def load_arrays(directory: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays = load_file(str(directory / ARRAYS_FILE))
    parameters = json.loads((directory / PARAMETERS_FILE).read_text(encoding="utf-8"))
    return arrays, parameters


def sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


def as_probabilities(p_fake: np.ndarray) -> np.ndarray:
    """``[n, 2]`` with column 0 = real, column 1 = fake."""
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
