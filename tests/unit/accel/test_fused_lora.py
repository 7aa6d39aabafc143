"""The fused LoRA layers train the same model PEFT defines, so saved adapters mean what they did.

Compared on a tiny BERT (float32, CPU): PEFT's own forward and backward against the fused
ones, for a dense base and a 4-bit NF4 base, with and without adapter dropout.
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import BertModel, BitsAndBytesConfig

from review_toolkit.plugin_api.adapters import transformers_deprecations_quiet
from review_toolkit.accel.fused_lora import FrozenCopy, _LastCast, fuse_lora_layers

TARGETS = ["query", "value", "attention.output.dense"]


def lora_bert(checkpoint: str, *, four_bit: bool, dropout: float, use_dora: bool = False, checkpointed: bool = False):
    """A tiny BERT with LoRA whose B matrices are random (fresh ones are zero: nothing to compare)."""
    options = {}
    if four_bit:
        options = {
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.float32,
            ),
            "device_map": {"": "cpu"},
        }
    model = BertModel.from_pretrained(checkpoint, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **options)
    if checkpointed:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(1)
    with transformers_deprecations_quiet():
        model = get_peft_model(
            model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=TARGETS, use_dora=use_dora)
        )
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_()
    return model.train()


def output_and_gradients(model, input_ids):
    # A fixed random readout: the squared norm of layer-normed states is nearly constant, and
    # its gradients would be rounding noise.
    readout = torch.randn(64, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(7)  # the same dropout masks for both models
    hidden = model(input_ids=input_ids).last_hidden_state
    (hidden.float() @ readout).square().mean().backward()
    gradients = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    return hidden.detach(), gradients


@pytest.mark.parametrize("four_bit", [False, True], ids=["dense", "nf4"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("checkpointed", [False, True], ids=["stored", "checkpointed"])
def test_fused_layers_match_peft_outputs_and_gradients(tiny_bert, four_bit, dropout, checkpointed):
    """Also under activation checkpointing, which recomputes the forward (same dropout masks) in backward."""
    input_ids = torch.randint(5, 1000, (3, 11))
    reference = lora_bert(tiny_bert, four_bit=four_bit, dropout=dropout, checkpointed=checkpointed)
    fused = lora_bert(tiny_bert, four_bit=four_bit, dropout=dropout, checkpointed=checkpointed)
    # Adapted layers (3 per BERT layer); with 4-bit weights also the frozen ones: key and the
    # two feed-forward layers of each BERT layer, and the pooler.
    expected = 2 * len(TARGETS) + (2 * 3 + 1 if four_bit else 0)
    assert fuse_lora_layers(fused) == expected
    # Query and value read the same input: computed together (key is not adapted).
    attention = fused.base_model.model.encoder.layer[0].attention.self
    assert attention.query._fused_sibling and attention.value._fused_sibling

    hidden_reference, gradients_reference = output_and_gradients(reference, input_ids)
    hidden_fused, gradients_fused = output_and_gradients(fused, input_ids)

    torch.testing.assert_close(hidden_fused, hidden_reference, rtol=1e-5, atol=1e-5)
    assert gradients_fused.keys() == gradients_reference.keys()
    assert any("lora_A" in name for name in gradients_fused)
    for name, gradient in gradients_reference.items():
        torch.testing.assert_close(gradients_fused[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


def test_layers_the_fused_form_does_not_cover_keep_peft_forward(tiny_bert):
    """DoRA adds a magnitude vector the hand-written backward does not know: left to PEFT."""
    model = lora_bert(tiny_bert, four_bit=False, dropout=0.0, use_dora=True)
    assert fuse_lora_layers(model) == 0
    hidden = model(input_ids=torch.randint(5, 1000, (2, 5))).last_hidden_state
    hidden.sum().backward()
    assert all(p.grad is not None for name, p in model.named_parameters() if "lora_magnitude" in name)


def test_fused_layers_under_bf16_autocast_stay_close_to_peft(tiny_bert):
    """Autocast (as on GPUs) makes the fused layers cast and share their inputs; same model, bf16 rounding."""
    input_ids = torch.randint(5, 1000, (3, 11))
    reference = lora_bert(tiny_bert, four_bit=False, dropout=0.0)
    fused = lora_bert(tiny_bert, four_bit=False, dropout=0.0)
    fuse_lora_layers(fused)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden_reference, gradients_reference = output_and_gradients(reference, input_ids)
        hidden_fused, gradients_fused = output_and_gradients(fused, input_ids)
    torch.testing.assert_close(hidden_fused.float(), hidden_reference.float(), rtol=0.05, atol=0.05)
    # All adapter gradients as one vector: some layers' gradients are ~1e-10 here, bf16 noise alone.
    names = sorted(gradients_reference)
    reference_vector = torch.cat([gradients_reference[name].flatten() for name in names])
    fused_vector = torch.cat([gradients_fused[name].flatten() for name in names])
    assert (fused_vector - reference_vector).norm() <= 0.05 * reference_vector.norm()


def test_shared_input_cast_is_reused_only_while_the_tensor_is_unchanged():
    cast = _LastCast()
    hidden = torch.randn(4, 8)
    first = cast(hidden, torch.bfloat16)
    assert cast(hidden, torch.bfloat16) is first  # the key and value layers reuse the query's copy
    hidden.add_(1.0)  # an in-place change must not be served from the stale copy
    again = cast(hidden, torch.bfloat16)
    assert again is not first
    torch.testing.assert_close(again, hidden.to(torch.bfloat16))
    assert cast(hidden.clone(), torch.bfloat16) is not again
    assert cast(hidden, torch.float32) is hidden
    with torch.inference_mode():  # evaluation: inference tensors carry no version counter
        frozen = torch.randn(4, 8)
        torch.testing.assert_close(cast(frozen, torch.bfloat16), frozen.to(torch.bfloat16))
    copy = cast(torch.randn(4, 8), torch.bfloat16)  # its source is freed at once
    assert cast.result is None and copy.dtype == torch.bfloat16  # ... and so is the cache's hold on the copy


def test_frozen_bias_copies_are_made_once_and_again_when_the_bias_changes():
    copy = FrozenCopy()
    bias = torch.randn(8)
    first = copy(bias, torch.bfloat16)
    assert copy(bias, torch.bfloat16) is first  # every later call of the layer: no new cast
    bias.add_(1.0)
    again = copy(bias, torch.bfloat16)
    assert again is not first
    torch.testing.assert_close(again, bias.to(torch.bfloat16))
    assert copy(bias, torch.float32) is bias


def test_fused_layers_score_in_inference_mode_under_autocast(tiny_bert):
    """Evaluation during training runs the fused layers under inference mode (and autocast on GPUs)."""
    reference = lora_bert(tiny_bert, four_bit=False, dropout=0.05).eval()
    fused = lora_bert(tiny_bert, four_bit=False, dropout=0.05).eval()
    fuse_lora_layers(fused)
    input_ids = torch.randint(5, 1000, (2, 9))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference(input_ids=input_ids).last_hidden_state.float()
        scored = fused(input_ids=input_ids).last_hidden_state.float()
    torch.testing.assert_close(scored, expected, rtol=0.05, atol=0.05)


def lora_gte(*, dropout: float, checkpointed: bool = False):
    """A tiny gte encoder (Stella's architecture) in 4-bit with LoRA on query, key and value."""
    import tempfile

    from transformers import GteConfig, GteModel

    torch.manual_seed(0)
    directory = tempfile.mkdtemp()
    config = GteConfig(
        vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    GteModel(config).save_pretrained(directory)
    model = GteModel.from_pretrained(directory, quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32,
    ), device_map={"": "cpu"})
    if checkpointed:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(1)
    with transformers_deprecations_quiet():
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["q_proj", "k_proj", "v_proj"]))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_()
    return model.train()


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("checkpointed", [False, True], ids=["stored", "checkpointed"])
def test_sibling_layers_computed_together_match_peft(dropout, checkpointed):
    """gte's query/key/value (adapted) and gate/up (frozen 4-bit) projections share their input:
    each set runs as one node, with the outputs and gradients PEFT's separate layers give."""
    input_ids = torch.randint(5, 1000, (3, 11), generator=torch.Generator().manual_seed(2))
    reference = lora_gte(dropout=dropout, checkpointed=checkpointed)
    fused = lora_gte(dropout=dropout, checkpointed=checkpointed)
    fuse_lora_layers(fused)
    grouped = {name.rsplit(".", 1)[-1] for name, module in fused.named_modules() if getattr(module, "_fused_sibling", False)}
    assert grouped == {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"}

    hidden_reference, gradients_reference = output_and_gradients(reference, input_ids)
    hidden_fused, gradients_fused = output_and_gradients(fused, input_ids)
    torch.testing.assert_close(hidden_fused, hidden_reference, rtol=1e-5, atol=1e-5)
    assert gradients_fused.keys() == gradients_reference.keys()
    for name, gradient in gradients_reference.items():
        # Float32 rounding of sums taken in another order, against gradients of magnitude ~10.
        scale = gradient.abs().max().item()
        torch.testing.assert_close(gradients_fused[name], gradient, rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_siblings_called_on_different_inputs_or_moved_are_computed_alone():
    reference = lora_gte(dropout=0.0)
    fused = lora_gte(dropout=0.0)
    fuse_lora_layers(fused)
    pairs = [(getattr(module, "self_attn"), getattr(ref, "self_attn"))
             for module, ref in zip(fused.base_model.model.layers, reference.base_model.model.layers)]
    attention, expected = pairs[0]
    first, second = torch.randn(2, 5, 64), torch.randn(2, 5, 64)
    # The query layer computes key and value for `first`; key then comes with another input.
    torch.testing.assert_close(attention.q_proj(first), expected.q_proj(first), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attention.k_proj(second), expected.k_proj(second), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attention.v_proj(first), expected.v_proj(first), rtol=1e-5, atol=1e-5)
    # A layer given new storage (as a move would) leaves the shared buffer: each computes alone.
    layer = attention.v_proj.get_base_layer()
    layer.weight.data = layer.weight.data.clone()
    for projection in ("q_proj", "k_proj", "v_proj"):
        torch.testing.assert_close(
            getattr(attention, projection)(first), getattr(expected, projection)(first), rtol=1e-5, atol=1e-5
        )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="bitsandbytes' CUDA library is called directly on GPUs only")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_direct_dequantization_matches_the_bitsandbytes_operator(dtype):
    import bitsandbytes.functional as bnb_functional

    from review_toolkit.accel.fused_lora import _dequantize_entry_point, dequantize_4bit

    assert _dequantize_entry_point("nf4", dtype) is not None  # the direct call is taken, not the fallback
    weight = torch.randn(3 * 96, 128, device="cuda", dtype=dtype)
    packed, state = bnb_functional.quantize_4bit(weight, blocksize=64, quant_type="nf4")
    expected = torch.ops.bitsandbytes.dequantize_4bit.default(packed, state.absmax, 64, "nf4", [3 * 96, 128], dtype)
    direct = dequantize_4bit(packed, state.absmax.float(), 64, "nf4", [3, 96, 128], dtype)
    assert direct.shape == (3, 96, 128) and direct.dtype == dtype
    assert torch.equal(direct.view_as(expected), expected)
