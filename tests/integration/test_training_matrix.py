"""Every method x head on a tiny random BERT: it trains, and predictions survive save and reload."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from review_toolkit import TrainConfig, load_run, train
from review_toolkit.errors import PluginError

TRAINED_COMBINATIONS = [
    ("full", "linear"),
    ("full", "mlp"),
    ("lora", "linear"),
    ("lora", "mlp"),
    ("qlora", "linear"),
    ("qlora", "mlp"),
    ("frozen", "linear"),
    ("frozen", "mlp"),
    ("frozen", "logreg"),
    ("frozen", "svm"),
]


def tiny_config(tiny_bert, small_reviews, output_dir, **overrides) -> TrainConfig:
    values = dict(
        backbone="bert", model=tiny_bert, data=str(small_reviews), output_dir=str(output_dir),
        epochs=1, batch_size=16, eval_batch_size=32, max_length=64,
    )
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.parametrize("method,head", TRAINED_COMBINATIONS)
def test_predictions_survive_save_and_reload(method, head, tiny_bert, small_reviews, fifty_reviews, tmp_path):
    result = train(tiny_config(tiny_bert, small_reviews, tmp_path / "run", method=method, head=head), progress=False)
    before = result.classifier.predict_proba(fifty_reviews)

    reloaded = load_run(result.run_dir)
    after = reloaded.predict_proba(fifty_reviews)

    assert before.shape == (50,)
    assert np.all((before >= 0) & (before <= 1))
    np.testing.assert_allclose(after, before, atol=1e-5, rtol=0)
    assert [p.label for p in reloaded.predict(fifty_reviews[:3])] == result.classifier.labels_for(before[:3])
    # The recorded test metrics are the reloaded classifier's too.
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["f1_macro"] == pytest.approx(result.metrics["f1_macro"])


def test_lora_run_stores_adapters_in_peft_format_and_head_apart(tiny_bert, small_reviews, tmp_path):
    result = train(tiny_config(tiny_bert, small_reviews, tmp_path / "run", method="lora", head="linear"), progress=False)
    run = result.run_dir
    adapter_config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == "LORA"
    assert adapter_config["r"] == 16 and adapter_config["lora_alpha"] == 32
    # The backbone's declared targets: every linear layer of a BERT block.
    assert set(adapter_config["target_modules"]) == {
        "query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense",
    }
    adapter = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in key for key in adapter)
    head = load_file(str(run / "head.safetensors"))
    assert {tuple(t.shape) for t in head.values()} == {(2, 64), (2,)}
    assert (run / "tokenizer" / "tokenizer_config.json").is_file()
    info = json.loads((run / "run.json").read_text())
    assert 0 < info["trainable_parameters"] < info["total_parameters"] / 2


def test_full_fine_tuning_changes_the_encoder_and_reloads_it(tiny_bert, small_reviews, tmp_path):
    from transformers import BertModel

    result = train(tiny_config(tiny_bert, small_reviews, tmp_path / "run", method="full"), progress=False)
    saved = load_file(str(result.run_dir / "encoder" / "model.safetensors"))
    original = BertModel.from_pretrained(tiny_bert).state_dict()
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(saved[key], original[key])


def test_qlora_quantizes_the_backbone_but_not_the_head(tiny_bert, small_reviews, tmp_path):
    result = train(tiny_config(tiny_bert, small_reviews, tmp_path / "run", method="qlora"), progress=False)
    encoder = result.classifier.encoder
    kinds = {type(module).__name__ for module in encoder.modules()}
    assert "Linear4bit" in kinds
    assert all(type(m).__name__ == "Linear" for m in result.classifier.head.modules() if isinstance(m, torch.nn.Linear))
    config = json.loads((result.run_dir / "run.json").read_text())
    assert config["method"] == "qlora"


def test_fitted_head_with_a_training_method_is_refused_before_loading(small_reviews, tmp_path):
    config = TrainConfig(
        backbone="bert", model=str(tmp_path / "no-such-model"), method="lora", head="svm",
        data=str(small_reviews), output_dir=str(tmp_path / "run"),
    )
    with pytest.raises(PluginError) as error:
        train(config, progress=False)
    message = str(error.value)
    assert "--method frozen --head svm" in message and "linear" in message and "mlp" in message
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_balanced_class_weights_recover_the_minority_class(tmp_path):
    """On 9:1 data, an unweighted head mostly predicts the majority; balanced weights find more fakes."""
    import pandas as pd

    from review_toolkit.data import default_data_path

    frame = pd.read_csv(default_data_path())
    imbalanced = pd.concat([frame[frame.label == "real"].head(450), frame[frame.label == "fake"].head(50)])
    data = tmp_path / "imbalanced.csv"
    imbalanced.sample(frac=1, random_state=0).to_csv(data, index=False)

    def fake_recall(output, **extra):
        config = TrainConfig(
            method="frozen", head="linear", data=str(data), output_dir=str(tmp_path / output), epochs=3, **extra
        )
        return train(config, progress=False).metrics["per_class"]["fake"]["recall"]

    assert fake_recall("weighted", class_weight="balanced") > fake_recall("plain") + 0.2


def test_resume_from_a_finished_run_trains_more_epochs(tiny_bert, small_reviews, tmp_path):
    first = train(tiny_config(tiny_bert, small_reviews, tmp_path / "three", method="full", epochs=1), progress=False)
    assert first.info["epochs_run"] == pytest.approx(1.0)
    more = train(
        tiny_config(tiny_bert, small_reviews, tmp_path / "five", method="full", epochs=2, resume_from=str(first.run_dir)),
        progress=False,
    )
    assert more.info["epochs_run"] == pytest.approx(2.0)
    state = json.loads(next((more.run_dir / "checkpoints").glob("checkpoint-*/trainer_state.json")).read_text())
    assert state["epoch"] == pytest.approx(2.0)
