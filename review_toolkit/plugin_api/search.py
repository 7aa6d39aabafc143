"""Where ``review-toolkit tune`` may look for an option's value: a range of numbers or a list of choices.

A plugin declares it beside the option (``PluginOption(..., search=Search(low=1e-3, high=10, log=True))``);
a ``--space`` file can override it with the same keys (``low``, ``high``, ``log``, ``step``, ``choices``).
For an option that holds a list (a grid such as ``c_grid``), a number drawn from the range is used as the
only item of the list, so the search tries one value where the plain run tries a grid; choices of such an
option are lists (``[256, 128]``) or comma-separated text (``"256,128"``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SEARCH_KEYS = ("low", "high", "log", "step", "choices")


@dataclass(frozen=True)
class Search:
    """A range ``low``..``high`` (inclusive; ``log``: drawn on a log scale; ``step``: on a grid) or ``choices``."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise TypeError(f"Search {self}: {problem}.")

    @property
    def is_range(self) -> bool:
        return self.choices is None

    def problem(self) -> str | None:
        """What makes this search impossible, or None."""
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log or self.step is not None:
                return "give either choices or a range (low, high), not both"
            if not self.choices:
                return "choices must list at least one value"
            return None
        if self.low is None or self.high is None:
            return "a range needs both low and high (or give choices)"
        for name, value in (("low", self.low), ("high", self.high), ("step", self.step)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
                return f"{name} must be a finite number; got {value!r}"
        if self.low > self.high:
            return f"low ({self.low:g}) is above high ({self.high:g})"
        if self.log and self.low <= 0:
            return f"a log range must start above 0; low is {self.low:g}"
        if self.step is not None and self.step <= 0:
            return f"step must be above 0; got {self.step:g}"
        if self.step is not None and self.log:
            return "a range is either log or stepped, not both"
        return None

    def as_dict(self) -> dict[str, Any]:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        values: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            values["log"] = True
        if self.step is not None:
            values["step"] = self.step
        return values

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        scale = " (log)" if self.log else f" (step {self.step:g})" if self.step is not None else ""
        return f"{self.low:g} to {self.high:g}{scale}"


def search_from_mapping(values: Any, *, where: str) -> Search:
    """A ``Search`` from a ``--space`` file's entry; a ValueError says what is wrong (``where`` names the entry)."""
    if not isinstance(values, Mapping):
        raise ValueError(
            f"{where} must be a mapping such as {{low: 0.001, high: 10, log: true}} or {{choices: [4, 8, 16]}}; "
            f"got {values!r}"
        )
    unknown = sorted(str(key) for key in values if key not in SEARCH_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; a search takes {', '.join(SEARCH_KEYS)}")
    numbers = {}
    for key in ("low", "high", "step"):
        value = values.get(key)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as text
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{where}: {key} must be a number; got {value!r}") from None
        numbers[key] = value
    log = values.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"{where}: log must be true or false; got {log!r}")
    choices = values.get("choices")
    if choices is not None and not isinstance(choices, list):
        raise ValueError(f"{where}: choices must be a list; got {choices!r}")
    search = object.__new__(Search)  # checked below with a message that names the entry, not a TypeError
    for key, value in (("low", numbers["low"]), ("high", numbers["high"]), ("log", log), ("step", numbers["step"]),
                       ("choices", None if choices is None else tuple(_hashable(item) for item in choices))):
        object.__setattr__(search, key, value)
    problem = search.problem()
    if problem:
        raise ValueError(f"{where}: {problem}")
    return search


def _hashable(item: Any) -> Any:
    """A list choice (an option holding a list) as the comma-separated text the option reads."""
    if isinstance(item, list):
        return ",".join(str(part) for part in item)
    return item
