"""Training steps replayed from CUDA graphs train the model eager steps train.

The recording and replay run on GPUs only (those tests are skipped elsewhere): a
tiny gte encoder (Stella's architecture) in 4-bit with fused LoRA layers, as
qlora trains it, compared step by step against the same model run eagerly, with
the weights updated between steps. On any machine: where graphs cannot be used,
asking for them is refused by name.
"""

from __future__ import annotations

import tempfile

import pytest
import torch
from torch import nn

from review_toolkit.errors import ConfigError
from review_toolkit.accel.packing import PackedBatchEncoder, PackedCollator, StaticRowLayout

# GPU-only tests: marked ``gpu`` (deselect with -m "not gpu") and skipped where no CUDA GPU is visible.
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs record GPU kernels")

LAYOUT = StaticRowLayout.for_budget(max_tokens=512, max_reviews=8, max_review_length=64)


def qlora_gte_classifier(dropout: float):
    """A tiny gte in 4-bit (bf16 compute) with random LoRA adapters, fused, packed, on the GPU."""
    from peft import LoraConfig, get_peft_model
    from transformers import BitsAndBytesConfig, GteConfig, GteModel

    from review_toolkit.plugin_api.adapters import transformers_deprecations_quiet
    from review_toolkit.plugin_api.encoders import PooledEncoder
    from review_toolkit.accel.fused_lora import fuse_lora_layers
    from review_toolkit.train.model import ReviewClassifierModel
    from review_toolkit.accel.packing import enable_packed_attention

    torch.manual_seed(0)
    directory = tempfile.mkdtemp()
    config = GteConfig(
        vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=0.0,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    GteModel(config).save_pretrained(directory)
    transformer = GteModel.from_pretrained(directory, quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16,
    ), device_map={"": 0})
    with transformers_deprecations_quiet():
        transformer = get_peft_model(transformer, LoraConfig(
            r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        ))
    for name, parameter in transformer.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_()  # fresh B matrices are zero: the adapters' gradients would be too
    fuse_lora_layers(transformer)
    encoder = PooledEncoder(transformer, 64)
    enable_packed_attention(encoder)
    model = ReviewClassifierModel(encoder, nn.Linear(64, 2).cuda()).train()
    model.batch_encoder = PackedBatchEncoder()
    return model


