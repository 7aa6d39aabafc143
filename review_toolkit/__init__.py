"""review_toolkit: train, evaluate, compare and serve fake-review classifiers.

Library use::

    from review_toolkit import TrainConfig, train, load_run
    result = train(TrainConfig(backbone="minilm", method="frozen", head="logreg"))
    classifier = load_run(result.run_dir)
    classifier.predict(["Great product, works as described."])

Heavy modules (torch, transformers) load on first use, so ``import
review_toolkit`` and ``review-toolkit plugins`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "TrainConfig", "train", "TrainResult", "load_run", "Classifier", "Prediction", "evaluate_run",
    "EvaluationResult", "build_ensemble", "EnsembleClassifier", "EnsembleResult", "list_plugins", "__version__",
]

if TYPE_CHECKING:
    from review_toolkit.config import TrainConfig
    from review_toolkit.evaluation.run_evaluation import EvaluationResult, evaluate_run
    from review_toolkit.inference.classifier import Classifier, Prediction
    from review_toolkit.inference.ensemble import EnsembleClassifier
    from review_toolkit.registry import list_plugins
    from review_toolkit.runs.loader import load_run
    from review_toolkit.train.ensemble import EnsembleResult, build_ensemble
    from review_toolkit.train.pipeline import TrainResult, train

# What each public name is, and the module it loads from on first use.
_LAZY = {
    "TrainConfig": "review_toolkit.config",
    "train": "review_toolkit.train.pipeline",
    "TrainResult": "review_toolkit.train.pipeline",
    "load_run": "review_toolkit.runs.loader",
    "Classifier": "review_toolkit.inference.classifier",
    "Prediction": "review_toolkit.inference.classifier",
    "evaluate_run": "review_toolkit.evaluation.run_evaluation",
    "EvaluationResult": "review_toolkit.evaluation.run_evaluation",
    "build_ensemble": "review_toolkit.train.ensemble",
    "EnsembleResult": "review_toolkit.train.ensemble",
    "EnsembleClassifier": "review_toolkit.inference.ensemble",
    "list_plugins": "review_toolkit.registry",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'review_toolkit' has no attribute {name!r}")
