"""LiteLLM config YAML -> r1mw Settings: ``litellm_settings.cache_params`` and the original
design's ``r1_optimizations`` block mapped onto r1mw's flags.

Used by :func:`r1mw.integrations.litellm.enable` and ``r1mw litellm-config PATH``. Every key
is checked: an unknown one, a cache type r1mw does not serve, an unset ``os.environ/`` variable
or a bad value is one :class:`~r1mw.ConfigError` line naming the key.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError
from ..manager import build_plugin_manager, registrations
from ..settings import FLAGS, Settings

__all__ = ["LiteLLMConfig", "OPTIMIZATIONS", "load_config", "settings_from_config"]

log = logging.getLogger("r1mw.litellm")

# The stages the booleans switch on run in R1MW_STAGES' default order, outermost first:
# prefetch sits outside template and exact so that it sees every request, hits included
# (docs/prefetch.md, "Placement"); last, it saw only misses and learnt broken sessions.
_STAGE_ORDER: tuple[str, ...] = next(f.default for f in FLAGS if f.attr == "stages")

# r1_optimizations key -> (what it maps onto, for the docs and errors)
OPTIMIZATIONS: dict[str, str] = {
    "template_cache": "bool: the `template` stage in R1MW_STAGES",
    "template_cache_size": "int: R1_TEMPLATE_CACHE_SIZE",
    "semantic_dedup": "bool: the `semantic` stage in R1MW_STAGES and R1_SEMANTIC_DEDUP_ENABLED",
    "similarity_threshold": "float or 'auto': SIMILARITY_THRESHOLD",
    "prefetch": "bool: the `prefetch` stage in R1MW_STAGES and R1_CONTEXT_PREFETCH_ENABLED",
    "metrics": "bool: the `metrics` stage in R1MW_STAGES",
    "max_context_expansion": "int tokens: pipe.services['max_context_expansion'], the budget for context builders",
    "compression_threshold": "int bytes: COMPRESSION_THRESHOLD",
    "l1_size": "int: CACHE_L1_SIZE",
    "l2_size": "int: CACHE_L2_SIZE",
    "l3_size": "int: CACHE_L3_SIZE",
    "cache_dir": "path: R1MW_CACHE_DIR",
    "scope_by_user": "bool: R1MW_SCOPE_BY_USER",
    "stages": "list: R1MW_STAGES (replaces the stage booleans)",
    "tiers": "list: R1MW_TIERS (replaces the tiers cache_params.type implies)",
    "flags": "mapping of any r1mw flag by env name, e.g. {R1MW_L2_FSYNC: file}",
}
_SETTING_OF = {"template_cache_size": "template_cache_size", "similarity_threshold": "similarity_threshold",
               "compression_threshold": "compression_threshold", "l1_size": "l1_size", "l2_size": "l2_size",
               "l3_size": "l3_size", "cache_dir": "cache_dir", "scope_by_user": "scope_by_user"}
_BOOL_STAGES = {"template_cache": "template", "semantic_dedup": "semantic", "prefetch": "prefetch",
                "metrics": "metrics"}

# cache_params keys r1mw understands (LiteLLM's names); anything else is refused.
_CACHE_PARAMS = frozenset({
    "type", "host", "port", "password", "username", "db", "url", "redis_url", "ssl", "namespace", "ttl",
    "default_in_memory_ttl", "default_in_redis_ttl", "mode", "supported_call_types", "similarity_threshold",
    "disk_cache_dir", "max_messages",
})
# cache_params.type -> tiers, fastest first (those not installed are skipped with a warning)
_TIERS_OF_TYPE = {"local": ("l1",), "disk": ("l1", "l2"), "redis": ("l1", "l2", "redis")}


@dataclass(slots=True)
class LiteLLMConfig:
    """What :func:`settings_from_config` made of a config file."""

    enabled: bool
    overrides: dict[str, Any]
    mode: str = "default_on"
    max_context_expansion: int | None = None
    skipped: list[str] = field(default_factory=list)


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a LiteLLM config YAML (ConfigError if unreadable or not a mapping)."""
    try:
        import yaml
    except ImportError:
        raise ConfigError("reading a LiteLLM config needs PyYAML: pip install 'r1mw[yaml]'") from None
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"LiteLLM config {str(path)!r} cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"LiteLLM config {path}:{_yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"LiteLLM config {str(path)!r}: expected a mapping at the top level")
    return data


