"""stella: NovaSearch/stella_en_400M_v5 on transformers' native ``gte`` classes, no downloaded code run.

Stella ships a config of model type ``"new"`` whose ``auto_map`` points at
remote Python (Alibaba-NLP/new-impl). The architecture is the one transformers
ships natively as ``gte`` (``GteModel``), and transformers' own checkpoint
conversion renames and splits the ``new`` weights (packed ``qkv_proj`` and
``up_gate_proj``, ``encoder.layer.N`` ...) into it while loading. What is left
is the configuration, rewritten here in memory (``native_gte_config``):

============================  ===============================================
``new`` field                 native ``GteConfig``
============================  ===============================================
vocab_size, hidden_size,      copied (``new`` defaults where absent:
num_hidden_layers,            max_position_embeddings 2048, type_vocab_size 1,
num_attention_heads,          pad_token_id None)
intermediate_size,
hidden_act, *dropout_prob,
max_position_embeddings,
type_vocab_size,
initializer_range,
layer_norm_eps, pad_token_id,
classifier_dropout
rope_theta, rope_scaling      ``rope_parameters`` (see ``gte_rope_parameters``):
                              none -> default RoPE with ``rope_theta``;
                              ``{"type": "ntk", "factor": f}`` (fixed NTK) ->
                              ``linear`` RoPE with theta ``rope_theta * f`` and
                              factor ``f ** (2 / head_dim)``: the same inverse
                              frequencies new-impl computes
pack_qkv                      weight layout only; packed weights are split
                              while loading (unpacked ones are refused)
unpad_inputs,                 kernels only (xformers); the native model runs
use_memory_efficient_attn.    eager/SDPA on padded batches: same numbers
position_embedding_type       must be "rope"
layer_norm_type               must be "layer_norm"
logn_attention_scale          must be false (Stella: false)
auto_map, architectures,      dropped: nothing downloaded is imported
model_type, torch_dtype ...
============================  ===============================================

Anything the native classes cannot reproduce is refused with a message,
pointing at ``--trust-remote-code`` (which runs Stella's own code instead).
Pooling follows the model card: masked mean over tokens, then the
sentence-transformers ``2_Dense_1024`` projection (1024-d vectors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from review_toolkit.plugin_api import PooledEncoder, TransformerBackbone, load_pretrained
from review_toolkit.errors import PluginError

DEFAULT_CHECKPOINT = "NovaSearch/stella_en_400M_v5"
DEFAULT_DENSE_DIRECTORY = "2_Dense_1024"  # the model card's recommended 1024-d output
DENSE_PREFIX = "2_Dense"

#: NewConfig's own defaults (Alibaba-NLP/new-impl configuration.py) for fields a config may omit.
NEW_DEFAULTS: dict[str, Any] = {
    "vocab_size": 30528,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.0,
    "max_position_embeddings": 2048,
    "type_vocab_size": 1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": None,
    "classifier_dropout": None,
}
REMOTE_CODE_HINT = (
    "Pass --trust-remote-code to run the checkpoint's own modeling code instead, "
    "or use a checkpoint in Stella's layout."
)


def gte_rope_parameters(config: dict[str, Any]) -> dict[str, Any]:
    """RoPE settings of a ``new`` config, expressed as a native ``rope_parameters`` dict.

    new-impl's fixed NTK scaling (``NTKScalingRotaryEmbedding`` without
    ``mixed_b``) always applies when ``factor > 1`` (its cache is built for
    ``max_position_embeddings * factor`` positions at init) and computes
    ``inv_freq_i = (theta * f) ** (-2i / d) / f ** (2 / d)``, which is exactly
    transformers' ``linear`` RoPE (``inv_freq / factor``) on base ``theta * f``
    with ``factor = f ** (2 / d)``.
    """
    theta = float(config.get("rope_theta", 10000.0))
    scaling = config.get("rope_scaling")
    if not scaling:
        return {"rope_type": "default", "rope_theta": theta}
    kind = scaling.get("type", scaling.get("rope_type"))
    factor = float(scaling.get("factor", 1.0))
    if kind != "ntk":
        raise PluginError(f"RoPE scaling type {kind!r} has no native equivalent in the gte classes. {REMOTE_CODE_HINT}")
    if scaling.get("mixed_b") is not None:
        raise PluginError(
            f"Mixed NTK RoPE scaling (mixed_b) has no native equivalent in the gte classes. {REMOTE_CODE_HINT}"
        )
    if factor <= 1.0:  # new-impl keeps the plain frequencies when the scaled length is not longer
        return {"rope_type": "default", "rope_theta": theta}
    head_dim = int(config["hidden_size"]) // int(config["num_attention_heads"])
    return {"rope_type": "linear", "rope_theta": theta * factor, "factor": factor ** (2.0 / head_dim)}


def native_gte_config(config: dict[str, Any]) -> Any:
    """A ``GteConfig`` equivalent to a Stella (``new``) or already-native (``gte``) config dict."""
    from transformers import GteConfig

    model_type = config.get("model_type")
    if model_type == "gte":
        return GteConfig.from_dict({key: value for key, value in config.items() if key != "auto_map"})
    if model_type != "new":
        raise PluginError(
            f"The stella backbone loads checkpoints of model type 'new' (Stella, gte-*-v1.5) or 'gte'; this one is "
            f"{model_type!r}. Use --backbone bert for BERT-style encoders, or pass --trust-remote-code."
        )
    refusals = [
        (config.get("position_embedding_type", "rope") != "rope", "position_embedding_type must be 'rope'"),
        (config.get("layer_norm_type", "layer_norm") != "layer_norm", "layer_norm_type must be 'layer_norm'"),
        (bool(config.get("logn_attention_scale", False)), "logn_attention_scale is not supported"),
        # transformers' load-time conversion splits packed weights only; separate ones would load as random.
        (not config.get("pack_qkv", True), "pack_qkv false (unpacked q/k/v weights) is not converted"),
    ]
    for refused, why in refusals:
        if refused:
            raise PluginError(f"This checkpoint cannot run on the native gte classes: {why}. {REMOTE_CODE_HINT}")
    values = {key: config.get(key, default) for key, default in NEW_DEFAULTS.items()}
    values["rope_parameters"] = gte_rope_parameters({**values, **config})
    return GteConfig(**values)


class _NativeConfigLoader:
    """Reads config.json (local or hub) and rewrites it, behind ``load_pretrained``'s missing-checkpoint message."""

    @staticmethod
    def from_pretrained(checkpoint: str, **kwargs: Any) -> Any:
        from transformers import PreTrainedConfig

        config_dict, _ = PreTrainedConfig.get_config_dict(checkpoint, **kwargs)
        return native_gte_config(config_dict)