def packed_batch(seed: int, reviews: int = 6, layout: StaticRowLayout | None = LAYOUT) -> dict:
    generator = torch.Generator().manual_seed(seed)
    features = [
        {"input_ids": torch.randint(1, 1000, (int(length),), generator=generator).tolist(), "labels": index % 2}
        for index, length in enumerate(torch.randint(4, 64, (reviews,), generator=generator))
    ]
    batch = PackedCollator(layout=layout)(features)
    return {key: value.cuda() if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def forward_backward(model, batch, *, zero: bool = True):
    if zero:
        model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        output = model(**batch)
    output.loss.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return output.logits.detach().float(), gradients


def assert_same_gradients(gradients, expected):
    assert gradients.keys() == expected.keys() and len(expected) > 0
    for name, gradient in gradients.items():
        assert (gradient - expected[name]).norm() <= 1e-3 * expected[name].norm() + 1e-6, name


@pytest.mark.gpu
@needs_cuda
def test_replayed_steps_match_eager_steps_as_the_weights_change():
    from review_toolkit.accel.graphs import GraphedEncoder

    model = qlora_gte_classifier(dropout=0.0)
    graphed = GraphedEncoder(model.encoder, LAYOUT)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for seed in range(3):  # new reviews every step, and weights the optimizer changed in place
        batch = packed_batch(seed, reviews=3 + seed)
        model.batch_encoder = PackedBatchEncoder()
        expected_logits, expected_gradients = forward_backward(model, batch)
        model.batch_encoder = PackedBatchEncoder(graphed)
        logits, gradients = forward_backward(model, batch)
        assert logits.shape == (3 + seed, 2)  # the layout's empty review slots are left out
        torch.testing.assert_close(logits, expected_logits, atol=1e-3, rtol=1e-3)
        assert_same_gradients(gradients, expected_gradients)
        optimizer.step()
    assert graphed.forward_graph is not None


@pytest.mark.gpu
@needs_cuda
def test_replayed_gradients_accumulate_over_batches_and_other_shapes_run_eagerly():
    from review_toolkit.accel.graphs import GraphedEncoder

    model = qlora_gte_classifier(dropout=0.0)
    first, second = packed_batch(1), packed_batch(2)
    _, expected_first = forward_backward(model, first)
    _, expected_second = forward_backward(model, second)
    model.batch_encoder = PackedBatchEncoder(GraphedEncoder(model.encoder, LAYOUT))
    forward_backward(model, first)
    _, summed = forward_backward(model, second, zero=False)  # accumulated, as over gradient_accumulation_steps
    assert model.batch_encoder.graphed.forward_graph is not None
    assert_same_gradients(summed, {name: expected_first[name] + expected_second[name] for name in expected_first})

    # A row of its own length (here more reviews than the layout's slots) is not replayed: computed as before.
    larger = packed_batch(3, reviews=LAYOUT.review_slots + 2, layout=LAYOUT)
    assert larger["input_ids"].shape[1] != LAYOUT.row_length
    assert model.batch_encoder.graphed(larger["input_ids"], larger["position_ids"], larger["cu_seq_lens"],
                                 larger["review_index"], larger["max_length"]) is None
    model.batch_encoder = PackedBatchEncoder()
    expected_logits, _ = forward_backward(model, larger)
    model.batch_encoder = PackedBatchEncoder(GraphedEncoder(model.encoder, LAYOUT))
    logits, _ = forward_backward(model, larger)
    torch.testing.assert_close(logits, expected_logits)


@pytest.mark.gpu
@needs_cuda
def test_replays_draw_new_dropout_masks():
    from review_toolkit.accel.graphs import GraphedEncoder

    model = qlora_gte_classifier(dropout=0.3)
    model.batch_encoder = PackedBatchEncoder(GraphedEncoder(model.encoder, LAYOUT))
    batch = packed_batch(4)
    first, _ = forward_backward(model, batch)
    second, gradients = forward_backward(model, batch)
    assert model.batch_encoder.graphed.forward_graph is not None
    assert not torch.equal(first, second)
    assert all(torch.isfinite(gradient).all() for gradient in gradients.values())


@pytest.mark.gpu
@needs_cuda
def test_a_step_that_cannot_be_recorded_is_refused_naming_the_option():
    import subprocess
    import sys
    from pathlib import Path

    # In a process of its own: the failed capture leaves PyTorch's CUDA random number generator
    # unusable for the rest of the process (the reason the step is refused, not run eagerly).
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_graphs import LAYOUT, forward_backward, packed_batch, qlora_gte_classifier
from review_toolkit.errors import ConfigError
from review_toolkit.accel.graphs import GraphedEncoder
from review_toolkit.accel.packing import PackedBatchEncoder

model = qlora_gte_classifier(dropout=0.0)
transformer_forward = model.encoder.transformer.forward

def waits_for_the_gpu(*args, **kwargs):  # reads a GPU value on the host: no graph can hold that
    hidden = transformer_forward(*args, **kwargs)[0]
    return (hidden * (1.0 if hidden.isfinite().all().item() else float("nan")),)

model.encoder.transformer.forward = waits_for_the_gpu
model.batch_encoder = PackedBatchEncoder(GraphedEncoder(model.encoder, LAYOUT))
try:
    forward_backward(model, packed_batch(5))
except ConfigError as error:
    print("REFUSED", error)
"""
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "REFUSED cuda_graphs: this encoder's training step could not be recorded" in completed.stdout, completed.stderr
    assert "--no-cuda-graphs" in completed.stdout


@pytest.mark.gpu
@needs_cuda
def test_training_through_graphs_saves_reloads_and_predicts(tiny_bert, small_reviews, fifty_reviews, tmp_path):
    import json

    import numpy as np

    from review_toolkit import TrainConfig, load_run, train

    config = TrainConfig(
        backbone="bert", model=tiny_bert, data=str(small_reviews), output_dir=str(tmp_path / "run"),
        method="qlora", epochs=2, batch_size=16, max_length=64, max_tokens_per_batch=512,
    )
    result = train(config, progress=False)
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["packed_sequences"] is True and info["cuda_graphs"] is True  # the defaults on a GPU
    assert 0 <= info["best_validation_f1_macro"] <= 1
    before = result.classifier.predict_proba(fifty_reviews)
    after = load_run(result.run_dir).predict_proba(fifty_reviews)
    np.testing.assert_allclose(after, before, atol=1e-5, rtol=0)


def test_graphs_are_refused_by_name_where_they_cannot_run():
    from review_toolkit import TrainConfig
    from review_toolkit.accel.graphs import cuda_graphs_wanted, graph_obstacles

    compiled = TrainConfig(compile=True)
    assert any("compiled" in reason for reason in graph_obstacles(packed=True, config=compiled, processes=1))
    checkpointed = TrainConfig(gradient_checkpointing=True)
    assert any("checkpointing" in reason for reason in graph_obstacles(packed=True, config=checkpointed, processes=1))
    assert any("2 processes" in reason for reason in graph_obstacles(packed=True, config=TrainConfig(), processes=2))
    assert any("not packed" in reason for reason in graph_obstacles(packed=False, config=TrainConfig(), processes=1))
    # Left unset, graphs are simply not used where they cannot run; asked for, the reason is given.
    assert cuda_graphs_wanted(None, packed=False, config=TrainConfig(), processes=1) is False
    assert cuda_graphs_wanted(False, packed=True, config=TrainConfig(), processes=1) is False
    with pytest.raises(ConfigError, match="cuda_graphs: not possible for this run: .*compiled layers"):
        cuda_graphs_wanted(True, packed=True, config=compiled, processes=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_asking_for_graphs_without_a_gpu_names_why_and_writes_no_run(tiny_bert, small_reviews, tmp_path):
    from review_toolkit import TrainConfig, train

    config = TrainConfig(
        backbone="bert", model=tiny_bert, data=str(small_reviews), output_dir=str(tmp_path / "run"),
        method="lora", epochs=1, max_length=64, cuda_graphs=True,
    )
    with pytest.raises(ConfigError, match="cuda_graphs: not possible for this run: no CUDA GPU is visible"):
        train(config, progress=False)
    assert not (tmp_path / "run").exists()
