"""The training configuration: defaults, a YAML file, then command-line flags.

One flat dataclass holds every option so that a run's ``config.yaml`` is the
whole story of how it was made, and feeding that file back with ``--config``
repeats the run. Flags override the file; the file overrides the defaults.

Each field's metadata is the one description of its option: the ``train`` command builds its
flags from it (help text, section, flag spelling) and :func:`check_option` checks every value
against it (type, range, choices), whether it comes from a config file or from a flag.

Numbers in a config file may be written as strings: YAML 1.1, which PyYAML reads, takes ``1e-3``
(no decimal point) for a string, so ``"1e-3"`` and ``"32"`` are read as the numbers they spell.
Integers must be whole (``batch_size: 2.5`` is refused) and numbers finite (no ``inf``/``nan``).

Each plugin's own options live in ``backbone_options``, ``method_options`` and ``head_options``
(checked against what the plugin declares when it is looked up, see ``plugin_api.options``); the
``lora_*`` keys of earlier releases set the LoRA methods' options (``LEGACY_METHOD_OPTIONS``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from review_toolkit.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20  # a config file or plan is a page of options, not data
MAX_YAML_NODES = 10_000  # values in a YAML file once its aliases are expanded
MAX_YAML_DEPTH = 20  # nesting of mappings and lists in a YAML file
MAX_SEED = 2**32  # seeds are 32-bit for NumPy and scikit-learn: 0 <= seed < 2**32

# Sections of `train --help`, in this order.
COMPOSE, DATA, RUN, TRAINING = "What to compose", "Data", "Where the run goes", "Training"


@functools.cache
def _scheduler_names() -> list[str]:
    from transformers.trainer_utils import SchedulerType  # lazy: transformers takes seconds to import

    return [member.value for member in SchedulerType]


@functools.cache
def _optimizer_names() -> list[str]:
    from transformers.training_args import OptimizerNames  # lazy, as above

    return [member.value for member in OptimizerNames]


def option(
    default: Any = None,
    *,
    help: str,
    group: str | None,
    flag: str | None = "",
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """A TrainConfig field and its option's description.

    ``flag``: the command-line spelling ("" = ``--`` + the name with dashes; "--a/--no-a" for an
    on/off pair); None: no flag, config files only. ``minimum`` / ``maximum`` are inclusive bounds,
    ``above`` / ``below`` exclusive ones. ``choices`` may be a function, for lists that a heavy
    library knows (called only to check a value).
    """
    metadata = {
        "help": help, "group": group, "flag": flag, "minimum": minimum, "maximum": maximum,
        "above": above, "below": below, "choices": choices,
    }
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    # What to compose.
    backbone: str = option("minilm", help="Backbone plugin (default: minilm).", group=COMPOSE)
    method: str = option("frozen", help="Method plugin: frozen, full, lora, qlora, ... (default: frozen).", group=COMPOSE)
    # None: the method's default_head
    head: str | None = option(
        None, help="Head plugin (default: the method's own: logreg for frozen, linear for the others).", group=COMPOSE
    )
    # checkpoint (hub id or local path); None: the backbone's default
    model: str | None = option(None, help="Checkpoint for the backbone: hub id or local directory.", group=COMPOSE)
    trust_remote_code: bool = option(
        False, help="Allow model code downloaded with the checkpoint to run.", group=COMPOSE
    )

    # Data.
    data: str | None = option(  # None: the bundled default sample
        None,
        help="Labelled reviews: CSV, TSV, JSON Lines, Parquet or a saved datasets directory (default: bundled sample).",
        group=DATA,
    )
    text_column: str = option("text", help="Column holding the review text (default: text).", group=DATA)
    label_column: str = option("label", help="Column holding the label (default: label).", group=DATA)
    label_map: dict[str, str] | None = option(
        None, help="Explicit label mapping, e.g. 'CG=fake,OR=real'.", group=DATA, choices=("fake", "real")
    )
    split_column: str | None = option(None, help="Column saying train / validation / test for each row.", group=DATA)
    validation_data: str | None = option(None, help="A separate validation file.", group=DATA)
    test_data: str | None = option(None, help="A separate test file.", group=DATA)
    seed: int = option(
        42, help="Random seed for the split and training (default: 42).", group=DATA, minimum=0, below=MAX_SEED
    )
    split_seed: int | None = option(  # None: the split follows --seed
        None,
        help="Seed of the train / validation / test split alone (default: --seed). Keep it fixed and vary --seed "
        "to train several seeds on one split, e.g. the members of an ensemble.",
        group=DATA, minimum=0, below=MAX_SEED,
    )
    folds: int | None = option(  # cross-validation (review_toolkit.train.cross_validation)
        None,
        help="Cross-validate: K stratified folds (seeded); one run per fold in OUTPUT_DIR/fold-1..K, each tested "
        "on its fold, then mean ± std of every metric (cv.json) and out-of-fold predictions.",
        group=DATA, minimum=2,
    )
    # The fold a cross-validation run is tested on (1..folds), or 0 for its refit on all the data:
    # set by --folds in each run's config.yaml, so that the run, fed back or evaluated, has the same split.
    fold: int | None = option(
        None, help="The fold this run is tested on, 0: the refit (set by --folds).", group=DATA, flag=None, minimum=0
    )
    refit: bool = option(
        False,
        help="With --folds: also train OUTPUT_DIR/final on all the data (a validation split for early stopping, "
        "threshold and calibration; no test split): the run to deploy.",
        group=DATA,
    )

    # Where the run goes.
    output_dir: str | None = option(  # None: runs/<backbone>-<method>-<head>
        None, help="Run directory to create (default: runs/BACKBONE-METHOD-HEAD).", group=RUN
    )
    overwrite: bool = option(False, help="Replace an existing run directory.", group=RUN)
    cache_dir: str | None = option(  # embedding cache; None: ~/.cache/review_toolkit
        None, help="Where frozen embeddings are cached (default: ~/.cache/review_toolkit).", group=RUN
    )
    report_to: str = option(
        "none", help="Send training metrics to a tracker: tensorboard, wandb, mlflow or none (default: none).",
        group=RUN, choices=("none", "tensorboard", "wandb", "mlflow"),
    )
    logging_dir: str | None = option(
        None, help="Where --report-to tensorboard writes its event files (default: RUN/logs).", group=RUN
    )

    # Training (Trainer); None means "the method's or head's own default".
    max_length: int | None = option(  # None: the backbone's maximum
        None, help="Truncate reviews to this many tokens (default: the backbone's maximum).", group=TRAINING, minimum=8
    )
    epochs: float | None = option(
        None, help="Training epochs (default: the method's own: 4; 8 for lora and qlora).", group=TRAINING, above=0
    )
    max_steps: int | None = option(  # stop after this many optimizer steps (smoke tests, benchmarks)
        None, help="Stop after this many optimizer steps (overrides --epochs).", group=TRAINING, minimum=1
    )
    learning_rate: float | None = option(  # None: the method's default_learning_rate (the run records the one used)
        None, help="Learning rate (default: the method's own).", group=TRAINING, above=0
    )
    batch_size: int = option(32, help="Training batch size per device (default: 32).", group=TRAINING, minimum=1)
    eval_batch_size: int = option(
        64, help="Evaluation batch size per device (default: 64).", group=TRAINING, flag=None, minimum=1
    )
    gradient_accumulation_steps: int = option(
        1, help="Batches per optimizer step (default: 1).", group=TRAINING, minimum=1
    )
    lr_scheduler: str = option(
        "linear", help="Learning-rate schedule: linear, cosine, ... (default: linear).", group=TRAINING,
        choices=_scheduler_names,
    )
    warmup: float = option(  # ratio of total steps when < 1, else steps
        0.06, help="Warm-up: a ratio of the total steps when below 1, else steps (default: 0.06).",
        group=TRAINING, flag=None, minimum=0,
    )
    weight_decay: float = option(0.01, help="Weight decay (default: 0.01).", group=TRAINING, flag=None, minimum=0)
    optimizer: str | None = option(
        None, help="TrainingArguments optim name (default: the method's own).", group=TRAINING,
        choices=_optimizer_names,
    )
    early_stopping_patience: int | None = option(
        2, help="Epochs without validation F1 gain before stopping (default: 2; 0 turns it off).", group=TRAINING,
        minimum=0,
    )
    class_weight: str | None = option(  # "balanced" or None
        None, help="Weight classes inversely to their frequency.", group=TRAINING, choices=("balanced",)
    )
    pad_to_max_length: bool = option(  # the research recipe pads every batch to max_length
        False, help="Pad every review to --max-length (the research recipe; slow).", group=TRAINING
    )
    # Length-sorted batches of at most batch_size reviews and this many computed tokens (padded,
    # or the reviews' own and the row's filler when packed);
    # None or 0: Trainer's random batches of exactly batch_size.
    max_tokens_per_batch: int | None = option(
        4096, help="Token budget of a length-sorted batch (default: 4096; 0: random batches of --batch-size).",
        group=TRAINING, minimum=0,
    )
    # Fine-tuning on reviews concatenated into one row per batch (no padding computed, flash
    # attention per review); None: on for bf16 GPU training of encoders that support it.
    pack_sequences: bool | None = option(
        None,
        help="Fine-tuning: concatenate each batch's reviews into one row, no padding computed (default: on for "
        "bf16 GPU training of bert and gte encoders).",
        group=TRAINING, flag="--pack-sequences/--no-pack-sequences",
    )
    # Replay each packed training step's encoder forward and backward from CUDA graphs (one
    # launch instead of thousands); None: wherever possible (packed batches on one GPU, not
    # compiled or checkpointed).
    cuda_graphs: bool | None = option(
        None,
        help="Fine-tuning on packed batches: replay each step's encoder forward and backward from CUDA graphs, "
        "one launch instead of thousands (default: on wherever possible: packed batches on one GPU, not compiled "
        "or checkpointed).",
        group=TRAINING, flag="--cuda-graphs/--no-cuda-graphs",
    )
    bf16: bool | None = option(  # None: on when the GPU supports it
        None, help="Train in bfloat16 (default: on when the GPU supports it).", group=TRAINING, flag=None
    )
    # Launches of several processes (accelerate launch --multi_gpu): how DDP all-reduces gradients
    # (review_toolkit.accel.gradient_sync); None: bfloat16 when training in bf16, and buckets sized
    # to the trainable weights.
    ddp_gradient_dtype: str | None = option(
        None,
        help="Several processes: the dtype gradients are averaged in, bfloat16 or float32 (default: bfloat16 when "
        "training in bf16, else float32).",
        group=TRAINING, choices=("bfloat16", "float32"),
    )
    ddp_bucket_mb: int | None = option(
        None,
        help="Several processes: megabytes of gradients per all-reduce (default: a sixteenth of the trainable "
        "weights' gradients, within 8-200).",
        group=TRAINING, minimum=1,
    )
    gradient_checkpointing: bool = option(
        False, help="Recompute activations in backward: far less memory, ~30% more compute.", group=TRAINING
    )
    compile: bool = option(  # fine-tuning: torch.compile each encoder layer (pays on GPUs with large batches)
        False,
        help="Fine-tuning: torch.compile each encoder layer. Faster steps on GPUs with large batches "
        "(examples/gpu_compiled.yaml); compiling takes a minute or so.",
        group=TRAINING,
    )
    resume_from: str | None = option(
        None,
        help="Continue training from a run directory or checkpoint (for more epochs, or after an interruption).",
        group=TRAINING,
    )

    # Each plugin's declared options, NAME: value; checked against the plugin's declarations.
    backbone_options: dict[str, Any] = option(
        help="An option the backbone declares; repeatable (docs/PLUGINS.md).", group=COMPOSE,
        flag="--backbone-option", default_factory=dict,
    )
    method_options: dict[str, Any] = option(
        help="An option the method declares; repeatable (lora, qlora: r, lora_alpha, lora_dropout, target_modules).",
        group=COMPOSE, flag="--method-option", default_factory=dict,
    )
    head_options: dict[str, Any] = option(
        help="An option the head declares; repeatable.", group=COMPOSE, flag="--head-option", default_factory=dict
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any], *, source: str, origins: Mapping[str, str] | None = None
    ) -> TrainConfig:
        """Build from a mapping, rejecting unknown keys by name (typos would otherwise be silent).

        Every value is checked against its field's description (:func:`check_option`); messages
        name the value's origin, ``origins[key]`` (a file, a flag), else ``source``. The ``lora_*``
        keys of earlier releases become ``method_options`` entries.
        """
        values = merge_option_layers(values)
        unknown = sorted(set(values) - cls.field_names())
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(str(key), sorted(cls.field_names()), n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(f"{source}: unknown option(s) {', '.join(hints)}.")
        origins = origins or {}
        checked = {key: check_option(key, value, origins.get(key, f"{source}: {key}")) for key, value in values.items()}
        config = cls(**checked)
        config.validate(source=source)
        return config

    def validate(self, *, source: str = "configuration") -> None:
        """Every option's type and range (:func:`check_option`), then the checks of several together."""
        for name in config_fields():
            check_option(name, getattr(self, name), f"{source}: {name}")
        checks = [
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
            (
                not self.folds or not (self.split_column or self.validation_data or self.test_data),
                "folds makes its own splits: it does not combine with split_column, validation_data or test_data",
            ),
            (
                self.fold is None or (self.folds is not None and self.fold <= self.folds),
                "fold must be between 0 (the refit) and folds",
            ),
            (
                not (self.folds and self.fold is None and self.resume_from),
                "resume_from continues one run; a cross-validation (folds) is trained again from the start",
            ),
            (not self.refit or self.folds, "refit goes with folds: it trains the deployable run of a cross-validation"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{source}: {message}.")


# --------------------------------------------------------------------------- checking one option


def config_fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def field_type(name: str) -> tuple[type, bool]:
    """(the value's type: bool, int, float, str, list or dict; whether None is allowed)."""
    hint = _HINTS[name]
    arguments = typing.get_args(hint)
    optional = type(None) in arguments
    if optional:
        hint = next(argument for argument in arguments if argument is not type(None))
    return typing.get_origin(hint) or hint, optional


def choices_of(name: str) -> list[str] | None:
    choices = config_fields()[name].metadata.get("choices")
    if choices is None:
        return None
    return list(choices() if callable(choices) else choices)


def check_option(name: str, value: Any, where: str) -> Any:
    """``value`` as option ``name`` holds it, or a ConfigError naming ``where`` (the file and key,
    or the flag), the value and what is allowed."""
    kind, optional = field_type(name)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where} cannot be empty: {_allowed(name, kind)}.")
    metadata = config_fields()[name].metadata
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} is {value!r}; it must be true or false.")
        return value
    if kind in (int, float):
        number = _number(value, kind)
        if number is None or not _in_range(number, metadata):
            raise ConfigError(f"{where} is {value!r}; {_allowed(name, kind)}.")
        return number
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} is {value!r}; it must be text (put it in quotes).")
        _check_choice(name, value, where)
        return value
    if kind is list:
        items = [item.strip() for item in value.split(",") if item.strip()] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) and item for item in items):
            raise ConfigError(f"{where} is {value!r}; {_allowed(name, kind)}.")
        return items
    if kind is dict:
        return _check_mapping(name, value, where)
    raise AssertionError(f"TrainConfig.{name}: no check for {kind}")  # a field added without one


