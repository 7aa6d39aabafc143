"""The training configuration: defaults, a YAML file, then command-line flags.

One flat dataclass holds every option so that a run's ``config.yaml`` is the
whole story of how it was made, and feeding that file back with ``--config``
repeats the run. Flags override the file; the file overrides the defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from review_toolkit.errors import ConfigError


@dataclass
class TrainConfig:
    # What to compose.
    backbone: str = "minilm"
    method: str = "frozen"
    head: str | None = None  # None: logreg for frozen, linear for training methods
    model: str | None = None  # checkpoint (hub id or local path); None: the backbone's default
    trust_remote_code: bool = False

    # Data.
    data: str | None = None  # None: the bundled default sample
    text_column: str = "text"
    label_column: str = "label"
    label_map: dict[str, str] | None = None
    split_column: str | None = None
    validation_data: str | None = None
    test_data: str | None = None
    seed: int = 42

    # Where the run goes.
    output_dir: str | None = None  # None: runs/<backbone>-<method>-<head>
    overwrite: bool = False
    cache_dir: str | None = None  # embedding cache; None: ~/.cache/review_toolkit

    # Training (Trainer); None means "the method's or head's own default".
    max_length: int | None = None  # None: the backbone's maximum
    epochs: float = 4.0
    max_steps: int | None = None  # stop after this many optimizer steps (smoke tests, benchmarks)
    learning_rate: float | None = None
    batch_size: int = 32
    eval_batch_size: int = 64
    gradient_accumulation_steps: int = 1
    lr_scheduler: str = "linear"
    warmup: float = 0.06  # ratio of total steps when < 1, else steps
    weight_decay: float = 0.01
    optimizer: str | None = None
    early_stopping_patience: int | None = 2
    class_weight: str | None = None  # "balanced" or None
    pad_to_max_length: bool = False  # the research recipe pads every batch to max_length
    # Length-sorted batches of at most batch_size reviews and this many computed tokens (padded,
    # or the reviews' own and the row's filler when packed);
    # None or 0: Trainer's random batches of exactly batch_size.
    max_tokens_per_batch: int | None = 4096
    # Fine-tuning on reviews concatenated into one row per batch (no padding computed, flash
    # attention per review); None: on for bf16 GPU training of encoders that support it.
    pack_sequences: bool | None = None
    # Replay each packed training step's encoder forward and backward from CUDA graphs (one
    # launch instead of thousands); None: wherever possible (packed batches on one GPU, not
    # compiled or checkpointed).
    cuda_graphs: bool | None = None
    bf16: bool | None = None  # None: on when the GPU supports it
    gradient_checkpointing: bool = False
    compile: bool = False  # fine-tuning: torch.compile each encoder layer (pays on GPUs with large batches)
    resume_from: str | None = None

    # Adapters (lora, qlora).
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] | None = None  # None: the backbone's declared targets

    # Fitted heads.
    head_options: dict[str, Any] = field(default_factory=dict)

    def resolved_head(self, default_for_trainer: str = "linear", default_for_frozen: str = "logreg") -> str:
        if self.head:
            return self.head
        return default_for_frozen if self.method == "frozen" else default_for_trainer

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_mapping(cls, values: dict[str, Any], *, source: str) -> TrainConfig:
        """Build from a mapping, rejecting unknown keys by name (typos would otherwise be silent)."""
        unknown = sorted(set(values) - cls.field_names())
        if unknown:
            import difflib

            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, sorted(cls.field_names()), n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(f"{source}: unknown option(s) {', '.join(hints)}.")
        config = cls(**values)
        config.validate(source=source)
        return config

    def validate(self, *, source: str = "configuration") -> None:
        checks = [
            (self.epochs > 0, "epochs must be positive"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.eval_batch_size >= 1, "eval_batch_size must be at least 1"),
            (self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be at least 1"),
            (self.learning_rate is None or self.learning_rate > 0, "learning_rate must be positive"),
            (self.max_length is None or self.max_length >= 8, "max_length must be at least 8 tokens"),
            (0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)"),
            (self.lora_r >= 1, "lora_r must be at least 1"),
            (self.class_weight in (None, "balanced"), "class_weight must be 'balanced' or empty"),
            (self.warmup >= 0, "warmup must be zero or positive"),
            (
                not self.max_tokens_per_batch or self.max_tokens_per_batch >= (self.max_length or 8),
                "max_tokens_per_batch must be at least max_length (one full-length review)",
            ),
            (
                not (self.pack_sequences and self.pad_to_max_length),
                "pack_sequences and pad_to_max_length do not combine: packed batches hold no padding",
            ),
            (
                # PyTorch's compiler failed on checkpointed compiled layers (inductor: "Node ... was invalid").
                not (self.compile and self.gradient_checkpointing),
                "compile and gradient_checkpointing do not combine: choose compile for speed or "
                "gradient_checkpointing for memory",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{source}: {message}.")


def read_yaml_mapping(path: Path, *, what: str, missing_hint: str, mapping_hint: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping, keys with ``-`` read as ``_``; errors name the file.

    ``what`` names the file in messages ("Config file"); the hints end the messages for a
    missing file and for a file that is not a mapping (``{kind}`` is replaced by the type found).
    """
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist.{missing_hint}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{what} {path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{what} {path} must {mapping_hint.format(kind=type(values).__name__)}.")
    return {str(key).replace("-", "_"): value for key, value in values.items()}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a mapping, with errors that name the file."""
    return read_yaml_mapping(
        Path(path),
        what="Config file",
        missing_hint=" Check the path given to --config.",
        mapping_hint="hold a mapping of option: value, not {kind}",
    )


def build_config(config_file: str | Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """Defaults, then the file, then every override that is not None."""
    values: dict[str, Any] = {}
    source = "command line"
    if config_file is not None:
        values.update(load_config_file(config_file))
        source = f"{config_file} and the command line"
    values.update({key: value for key, value in overrides.items() if value is not None})
    return TrainConfig.from_mapping(values, source=source)
