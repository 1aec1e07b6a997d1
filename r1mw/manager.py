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

__all__ = ["build_plugin_manager", "call_each", "raise_as_plugin_error", "registrations"]

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
    known: set[str] = set()  # every plugin name there is, disabled or not
    for ep in _entry_points():
        if ep.name in known:
            continue
        known.add(ep.name)
        if ep.name in disabled:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        pm.register(plugin, name=ep.name)
    for path in plugins:
        known.add(path)
        if path in disabled or pm.has_plugin(path):
            continue
        try:
            module = importlib.import_module(path)
        except Exception as exc:  # not only ImportError: the module's own code may raise
            raise PluginError(f"R1MW_PLUGINS: cannot import {path!r}: {type(exc).__name__}: {exc}") from exc
        if pm.is_registered(module):  # already loaded through its entry point (a built-in)
            continue
        pm.register(module, name=path)
    for obj in extra:
        name = str(getattr(obj, "__name__", None) or getattr(obj, "name", None) or repr(obj))
        known.add(name)
        if name in disabled or pm.is_registered(obj):  # e.g. an installed plugin's module passed again
            continue
        if pm.has_plugin(name):
            raise PluginError(f"two plugins are named {name!r}: give one of them another __name__")
        pm.register(obj, name=name)
    # A misspelt name would leave the plugin running while the flag looks obeyed.
    unknown = sorted(disabled - known)
    if unknown:
        raise ConfigError(f"R1MW_DISABLE_PLUGINS: no plugin is named {unknown[0]!r}; "
                          f"plugins: {', '.join(sorted(known))}")
    return pm


def call_each(hook: Any, on_error: Callable[[str, Exception], None], **kwargs: Any) -> list[tuple[str, Any]]:
    """Call every implementation of ``hook`` on its own, in pluggy's order; returns
    ``[(plugin name, result), ...]`` (None results left out, as pluggy does).

    ``hook(**kwargs)`` stops at the first implementation that raises: one plugin's bug would
    starve every plugin called after it (an observer, a closing hook) and the exception would
    not say whose bug it is. Here an implementation that raises is handed to
    ``on_error(plugin name, exception)``, which raises or logs; the others still run."""
    impls = hook.get_hookimpls()
    if any(impl.hookwrapper or impl.wrapper for impl in impls):
        # pluggy's wrappers (a plugin timing the others) need pluggy's own call.
        try:
            return [("", result) for result in hook(**kwargs)]
        except Exception as exc:
            on_error("a plugin (" + ", ".join(impl.plugin_name for impl in impls) + ")", exc)
            return []
    results = []
    for impl in reversed(impls):  # pluggy calls the last registered first
        try:
            result = impl.function(*[kwargs[name] for name in impl.argnames])
        except Exception as exc:
            on_error(impl.plugin_name, exc)
            continue
        if result is not None:
            results.append((impl.plugin_name, result))
    return results


def raise_as_plugin_error(what: str) -> Callable[[str, Exception], None]:
    """An ``on_error`` for :func:`call_each` at start-up: one PluginError line naming the plugin."""
    def fail(plugin: str, exc: Exception) -> None:
        if isinstance(exc, ConfigError):  # names its flag already (and PluginError its plugin)
            raise exc
        raise PluginError(f"plugin {plugin!r}: {what} raised {type(exc).__name__}: {exc}".replace("\n", " ")) from exc

    return fail


def registrations(pm: pluggy.PluginManager, kind: str) -> tuple[dict[str, Callable[..., Any]], dict[str, str]]:
    """``({name: factory}, {name: plugin name})`` of the ``r1mw_register_<kind>`` hook: a plugin
    whose hook raises, or two plugins registering one name, fail with one line naming them."""
    hook = getattr(pm.hook, f"r1mw_register_{kind}")
    merged: dict[str, Callable[..., Any]] = {}
    owners: dict[str, str] = {}
    for plugin, result in call_each(hook, raise_as_plugin_error(f"r1mw_register_{kind}()")):
        if not isinstance(result, Mapping):
            raise PluginError(f"plugin {plugin!r}: r1mw_register_{kind}() returned {type(result).__name__}, "
                              "not a {name: factory} mapping")
        for name, factory in result.items():
            if name in merged:
                first = owners[name]
                raise PluginError(
                    f"plugins {first!r} and {plugin!r} both register the {kind[:-1]} {name!r}; keep one by "
                    f"disabling the other: R1MW_DISABLE_PLUGINS={first} or R1MW_DISABLE_PLUGINS={plugin}")
            merged[name] = factory
            owners[name] = plugin
    return merged, owners


def select(available: Mapping[str, Callable[..., Any]], wanted: Iterable[str], flag: str,
           disabled: Iterable[str] = ()) -> list[tuple[str, Callable[..., Any]]]:
    chosen = []
    for name in wanted:
        if name not in available:
            allowed = ", ".join(sorted(available)) or "none registered"
            off = ", ".join(disabled)
            hint = f" (R1MW_DISABLE_PLUGINS={off} takes away what those plugins register)" if off else ""
            raise ConfigError(f"{flag}: unknown name {name!r}; available: {allowed}{hint}")
        chosen.append((name, available[name]))
    return chosen