def _number(value: Any, kind: type) -> int | float | None:
    """``value`` as an int or a finite float, or None; numeric strings count (YAML 1.1 reads 1e-3 as text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if kind is int else float(text)
        except ValueError:
            return None
    if kind is int:
        return value if isinstance(value, int) else None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _in_range(number: float, metadata: Mapping[str, Any]) -> bool:
    minimum, maximum, above, below = (metadata.get(key) for key in ("minimum", "maximum", "above", "below"))
    return (
        (minimum is None or number >= minimum)
        and (maximum is None or number <= maximum)
        and (above is None or number > above)
        and (below is None or number < below)
    )


def _allowed(name: str, kind: type) -> str:
    """What option ``name`` accepts, for messages: 'it must be an integer of at least 1'."""
    metadata = config_fields()[name].metadata
    if kind in (int, float):
        noun = "an integer" if kind is int else "a finite number"
        bounds = []
        for key, words in (("minimum", "of at least"), ("above", "greater than"), ("maximum", "of at most"), ("below", "below")):
            bound = metadata.get(key)
            if bound is not None:
                bounds.append(f"{words} {bound:,}" if isinstance(bound, int) and abs(bound) >= 10_000 else f"{words} {bound:g}")
        return f"it must be {noun}" + (" " + " and ".join(bounds) if bounds else "")
    if kind is list:
        return "it must be a list of names (on the command line: comma-separated)"
    if kind is dict:
        return "it must be a mapping of NAME: VALUE"
    if kind is bool:
        return "it must be true or false"
    choices = choices_of(name)
    return f"it must be one of {', '.join(choices)}" if choices else "it must be text"


def _check_choice(name: str, value: str, where: str) -> None:
    if value == config_fields()[name].default:
        # The default is one of the choices; some choices lists import transformers (seconds),
        # which loading a run for prediction never needs otherwise.
        return
    choices = choices_of(name)
    if choices is not None and value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where} is {value!r}{hint}; it must be one of {', '.join(choices)}.")


def _check_mapping(name: str, value: Any, where: str) -> dict[str, Any]:
    """label_map: raw label -> fake | real; other mappings: option name -> a plain value."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} is {value!r}; {_allowed(name, dict)}.")
    choices = choices_of(name)
    checked: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(key, (Mapping, list)) or key is None:
            raise ConfigError(f"{where} has the key {key!r}; keys must be names or values.")
        if choices is not None:
            if not isinstance(item, str) or item.strip().lower() not in choices:
                raise ConfigError(f"{where} maps {key!r} to {item!r}; the target must be {' or '.join(map(repr, choices))}.")
        elif not _is_plain(item):
            raise ConfigError(
                f"{where}: {key} is {_shorten(item)}; an option's value must be a number, text, true/false "
                "or a list of those."
            )
        checked[str(key) if choices is None else key] = item
    return checked


