"""Options a plugin declares, and how given values are checked against them.

A plugin lists its options as ``PluginOption``s in ``declared_options``; users
set them with ``--backbone-option NAME=VALUE`` (``--method-option``,
``--head-option``) or the ``backbone_options:`` / ``method_options:`` /
``head_options:`` mappings of a config file. ``resolve_options`` turns what was
given into one value per declared option (defaults filled in), refusing an
unknown name with the nearest declared one and a value of the wrong type with
the option and the type it expects. The plugin reads the result as
``self.options[NAME]``.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from review_toolkit.errors import ConfigError
from review_toolkit.plugin_api.search import Search

SCALAR_TYPES: tuple[type, ...] = (bool, int, float, str)
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


@dataclass(frozen=True)
class PluginOption:
    """One option of a plugin: its name, type, default and a line of help.

    ``type`` is ``bool``, ``int``, ``float``, ``str``, or ``tuple[T, ...]`` of one of
    those (given as a YAML list or as comma-separated text: ``ngram_range=1,2``).
    A ``default`` of ``None`` means "not set": the plugin decides what that means
    (``target_modules=None``: the backbone's own). ``minimum`` bounds numbers,
    ``choices`` lists the allowed values, and ``check`` returns a sentence saying
    what is wrong with a value, or ``None`` when it is fine. ``search`` says where
    ``review-toolkit tune`` looks for a value (see ``plugin_api.search``); None: it is not searched
    unless a ``--space`` file names it.
    """

    name: str
    type: Any
    default: Any
    help: str
    minimum: float | None = None
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], str | None] | None = None
    search: Search | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise TypeError(f"PluginOption name {self.name!r} must be a Python identifier (letters, digits, _).")
        _element_type(self.type)  # refuses an unsupported type when the plugin module is imported
        if not self.help.strip():
            raise TypeError(f"PluginOption {self.name!r} needs a line of help.")
        if self.search is not None:
            problem = self.search_problem(self.search)
            if problem:
                raise TypeError(f"PluginOption {self.name!r}: its search {problem}.")

    def search_value(self, drawn: Any) -> Any:
        """The option's value for a value a search drew: a number from a range becomes the only item of a
        list option (a grid of one); a choice is read as the option reads text or values."""
        _, is_sequence = _element_type(self.type)
        if is_sequence and not isinstance(drawn, (str, list, tuple)):
            drawn = (drawn,)
        return self.convert(drawn, where="search")

    def search_problem(self, search: Search) -> str | None:
        """What stops ``search`` from giving this option values it accepts, or None."""
        element, _ = _element_type(self.type)
        if search.is_range:
            if element not in (int, float):
                return f"gives a range, but the option holds {self.type_name}: give choices"
            if element is int and not all(float(v).is_integer() for v in (search.low, search.high)):
                return f"bounds must be whole numbers for an option of {self.type_name}"
            if element is int and search.step is not None and not float(search.step).is_integer():
                return f"step must be a whole number for an option of {self.type_name}"
            values = [element(search.low), element(search.high)]
        else:
            values = list(search.choices or ())
            if any(isinstance(value, (dict, list)) for value in values):
                return "choices must be plain values"
        for value in values:
            try:
                self.search_value(value)
            except ConfigError as error:
                return f"includes {_format(value)}, which the option refuses ({_reason(error)})"
        return None

    @property
    def element_type(self) -> type:
        """bool, int, float or str: the type of the value, or of each item of a list option."""
        return _element_type(self.type)[0]

    @property
    def type_name(self) -> str:
        element, is_sequence = _element_type(self.type)
        return f"list of {element.__name__}" if is_sequence else element.__name__

    def describe(self) -> str:
        """``name (type, default X): help`` as listed in messages and docs."""
        default = "not set" if self.default is None else _format(self.default)
        return f"{self.name} ({self.type_name}, default {default}): {self.help}"

    def convert(self, value: Any, *, where: str) -> Any:
        """``value`` as this option's type, or a ConfigError naming the option and the expected type."""
        if value is None:
            return None
        element, is_sequence = _element_type(self.type)
        if is_sequence:
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)):
                raise self._wrong_type(value, where)
            converted: Any = tuple(_scalar(element, item, lambda: self._wrong_type(value, where)) for item in items)
        else:
            converted = _scalar(element, value, lambda: self._wrong_type(value, where))
        problem = self._problem(converted)
        if problem:
            raise ConfigError(f"{where}: option {self.name!r} {problem}; got {_format(converted)}.")
        return converted

    def _problem(self, value: Any) -> str | None:
        values = value if isinstance(value, tuple) else (value,)
        if self.minimum is not None and any(v < self.minimum for v in values):
            return f"must be at least {_format(self.minimum)}"
        if self.choices is not None and any(v not in self.choices for v in values):
            return f"must be one of {', '.join(map(_format, self.choices))}"
        return self.check(value) if self.check is not None else None

    def _wrong_type(self, value: Any, where: str) -> ConfigError:
        return ConfigError(
            f"{where}: option {self.name!r} expects {self.type_name}; got {value!r} ({type(value).__name__})."
        )


def _reason(error: ConfigError) -> str:
    """The part of a convert() message after 'search: option NAME ': what the value must be."""
    text = str(error)
    marker = "' "
    return text.split(marker, 1)[1].rstrip(".") if marker in text else text.rstrip(".")


def positive_numbers(values: tuple[float, ...]) -> str | None:
    """A ``check`` for a tuple option that must list one or more positive numbers (a search grid)."""
    return None if values and min(values) > 0 else "must list one or more positive numbers"


def _element_type(declared: Any) -> tuple[type, bool]:
    origin = typing.get_origin(declared)
    if origin in (tuple, list):
        arguments = [a for a in typing.get_args(declared) if a is not Ellipsis]
        if len(arguments) == 1 and arguments[0] in SCALAR_TYPES:
            return arguments[0], True
    elif declared in SCALAR_TYPES:
        return declared, False
    raise TypeError(f"PluginOption type must be bool, int, float, str or tuple[T, ...] of one of them; got {declared!r}.")


def _scalar(element: type, value: Any, wrong: Callable[[], ConfigError]) -> Any:
    """One value as ``element``: typed values pass, text (the command line) is parsed."""
    if isinstance(value, str) and element is not str:
        text = value.strip()
        if element is bool:
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            raise wrong()
        try:
            return element(text)
        except ValueError:
            raise wrong() from None
    if element is bool:
        if isinstance(value, bool):
            return value
        raise wrong()
    if isinstance(value, bool):  # True is an int to Python, not to a user
        raise wrong()
    if element is float and isinstance(value, int):
        return float(value)
    if isinstance(value, element):
        return value
    raise wrong()


def _format(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(_format, value))
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def resolve_options(
    declared: tuple[PluginOption, ...], given: Mapping[str, Any] | None, *, plugin: str
) -> Mapping[str, Any]:
    """Every declared option's value: the given one, converted and checked, else the default.

    ``plugin`` names the plugin in messages (``method 'lora'``).
    """
    given = dict(given or {})
    by_name = {option.name: option for option in declared}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, list(by_name), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listing = "; ".join(option.describe() for option in declared) if declared else "it declares none"
        raise ConfigError(f"Unknown option {name!r} for {plugin}.{hint} Options of {plugin}: {listing}.")
    values = {
        option.name: option.convert(given[option.name], where=plugin) if option.name in given else option.default
        for option in declared
    }
    return MappingProxyType(values)


def recordable(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options as YAML/JSON values (tuples become lists), for config.yaml, run.json and the model card."""
    return {name: list(value) if isinstance(value, tuple) else value for name, value in options.items()}
