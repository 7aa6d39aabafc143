"""Plugin discovery through entry points: lazy, checked and traceable.

Built-in plugins arrive through the same three entry-point groups as any
third-party package, so the core never imports one by name. Looking a plugin
up imports only that plugin: a broken third-party package cannot break the
others, nor the CLI. Every plugin is checked against its contract when it is
loaded, and remembers the distribution and version it came from, which each
run records.

A user can block plugins with ``REVIEW_TOOLKIT_BLOCK_PLUGINS`` (comma
separated ``name``, ``kind:name`` or ``distribution:name``). When two
distributions register the same name, lookups by the bare name fail and name
both; ``distribution:name`` picks one, and so does blocking the other.
"""

from __future__ import annotations

import difflib
import inspect
import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from review_toolkit.errors import PluginError
from review_toolkit.plugin_api.contracts import PLUGIN_KINDS, Plugin

GROUPS: dict[str, str] = {
    "backbone": "review_toolkit.backbones",
    "method": "review_toolkit.methods",
    "head": "review_toolkit.heads",
}
BLOCK_ENVIRONMENT_VARIABLE = "REVIEW_TOOLKIT_BLOCK_PLUGINS"


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin came from: recorded in every run directory."""

    kind: str
    name: str
    distribution: str
    version: str
    entry_point: str

    def as_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "entry_point": self.entry_point,
        }


def _source(kind: str, entry_point: EntryPoint) -> PluginSource:
    dist = entry_point.dist
    return PluginSource(
        kind=kind,
        name=entry_point.name,
        distribution=dist.name if dist is not None else "unknown",
        version=dist.version if dist is not None else "unknown",
        entry_point=entry_point.value,
    )


@lru_cache(maxsize=None)
def _entry_points(kind: str) -> tuple[EntryPoint, ...]:
    """Entry points of one group, without importing any of them.

    The same distribution can be visible twice on ``sys.path`` (an editable
    install beside a build directory); keep one entry per distribution and name.
    """
    seen: dict[tuple[str, str], EntryPoint] = {}
    for entry_point in entry_points(group=GROUPS[kind]):
        dist = entry_point.dist.name if entry_point.dist is not None else "unknown"
        seen.setdefault((dist, entry_point.name), entry_point)
    return tuple(seen.values())


def refresh() -> None:
    """Forget discovered entry points (after installing a plugin package in-process)."""
    _entry_points.cache_clear()
    _load_checked.cache_clear()


def blocked_names() -> set[str]:
    raw = os.environ.get(BLOCK_ENVIRONMENT_VARIABLE, "")
    return {item.strip() for item in raw.split(",") if item.strip()}


def _is_blocked(source: PluginSource) -> bool:
    blocked = blocked_names()
    return bool(
        {source.name, f"{source.kind}:{source.name}", f"{source.distribution}:{source.name}"} & blocked
    )


def _check_kind(kind: str) -> None:
    if kind not in GROUPS:
        raise PluginError(f"Unknown plugin kind {kind!r}; kinds are: {', '.join(GROUPS)}.")


def available(kind: str) -> list[str]:
    """Names registered for ``kind`` (blocked plugins excluded), sorted; nothing is imported."""
    _check_kind(kind)
    names = {ep.name for ep in _entry_points(kind) if not _is_blocked(_source(kind, ep))}
    return sorted(names)


def _find_entry_point(kind: str, name: str) -> EntryPoint:
    distribution, _, bare_name = name.rpartition(":")
    candidates = [ep for ep in _entry_points(kind) if ep.name == bare_name]
    if distribution:
        candidates = [ep for ep in candidates if _source(kind, ep).distribution == distribution]
    if not candidates:
        names = available(kind)
        close = difflib.get_close_matches(bare_name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(names) if names else "(none installed)"
        raise PluginError(
            f"Unknown {kind} {name!r}.{hint} Available {kind}s: {listing}. "
            f"Run 'review-toolkit plugins' to see every plugin and where it comes from."
        )
    # Blocking one of two same-named plugins is a way to pick the other.
    unblocked = [ep for ep in candidates if not _is_blocked(_source(kind, ep))]
    if len(unblocked) > 1:
        owners = ", ".join(sorted(_source(kind, ep).distribution for ep in unblocked))
        raise PluginError(
            f"The {kind} name {bare_name!r} is registered by more than one distribution ({owners}). "
            f"Pick one as DISTRIBUTION:{bare_name}, block the other with "
            f"{BLOCK_ENVIRONMENT_VARIABLE}=DISTRIBUTION:{bare_name}, or uninstall one of them."
        )
    candidates = unblocked or candidates
    source = _source(kind, candidates[0])
    if _is_blocked(source):
        raise PluginError(
            f"The {kind} {bare_name!r} from {source.distribution} is blocked by "
            f"{BLOCK_ENVIRONMENT_VARIABLE}={os.environ.get(BLOCK_ENVIRONMENT_VARIABLE)!r}."
        )
    return candidates[0]


def _validate(kind: str, plugin_class: object, source: PluginSource) -> None:
    """Check the contract when the plugin loads, so a broken one fails here, by name."""
    where = f"{kind} plugin {source.name!r} from distribution {source.distribution} {source.version}"
    base = PLUGIN_KINDS[kind]
    if not (inspect.isclass(plugin_class) and issubclass(plugin_class, base)):
        raise PluginError(
            f"The {where} ({source.entry_point}) is not a subclass of review_toolkit.plugin_api.contracts.{base.__name__}."
        )
    missing = sorted(getattr(plugin_class, "__abstractmethods__", ()))
    if missing:
        raise PluginError(f"The {where} does not implement: {', '.join(missing)}.")
    description = getattr(plugin_class, "description", None)
    if not isinstance(description, str) or not description.strip():
        got = "" if not description else f" (it is {type(description).__name__} {description!r:.60})"
        raise PluginError(f"The {where} has no one-line `description` string{got}.")


@lru_cache(maxsize=None)
def _load_checked(kind: str, name: str) -> tuple[type[Plugin], PluginSource]:
    entry_point = _find_entry_point(kind, name)
    source = _source(kind, entry_point)
    try:
        plugin_class = entry_point.load()
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # any import-time failure, sys.exit() included, belongs to that plugin alone
        raise PluginError(
            f"The {kind} plugin {source.name!r} from distribution {source.distribution} {source.version} "
            f"failed to import ({source.entry_point}): {type(error).__name__}: {error}. "
            f"Reinstall or upgrade {source.distribution}, or block it with "
            f"{BLOCK_ENVIRONMENT_VARIABLE}={kind}:{source.name}."
        ) from error
    _validate(kind, plugin_class, source)
    return plugin_class, source


def get(kind: str, name: str, options: Mapping[str, Any] | None = None) -> tuple[Plugin, PluginSource]:
    """An instance of the plugin registered as ``name`` and where it came from.

    ``options`` (NAME: value) are checked against the plugin's ``declared_options`` and
    handed to it as ``plugin.options`` (defaults for the rest); a ``ConfigError`` names an
    unknown option (with the nearest declared one) or a value of the wrong type.
    """
    _check_kind(kind)
    plugin_class, source = _load_checked(kind, name)
    try:
        plugin = plugin_class()
    except KeyboardInterrupt:
        raise
    except BaseException as error:
        raise PluginError(
            f"The {kind} plugin {source.name!r} from distribution {source.distribution} {source.version} failed "
            f"to start ({source.entry_point}()): {type(error).__name__}: {_first_line(error)}. Report it to the "
            f"maintainers of {source.distribution}, or block it with {BLOCK_ENVIRONMENT_VARIABLE}={kind}:{source.name}."
        ) from None
    if not plugin.name:
        plugin.name = source.name  # instance attribute: the class stays untouched
    plugin.set_options(options, kind=kind)
    try:
        weakref.finalize(plugin, _sources.pop, id(plugin), None)  # the id may be reused once it is gone
        _sources[id(plugin)] = source
    except TypeError:  # not weakly referenceable (__slots__): messages name it by class
        pass
    return plugin, source


# Where each plugin instance came from, for messages about what it returns (plugins may use
# __slots__ or define __eq__, so the source is not stored on the instance nor keyed by it).
_sources: dict[int, PluginSource] = {}


def describe(plugin: object) -> str:
    """``head plugin 'acme' from distribution acme-heads 1.0`` for an instance ``get`` returned."""
    source = _sources.get(id(plugin))
    if source is None:
        return f"plugin {getattr(plugin, 'name', None) or type(plugin).__name__!r}"
    return f"{source.kind} plugin {source.name!r} from distribution {source.distribution} {source.version}"


def _first_line(error: BaseException) -> str:
    return (str(error).strip() or type(error).__name__).splitlines()[0]


def create(kind: str, name: str, **options: Any) -> Plugin:
    """The plugin registered as ``name``, with ``options`` set: how tests get an instance.

    ``registry.create("head", "forest", n_estimators=50).fit(...)``; the same lookup, checks
    and options as a training run's.
    """
    plugin, _ = get(kind, name, options)
    return plugin


@dataclass
class PluginListing:
    """One row of ``review-toolkit plugins``; ``error`` is set when the plugin is broken."""

    source: PluginSource
    description: str = ""
    error: str = ""
    blocked: bool = False


def list_plugins(kinds: tuple[str, ...] = tuple(GROUPS)) -> list[PluginListing]:
    """Every registered plugin, loading each one on its own so one failure stays one row."""
    rows: list[PluginListing] = []
    for kind in kinds:
        _check_kind(kind)
        for entry_point in sorted(_entry_points(kind), key=lambda ep: ep.name):
            source = _source(kind, entry_point)
            row = PluginListing(source=source, blocked=_is_blocked(source))
            if not row.blocked:
                try:
                    plugin_class, _ = _load_checked(kind, f"{source.distribution}:{source.name}")
                    row.description = " ".join(plugin_class.description.split())
                except PluginError as error:
                    row.error = str(error)
            rows.append(row)
    return rows
