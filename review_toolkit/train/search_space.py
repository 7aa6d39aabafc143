"""What ``review-toolkit tune`` searches: the plugins' declared searches, training options, a ``--space`` file.

A dimension is named as in a ``--space`` file: ``head.c_grid``, ``method.r``, ``backbone.NAME`` for a
plugin's option, or a training option's name (``learning_rate``, ``epochs``, ``weight_decay``)::

    head.c_grid: {low: 0.001, high: 10, log: true}
    learning_rate: {low: 1e-5, high: 1e-3, log: true}
    method.r: {choices: [4, 8, 16]}
    method.lora_dropout: null          # not searched: the option keeps its value

By default the search covers every option the three plugins declare a search for, and, when Trainer
trains (fine-tuning, or a torch head on frozen embeddings), the learning rate (a tenth to ten times the
method's default) and the weight decay. An option given a value (``--head-option``, ``--learning-rate``,
a ``--config`` file) is fixed and not searched; naming it in ``--space`` as well is refused. Every
bound and choice is checked against the option before anything trains.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from review_toolkit.config import TrainConfig, check_option, choices_of, config_fields, field_type, read_yaml_mapping
from review_toolkit.errors import ConfigError
from review_toolkit.plugin_api.options import PluginOption, recordable
from review_toolkit.plugin_api.search import Search, search_from_mapping

PLUGIN_KINDS = ("backbone", "method", "head")

# Training options a search may not vary: they decide the data, the output or the composition, and a
# search over them would compare runs that are not comparable (or not runs at all).
NOT_SEARCHABLE = {
    "backbone", "method", "head", "model", "trust_remote_code", "data", "text_column", "label_column", "label_map",
    "split_column", "validation_data", "test_data", "seed", "output_dir", "overwrite", "cache_dir", "report_to",
    "logging_dir", "resume_from", "backbone_options", "method_options", "head_options", "eval_batch_size",
}

# Searched by default when Trainer trains; the learning rate's range is set around the method's default.
DEFAULT_WEIGHT_DECAY = Search(low=0.0, high=0.1)
LEARNING_RATE_SPREAD = 10.0  # the default range: the method's learning rate divided and multiplied by this


@dataclass(frozen=True)
class Dimension:
    """One searched option: ``key`` as in a ``--space`` file, where it goes, and its search."""

    key: str
    search: Search
    plugin_kind: str | None  # backbone / method / head, or None for a training option
    name: str
    option: PluginOption | None = None

    @property
    def number_type(self) -> type:
        """int or float, for a range."""
        if self.option is not None:
            return self.option.element_type
        kind, _ = field_type(self.name)
        return kind

    def suggest(self, trial: Any) -> Any:
        """Draw this dimension's value for an Optuna trial."""
        search = self.search
        if not search.is_range:
            return trial.suggest_categorical(self.key, list(search.choices or ()))
        if self.number_type is int:
            step = int(search.step or 1)
            return trial.suggest_int(self.key, int(search.low), int(search.high), step=step, log=search.log)
        return trial.suggest_float(self.key, float(search.low), float(search.high), step=search.step, log=search.log)

    def config_value(self, drawn: Any) -> Any:
        """The value the training configuration holds for a drawn value."""
        if self.option is not None:
            return recordable({self.name: self.option.search_value(drawn)})[self.name]
        return check_option(self.name, drawn, f"search: {self.key}")

    def as_dict(self) -> dict[str, Any]:
        return self.search.as_dict()


@dataclass(frozen=True)
class SearchSpace:
    dimensions: tuple[Dimension, ...]

    def keys(self) -> list[str]:
        return [dimension.key for dimension in self.dimensions]

    def as_dict(self) -> dict[str, Any]:
        return {dimension.key: dimension.as_dict() for dimension in self.dimensions}

    def suggest(self, trial: Any) -> dict[str, Any]:
        return {dimension.key: dimension.suggest(trial) for dimension in self.dimensions}

    def apply(self, config: TrainConfig, drawn: Mapping[str, Any]) -> TrainConfig:
        """``config`` with the drawn values in place (plugin options merged into its ``*_options``)."""
        changes: dict[str, Any] = {}
        options = {kind: dict(getattr(config, f"{kind}_options")) for kind in PLUGIN_KINDS}
        for dimension in self.dimensions:
            if dimension.key not in drawn:
                continue
            value = dimension.config_value(drawn[dimension.key])
            if dimension.plugin_kind is None:
                changes[dimension.name] = value
            else:
                options[dimension.plugin_kind][dimension.name] = value
        return dataclasses.replace(config, **changes, **{f"{kind}_options": options[kind] for kind in PLUGIN_KINDS})


def read_space_file(path: str | Path) -> dict[str, Any]:
    """A ``--space`` YAML file: dimension key -> search mapping (or null: not searched)."""
    values = read_yaml_mapping(
        Path(path),
        what="Search space file",
        missing_hint=" Check the path given to --space.",
        mapping_hint="map option names to searches, such as 'head.c_grid: {{low: 0.001, high: 10, log: true}}', not {kind}",
    )
    return values


