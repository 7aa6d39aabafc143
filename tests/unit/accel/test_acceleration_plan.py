"""The acceleration plan: what it decides for a run, and that deciding nothing trains correctly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from review_toolkit import TrainConfig, load_run, registry, train
from review_toolkit.accel.plan import AccelerationPlan
from review_toolkit.errors import ConfigError

MEASURES = ("bf16", "packed_sequences", "fused_lora", "compiled_layers", "cuda_graphs", "token_budget_batches")


def lora_encoder(tiny_bert: str, config: TrainConfig):
    backbone, _ = registry.get("backbone", "bert")
    method, _ = registry.get("method", "lora")
    return method.load_for_training(backbone, tiny_bert, config)


def test_nothing_applied_trains_a_run_that_reloads_and_scores_its_stored_predictions(
    tiny_bert, small_reviews, tmp_path, monkeypatch
):
    decided = []

    def plain(cls, config, encoder, **_):
        decided.append(encoder)
        return cls.plain("forced off by the test")

    monkeypatch.setattr(AccelerationPlan, "for_fine_tuning", classmethod(plain))
    config = TrainConfig(
        backbone="bert", model=tiny_bert, data=str(small_reviews), output_dir=str(tmp_path / "run"),
        method="lora", head="linear", epochs=1, max_steps=6, batch_size=8, eval_batch_size=32, max_length=64, seed=3,
    )
    result = train(config, progress=False)
    assert len(decided) == 1

    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["packed_sequences"] is False and info["cuda_graphs"] is False
    acceleration = info["acceleration"]
    for measure in MEASURES:
        assert acceleration[measure] == {"applies": False, "reason": "forced off by the test"}, measure
    # PEFT's own layers trained: nothing was given the fused forward.
    assert not any(getattr(module, "_fused_lora", False) for module in result.classifier.encoder.modules())

    stored = pd.read_csv(result.run_dir / "split_predictions.csv").query("split == 'test'")
    texts = pd.read_csv(small_reviews).text.iloc[stored.row.to_numpy() - 1].tolist()  # rows count from 1
    reloaded = load_run(result.run_dir).predict_proba(texts, calibrated=False)
    np.testing.assert_allclose(reloaded, stored.p_fake_raw.to_numpy(), atol=1e-5, rtol=0)


def test_a_cpu_lora_run_fuses_its_layers_and_says_why_nothing_else_applies(tiny_bert):
    config = TrainConfig(backbone="bert", method="lora", max_length=64)
    encoder = lora_encoder(tiny_bert, config)
    plan = AccelerationPlan.for_fine_tuning(config, encoder, backbone="bert", max_length=64)
    report = plan.report()["acceleration"]

    assert report["fused_lora"]["applies"] is True
    assert report["token_budget_batches"]["applies"] is True and plan.max_tokens_per_batch == 4096
    assert report["bf16"] == {"applies": False, "reason": "no CUDA GPU is visible"}
    assert report["packed_sequences"]["applies"] is False and "bf16" in report["packed_sequences"]["reason"]
    assert report["cuda_graphs"]["applies"] is False and "no CUDA GPU is visible" in report["cuda_graphs"]["reason"]
    assert report["attention"] == "the encoder's own"

    plan.prepare_encoder(encoder)
    assert any(getattr(module, "_fused_lora", False) for module in encoder.modules())
    sampler = plan.batch_sampler([10, 20, 30, 40], max_batch_size=2, seed=0, processes=1)
    assert sorted(i for batch in sampler for i in batch) == [0, 1, 2, 3]


def test_compiled_layers_keep_peft_layers_and_padding_to_max_length_keeps_trainer_batches(tiny_bert):
    compiled = TrainConfig(backbone="bert", method="lora", max_length=64, compile=True)
    plan = AccelerationPlan.for_fine_tuning(compiled, lora_encoder(tiny_bert, compiled), backbone="bert", max_length=64)
    assert plan.compiled.applies and not plan.fused_lora.applies
    assert "compiled" in plan.fused_lora.reason

    padded = TrainConfig(backbone="bert", method="full", max_length=64, pad_to_max_length=True)
    backbone, _ = registry.get("backbone", "bert")
    full, _ = registry.get("method", "full")
    plan = AccelerationPlan.for_fine_tuning(
        padded, full.load_for_training(backbone, tiny_bert, padded), backbone="bert", max_length=64
    )
    assert not plan.token_budget.applies and plan.batch_sampler([5, 6], max_batch_size=2, seed=0, processes=1) is None
    assert not plan.fused_lora.applies and plan.fused_lora.reason == "the encoder has no LoRA layers"
    assert plan.pad_to_multiple_of is None


def test_a_measure_asked_for_that_cannot_apply_is_refused_naming_the_option(tiny_bert):
    config = TrainConfig(backbone="bert", method="lora", max_length=64, cuda_graphs=True)
    with pytest.raises(ConfigError, match="cuda_graphs: not possible for this run"):
        AccelerationPlan.for_fine_tuning(config, lora_encoder(tiny_bert, config), backbone="bert", max_length=64)
