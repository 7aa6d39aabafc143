"""The fused rotary embedding computes what transformers' gte modeling code computes."""

from __future__ import annotations

import pytest
import torch
from transformers.models.gte import modeling_gte

from review_toolkit.rotary import apply_rotary_pos_emb, use_fused_rotary

ORIGINAL = modeling_gte.apply_rotary_pos_emb


def rotary_inputs(dtype=torch.float32):
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(2, 4, 7, 16, generator=generator).to(dtype).requires_grad_()
    key = torch.randn(2, 4, 7, 16, generator=generator).to(dtype).requires_grad_()
    angles = torch.randn(2, 7, 8, generator=generator)
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
    return query, key, cos, sin


def rotated_and_gradients(function, query, key, cos, sin):
    query.grad = key.grad = None
    rotated_query, rotated_key = function(query, key, cos, sin)
    weights = torch.randn(rotated_query.shape, generator=torch.Generator().manual_seed(1))
    ((rotated_query.float() * weights).sum() + (rotated_key.float() * weights.flip(-1)).sum()).backward()
    return rotated_query.detach(), rotated_key.detach(), query.grad.clone(), key.grad.clone()


def test_rotation_and_gradients_equal_the_original_in_float32():
    inputs = rotary_inputs()
    expected = rotated_and_gradients(ORIGINAL, *inputs)
    fused = rotated_and_gradients(apply_rotary_pos_emb, *inputs)
    for got, want in zip(fused, expected):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_under_autocast_the_rotation_comes_out_in_the_compute_dtype():
    """bf16 projections, float32 tables (as under autocast on GPUs): float32 arithmetic, bf16 result."""
    query, key, cos, sin = rotary_inputs(torch.bfloat16)
    expected = rotated_and_gradients(ORIGINAL, query, key, cos, sin)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = rotated_and_gradients(apply_rotary_pos_emb, query, key, cos, sin)
    assert fused[0].dtype == torch.bfloat16 and fused[2].dtype == torch.bfloat16
    torch.testing.assert_close(fused[0], expected[0].to(torch.bfloat16))
    torch.testing.assert_close(fused[1], expected[1].to(torch.bfloat16))
    torch.testing.assert_close(fused[2], expected[2], rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(fused[3], expected[3], rtol=1e-2, atol=1e-2)


def test_only_listed_modeling_modules_are_pointed_at_it(monkeypatch):
    from transformers.models.llama import modeling_llama

    monkeypatch.setattr(modeling_gte, "apply_rotary_pos_emb", ORIGINAL)
    assert use_fused_rotary(modeling_gte) and modeling_gte.apply_rotary_pos_emb is apply_rotary_pos_emb
    before = modeling_llama.apply_rotary_pos_emb
    assert not use_fused_rotary(modeling_llama) and modeling_llama.apply_rotary_pos_emb is before
