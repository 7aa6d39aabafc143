"""``--compile``: compiled encoder layers train, and the run they write loads and predicts uncompiled."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from review_toolkit import load_run
from review_toolkit.accel.compilation import compile_encoder_layers


@pytest.mark.slow
def test_compiled_lora_run_reloads_and_rescores_its_test_split(tiny_bert, small_reviews, tmp_path):
    run = tmp_path / "run"
    completed = subprocess.run(
        [
            sys.executable, "-m", "review_toolkit", "train", "--quiet", "--backbone", "bert", "--model", tiny_bert,
            "--method", "lora", "--head", "linear", "--epochs", "1", "--compile", "--data", str(small_reviews),
            "--output-dir", str(run),
        ],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Warning" not in completed.stderr, completed.stderr[-3000:]
    assert yaml.safe_load((run / "config.yaml").read_text())["compile"] is True
    assert json.loads((run / "metrics.json").read_text())["n_examples"] > 0

    classifier = load_run(run)  # a plain, uncompiled model: parameter names are what compiling left them
    stored = pd.read_csv(run / "split_predictions.csv").query("split == 'test'")
    texts = pd.read_csv(small_reviews).text.iloc[stored.row.to_numpy() - 1].tolist()  # rows count from 1
    np.testing.assert_allclose(classifier.predict_proba(texts, calibrated=False), stored.p_fake_raw.to_numpy(), atol=1e-4)


def test_each_encoder_layer_is_compiled_and_weight_names_stay(tiny_bert):
    from review_toolkit import TrainConfig, registry
    from review_toolkit.train.model import ReviewClassifierModel

    backbone, _ = registry.get("backbone", "bert")
    method, _ = registry.get("method", "full")
    encoder = method.load_for_training(backbone, tiny_bert, TrainConfig(backbone="bert", method="full"))
    model = ReviewClassifierModel(encoder, registry.get("head", "linear")[0].build(encoder.embedding_size, 2))
    names = list(model.state_dict())

    assert compile_encoder_layers(model) == 2  # the tiny BERT's two BertLayers
    assert list(model.state_dict()) == names


def test_compile_with_gradient_checkpointing_is_refused_before_anything_is_written(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "review_toolkit", "train", "--method", "full", "--compile", "--gradient-checkpointing"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert completed.returncode != 0
    assert "compile and gradient_checkpointing do not combine" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert list(tmp_path.iterdir()) == []
