"""The plugin manager of one Pipeline: entry points, R1MW_PLUGINS, R1MW_DISABLE_PLUGINS.

Built-in plugins are found exactly like third-party ones: through the ``r1mw`` entry-point
group (the built-ins are named ``r1mw.exact``, ``r1mw.semantic``, ...).
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Iterable, Mapping

import pluggy

from . import hookspecs
from .errors import ConfigError, PluginError

__all__ = ["build_plugin_manager", "collect"]

GROUP = "r1mw"


@lru_cache(maxsize=1)
def _entry_points() -> tuple[EntryPoint, ...]:
    # Scanning distributions costs tens of ms: once per process is enough.
    return tuple(sorted(entry_points(group=GROUP), key=lambda ep: ep.name))


def build_plugin_manager(
    *, plugins: Iterable[str] = (), disable: Iterable[str] = (), extra: Iterable[Any] = ()
) -> pluggy.PluginManager:
    """A PluginManager with every hookspec, the entry-point plugins, ``plugins`` (module
    paths) and ``extra`` (plugin objects), minus the names in ``disable``."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    disabled = set(disable)
    for name in disabled:
        pm.set_blocked(name)
    seen: set[str] = set()
    for ep in _entry_points():
        if ep.name in disabled or ep.name in seen:
            continue
        seen.add(ep.name)
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        pm.register(plugin, name=ep.name)
    for path in plugins:
        if path in disabled or pm.has_plugin(path):
            continue
        try:
            module = importlib.import_module(path)
        except ImportError as exc:
            raise PluginError(f"R1MW_PLUGINS: cannot import {path!r}: {exc}") from exc
        if pm.is_registered(module):  # already loaded through its entry point (a built-in)
            continue
        pm.register(module, name=path)
    for obj in extra:
        name = getattr(obj, "__name__", None) or getattr(obj, "name", None) or repr(obj)
        if name not in disabled:
            pm.register(obj, name=str(name))
    return pm


def collect(
    results: Iterable[Mapping[str, Callable[..., Any]] | None], kind: str
) -> dict[str, Callable[..., Any]]:
    """Merge registration results ``{name: factory}``; a name registered twice is an error."""
    merged: dict[str, Callable[..., Any]] = {}
    for result in results:
        for name, factory in (result or {}).items():
            if name in merged:
                raise PluginError(f"two plugins register the {kind} {name!r}; disable one with R1MW_DISABLE_PLUGINS")
            merged[name] = factory
    return merged


def select(available: Mapping[str, Callable[..., Any]], wanted: Iterable[str], flag: str) -> list[tuple[str, Callable[..., Any]]]:
    chosen = []
    for name in wanted:
        if name not in available:
            allowed = ", ".join(sorted(available)) or "none registered"
            raise ConfigError(f"{flag}: unknown name {name!r}; available: {allowed}")
        chosen.append((name, available[name]))
    return chosen
