"""How an exported encoder scores a run's test split, next to what the PyTorch model scored.

The run stores the PyTorch model's uncalibrated test P(fake) (``split_predictions.csv``), so one
pass of the exported model over the test reviews gives both sides: macro F1 at the run's
threshold, the labels that changed and the largest P(fake) difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from review_toolkit.evaluation.metrics import classification_metrics


def test_split_parity(run: Path, classifier: Any, *, batch_size: int = 16, progress: bool = False) -> dict[str, Any]:
    """Test-split metrics of ``classifier`` against the stored PyTorch scores, or why none were measured."""
    from review_toolkit.data import load_splits_for
    from review_toolkit.evaluation.run_evaluation import load_split_predictions, read_run_config

    stored = load_split_predictions(run)
    if stored is None:
        return {"measured": False, "reason": "the run stores no test-split predictions (split_predictions.csv)"}
    try:
        splits = load_splits_for(read_run_config(run))
    except Exception as error:  # the data moved or is gone: say so instead of failing the export
        return {"measured": False, "reason": f"the run's data could not be read ({type(error).__name__}: {str(error)[:200]})"}
    test = splits.test
    reference = stored["test"]
    if len(test) != len(reference.labels) or not np.array_equal(test.row.to_numpy(), reference.rows):
        return {"measured": False, "reason": "the run's data no longer gives the test split it was trained with"}
    p_raw = classifier.predict_proba(test.text.tolist(), batch_size=batch_size, progress=progress, calibrated=False)
    calibration, threshold = classifier.calibration, classifier.threshold
    p_exported, p_torch = calibration.apply(p_raw), calibration.apply(reference.p_raw)
    labels = reference.labels
    exported = classification_metrics(labels, (p_exported >= threshold).astype(int), p_exported)
    torch_side = classification_metrics(labels, (p_torch >= threshold).astype(int), p_torch)
    return {
        "measured": True,
        "n_examples": int(len(labels)),
        "threshold": float(threshold),
        "f1_macro": exported["f1_macro"],
        "f1_macro_torch": torch_side["f1_macro"],
        "f1_macro_change": exported["f1_macro"] - torch_side["f1_macro"],
        "accuracy": exported["accuracy"],
        "accuracy_torch": torch_side["accuracy"],
        "max_abs_p_fake_difference": float(np.abs(p_exported - p_torch).max()),
        "labels_changed": int(((p_exported >= threshold) != (p_torch >= threshold)).sum()),
    }
