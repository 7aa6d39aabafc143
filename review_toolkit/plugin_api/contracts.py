"""The contracts of the three plugin kinds: Backbone, Method and Head.

A plugin is a class registered under one of the entry-point groups
``review_toolkit.backbones``, ``review_toolkit.methods`` or
``review_toolkit.heads``. The registry instantiates it with no arguments.
The composer (``review_toolkit.train.pipeline``) reads only what these classes
declare, so a third-party plugin composes with the built-in ones without any
special case in the core.

How the pieces fit::

    texts --Backbone.tokenizer--> ids --Method-adapted PooledEncoder--> vectors --Head--> P(fake)
    texts --FeaturizerBackbone's fitted Featurizer------------------> vectors --Head--> P(fake)

* A **Backbone** owns the tokenizer, loading (hub id or local path), pooling to
  one vector per review, its LoRA targets and its quantization skip list.
* A **Method** decides how the backbone is adapted (frozen, full, LoRA,
  QLoRA): it loads the encoder for training, and saves and reloads what it
  trained.
* A **FeaturizerBackbone** has no torch encoder at all (TF-IDF, hashing,
  hand-made features): it is *fitted* on the training texts and its fitted
  ``Featurizer`` is saved in the run. It composes only with methods whose
  ``trains_backbone`` is False; the composer refuses the others before
  anything loads.
* A **Head** turns pooled vectors into class scores: a ``TorchHead`` is an
  ``nn.Module`` trained by Hugging Face Trainer; a ``FittedHead`` is fitted
  (scikit-learn style) on embeddings of a frozen encoder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from review_toolkit.errors import PluginError
from review_toolkit.plugin_api.options import PluginOption, resolve_options
from review_toolkit.runtime.hub import is_hub_id

if TYPE_CHECKING:  # heavy imports only for type checkers
    import numpy as np
    import torch
    from torch import nn

    from review_toolkit.config import TrainConfig


class Plugin(ABC):
    """What every plugin declares: a registry name, a one-line description and its options."""

    #: Name used on the command line (``--backbone NAME``); set by the registry
    #: from the entry point's name when the class leaves it empty.
    name: ClassVar[str] = ""
    #: One line shown by ``review-toolkit plugins``.
    description: ClassVar[str] = ""
    #: The options users may set (``--head-option NAME=VALUE``, ``head_options:`` in a config
    #: file); read their values from ``self.options``.
    declared_options: ClassVar[tuple[PluginOption, ...]] = ()

    @property
    def options(self) -> Mapping[str, Any]:
        """Every declared option's value (read-only): what the run was given, else the default.

        Set by the registry before the toolkit calls any other method of the plugin, at
        training and at ``load_run`` alike (``registry.create(kind, name, **options)`` in tests).
        """
        bound = self.__dict__.get("_options")
        if bound is None:
            bound = resolve_options(self.declared_options, None, plugin=f"plugin {self.name!r}")
        return bound

    def set_options(self, given: Mapping[str, Any] | None, *, kind: str = "plugin") -> None:
        """Check ``given`` against ``declared_options`` and keep the values (ConfigError on a bad one)."""
        self.__dict__["_options"] = resolve_options(self.declared_options, given, plugin=f"{kind} {self.name!r}")


# --------------------------------------------------------------------------- backbones


class PooledEncoder(Protocol):
    """The module a backbone builds: token ids in, one vector per text out.

    ``transformer`` is the Hugging Face model inside it; methods wrap or
    quantize that attribute (LoRA adapters go there), so pooling layers that
    sit beside it (such as Stella's dense projection) stay in full precision.
    """

    transformer: nn.Module
    embedding_size: int

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor: ...


class Backbone(Plugin):
    """A pretrained text encoder and everything needed to use it.

    Subclasses set the class attributes and implement ``load_encoder``;
    ``review_toolkit.plugin_api.encoders.TransformerBackbone`` implements it for any
    Hugging Face encoder with mean pooling.
    """

    #: Hub id or local path used when the user gives no ``--model``.
    default_checkpoint: ClassVar[str] = ""
    #: Longest input, in tokens, the model was trained for; longer reviews are truncated.
    max_length: ClassVar[int] = 512
    #: Module names (suffixes) that LoRA adapts by default.
    lora_targets: ClassVar[tuple[str, ...]] = ()
    #: The attention projections alone (the research recipe's targets, ``target_modules: attention``);
    #: empty: the same as ``lora_targets``.
    attention_lora_targets: ClassVar[tuple[str, ...]] = ()
    #: Module names that 4-bit quantization must leave in full precision.
    quantization_skip: ClassVar[tuple[str, ...]] = ()

    def resolve_checkpoint(self, checkpoint: str | None) -> str:
        """The checkpoint to load: the user's ``--model`` or the default."""
        return checkpoint or self.default_checkpoint

    def hub_id(self, checkpoint: str) -> str | None:
        """The Hugging Face Hub id of ``checkpoint`` (a ``resolve_checkpoint`` result), None when it has none.

        A run names its base model by it (adapter configs, the model card) instead of a local path.
        A backbone that resolves its default to a bundled local copy returns the id of the original.
        """
        return checkpoint if is_hub_id(checkpoint) else None

    @abstractmethod
    def load_tokenizer(self, checkpoint: str) -> Any:
        """A Hugging Face tokenizer for ``checkpoint``."""

    @abstractmethod
    def load_encoder(
        self,
        checkpoint: str,
        *,
        quantization_config: Any | None = None,
        dtype: torch.dtype | None = None,
        device_map: Any | None = None,
    ) -> nn.Module:
        """Build the ``PooledEncoder`` for ``checkpoint``.

        ``quantization_config`` (a ``BitsAndBytesConfig``) and ``device_map``
        are passed by the qlora method; a backbone that cannot be quantized
        raises ``PluginError`` saying so.
        """

    def prepare_texts(self, texts: list[str]) -> list[str]:
        """Text-level preprocessing before tokenization (identity by default)."""
        return texts


@runtime_checkable
class Featurizer(Protocol):
    """Texts in, one dense vector per text out: what a ``FeaturizerBackbone`` fits.

    It is fitted on the training split only (a vocabulary or IDF fitted on test
    texts would leak them into the score), saved into the run directory and
    rebuilt by ``FeaturizerBackbone.load_featurizer`` so a reloaded run scores
    exactly as the trained one did.
    """

    #: Length of every vector ``transform`` returns.
    embedding_size: int

    def transform(self, texts: list[str]) -> np.ndarray:
        """``[len(texts), embedding_size]`` features (a scipy sparse matrix is densified)."""
        ...

    def save(self, directory: Path) -> None:
        """Write the fitted state as JSON or safetensors (never pickle) into ``directory`` (it exists)."""
        ...


class FeaturizerBackbone(Backbone):
    """A backbone fitted on the training texts instead of loaded as a torch encoder.

    The frozen path calls ``fit_featurizer`` on the training texts, embeds every
    split with ``Featurizer.transform`` and saves the featurizer in the run's
    ``featurizer/`` directory; ``load_run`` calls ``load_featurizer``. There is
    no tokenizer and no encoder, so methods that train the backbone (full,
    lora, qlora) are refused when the composition is checked, and the method's
    own load/save hooks are not called.
    """

    def load_tokenizer(self, checkpoint: str) -> Any:
        raise PluginError(
            f"The {self.name!r} backbone is a featurizer fitted on the training texts; it has no tokenizer."
        )

    def load_encoder(self, checkpoint: str, **_: Any) -> nn.Module:
        raise PluginError(
            f"The {self.name!r} backbone is a featurizer fitted on the training texts; it has no trainable "
            "encoder. Use it with --method frozen."
        )

    @abstractmethod
    def fit_featurizer(self, texts: list[str], *, checkpoint: str, seed: int | None = None) -> Featurizer:
        """Fit on the training texts (after ``prepare_texts``); ``checkpoint`` is ``--model`` or the default."""

    @abstractmethod
    def load_featurizer(self, directory: Path, *, checkpoint: str) -> Featurizer:
        """Rebuild what ``Featurizer.save`` wrote into ``directory``, without executing stored code."""


# --------------------------------------------------------------------------- methods


class Method(Plugin):
    """How a backbone is adapted, and how what was trained is saved and reloaded."""

    #: False for ``frozen``: vectors are computed once (and cached) and only
    #: the head learns. True when Trainer optimizes encoder weights too.
    trains_backbone: ClassVar[bool] = True
    #: Learning rate used when the user sets none: adapters want a larger one
    #: than full fine-tuning.
    default_learning_rate: ClassVar[float] = 1e-4
    #: Epochs used when the user sets none (``--epochs``).
    default_epochs: ClassVar[float] = 4.0
    #: Optimizer name (a TrainingArguments ``optim`` value) used when the user sets none.
    default_optimizer: ClassVar[str] = "adamw_torch"
    #: Head used when the user names none (``--head``).
    default_head: ClassVar[str] = "linear"
    #: True when the encoders this method returns are quantized and already placed on their
    #: device by a device map: the toolkit then never moves them (4-bit weights cannot ``.to()``).
    quantized: ClassVar[bool] = False
    #: The names, at the top of the run directory, that ``save`` may write (files or folders).
    #: Everything else there belongs to the toolkit or the head; the toolkit refuses a run
    #: whose method wrote or changed anything else.
    run_files: ClassVar[tuple[str, ...]] = ("method",)

    @abstractmethod
    def load_for_training(self, backbone: Backbone, checkpoint: str, config: TrainConfig) -> nn.Module:
        """Load the backbone's encoder, adapted and ready for Trainer.

        Duties (docs/PLUGINS.md, "The method's duties"): enable gradient checkpointing when
        ``config.gradient_checkpointing`` is set; every parameter left trainable must get a
        gradient from the pooled output; trainable weights in float32, on the CPU unless
        ``quantized``. Under FSDP it is called a second time to build a plain copy.
        """

    @abstractmethod
    def save(self, encoder: nn.Module, directory: Path) -> None:
        """Write what this method trained into the run ``directory``, under the names in ``run_files``."""

    @abstractmethod
    def load_trained(
        self, backbone: Backbone, checkpoint: str, directory: Path, config: TrainConfig
    ) -> nn.Module:
        """Rebuild the trained encoder from ``checkpoint`` plus what ``save`` wrote."""


# --------------------------------------------------------------------------- heads

#: The files ``review_toolkit.plugin_api.save_arrays`` writes: a fitted head's arrays and scalars.
ARRAYS_FILE = "head.safetensors"
PARAMETERS_FILE = "head.json"


class Head(Plugin):
    """The classifier on pooled vectors."""

    #: True for heads that are ``nn.Module``s trained by Trainer (``TorchHead``);
    #: False for heads fitted on embeddings of a frozen encoder (``FittedHead``).
    trains_with_trainer: ClassVar[bool] = True


class TorchHead(Head):
    """A head trained by Hugging Face Trainer, alone or together with the encoder."""

    trains_with_trainer: ClassVar[bool] = True

    @abstractmethod
    def build(self, in_features: int, num_labels: int) -> nn.Module:
        """A module mapping ``[batch, in_features]`` vectors to ``[batch, num_labels]`` logits."""


@runtime_checkable
class FittedModel(Protocol):
    """A fitted head: probabilities out, and safe to save (no pickle)."""

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """``[n, 2]`` probabilities, column 1 for ``fake``."""
        ...

    def save(self, directory: Path) -> None:
        """Write the fitted state as JSON or safetensors into ``directory``."""
        ...


class FittedHead(Head):
    """A head fitted on the embeddings of a frozen encoder.

    ``fit`` gets float32 vectors ``[n, embedding_size]`` and integer labels (0 = real,
    1 = fake); the toolkit re-calibrates the fitted model's probabilities on the
    validation split afterwards.
    """

    trains_with_trainer: ClassVar[bool] = False
    #: The names, at the top of the run directory, that ``FittedModel.save`` may write:
    #: by default those of ``save_arrays`` (``head.safetensors`` and ``head.json``).
    run_files: ClassVar[tuple[str, ...]] = (ARRAYS_FILE, PARAMETERS_FILE)

    @abstractmethod
    def fit(
        self,
        train_features: np.ndarray,
        train_labels: np.ndarray,
        validation_features: np.ndarray,
        validation_labels: np.ndarray,
        *,
        seed: int,
        class_weight: str | None = None,
    ) -> FittedModel:
        """Fit on training vectors; the validation split may pick hyperparameters."""

    @abstractmethod
    def load(self, directory: Path) -> FittedModel:
        """Rebuild what ``FittedModel.save`` wrote, without executing stored code."""


PLUGIN_KINDS: dict[str, type[Plugin]] = {"backbone": Backbone, "method": Method, "head": Head}