def build_space(
    config: TrainConfig,
    composition: Any,
    *,
    user_space: Mapping[str, Any] | None = None,
    fixed: set[str] = frozenset(),  # type: ignore[assignment]
    where: str = "--space",
) -> SearchSpace:
    """The dimensions to search for ``config``'s composition (a ``train.pipeline.Composition``).

    ``fixed``: keys the user gave a value (``head.c_grid``, ``learning_rate``): not searched.
    Raises ConfigError naming the entry for an unknown option, a search the option cannot take, an
    option both fixed and searched, or an empty space.
    """
    plugins = {"backbone": composition.backbone, "method": composition.method, "head": composition.head}
    dimensions: dict[str, Dimension] = {}
    for kind, plugin in plugins.items():
        for option in plugin.declared_options:
            key = f"{kind}.{option.name}"
            if option.search is not None and key not in fixed:
                dimensions[key] = Dimension(key, option.search, kind, option.name, option)
    if composition.method.trains_backbone or composition.head.trains_with_trainer:
        rate = composition.method.default_learning_rate
        defaults = {
            "learning_rate": Search(low=rate / LEARNING_RATE_SPREAD, high=rate * LEARNING_RATE_SPREAD, log=True),
            "weight_decay": DEFAULT_WEIGHT_DECAY,
        }
        for name, search in defaults.items():
            if name not in fixed:
                dimensions[name] = Dimension(name, search, None, name)

    for raw_key, entry in (user_space or {}).items():
        key = str(raw_key)
        entry_where = f"{where}: {key}"
        plugin_kind, name, option = _resolve_key(key, plugins, entry_where)
        if key in fixed:
            raise ConfigError(
                f"{entry_where}: this option is also given a value (a flag or the --config file); "
                "fix it or search it, not both."
            )
        if entry is None:
            dimensions.pop(key, None)
            continue
        try:
            search = search_from_mapping(entry, where=entry_where)
        except ValueError as error:
            raise ConfigError(f"{error}.") from None
        problem = option.search_problem(search) if option is not None else _training_search_problem(name, search)
        if problem:
            raise ConfigError(f"{entry_where}: the search {problem}.")
        dimensions[key] = Dimension(key, search, plugin_kind, name, option)

    if not dimensions:
        raise ConfigError(
            f"Nothing to search for {composition.backbone.name} + {composition.method.name} + "
            f"{composition.head.name}: its plugins declare no searchable option that is not fixed. Give a --space "
            "file, e.g. 'learning_rate: {low: 1e-5, high: 1e-3, log: true}'."
        )
    return SearchSpace(tuple(dimensions.values()))


def _resolve_key(key: str, plugins: Mapping[str, Any], where: str) -> tuple[str | None, str, PluginOption | None]:
    """(plugin kind or None, option or field name, the PluginOption) for a ``--space`` key."""
    kind, dot, name = key.partition(".")
    if dot:
        if kind not in plugins:
            raise ConfigError(f"{where}: {kind!r} is not a plugin kind; name a plugin's option as backbone.NAME, "
                              "method.NAME or head.NAME.")
        plugin = plugins[kind]
        declared = {option.name: option for option in plugin.declared_options}
        if name not in declared:
            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = f" Did you mean {kind}.{close[0]}?" if close else ""
            listing = ", ".join(declared) or "none"
            raise ConfigError(f"{where}: the {kind} {plugin.name!r} has no option {name!r}.{hint} Its options: {listing}.")
        return kind, name, declared[name]
    fields = config_fields()
    searchable = sorted(set(fields) - NOT_SEARCHABLE)
    if key not in fields:
        close = difflib.get_close_matches(key, searchable, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{where}: no such training option.{hint} Plugin options are named head.NAME, method.NAME.")
    if key in NOT_SEARCHABLE:
        raise ConfigError(f"{where}: this option cannot be searched (it decides the data, the output or the "
                          "composition); give it as a flag instead, and run tune once per value.")
    return None, key, None


def _training_search_problem(name: str, search: Search) -> str | None:
    kind, _ = field_type(name)
    if search.is_range:
        if kind not in (int, float):
            allowed = choices_of(name)
            return "gives a range, but the option is not a number: give choices" + (
                f" ({', '.join(allowed)})" if allowed else ""
            )
        if kind is int and not all(float(v).is_integer() for v in (search.low, search.high)):
            return "bounds must be whole numbers for an integer option"
        values = [search.low, search.high]
    else:
        values = list(search.choices or ())
    for value in values:
        try:
            check_option(name, int(value) if kind is int and isinstance(value, float) else value, "value")
        except ConfigError as error:
            return f"includes {value!r}, which the option refuses ({str(error).split('; ', 1)[-1].rstrip('.')})"
    return None