class DenseProjection(nn.Linear):
    """sentence-transformers' ``Dense`` module: a linear layer and its activation (Identity for Stella)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "identity"):
        super().__init__(in_features, out_features, bias=bias)
        self.activation_name = activation
        self.activation = nn.Tanh() if activation == "tanh" else nn.Identity()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.activation(super().forward(features))


ACTIVATIONS = {
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
}


def _optional_file(checkpoint: str, filename: str) -> Path | None:
    """``filename`` inside a local checkpoint directory or its hub repository; None when absent."""
    local = Path(checkpoint).expanduser()
    if local.is_dir():
        path = local / filename
        return path if path.is_file() else None
    from transformers.utils import cached_file

    try:
        found = cached_file(
            checkpoint,
            filename,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except (OSError, ValueError):
        return None
    return Path(found) if found else None


def dense_directory(checkpoint: str) -> str | None:
    """The ``2_Dense_*`` folder that feeds the vectors.

    The one modules.json lists (as sentence-transformers does; Stella's card
    says to edit it to pick another size), else 2_Dense_1024, else the only one.
    """
    modules_file = _optional_file(checkpoint, "modules.json")
    if modules_file is not None:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        for module in modules:
            if module.get("type", "").endswith("models.Dense") and module.get("path"):
                return module["path"]
        return None  # the pipeline is declared and has no projection
    if _optional_file(checkpoint, f"{DEFAULT_DENSE_DIRECTORY}/config.json") is not None:
        return DEFAULT_DENSE_DIRECTORY
    local = Path(checkpoint).expanduser()
    if local.is_dir():
        found = sorted(p.name for p in local.glob(f"{DENSE_PREFIX}*") if (p / "config.json").is_file())
        if len(found) == 1:
            return found[0]
        if found:
            raise PluginError(
                f"{local} holds several projections ({', '.join(found)}) and no modules.json saying which one to "
                f"use. Add a modules.json, or keep only the {DENSE_PREFIX}_<size> folder you want."
            )
    return None


def load_dense(checkpoint: str, directory: str) -> DenseProjection:
    """The ``Dense`` projection stored in ``directory`` (safetensors, or a .bin read with weights_only)."""
    config_file = _optional_file(checkpoint, f"{directory}/config.json")
    if config_file is None:
        raise PluginError(f"{checkpoint}: {directory}/config.json is missing; the projection cannot be built.")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    activation_path = config.get("activation_function", "torch.nn.modules.linear.Identity")
    if activation_path not in ACTIVATIONS:
        raise PluginError(f"{checkpoint}/{directory}: unsupported activation {activation_path!r} in the projection.")
    projection = DenseProjection(
        int(config["in_features"]),
        int(config["out_features"]),
        bool(config.get("bias", True)),
        ACTIVATIONS[activation_path],
    )
    weights_file = _optional_file(checkpoint, f"{directory}/model.safetensors")
    if weights_file is not None:
        from safetensors.torch import load_file

        state = load_file(str(weights_file))
    else:
        weights_file = _optional_file(checkpoint, f"{directory}/pytorch_model.bin")
        if weights_file is None:
            raise PluginError(
                f"{checkpoint}/{directory} has no model.safetensors nor pytorch_model.bin; "
                "the projection has no weights."
            )
        state = torch.load(weights_file, map_location="cpu", weights_only=True)  # tensors only, no pickled code
    state = {key.removeprefix("linear."): value for key, value in state.items()}
    try:
        projection.load_state_dict({key: state[key] for key in ("weight", "bias") if key in state}, strict=True)
    except (RuntimeError, KeyError) as error:
        raise PluginError(
            f"{checkpoint}/{directory}: the projection weights do not fit its config ({error})."
        ) from error
    return projection


def check_mean_pooling(checkpoint: str) -> None:
    """The model card pools by mean; refuse a 1_Pooling config that says otherwise rather than pool wrongly."""
    pooling_file = _optional_file(checkpoint, "1_Pooling/config.json")
    if pooling_file is None:
        return
    pooling = json.loads(pooling_file.read_text(encoding="utf-8"))
    if not pooling.get("pooling_mode_mean_tokens", True):
        modes = [key for key, value in pooling.items() if key.startswith("pooling_mode") and value]
        raise PluginError(
            f"{checkpoint}: 1_Pooling/config.json asks for {', '.join(modes) or 'no'} pooling; the stella backbone "
            "pools by mean as Stella's model card does. Use a checkpoint with mean pooling."
        )


def own_storage(module: nn.Module) -> None:
    """Give each weight split out of a packed one (qkv_proj, up_gate_proj) its own memory.

    The load-time conversion leaves q/k/v and up/gate as views of the packed
    tensor; safetensors refuses to save such partial views (the full method
    saves every weight), and they would keep the packed tensor alive.
    """
    for parameter in module.parameters():
        if type(parameter) is not nn.Parameter:  # quantized weights are already separate tensors
            continue
        if parameter.untyped_storage().nbytes() != parameter.numel() * parameter.element_size():
            parameter.data = parameter.data.clone()


class StellaBackbone(TransformerBackbone):
    description = (
        "Stella en 400M v5 (gte-large-en-v1.5 architecture, native gte classes, no remote code): "
        "mean pooling + 2_Dense_1024 projection, 1024-d."
    )
    default_checkpoint = DEFAULT_CHECKPOINT
    max_length = 512  # the length Stella was trained for (model card)
    #: Native gte attention projections. To adapt the MLP too:
    #: --lora-targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
    native_lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    #: Module names in Stella's own (remote) code, used under --trust-remote-code.
    remote_lora_targets: tuple[str, ...] = ("qkv_proj", "o_proj")
    lora_targets = native_lora_targets
    # The projection and the head live outside ``transformer`` (never quantized anyway); listing them
    # also stops bitsandbytes' default guess of modules to skip.
    quantization_skip = ("projection", "head")

    def __init__(self) -> None:
        self.trust_remote_code = False

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "trust_remote_code":  # the module names differ between native and remote code
            super().__setattr__("lora_targets", self.remote_lora_targets if value else self.native_lora_targets)

    def load_tokenizer(self, checkpoint: str) -> Any:
        if self.trust_remote_code:
            return super().load_tokenizer(checkpoint)
        from transformers import AutoTokenizer, PreTrainedConfig

        # A neutral config stops AutoTokenizer from parsing config.json, whose 'new' model type it only
        # knows through remote code; the tokenizer class comes from tokenizer_config.json (BertTokenizer).
        tokenizer = load_pretrained(AutoTokenizer, checkpoint, "tokenizer", config=PreTrainedConfig())
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        return tokenizer

    def load_transformer(self, checkpoint: str, **kwargs: Any) -> nn.Module:
        if self.trust_remote_code:
            # Stella's code defaults to xformers kernels and unpadded batches; plain attention runs everywhere.
            return super().load_transformer(
                checkpoint, use_memory_efficient_attention=False, unpad_inputs=False, **kwargs
            )
        from transformers import GteModel

        config = load_pretrained(_NativeConfigLoader, checkpoint, "model configuration")
        transformer = load_pretrained(GteModel, checkpoint, "model", config=config, **kwargs)
        own_storage(transformer)
        return transformer

    def load_encoder(
        self,
        checkpoint: str,
        *,
        quantization_config: Any | None = None,
        dtype: torch.dtype | None = None,
        device_map: Any | None = None,
    ) -> nn.Module:
        encoder = super().load_encoder(
            checkpoint, quantization_config=quantization_config, dtype=dtype, device_map=device_map
        )
        check_mean_pooling(checkpoint)
        directory = dense_directory(checkpoint)
        if directory is None:
            return encoder
        projection = load_dense(checkpoint, directory)
        hidden = encoder.transformer.config.hidden_size
        if projection.in_features != hidden:
            raise PluginError(
                f"{checkpoint}/{directory} projects {projection.in_features}-d vectors but the model's are {hidden}-d."
            )
        # A device-mapped (4-bit) transformer is not moved by .to() later: keep the projection beside it.
        projection.to(next(encoder.transformer.parameters()).device)
        return PooledEncoder(
            encoder.transformer, projection.out_features, projection=projection, base_model=encoder.base_model
        )


__all__ = ["StellaBackbone", "gte_rope_parameters", "native_gte_config"]
