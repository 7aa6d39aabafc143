"""Building blocks for backbones built on Hugging Face encoders.

``TransformerBackbone`` implements the Backbone contract for any model that
``AutoModel`` loads; a plugin for a new encoder usually only sets class
attributes. ``PooledEncoder`` is the module every method adapts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from review_toolkit.errors import PluginError
from review_toolkit.runtime.hub import hub_reachable, offline_by_setting
from review_toolkit.runtime.quiet import quiet_call
from review_toolkit.plugin_api.contracts import Backbone


class PooledEncoder(nn.Module):
    """A transformer followed by masked mean pooling and an optional projection.

    The transformer sits in its own attribute so that methods can wrap it
    (LoRA) or quantize it (QLoRA) while the projection stays in full precision.
    """

    def __init__(
        self, transformer: nn.Module, embedding_size: int, projection: nn.Module | None = None, *, base_model: str = ""
    ):
        super().__init__()
        self.transformer = transformer
        self.projection = projection
        self.embedding_size = embedding_size
        #: The checkpoint it was built from, by its Hub id where it has one (``Backbone.hub_id``):
        #: what saved adapters and encoders name as their base.
        self.base_model = base_model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled embeddings ``[batch, embedding_size]`` of padded reviews ``[batch, length]`` and their mask."""
        # On a GPU, the 4D mask: no wait for the GPU per batch. Elsewhere the 2D one, which transformers
        # leaves out for batches without padding.
        attention = prepared_attention_mask(self.transformer, attention_mask) if attention_mask.is_cuda else attention_mask
        outputs = self.transformer(input_ids=input_ids, attention_mask=attention)
        hidden = outputs[0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        if self.projection is not None:
            pooled = self.projection(pooled.to(self.projection.weight.dtype))
        return pooled


def prepared_attention_mask(transformer: nn.Module, attention_mask: torch.Tensor) -> torch.Tensor:
    """The 4D mask that ``transformer`` (eager or SDPA attention) builds from a 2D padding mask,
    built here: transformers takes a 4D mask as it is (any other implementation gets the 2D mask back).

    From a 2D mask, transformers first asks whether any token is padding (``mask.all()``), so that
    it can leave the mask out; on a GPU that question waits for every kernel queued before it, and
    the host stops running ahead of the GPU at every batch.
    """
    implementation = getattr(getattr(transformer, "config", None), "_attn_implementation", None)
    if attention_mask.dim() != 2 or implementation not in ("eager", "sdpa"):
        return attention_mask
    attend = attention_mask[:, None, None, :].bool()
    if implementation == "sdpa":
        return attend
    dtype = transformer.get_input_embeddings().weight.dtype
    return torch.zeros(attend.shape, dtype=dtype, device=attend.device).masked_fill_(~attend, torch.finfo(dtype).min)


def load_pretrained(loader: Any, checkpoint: str, what: str, **kwargs: Any) -> Any:
    """Call ``loader.from_pretrained`` and turn a missing checkpoint into a message, not a hub traceback.

    A hub id is looked up in the local cache only when the hub is unreachable or offline by
    setting, so that a missing checkpoint fails in seconds instead of after minutes of retries.
    """
    local = Path(checkpoint).expanduser()
    hub_down = not local.exists() and not hub_reachable()
    if hub_down:
        kwargs["local_files_only"] = True
    try:
        with quiet_call(progress=True):  # the library's own retry and HTTP lines would precede ours
            return loader.from_pretrained(checkpoint, **kwargs)
    except (OSError, ValueError) as error:
        if local.exists():
            detail = f"{local} exists but is not a complete {what} directory ({type(error).__name__}: {error})"
        else:
            reason = "HF_HUB_OFFLINE is set" if offline_by_setting() else (
                "the Hub cannot be reached" if hub_down else "no such model id, or no network"
            )
            detail = (
                f"{checkpoint!r} is not a local directory and not in the local Hugging Face cache, and it could "
                f"not be fetched ({reason})"
            )
        raise PluginError(
            f"Could not load the {what} for {checkpoint!r}: {detail}. "
            "Pass a local copy with --model /path/to/model (a directory with config.json and weights), "
            "or make the Hub reachable."
        ) from error


class TransformerBackbone(Backbone):
    """Backbone for encoders that ``AutoModel`` loads, pooled by masked mean."""

    #: Set by the composer from ``--trust-remote-code``; off means no downloaded code runs.
    trust_remote_code: bool = False
    #: Extra keyword arguments for ``from_pretrained`` of the model.
    model_kwargs: ClassVar[dict[str, Any]] = {}

    def load_tokenizer(self, checkpoint: str) -> Any:
        from transformers import AutoTokenizer

        tokenizer = load_pretrained(AutoTokenizer, checkpoint, "tokenizer", trust_remote_code=self.trust_remote_code)
        if tokenizer.pad_token is None:  # some tokenizers ship without one; padding needs it
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        return tokenizer

    def load_transformer(self, checkpoint: str, **kwargs: Any) -> nn.Module:
        from transformers import AutoModel

        return load_pretrained(
            AutoModel,
            checkpoint,
            "model",
            trust_remote_code=self.trust_remote_code,
            **self.model_kwargs,
            **kwargs,
        )

    def load_encoder(
        self,
        checkpoint: str,
        *,
        quantization_config: Any | None = None,
        dtype: torch.dtype | None = None,
        device_map: Any | None = None,
    ) -> nn.Module:
        kwargs: dict[str, Any] = {}
        if quantization_config is not None:
            kwargs["quantization_config"] = quantization_config
        # Weights train in float32 (mixed precision comes from Trainer's autocast); a checkpoint
        # stored in fp16 would otherwise load, and train, in fp16.
        kwargs["dtype"] = dtype or torch.float32
        if device_map is not None:
            kwargs["device_map"] = device_map
        transformer = self.load_transformer(checkpoint, **kwargs)
        return PooledEncoder(
            transformer, transformer.config.hidden_size, base_model=self.hub_id(checkpoint) or checkpoint
        )


# ----------------------------------------------------------------- a fine-tuned encoder as a model folder

MODULES_FILE = "modules.json"
POOLING_DIRECTORY = "1_Pooling"
DENSE_DIRECTORY = "2_Dense"
_ACTIVATION_PATHS = {"identity": "torch.nn.modules.linear.Identity", "tanh": "torch.nn.modules.activation.Tanh"}


def can_save_pretrained(encoder: nn.Module) -> bool:
    """True when ``save_pretrained_encoder`` can describe ``encoder``: a Hugging Face model, pooled by
    mean, with no projection or a linear one (sentence-transformers' ``Dense``)."""
    projection = getattr(encoder, "projection", None)
    linear = projection is None or (
        isinstance(projection, nn.Linear) and getattr(projection, "activation_name", "identity") in _ACTIVATION_PATHS
    )
    return hasattr(getattr(encoder, "transformer", None), "save_pretrained") and linear


def save_pretrained_encoder(encoder: nn.Module, folder: Path, tokenizer_directory: Path | None = None) -> None:
    """Write a pooled encoder as a model folder Hugging Face libraries load without this toolkit.

    ``folder`` gets the transformer's ``save_pretrained`` files (config.json, model.safetensors),
    the tokenizer's files copied from ``tokenizer_directory``, and the pooling as
    sentence-transformers describes it: ``modules.json``, ``1_Pooling/config.json`` (mean) and,
    when the encoder projects its vectors, ``2_Dense/`` (config.json, model.safetensors).
    ``TransformerBackbone.load_encoder(folder)`` builds the same encoder back.
    """
    import shutil

    from safetensors.torch import save_file

    transformer = encoder.transformer
    folder.mkdir(parents=True, exist_ok=True)
    # A checkpoint's own code (--trust-remote-code) is not copied into the run: its config names the
    # repository that code comes from, and a run never ships code that loading it would execute.
    auto_class = transformer.__dict__.get("_auto_class")
    transformer._auto_class = None
    try:
        transformer.save_pretrained(folder)
    finally:
        if auto_class is None:
            transformer.__dict__.pop("_auto_class", None)
        else:
            transformer._auto_class = auto_class
    if tokenizer_directory is not None:
        for path in sorted(tokenizer_directory.iterdir()):
            if path.is_file():
                shutil.copyfile(path, folder / path.name)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": POOLING_DIRECTORY, "type": "sentence_transformers.models.Pooling"},
    ]
    hidden = int(transformer.config.hidden_size)
    pooling = {
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
    }
    _write_json(folder / POOLING_DIRECTORY / "config.json", pooling)
    projection = getattr(encoder, "projection", None)
    if projection is not None:
        modules.append({"idx": 2, "name": "2", "path": DENSE_DIRECTORY, "type": "sentence_transformers.models.Dense"})
        dense = {
            "in_features": projection.in_features, "out_features": projection.out_features,
            "bias": projection.bias is not None,
            "activation_function": _ACTIVATION_PATHS[getattr(projection, "activation_name", "identity")],
        }
        _write_json(folder / DENSE_DIRECTORY / "config.json", dense)
        state = {f"linear.{name}": value.detach().cpu().contiguous() for name, value in projection.state_dict().items()}
        save_file(state, str(folder / DENSE_DIRECTORY / "model.safetensors"), metadata={"format": "pt"})
    _write_json(folder / MODULES_FILE, modules)


def load_projection_weights(encoder: nn.Module, folder: Path) -> None:
    """Put ``folder``'s ``2_Dense`` weights into ``encoder.projection``; refuse a mismatch of the two.

    A backbone builds its projection from a checkpoint its own way; whatever it built from the
    saved folder must be the projection the folder holds, or the vectors would silently differ.
    """
    from safetensors.torch import load_file

    saved = folder / DENSE_DIRECTORY / "model.safetensors"
    projection = getattr(encoder, "projection", None)
    if saved.is_file() != (projection is not None):
        held = "holds a projection (2_Dense)" if saved.is_file() else "holds no projection"
        built = "built none" if projection is None else "built one"
        raise PluginError(
            f"{folder} {held} but the backbone {built} from it; the encoder cannot be rebuilt as it was trained."
        )
    if projection is not None:
        state = {key.removeprefix("linear."): value for key, value in load_file(str(saved)).items()}
        projection.load_state_dict(state, strict=True)


def _write_json(path: Path, value: Any) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
