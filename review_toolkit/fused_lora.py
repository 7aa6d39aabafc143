"""LoRA layers trained as one autograd node each.

PEFT computes an adapted linear layer as a chain of modules: the base layer
(for 4-bit weights, bitsandbytes' matmul with its own casts and checks, the
double-quantized block scales dequantized again on every call), a defensive
clone, dropout, ``lora_A``, ``lora_B``, a scaling multiply and an add, each
with dtype casts under autocast. On a GPU at the default batch size a training
step is bound by the CPU launching those thousands of small operations, not by
arithmetic, and every link in the chain keeps its own copy of the activations
for backward.

Here each adapted layer's forward and backward are written out by hand in one
``torch.autograd.Function``: the same products in fewer operations, and only the
layer's input (one copy for the layers that read the same input), its dropout
mask and the rank-r intermediate kept for backward. Frozen 4-bit layers
without adapters get the same treatment for the base product alone. The block
scales of double-quantized weights are dequantized once, when the layers are
fused (float32, one value per 64 weights: about 1% of the 4-bit weights'
memory).

Nothing changes in what is saved: the modules, their parameters and PEFT's
adapter format stay as they are, and a reloaded adapter runs through PEFT.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn


class FrozenDense:
    """A frozen ``nn.Linear``: its weight as stored (bf16 on GPUs for LoRA bases)."""

    def __init__(self, layer: nn.Linear) -> None:
        self.layer = layer

    def weight(self, dtype: torch.dtype) -> torch.Tensor:
        return self.layer.weight.to(dtype)

    def bias(self, dtype: torch.dtype) -> torch.Tensor | None:
        return None if self.layer.bias is None else self.layer.bias.to(dtype)


class FrozenFourBit(FrozenDense):
    """A bitsandbytes ``Linear4bit``, dequantized on the fly with block scales kept in float32."""

    def __init__(self, layer: nn.Module) -> None:
        import bitsandbytes.functional as bnb_functional

        super().__init__(layer)
        state = layer.weight.quant_state
        self.shape = list(state.shape)
        self.blocksize = state.blocksize
        self.quant_type = state.quant_type
        if state.nested:
            self.absmax = (bnb_functional.dequantize_blockwise(state.absmax, state.state2) + state.offset).float()
        else:
            self.absmax = state.absmax.float()

    def weight(self, dtype: torch.dtype) -> torch.Tensor:
        packed = self.layer.weight.data
        if self.absmax.device != packed.device:  # the layer was moved after fusing
            self.absmax = self.absmax.to(packed.device)
        return torch.ops.bitsandbytes.dequantize_4bit.default(
            packed.view(-1, 1), self.absmax, self.blocksize, self.quant_type, self.shape, dtype
        )


class _LastCast:
    """The most recent input cast to the compute dtype, reused while the same tensor comes again.

    The query, key and value projections read the same hidden states; under autocast these
    are float32 (layer norms run in float32), and each layer would make and keep its own
    bf16 copy. The source is held by weak reference, and the copy is let go when the
    source is: the cache keeps nothing alive beyond its use.
    """

    def __init__(self) -> None:
        self.source: weakref.ref | None = None
        self.version = -1
        self.result: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if x.dtype == dtype:
            return x
        if x.is_inference():  # no version counter to tell an in-place change: not cached
            return x.to(dtype)
        result = self.result
        if self.source is not None and self.source() is x and self.version == x._version and result.dtype == dtype:
            return result
        result = x.to(dtype)
        self.source, self.version, self.result = weakref.ref(x, self._forget), x._version, result
        return result

    def _forget(self, source: weakref.ref) -> None:
        if self.source is source:
            self.source = self.result = None


_cast_rows = _LastCast()


class LoraLinearFunction(torch.autograd.Function):
    """y = x W^T + b + scaling * (dropout(x) A^T) B^T, with gradients for x, A and B only.

    ``lora_a``/``lora_b`` may be None (a frozen layer without adapters). Products run in
    ``dtype`` (the autocast dtype, or the input's); gradients come back in each input's dtype.
    Kept for backward: the input in ``dtype`` (shared by layers that read the same input),
    the dropout mask, the rank-r intermediate and the adapters in ``dtype``.
    """

    @staticmethod
    def forward(ctx, x, lora_a, lora_b, base, scaling: float, dropout: float, dtype: torch.dtype):
        rows = _cast_rows(x, dtype)  # keyed by the tensor the layers share, before any reshape
        rows = rows.reshape(-1, rows.shape[-1])
        output = torch.nn.functional.linear(rows, base.weight(dtype), base.bias(dtype))
        if lora_a is not None:
            mask = None
            if dropout > 0:
                dropped, mask = torch.native_dropout(rows, dropout, True)
            else:
                dropped = rows
            a, b = lora_a.to(dtype), lora_b.to(dtype)
            down = dropped @ a.t()
            output.addmm_(down, b.t(), alpha=scaling)
            ctx.save_for_backward(rows, mask, down, a, b)
        ctx.base, ctx.scaling, ctx.dropout, ctx.dtype = base, scaling, dropout, dtype
        ctx.input_shape, ctx.input_dtype = x.shape, x.dtype
        ctx.adapter_dtypes = None if lora_a is None else (lora_a.dtype, lora_b.dtype)
        return output.view(*x.shape[:-1], output.shape[-1])

    @staticmethod
    def backward(ctx, grad_output):
        grad_rows = grad_output.reshape(-1, grad_output.shape[-1]).to(ctx.dtype)
        grad_x = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_rows @ ctx.base.weight(ctx.dtype)
        saved = ctx.saved_tensors  # once: under activation checkpointing each read recomputes
        if saved:
            rows, mask, down, a, b = saved
            a_dtype, b_dtype = ctx.adapter_dtypes
            grad_down = (grad_rows @ b).mul_(ctx.scaling)
            grad_b = (grad_rows.t() @ down).mul_(ctx.scaling).to(b_dtype)
            keep = None if mask is None else 1.0 / (1.0 - ctx.dropout)
            dropped = rows if mask is None else torch.ops.aten.native_dropout_backward(rows, mask, keep)
            grad_a = (grad_down.t() @ dropped).to(a_dtype)
            if grad_x is not None:
                grad_dropped = grad_down @ a
                if mask is not None:
                    grad_dropped = torch.ops.aten.native_dropout_backward(grad_dropped, mask, keep)
                grad_x.add_(grad_dropped)
        if grad_x is not None:
            grad_x = grad_x.view(ctx.input_shape).to(ctx.input_dtype)
        return grad_x, grad_a, grad_b, None, None, None, None


def compute_dtype_for(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would multiply ``x`` in: its dtype when autocast is off."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def frozen_base(layer: nn.Module) -> FrozenDense | None:
    """The fused form of a frozen base layer, or None for a kind this module does not handle."""
    if type(layer) is nn.Linear:
        return FrozenDense(layer)
    try:
        import bitsandbytes as bnb
    except ImportError:
        return None
    if isinstance(layer, bnb.nn.Linear4bit) and getattr(layer.weight, "quant_state", None) is not None:
        return FrozenFourBit(layer)
    return None


def _plain_lora(module: nn.Module) -> tuple[str, Any] | None:
    """(adapter name, fused base) for a LoRA layer this module can fuse: one vanilla adapter."""
    adapters = list(getattr(module, "active_adapters", []))
    if len(adapters) != 1:
        return None
    name = adapters[0]
    if name not in module.lora_A:
        return None
    if name in getattr(module, "lora_variant", {}) or getattr(module, "lora_bias", {}).get(name, False):
        return None  # DoRA and other variants, trained adapter biases
    if getattr(module, "fan_in_fan_out", False):
        return None
    dropout = module.lora_dropout[name]
    if not isinstance(dropout, (nn.Dropout, nn.Identity)):
        return None
    base = frozen_base(module.get_base_layer())
    return (name, base) if base is not None else None


def _fused_lora_forward(module: nn.Module, name: str, base: Any, peft_forward):
    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if args or kwargs or module.disable_adapters or module.merged or list(module.active_adapters) != [name]:
            return peft_forward(x, *args, **kwargs)
        # Looked up on every call: wrappers such as FSDP may swap the parameter objects.
        dropout_module = module.lora_dropout[name]
        dropout = dropout_module.p if isinstance(dropout_module, nn.Dropout) and module.training else 0.0
        return LoraLinearFunction.apply(
            x, module.lora_A[name].weight, module.lora_B[name].weight, base, module.scaling[name], dropout,
            compute_dtype_for(x),
        )

    return forward


def _fused_frozen_forward(base: FrozenFourBit):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return LoraLinearFunction.apply(x, None, None, base, 1.0, 0.0, compute_dtype_for(x))

    return forward


def fuse_lora_layers(model: nn.Module) -> int:
    """Give every plain LoRA layer and every frozen 4-bit layer of ``model`` the fused forward.

    Returns how many layers were fused. Layers of other kinds (DoRA, several adapters,
    embeddings, convolutions) keep PEFT's forward. The change is to the module instances'
    ``forward`` only; calling this twice is harmless.
    """
    from peft.tuners.lora import LoraLayer

    fused = 0
    adapted_bases = set()
    for module in model.modules():
        if isinstance(module, LoraLayer):
            adapted_bases.add(id(module.get_base_layer()))
            plain = None if getattr(module, "_fused_lora", False) else _plain_lora(module)
            if plain is None:
                continue
            name, base = plain
            module.forward = _fused_lora_forward(module, name, base, module.forward)
            module._fused_lora = True
            fused += 1
    for module in model.modules():
        if id(module) in adapted_bases or getattr(module, "_fused_lora", False):
            continue
        base = frozen_base(module)
        if isinstance(base, FrozenFourBit) and not any(p.requires_grad for p in module.parameters()):
            module.forward = _fused_frozen_forward(base)
            module._fused_lora = True
            fused += 1
    return fused
