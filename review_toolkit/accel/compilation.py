"""torch.compile for a fine-tuned encoder's repeated layers."""

from __future__ import annotations

from collections import Counter

from torch import nn


def compile_encoder_layers(model: nn.Module) -> int:
    """Compile each of the model's encoder layers in place, dynamic in shape; returns how many.

    Eager transformer layers run dozens of small elementwise kernels per layer (dropout, residual
    adds, layer norms, rotary embeddings, gated activations); compiled, they fuse. Layers rather
    than the whole model: the layers of one encoder share their code, so one compiled graph serves
    them all, and compiling one layer takes a fraction of the time the whole model takes
    (benchmarks/README.md, "Compiled layers"); batches of any length reuse it (dynamic shapes, no recompiling for each
    length-sorted batch); and parameter names, hence checkpoints and run directories, stay as
    they are.
    """
    # The classes the encoder lists as its unsplittable blocks, where they repeat: its layers, not
    # its embeddings (BERT lists both).
    listed = set(getattr(model, "_no_split_modules", None) or ())
    counts = Counter(type(module).__name__ for module in model.modules())
    layers = [module for module in model.modules() if type(module).__name__ in listed and counts[type(module).__name__] > 1]
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def compile_for_scoring(encoder: nn.Module) -> int:
    """Compile the layers of a pooled encoder on a GPU for scoring; returns how many.

    The first batches of each new range of shapes pay the compiling (seconds to tens of seconds);
    every later one runs the fused layers (benchmarks/README.md, "GPU scoring").
    """
    import torch

    from review_toolkit.accel.packing import pretrained_model
    from review_toolkit.errors import ConfigError

    weight = next(encoder.parameters())
    if weight.device.type != "cuda":
        raise ConfigError(
            f"compile: compiled scoring runs on CUDA GPUs; this model is on {weight.device.type}. "
            "Leave --compile out on this machine."
        )
    model = pretrained_model(getattr(encoder, "transformer", encoder))
    layers = compile_encoder_layers(model if model is not None else encoder)
    from review_toolkit.accel.scoring_lanes import forget_scoring_lanes

    forget_scoring_lanes(encoder)  # small rows' graphs are recorded again, over the compiled layers
    if layers == 0:
        raise ConfigError(f"compile: found no repeated layers to compile in {type(model or encoder).__name__}.")
    torch.backends.cuda.matmul.allow_tf32 = True  # float32 products left outside autocast (the projection)
    return layers