def _yaml_problem(exc: Exception) -> str:
    """``LINE: invalid YAML: what (column N)``: PyYAML's own message spans several lines
    (context, the line quoted, a caret), which a one-line error cannot show."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return f"1: invalid YAML: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f" ({context})" if context else ""
    return f"{mark.line + 1}: invalid YAML: {what}{where}, column {mark.column + 1}"


def _env(value: Any, where: str) -> Any:
    if isinstance(value, str) and value.startswith("os.environ/"):
        name = value[len("os.environ/"):]
        if name not in os.environ:
            raise ConfigError(f"{where}={value!r}: the environment variable {name} is not set")
        return os.environ[name]
    return value


def _as_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{where}={value!r} is invalid: expected true or false")


def _int(value: Any, default: int, name: str) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"litellm_settings.cache_params.{name}={value!r} is invalid: expected an integer") from None


def _names(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return tuple(str(i).strip() for i in items if str(i).strip())


def _registered(kind: str, settings: Settings) -> set[str]:
    pm = build_plugin_manager(plugins=settings.plugins, disable=settings.disable_plugins)
    return set(registrations(pm, kind)[0])


def settings_from_config(config: Mapping[str, Any], *, base: Settings | None = None) -> tuple[Settings, LiteLLMConfig]:
    """Map a LiteLLM config onto r1mw :class:`Settings` (over ``base``, default the environment).

    ``litellm_settings.cache_params``:

    ========================================  ======================================================
    ``type: local``                           R1MW_TIERS=l1
    ``type: disk`` (+ ``disk_cache_dir``)     R1MW_TIERS=l1,l2 (+ R1MW_CACHE_DIR)
    ``type: redis``                           R1MW_TIERS=l1,l2,redis; R1MW_REDIS_URL from
                                              ``url``/``redis_url`` or host, port, password, db, ssl
    ``namespace``                             R1MW_NAMESPACE
    ``ttl`` (or ``default_in_*_ttl``)         R1MW_DEFAULT_TTL
    ``similarity_threshold``                  SIMILARITY_THRESHOLD
    ``mode``                                  LiteLLM's own (default_on / default_off = opt-in)
    ========================================  ======================================================

    ``r1_optimizations``: see :data:`OPTIMIZATIONS`; an unknown key is a ConfigError naming it.
    Stages and tiers a config asks for but no installed plugin provides are skipped with a
    warning (listed in ``LiteLLMConfig.skipped``): fewer hits, never a wrong one.
    """
    base = base if base is not None else Settings.from_env()
    ls = config.get("litellm_settings") or {}
    if not isinstance(ls, Mapping):
        raise ConfigError("litellm_settings: expected a mapping")
    enabled = _as_bool(ls.get("cache", False), "litellm_settings.cache")
    params = ls.get("cache_params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError("litellm_settings.cache_params: expected a mapping")
    opts = config.get("r1_optimizations") or {}
    if not isinstance(opts, Mapping):
        raise ConfigError("r1_optimizations: expected a mapping")

    overrides: dict[str, Any] = {}
    out = LiteLLMConfig(enabled=enabled, overrides=overrides)
    for name in params:
        if name not in _CACHE_PARAMS:
            raise ConfigError(f"litellm_settings.cache_params.{name}: not a setting r1mw serves; "
                              f"allowed: {', '.join(sorted(_CACHE_PARAMS))}")
    p = {k: _env(v, f"litellm_settings.cache_params.{k}") for k, v in params.items()}
    typed = "type" in p or any(k in p for k in ("host", "url", "redis_url"))
    kind = str(p.get("type", "redis" if typed else "local"))
    if kind not in _TIERS_OF_TYPE:
        raise ConfigError(f"litellm_settings.cache_params.type={kind!r} is not served by r1mw; "
                          f"allowed: {', '.join(_TIERS_OF_TYPE)}")
    # No cache type in the file: the tiers of the environment (R1MW_TIERS) stay.
    tiers: tuple[str, ...] = _TIERS_OF_TYPE[kind] if typed else tuple(base.tiers)
    if kind == "redis":
        url = p.get("url") or p.get("redis_url")
        if not url:
            auth = ""
            if p.get("password"):
                auth = f"{p.get('username') or ''}:{p['password']}@"
            scheme = "rediss" if _as_bool(p.get("ssl", False), "cache_params.ssl") else "redis"
            port, db = _int(p.get("port"), 6379, "port"), _int(p.get("db"), 0, "db")
            url = f"{scheme}://{auth}{p.get('host') or '127.0.0.1'}:{port}/{db}"
        overrides["redis_url"] = str(url)
    if p.get("disk_cache_dir"):
        overrides["cache_dir"] = p["disk_cache_dir"]
    ttl = p.get("ttl", p.get("default_in_redis_ttl" if kind == "redis" else "default_in_memory_ttl"))
    if ttl is not None:
        overrides["default_ttl"] = ttl
    if p.get("namespace") is not None:
        overrides["namespace"] = p["namespace"]
    if p.get("similarity_threshold") is not None:
        overrides["similarity_threshold"] = p["similarity_threshold"]
    if p.get("mode") is not None:
        out.mode = str(p["mode"])
        if out.mode not in ("default_on", "default_off"):
            raise ConfigError(f"litellm_settings.cache_params.mode={out.mode!r} is invalid: "
                              "expected default_on or default_off")
    calls = p.get("supported_call_types")
    if calls is not None and "acompletion" not in _names(calls):
        raise ConfigError(f"litellm_settings.cache_params.supported_call_types={calls!r}: r1mw serves "
                          "acompletion; include it")

    for name in opts:
        if name not in OPTIMIZATIONS:
            raise ConfigError(f"r1_optimizations.{name}: unknown key; allowed: {', '.join(sorted(OPTIMIZATIONS))}")
    o = {k: _env(v, f"r1_optimizations.{k}") for k, v in opts.items()}
    # No stage named in the file: the stages of the environment (R1MW_STAGES) stay.
    staged = any(key in o for key in _BOOL_STAGES)
    stages = ["exact"] if staged else list(base.stages)
    for key, stage in _BOOL_STAGES.items():
        if key in o and _as_bool(o[key], f"r1_optimizations.{key}"):
            stages.append(stage)
    if "semantic_dedup" in o:
        overrides["semantic_dedup_enabled"] = _as_bool(o["semantic_dedup"], "r1_optimizations.semantic_dedup")
    if "prefetch" in o:
        overrides["prefetch_enabled"] = _as_bool(o["prefetch"], "r1_optimizations.prefetch")
    for key, attr in _SETTING_OF.items():
        if key in o:
            overrides[attr] = o[key]
    if "max_context_expansion" in o:
        try:
            out.max_context_expansion = int(o["max_context_expansion"])
        except (TypeError, ValueError):
            raise ConfigError(f"r1_optimizations.max_context_expansion={o['max_context_expansion']!r} is "
                              "invalid: expected an integer number of tokens") from None
    flags = o.get("flags") or {}
    if not isinstance(flags, Mapping):
        raise ConfigError("r1_optimizations.flags: expected a mapping of r1mw flag names to values")
    if flags:
        known = {f.env for f in FLAGS}
        for name in flags:
            if name not in known:
                raise ConfigError(f"r1_optimizations.flags.{name}: not an r1mw flag (see `r1mw config`)")
        try:
            via_flags = Settings.from_env({str(k): str(v) for k, v in flags.items()}, dotenv=None)
        except ConfigError as exc:
            raise ConfigError(f"r1_optimizations.flags: {exc}") from None
        overrides.update({attr: via_flags.as_dict()[attr] for attr in via_flags.as_dict()
                          if via_flags.source(attr) == "env"})
    explicit_stages = "stages" in o
    explicit_tiers = "tiers" in o
    if explicit_stages:
        stages = list(_names(o["stages"]))
    if explicit_tiers:
        tiers = _names(o["tiers"])

    try:
        settings = base.replace(**overrides)
    except ConfigError as exc:
        raise ConfigError(f"LiteLLM config: {exc}") from None
    # Keep what is installed; what is not is skipped loudly (explicit lists are kept as given,
    # so a typo there fails at start-up with the list of names that exist).
    if not explicit_stages:
        have = _registered("stages", settings)
        for name in stages:
            if name not in have:
                out.skipped.append(f"stage {name}")
        stages = [s for s in stages if s in have]
        if staged:
            stages = [s for s in _STAGE_ORDER if s in stages]
    if not explicit_tiers:
        have = _registered("tiers", settings)
        for name in tiers:
            if name not in have:
                out.skipped.append(f"tier {name}")
        tiers = tuple(t for t in tiers if t in have)
    for what in out.skipped:
        log.warning("LiteLLM config asks for the %s, which no installed r1mw plugin provides: skipped", what)
    for key, names in (("stages", stages), ("tiers", tiers)):
        try:
            settings = settings.replace(**{key: list(names)})
        except ConfigError as exc:
            where = f"r1_optimizations.{key}" if key in o else f"the {key} this config implies"
            raise ConfigError(f"LiteLLM config, {where}: {exc}") from None
    return settings, out
