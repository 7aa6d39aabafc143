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
fused (float32, one value per block of weights: small beside the weights).

Sibling layers that read the same input (query, key and value; a gated
feed-forward's gate and up projections) go one step further: their frozen
weights move into one buffer (the layers' own weights become views of it), and
the first of them to be called computes all of their outputs in one autograd
node, one dequantization and one batched product, handing the others theirs
when they are called with the same input.

Nothing changes in what is saved: the modules, their parameters and PEFT's
adapter format stay as they are, and a reloaded adapter runs through PEFT.
"""

from __future__ import annotations

import ctypes
import functools
import weakref
from typing import Any

import torch
from torch import nn


class FrozenCopy:
    """``tensor.to(dtype)`` of a frozen tensor, made once and made again only if the tensor changes.

    4-bit layers keep their biases in float32; casting them on every call is a kernel launch per
    layer per step for a result that never changes.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.copy: torch.Tensor | None = None

    def __call__(self, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if tensor.dtype == dtype:
            return tensor
        if tensor.is_inference():  # no version counter to tell a change: not kept
            return tensor.to(dtype)
        key = (tensor.data_ptr(), tensor.device, tensor._version, dtype)
        if key != self.key:
            self.key, self.copy = key, tensor.to(dtype)
        return self.copy


class FrozenDense:
    """A frozen ``nn.Linear``: its weight as stored (bf16 on GPUs for LoRA bases)."""

    def __init__(self, layer: nn.Linear) -> None:
        self.layer = layer
        self._bias = FrozenCopy()

    def weight(self, dtype: torch.dtype) -> torch.Tensor:
        return self.layer.weight.to(dtype)

    def bias(self, dtype: torch.dtype) -> torch.Tensor | None:
        return None if self.layer.bias is None else self._bias(self.layer.bias, dtype)


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
        return dequantize_4bit(packed, self.absmax, self.blocksize, self.quant_type, self.shape, dtype)


#: Argument types of bitsandbytes' CUDA dequantization entry points that ``dequantize_4bit`` calls
#: directly: (code, packed, absmax, out, blocksize, count, stream).
_DEQUANTIZE_ARGUMENTS = [ctypes.c_void_p] * 4 + [ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p]
_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


@functools.cache
def _dequantize_entry_point(quant_type: str, dtype: torch.dtype) -> Any:
    """bitsandbytes' CUDA function that dequantizes ``quant_type`` weights to ``dtype``, or None
    where this install's library does not declare the arguments ``dequantize_4bit`` passes."""
    if dtype not in _DTYPE_NAMES or quant_type not in ("nf4", "fp4"):
        return None
    try:
        import bitsandbytes.backends.cuda.ops  # noqa: F401  (declares the entry points' argument types)
        from bitsandbytes.cextension import lib

        function = getattr(lib, f"cdequantize_blockwise_{_DTYPE_NAMES[dtype]}_{quant_type}")
        declared = list(function.argtypes or ())
    except Exception:  # a CPU-only build, another version's layout
        return None
    return function if declared == _DEQUANTIZE_ARGUMENTS else None


def dequantize_4bit(
    packed: torch.Tensor, absmax: torch.Tensor, blocksize: int, quant_type: str, shape: list[int], dtype: torch.dtype
) -> torch.Tensor:
    """4-bit weights (float32 block scales) to a ``shape`` tensor of ``dtype``.

    On a GPU this calls bitsandbytes' CUDA function itself. Its registered operator does the
    same work behind PyTorch's operator dispatch and bitsandbytes' Python checks, host time paid
    on every call; a training step at the default batch makes a couple of hundred of them and
    waits on the host (profile in benchmarks/README.md, "Host time per step"). Elsewhere, or
    where the library's layout differs, the operator runs.
    """
    entry_point = None
    if packed.is_cuda and packed.is_contiguous() and absmax.is_contiguous():
        entry_point = _dequantize_entry_point(quant_type, dtype)
    if entry_point is None or packed.device.index != torch.cuda.current_device():
        return torch.ops.bitsandbytes.dequantize_4bit.default(packed.view(-1, 1), absmax, blocksize, quant_type, shape, dtype)
    out = torch.empty(shape, dtype=dtype, device=packed.device)
    entry_point(
        None, packed.data_ptr(), absmax.data_ptr(), out.data_ptr(), blocksize, out.numel(),
        torch._C._cuda_getCurrentRawStream(packed.device.index),
    )
    return out


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


def _fused_dropout(module: nn.Module, name: str) -> float | None:
    """The adapter dropout the fused forward applies now, or None where PEFT's forward must run
    (adapters disabled, merged, or another set active)."""
    if module.disable_adapters or module.merged or list(module.active_adapters) != [name]:
        return None
    dropout = module.lora_dropout[name]
    return dropout.p if isinstance(dropout, nn.Dropout) and module.training else 0.0


def _fused_lora_forward(module: nn.Module, name: str, base: Any, peft_forward):
    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        dropout = None if args or kwargs else _fused_dropout(module, name)
        if dropout is None:
            return peft_forward(x, *args, **kwargs)
        # Looked up on every call: wrappers such as FSDP may swap the parameter objects.
        return LoraLinearFunction.apply(
            x, module.lora_A[name].weight, module.lora_B[name].weight, base, module.scaling[name], dropout,
            compute_dtype_for(x),
        )

    return forward


def _fused_frozen_forward(base: FrozenFourBit):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return LoraLinearFunction.apply(x, None, None, base, 1.0, 0.0, compute_dtype_for(x))

    return forward


#: Names of sibling layers that transformer blocks call one after another on the same input.
SIBLING_NAMES = (
    ("q_proj", "k_proj", "v_proj"),  # gte, Llama-style attention
    ("query", "key", "value"),  # BERT
    ("q", "k", "v"),  # T5
    ("gate_proj", "up_proj"),  # gated feed-forward (gte)
    ("wi_0", "wi_1"),  # T5's gated feed-forward
)


class StackedBases:
    """Frozen weights of sibling layers in one buffer; each layer's own weight and bias become views of it.

    One dequantization (4-bit) or none (dense) then yields all the weights, [siblings, out, in].
    ``intact`` tells whether the layers still point into the buffer (a move to another device or
    a replaced weight gives them new storage; the siblings are then computed one by one).
    """

    def __init__(self, bases: list[FrozenDense]) -> None:
        self.bases = bases
        layers = [base.layer for base in bases]
        self.four_bit = isinstance(bases[0], FrozenFourBit)
        out_features, in_features = layers[0].weight.shape if not self.four_bit else bases[0].shape
        self.shape = [len(layers), out_features, in_features]
        with torch.no_grad():
            if self.four_bit:
                packed = torch.cat([layer.weight.data.reshape(-1) for layer in layers])
                for layer, view in zip(layers, packed.chunk(len(layers))):
                    layer.weight.data = view.view_as(layer.weight.data)
                self.packed = packed
                self.absmax = torch.cat([base.absmax for base in bases])
                self.blocksize, self.quant_type = bases[0].blocksize, bases[0].quant_type
            else:
                self.stacked = torch.stack([layer.weight.data for layer in layers])
                for layer, view in zip(layers, self.stacked.unbind(0)):
                    layer.weight.data = view
            self.stacked_bias = None
            if layers[0].bias is not None:
                self.stacked_bias = torch.stack([layer.bias.data for layer in layers]).unsqueeze(1)
                for layer, view in zip(layers, self.stacked_bias.unbind(0)):
                    layer.bias.data = view[0]
        self.pointers = [self._pointers(layer) for layer in layers]
        self._bias = FrozenCopy()

    @staticmethod
    def _pointers(layer: nn.Module) -> tuple[int, int]:
        return layer.weight.data_ptr(), 0 if layer.bias is None else layer.bias.data_ptr()

    def intact(self) -> bool:
        return all(self._pointers(base.layer) == pointers for base, pointers in zip(self.bases, self.pointers))

    def weights(self, dtype: torch.dtype) -> torch.Tensor:
        if not self.four_bit:
            return self.stacked.to(dtype)
        return dequantize_4bit(self.packed, self.absmax, self.blocksize, self.quant_type, self.shape, dtype)

    def bias(self, dtype: torch.dtype) -> torch.Tensor | None:
        return None if self.stacked_bias is None else self._bias(self.stacked_bias, dtype)


class SiblingLinearFunction(torch.autograd.Function):
    """``LoraLinearFunction`` for sibling layers at once: one output per sibling.

    ``adapters`` holds each sibling's (A, B), or nothing for frozen siblings. Each sibling draws
    its own dropout mask, in sibling order, as PEFT's layers do when called in turn.
    """

    @staticmethod
    def forward(ctx, x, group, dropout: float, dtype: torch.dtype, *adapters):
        rows = _cast_rows(x, dtype)
        rows = rows.reshape(-1, rows.shape[-1])
        count = group.size
        weights = group.bases.weights(dtype).transpose(1, 2)
        bias = group.bases.bias(dtype)
        together = rows.expand(count, *rows.shape)
        output = torch.bmm(together, weights) if bias is None else torch.baddbmm(bias, together, weights)
        masks = None
        if adapters:
            a = torch.stack(adapters[0::2]).to(dtype)  # [siblings, r, in]
            b = torch.stack(adapters[1::2]).to(dtype)  # [siblings, out, r]
            dropped = together
            if dropout > 0:
                pairs = [torch.native_dropout(rows, dropout, True) for _ in range(count)]
                dropped = torch.stack([kept for kept, _ in pairs])
                masks = torch.stack([mask for _, mask in pairs])
            down = torch.bmm(dropped, a.transpose(1, 2))
            output.baddbmm_(down, b.transpose(1, 2), alpha=group.scaling)
            ctx.save_for_backward(rows, masks, down, a, b)
            ctx.adapter_dtypes = (adapters[0].dtype, adapters[1].dtype)
        ctx.group, ctx.dropout, ctx.dtype = group, dropout, dtype
        ctx.input_shape, ctx.input_dtype = x.shape, x.dtype
        # Views of one [siblings, tokens, out] tensor; the encoders reshape them, never change them in place.
        return tuple(sibling.view(*x.shape[:-1], sibling.shape[-1]) for sibling in output.unbind(0))

    @staticmethod
    def backward(ctx, *grad_outputs):
        grads = torch.stack([grad.reshape(-1, grad.shape[-1]) for grad in grad_outputs]).to(ctx.dtype)
        group = ctx.group
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(grads, group.bases.weights(ctx.dtype))  # [siblings, tokens, in]
        adapter_grads: list[torch.Tensor | None] = [None] * (len(ctx.needs_input_grad) - 4)
        saved = ctx.saved_tensors  # once: under activation checkpointing each read recomputes
        if saved:
            rows, masks, down, a, b = saved
            a_dtype, b_dtype = ctx.adapter_dtypes
            keep = 1.0 / (1.0 - ctx.dropout) if masks is not None else None
            together = rows.expand(len(grad_outputs), *rows.shape)
            dropped = together if masks is None else torch.ops.aten.native_dropout_backward(together, masks, keep)
            grad_down = torch.bmm(grads, b).mul_(group.scaling)
            grad_b = torch.bmm(grads.transpose(1, 2), down).mul_(group.scaling).to(b_dtype)
            grad_a = torch.bmm(grad_down.transpose(1, 2), dropped).to(a_dtype)
            adapter_grads[0::2], adapter_grads[1::2] = grad_a.unbind(0), grad_b.unbind(0)
            if grad_x is not None:
                grad_dropped = torch.bmm(grad_down, a)
                if masks is not None:
                    grad_dropped = torch.ops.aten.native_dropout_backward(grad_dropped, masks, keep)
                grad_x.add_(grad_dropped)
        if grad_x is not None:
            grad_x = grad_x.sum(0, dtype=ctx.input_dtype).view(ctx.input_shape)  # summed and cast in one kernel
        return grad_x, None, None, None, *adapter_grads


class SiblingGroup:
    """Sibling layers computed together by whichever is called first; the others collect their outputs.

    An output waits only for a call with the very input it was computed from (same tensor, not
    changed in place since); any other call computes that layer alone, as before.
    """

    def __init__(self, members: list[tuple[nn.Module, str | None, FrozenDense]], scaling: float) -> None:
        self.modules = [module for module, _, _ in members]
        self.adapter_names = [name for _, name, _ in members]
        self.size = len(members)
        self.scaling = scaling
        self.bases: StackedBases | None = StackedBases([base for _, _, base in members])
        self.source: weakref.ref | None = None
        self.version = -1
        self.pending: dict[int, torch.Tensor] = {}

    def take(self, index: int, x: torch.Tensor) -> torch.Tensor | None:
        if self.source is None or self.source() is not x or x.is_inference() or x._version != self.version:
            return None
        return self.pending.pop(index, None)

    def _dropout(self) -> float | None:
        """The siblings' common adapter dropout now, or None when they differ or cannot be fused."""
        rates = {_fused_dropout(m, name) for m, name in zip(self.modules, self.adapter_names) if name is not None}
        if not rates:
            return 0.0  # frozen siblings
        return rates.pop() if len(rates) == 1 and None not in rates else None

    def compute(self, index: int, x: torch.Tensor) -> torch.Tensor | None:
        """Every sibling's output for ``x``; returns ``index``'s and keeps the others'. None: not possible now."""
        if self.bases is None or x.is_inference():
            return None
        if not self.bases.intact():
            # The layers got new storage (moved, or wrapped by a sharding wrapper): for good, alone,
            # and the buffer they no longer use is let go.
            self.bases = None
            return None
        dropout = self._dropout()
        if dropout is None:
            return None
        adapters = []
        for module, name in zip(self.modules, self.adapter_names):
            if name is not None:
                adapters += [module.lora_A[name].weight, module.lora_B[name].weight]
        outputs = SiblingLinearFunction.apply(x, self, dropout, compute_dtype_for(x), *adapters)
        self.pending = {i: output for i, output in enumerate(outputs) if i != index}
        self.source, self.version = weakref.ref(x, self._forget), x._version
        return outputs[index]

    def _forget(self, source: weakref.ref) -> None:
        if self.source is source:
            self.source, self.pending = None, {}


def _sibling_forward(group: SiblingGroup, index: int, alone):
    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if args or kwargs:
            return alone(x, *args, **kwargs)
        output = group.take(index, x)
        if output is None:
            output = group.compute(index, x)
        return alone(x) if output is None else output

    return forward


def _groupable(module: nn.Module) -> tuple[str | None, FrozenDense, tuple] | None:
    """(adapter name or None, fused base, what siblings must share) for a fused layer, else None."""
    base = getattr(module, "_fused_base", None)
    if base is None:
        return None
    name = getattr(module, "_fused_adapter", None)
    layer = base.layer
    kind = (name is None, type(base), tuple(base.shape) if isinstance(base, FrozenFourBit) else tuple(layer.weight.shape),
            getattr(base, "blocksize", None), getattr(base, "quant_type", None), layer.weight.dtype,
            layer.weight.device, layer.bias is None)
    if name is not None:
        lora_a = module.lora_A[name]
        kind += (lora_a.weight.shape, lora_a.weight.dtype, module.scaling[name], type(module.lora_dropout[name]))
    return name, base, kind


def group_sibling_layers(model: nn.Module) -> int:
    """Group fused sibling layers (``SIBLING_NAMES``) that can be computed together; returns how many groups."""
    groups = 0
    for parent in list(model.modules()):
        for names in SIBLING_NAMES:
            # Siblings of one kind each: adapted ones together, frozen ones together.
            by_kind: dict[tuple, list] = {}
            for attribute in names:
                child = getattr(parent, attribute, None)
                described = _groupable(child) if isinstance(child, nn.Module) else None
                if described is not None and not getattr(child, "_fused_sibling", False):
                    name, base, kind = described
                    by_kind.setdefault(kind, []).append((child, name, base))
            for members in by_kind.values():
                if len(members) < 2:
                    continue
                first, name, _ = members[0]
                group = SiblingGroup(members, first.scaling[name] if name is not None else 1.0)
                for index, (member, _, _) in enumerate(members):
                    member.forward = _sibling_forward(group, index, member.forward)
                    member._fused_sibling = True
                groups += 1
    return groups


def has_lora_layers(model: nn.Module) -> bool:
    """Whether ``model`` holds PEFT LoRA layers (what ``fuse_lora_layers`` is for)."""
    from peft.tuners.lora import LoraLayer

    return any(isinstance(module, LoraLayer) for module in model.modules())


def fuse_lora_layers(model: nn.Module) -> int:
    """Give every plain LoRA layer and every frozen 4-bit layer of ``model`` the fused forward,
    and let siblings that read the same input compute together.

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
            module._fused_lora, module._fused_base, module._fused_adapter = True, base, name
            fused += 1
    for module in model.modules():
        if id(module) in adapted_bases or getattr(module, "_fused_lora", False):
            continue
        base = frozen_base(module)
        if isinstance(base, FrozenFourBit) and not any(p.requires_grad for p in module.parameters()):
            module.forward = _fused_frozen_forward(base)
            module._fused_lora, module._fused_base = True, base
            fused += 1
    group_sibling_layers(model)
    return fused
