"""Rotary position embeddings for query and key in one autograd node.

transformers' ``apply_rotary_pos_emb`` computes ``x * cos + rotate_half(x) * sin``
for the query and then the key: ten kernels forward and, through the autograd
nodes of each multiply, slice, negation and concatenation, some twenty
backward, in every layer. At the default batch size a GPU step waits on the
host launching such small kernels. Here both tensors rotate together: five
kernels forward, seven backward, the same arithmetic in float32.

Under autocast the rotated tensors come out in the autocast dtype, which the
attention kernels would cast them to first thing; without autocast, in the
dtype the original computes.
"""

from __future__ import annotations

from types import ModuleType

import torch

#: transformers modeling modules whose ``apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)``
#: is the half-rotation form this module reproduces (checked by tests against the original).
FUSED_MODULES = ("transformers.models.gte.modeling_gte",)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rotate_half_transposed(y: torch.Tensor) -> torch.Tensor:
    """The adjoint of ``_rotate_half``: gradients flow back through it this way."""
    half = y.shape[-1] // 2
    return torch.cat((y[..., half:], -y[..., :half]), dim=-1)


class RotaryFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, key, cos, sin, output_dtype):
        both = torch.stack((query, key))
        rotated = torch.addcmul(both * cos, _rotate_half(both), sin)
        if output_dtype is not None:
            rotated = rotated.to(output_dtype)
        ctx.save_for_backward(cos, sin)
        ctx.dtypes = (query.dtype, key.dtype)
        return rotated[0], rotated[1]

    @staticmethod
    def backward(ctx, grad_query, grad_key):
        cos, sin = ctx.saved_tensors
        grads = torch.stack((grad_query, grad_key))
        grads = torch.addcmul(_rotate_half_transposed(grads * sin), grads, cos)
        return grads[0].to(ctx.dtypes[0]), grads[1].to(ctx.dtypes[1]), None, None, None


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim: int = 1):
    """Drop-in for transformers' function of the same name (half-rotation form)."""
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    device_type = q.device.type
    output_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    if q.dtype != k.dtype or cos.requires_grad or sin.requires_grad:
        return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
    return RotaryFunction.apply(q, k, cos, sin, output_dtype)


def use_fused_rotary(modeling_module: ModuleType) -> bool:
    """Point ``modeling_module``'s rotary embedding at ``apply_rotary_pos_emb``; False where not listed."""
    if modeling_module.__name__ not in FUSED_MODULES or not hasattr(modeling_module, "apply_rotary_pos_emb"):
        return False
    modeling_module.apply_rotary_pos_emb = apply_rotary_pos_emb
    return True
