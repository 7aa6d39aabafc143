"""Several trained classifiers as one: each member scores a review once, the scores are combined.

Members are combined on their *calibrated* P(fake), so that runs whose heads are over- or
under-confident in different ways weigh in on the same scale:

* ``mean``: the average of the members' calibrated P(fake).
* ``stacking``: a logistic regression on the members' calibrated logits, fitted on the
  validation split's stored scores: ``sigmoid(sum_i w_i * logit(p_i) + b)``. Its weights are
  plain numbers kept in run.json, so nothing is unpickled to apply it.

The combined score is what the ensemble calls its raw P(fake); like any run it then has its own
calibration (fitted on validation) and threshold, so ``evaluate``, ``predict`` and the server
treat it as they treat a single run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from review_toolkit.data import LABEL_NAMES
from review_toolkit.errors import ConfigError, RunDirectoryError
from review_toolkit.inference.calibration import Calibration, _logit, _sigmoid
from review_toolkit.inference.classifier import Prediction

COMBINE_METHODS = ("mean", "stacking")


@dataclass
class Combination:
    """How member P(fake) columns become one: ``mean``, or ``stacking`` with ``weights`` and ``intercept``."""

    method: str = "mean"
    weights: list[float] = field(default_factory=list)
    intercept: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)  # what the choice was based on

    def apply(self, member_p_fake: np.ndarray) -> np.ndarray:
        """``member_p_fake`` is [reviews, members] of calibrated P(fake); returns one P(fake) per review."""
        member_p_fake = np.asarray(member_p_fake, dtype=np.float64)
        if self.method == "mean":
            return member_p_fake.mean(axis=1)
        return _sigmoid(stacking_features(member_p_fake) @ np.asarray(self.weights, dtype=np.float64) + self.intercept)

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"method": self.method}
        if self.method == "stacking":
            result.update({"weights": list(self.weights), "intercept": self.intercept})
        result.update(self.details)
        return result

    @classmethod
    def from_dict(cls, value: Any, members: int, where: str) -> "Combination":
        """The combination run.json records, checked against the number of members."""
        if not isinstance(value, dict) or value.get("method") not in COMBINE_METHODS:
            raise RunDirectoryError(
                f"{where}: 'combination' must say method {' or '.join(COMBINE_METHODS)}; got {value!r}. "
                "Build the ensemble again with 'review-toolkit ensemble'."
            )
        if value["method"] == "mean":
            return cls("mean")
        weights, intercept = value.get("weights"), value.get("intercept")
        if (
            not isinstance(weights, list)
            or len(weights) != members
            or not all(_is_finite_number(w) for w in weights)
            or not _is_finite_number(intercept)
        ):
            raise RunDirectoryError(
                f"{where}: the stacking combination needs {members} finite weights (one per member) and an "
                "intercept. Build the ensemble again with 'review-toolkit ensemble'."
            )
        return cls("stacking", [float(w) for w in weights], float(intercept))


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def stacking_features(member_p_fake: np.ndarray) -> np.ndarray:
    """The stacking regression's inputs: each member's calibrated P(fake) as a logit (clipped)."""
    return _logit(np.asarray(member_p_fake, dtype=np.float64))


class EnsembleClassifier:
    """The :class:`~review_toolkit.inference.classifier.Classifier` interface over several members.

    ``predict_proba`` hands every review to each member once (in the members' own batches) and
    combines their calibrated P(fake); ``calibrated=False`` returns the combination before the
    ensemble's own calibration, as a single run returns its head's probability.
    """

    def __init__(
        self,
        members: Sequence[Any],
        *,
        combination: Combination,
        threshold: float = 0.5,
        calibration: Calibration | dict[str, Any] | None = None,
        info: dict[str, Any] | None = None,
        member_names: Sequence[str] | None = None,
    ):
        if len(members) < 2:
            raise ValueError("An ensemble needs at least two members.")
        self.members = list(members)
        self.member_names = list(member_names) if member_names is not None else [f"member {i + 1}" for i in range(len(members))]
        self.combination = combination
        self.threshold = threshold
        self.info = info or {}
        if calibration is None:
            calibration = self.info.get("calibration")
        self.calibration = calibration if isinstance(calibration, Calibration) else Calibration.from_dict(calibration)
        self.max_length = max(int(member.max_length) for member in self.members)
        self.head_description = f"ensemble of {len(self.members)} runs ({combination.method})"
        # No single tokenizer counts an ensemble's tokens; the server estimates them from characters.
        self.tokenizer = None

    @property
    def scored_with(self) -> str:
        """What scored each member, as reports name it ("torch float32 on cpu; featurizer (...)")."""
        return "; ".join(f"{name}: {getattr(member, 'scored_with', 'torch')}" for name, member in zip(self.member_names, self.members))

    def compile_encoder(self) -> int:
        """Compile the encoder of every member that has one (``predict --compile``); returns how many layers.

        Members without a neural encoder (featurizer backbones such as TF-IDF) are left as they are.
        """
        with_encoders = [member for member in self.members if getattr(member, "encoder", None) is not None]
        if not with_encoders:
            raise ConfigError("compile: no member of this ensemble has a neural encoder to compile.")
        return sum(member.compile_encoder() for member in with_encoders)

    def record_scoring_graphs(self, lanes: int = 1) -> int:
        """Record every member's GPU scoring graphs now (``Classifier.record_scoring_graphs``); returns how many."""
        return sum(member.record_scoring_graphs(lanes) for member in self.members if hasattr(member, "record_scoring_graphs"))

    def member_probabilities(self, texts: list[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """[reviews, members] of each member's calibrated P(fake): one pass of each member over ``texts``."""
        texts = list(texts)
        columns = [member.predict_proba(texts, batch_size=batch_size, progress=progress) for member in self.members]
        return np.column_stack(columns) if texts else np.zeros((0, len(self.members)), dtype=np.float64)

    def predict_proba(
        self, texts: list[str], *, batch_size: int = 64, progress: bool = False, calibrated: bool = True
    ) -> np.ndarray:
        """P(fake) for each text, in input order (calibrated unless ``calibrated=False``)."""
        texts = list(texts)
        if not texts:
            return np.zeros(0, dtype=np.float64)
        raw = self.combination.apply(self.member_probabilities(texts, batch_size=batch_size, progress=progress))
        return self.calibration.apply(raw) if calibrated else raw

    def labels_for(self, p_fake: np.ndarray) -> list[str]:
        return [LABEL_NAMES[int(p >= self.threshold)] for p in p_fake]

    def predict(self, texts: list[str], *, batch_size: int = 64, progress: bool = False) -> list[Prediction]:
        """Label and P(fake) for each text, in input order."""
        p_fake = self.predict_proba(texts, batch_size=batch_size, progress=progress)
        return [Prediction(label, float(p)) for label, p in zip(self.labels_for(p_fake), p_fake)]