def _is_plain(value: Any) -> bool:
    scalar = (str, int, float, bool, type(None))
    return isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(item, scalar) for item in value))


def _shorten(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_HINTS = typing.get_type_hints(TrainConfig)


# --------------------------------------------------------------------------- YAML files


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses documents which grow too large once aliases are expanded.

    An alias is cheap to write and expands to the whole node it names: nine aliases of nine
    aliases of ... are a few hundred bytes that become millions of values when the configuration
    is copied and saved. The composed document is measured, each distinct node once, before any
    value is built.
    """

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            _measure(node, {}, set(), depth=1)
        return node


def _measure(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int], *, depth: int) -> int:
    """The number of values ``node`` expands to; YAMLError when that, or its depth, is too large."""
    if id(node) in sizes:
        return sizes[id(node)]
    if depth > MAX_YAML_DEPTH:
        raise yaml.YAMLError(f"it nests deeper than {MAX_YAML_DEPTH} levels")
    if id(node) in open_nodes:
        raise yaml.YAMLError("an alias refers to a node that contains it")
    open_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    else:
        children = []
    size = 1 + sum(_measure(child, sizes, open_nodes, depth=depth + 1) for child in children)
    open_nodes.discard(id(node))
    if size > MAX_YAML_NODES:
        raise yaml.YAMLError(f"it expands to more than {MAX_YAML_NODES:,} values (through its aliases)")
    sizes[id(node)] = size
    return size


def read_yaml_mapping(path: Path, *, what: str, missing_hint: str, mapping_hint: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping, keys with ``-`` read as ``_``; errors name the file.

    ``what`` names the file in messages ("Config file"); the hints end the messages for a
    missing file and for a file that is not a mapping (``{kind}`` is replaced by the type found).
    The file may be at most ``MAX_CONFIG_BYTES`` long, and expand to at most ``MAX_YAML_NODES``
    values nested at most ``MAX_YAML_DEPTH`` deep.
    """
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist.{missing_hint}")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{what} {path} is {size:,} bytes; a YAML file of options may be at most {MAX_CONFIG_BYTES:,} bytes."
        )
    try:
        values = yaml.load(path.read_text(encoding="utf-8"), Loader=BoundedLoader) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{what} {path} is not valid YAML: {' '.join(str(error).split())}") from None
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


