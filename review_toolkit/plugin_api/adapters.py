"""LoRA and 4-bit quantization on a PooledEncoder, shared by the lora and qlora methods.

Adapters go on ``encoder.transformer`` only, so the pooling projection and the
head are never quantized nor replaced (the head is lost on save in peer tools
when it sits inside the PEFT model; here it is saved on its own).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from review_toolkit.errors import ConfigError
from review_toolkit.plugin_api.contracts import Backbone
from review_toolkit.plugin_api.options import PluginOption
from review_toolkit.plugin_api.search import Search
from review_toolkit.runtime.hub import is_hub_id, portable_checkpoint_name

ADAPTER_DIRECTORY = "adapter"

#: The options of the lora and qlora methods. Each name is a ``peft.LoraConfig`` field and goes
#: to it unchanged, so a new LoRA option is one more line here. ``--lora-r``, ``--lora-alpha``,
#: ``--lora-dropout`` and ``--lora-targets`` (``lora_r:`` ... in config files) set them too.
LORA_OPTIONS: tuple[PluginOption, ...] = (
    PluginOption("r", int, 16, "LoRA rank: the inner size of each adapter.", minimum=1, search=Search(choices=(4, 8, 16, 32))),
    PluginOption(
        "lora_alpha", int, 32, "LoRA alpha: adapters are scaled by lora_alpha / r.", minimum=1,
        search=Search(choices=(8, 16, 32, 64)),
    ),
    PluginOption(
        "lora_dropout", float, 0.05, "Dropout on each adapter's input.",
        check=lambda value: None if 0 <= value < 1 else "must be in [0, 1)", search=Search(low=0.0, high=0.2),
    ),
    PluginOption(
        "target_modules", tuple[str, ...], None,
        "Module-name suffixes to adapt, comma-separated, or 'attention' for the backbone's attention "
        "projections alone (not set: the backbone's lora_targets).",
    ),
)


def lora_config(backbone: Backbone, options: Mapping[str, Any]) -> Any:
    """PEFT's LoraConfig from a method's options (``LORA_OPTIONS``); targets default to the backbone's."""
    from peft import LoraConfig

    values = dict(options)
    targets = list(values.pop("target_modules", None) or backbone.lora_targets)
    if targets == ["attention"]:
        targets = list(backbone.attention_lora_targets or backbone.lora_targets)
    if not targets:
        raise ConfigError(
            f"The backbone {backbone.name!r} declares no LoRA target modules; pass --lora-targets "
            "with the names of its attention projections (for example query,key,value)."
        )
    return LoraConfig(**values, target_modules=targets, bias="none")


@contextlib.contextmanager
def transformers_deprecations_quiet():
    """PEFT reads transformers' deprecated ``is_gradient_checkpointing``; its FutureWarning is about
    the two libraries' code, nothing a user of this toolkit can change."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def add_lora(encoder: nn.Module, backbone: Backbone, options: Mapping[str, Any]) -> nn.Module:
    """Wrap ``encoder.transformer`` with fresh LoRA adapters; everything else in it is frozen.

    ``options`` are the method's (``LORA_OPTIONS`` values: ``self.options``).
    """
    from peft import get_peft_model

    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    try:
        with transformers_deprecations_quiet():
            encoder.transformer = get_peft_model(encoder.transformer, lora_config(backbone, options))
    except ValueError as error:  # PEFT's message when no module matches the targets
        raise ConfigError(
            f"LoRA could not be applied to backbone {backbone.name!r}: {str(error).rstrip('.')}. "
            "Check --lora-targets against the model's module names."
        ) from error
    if compute_dtype() == torch.bfloat16:
        keep_activations_in_compute_dtype(encoder)
    return encoder


def keep_activations_in_compute_dtype(encoder: nn.Module) -> None:
    """Let autocast choose the adapters' matmul precision instead of copying activations to float32.

    PEFT casts each adapted layer's input to the adapter's float32 dtype: a full
    float32 copy of the activations per adapted module, kept for backward, and
    float32 products on top. Under bf16 autocast (GPU training and inference
    here) the products run in bf16 anyway, so the copies are pure cost.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in encoder.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False


def enable_gradient_checkpointing(encoder: nn.Module, config: Any) -> nn.Module:
    """Recompute activations in backward when ``config.gradient_checkpointing`` asks for it.

    A method's duty (the toolkit does not do it for the method): call this on the pooled encoder
    in ``load_for_training``. Trades about a third more compute for activation memory that no
    longer grows with depth.
    """
    if config.gradient_checkpointing:
        _checkpoint_activations(encoder.transformer)
    return encoder