OPTION_FIELDS = ("backbone_options", "method_options", "head_options")

#: Keys of earlier releases, kept as aliases: each sets an option of the LoRA methods (lora, qlora).
#: Every earlier config.yaml wrote all four, at these values when the user set none; in a file such
#: a value says nothing and is dropped, so runs of other methods still load.
LEGACY_METHOD_OPTIONS: dict[str, tuple[str, Any]] = {
    "lora_r": ("r", 16),
    "lora_alpha": ("lora_alpha", 32),
    "lora_dropout": ("lora_dropout", 0.05),
    "lora_targets": ("target_modules", None),
}


def merge_option_layers(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win key by key; inside ``*_options`` mappings, option by option.

    A legacy ``lora_*`` key becomes a ``method_options`` entry of its own layer (an explicit
    ``method_options`` entry of the same layer wins).
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        layer = dict(layer)
        legacy = {}
        for key, (option_name, unset) in LEGACY_METHOD_OPTIONS.items():
            if key in layer:
                value = layer.pop(key)
                if value is not None and value != unset:
                    legacy[option_name] = value
        for key in OPTION_FIELDS:
            given = layer.pop(key, None)
            if key == "method_options" and legacy:
                given = {**legacy, **given} if isinstance(given, Mapping) else (legacy if given is None else given)
            if given is None:
                continue
            if isinstance(given, Mapping) and isinstance(merged.get(key), Mapping):
                merged[key] = {**merged[key], **given}
            else:
                merged[key] = given  # not a mapping: check_option says so
        merged.update(layer)
    return merged


def build_config(
    config_file: str | Path | None, overrides: dict[str, Any], *, flags: Mapping[str, str] | None = None
) -> TrainConfig:
    """Defaults, then the file, then every override that is not None.

    ``flags`` names the command-line flag of each override, for messages (default: ``--name``).
    """
    file_values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    source = "command line"
    if config_file is not None:
        file_values = load_config_file(config_file)
        origins.update({key: f"{config_file}: {key}" for key in file_values})
        source = f"{config_file} and the command line"
    given = {key: value for key, value in overrides.items() if value is not None}
    # A --lora-* flag is always explicit, whatever its value (a file's at-default key is not).
    flagged = {LEGACY_METHOD_OPTIONS[key][0]: given.pop(key) for key in list(given) if key in LEGACY_METHOD_OPTIONS}
    if flagged:
        given["method_options"] = {**flagged, **(given.get("method_options") or {})}
    flags = flags or {}
    origins.update({key: flags.get(key, "--" + key.replace("_", "-")) for key in given})
    values = merge_option_layers(file_values, given)
    return TrainConfig.from_mapping(values, source=source, origins=origins)