def _checkpoint_activations(transformer: nn.Module) -> None:
    """transformers' current call (``activation_checkpointing_enable``), its deprecated alias before it existed.

    Non-reentrant checkpointing needs no input that requires grad, so frozen embeddings are fine.
    """
    kwargs = {"use_reentrant": False}
    enable = getattr(transformer, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        transformer.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def save_adapter(encoder: nn.Module, directory: Path) -> None:
    """Adapters in PEFT's own format (adapter_config.json + adapter_model.safetensors) and a short README.

    ``base_model_name_or_path`` names the base by its Hub id, or, for a local checkpoint, by a path
    relative to the adapter folder: PEFT would record the absolute path it was loaded from (a
    home or site-packages folder of this machine). Loading the run never reads that field.
    """
    import json

    folder = directory / ADAPTER_DIRECTORY
    encoder.transformer.save_pretrained(folder)
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    base = getattr(encoder, "base_model", "") or config.get("base_model_name_or_path") or ""
    portable = portable_checkpoint_name(base, folder) if base else None
    # Rewritten after PEFT's save, which looks the base up by this name (relative to no folder of its own).
    config["base_model_name_or_path"] = portable
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    # PEFT writes its empty model-card template here; the run's own README.md is the model card.
    (folder / "README.md").write_text(_adapter_readme(portable), encoding="utf-8")


def _adapter_readme(base: str | None) -> str:
    base_line = f"Base model: `{base}`" + ("" if base is None or is_hub_id(base) else " (relative to this folder)")
    return (
        "# LoRA adapter\n\n"
        f"The LoRA adapter (PEFT format) of a review_toolkit run; the run's model card is `../README.md`. {base_line}.\n\n"
        "```python\n"
        "from peft import PeftModel\n"
        "from transformers import AutoModel\n\n"
        "model = PeftModel.from_pretrained(AutoModel.from_pretrained(BASE), \"RUN/adapter\")\n"
        "```\n\n"
        "Vectors are the mean of the last hidden states over the non-padding tokens; the run's head "
        "(`../head.safetensors`) scores them. `review_toolkit.load_run(\"RUN\")` rebuilds the whole classifier.\n"
    )


def load_adapter(encoder: nn.Module, directory: Path) -> nn.Module:
    from peft import PeftModel

    with transformers_deprecations_quiet():
        encoder.transformer = PeftModel.from_pretrained(encoder.transformer, directory / ADAPTER_DIRECTORY)
    encoder.eval()
    return encoder


def frozen_weights_dtype() -> torch.dtype | None:
    """The dtype of a LoRA base whose weights never change: bf16 where the GPU computes in it.

    Frozen float32 weights would be cast to bf16 by autocast on every forward
    pass (a full copy of the model per step) and take twice the memory.
    ``None`` keeps the backbone's float32 default (CPUs, older GPUs).
    """
    return torch.bfloat16 if compute_dtype() == torch.bfloat16 else None


def compute_dtype() -> torch.dtype:
    """bf16 where the GPU supports it, else float32 (CPUs and older GPUs)."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def four_bit_config(backbone: Backbone) -> Any:
    """NF4 with double quantization; the backbone's skip list stays in full precision."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype(),
        llm_int8_skip_modules=list(backbone.quantization_skip) or None,
    )


def local_device_map() -> dict[str, Any]:
    """Place a quantized model on this process's own device (one GPU per process under accelerate)."""
    if torch.cuda.is_available():
        from accelerate import PartialState

        return {"": PartialState().local_process_index}
    return {"": "cpu"}


def load_quantized(backbone: Backbone, checkpoint: str, config: Any) -> nn.Module:
    """The backbone in 4-bit, prepared for k-bit training the same way at train and reload time.

    Reload must repeat exactly what training did (same quantization, same
    casts), otherwise the reloaded classifier scores differently from the one
    that was trained.
    """
    from peft import prepare_model_for_kbit_training

    encoder = backbone.load_encoder(
        checkpoint, quantization_config=four_bit_config(backbone), device_map=local_device_map()
    )
    # PEFT would enable checkpointing through transformers' deprecated call; the toolkit's helper
    # does the same through the current one (non-reentrant: PEFT adds nothing else then).
    encoder.transformer = prepare_model_for_kbit_training(encoder.transformer, use_gradient_checkpointing=False)
    enable_gradient_checkpointing(encoder, config)
    keep_cpu_weights_trainable(encoder)
    return encoder


def keep_cpu_weights_trainable(encoder: nn.Module) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference.

    On CPUs with AVX512-BF16, the first forward pass in eval mode repacks the
    weights in place into an inference-only layout; training after that (the
    next epoch, after a validation pass) then fails in backward. Keeping the
    training layout costs some CPU inference speed and gives the same numbers
    before and after a save.
    """
    for module in encoder.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
