"""Settings: one table of flags generates parsing, validation, docs and ``r1mw config``.

Precedence: keyword arguments > process environment > ``./.env`` > default.
A wrong value raises :class:`~r1mw.ConfigError` with one line naming the flag, the value
and what is allowed; an unknown ``R1MW_*`` variable is refused the same way (a typo must
not silently fall back to a default).

>>> s = Settings(l1_size=50, stages="exact")
>>> s.l1_size, s.stages
(50, ('exact',))
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .errors import ConfigError

__all__ = ["FLAGS", "Flag", "Settings"]


# -- parsers: str -> value, raising ValueError("what is allowed") ------------------------


def _int(lo: int = 0, hi: int | None = None) -> Callable[[Any], int]:
    def parse(raw: Any) -> int:
        try:
            value = int(str(raw).replace("_", "").replace(",", "")) if not isinstance(raw, int) else raw
        except ValueError:
            raise ValueError(f"an integer >= {lo}") from None
        if isinstance(value, bool) or value < lo or (hi is not None and value > hi):
            raise ValueError(f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}")
        return value

    parse.allowed = f"integer >= {lo}" if hi is None else f"integer in [{lo}, {hi}]"  # type: ignore[attr-defined]
    return parse


def _float(lo: float = 0.0, hi: float | None = None, optional: bool = False) -> Callable[[Any], float | None]:
    def parse(raw: Any) -> float | None:
        if optional and (raw is None or str(raw).strip().lower() in ("", "auto", "none")):
            return None
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(parse.allowed) from None  # type: ignore[attr-defined]
        if not math.isfinite(value):  # inf (or 1e400) as a timeout or a window is a typo, not "never"
            raise ValueError("a finite " + parse.allowed[2:])  # type: ignore[attr-defined]
        if value < lo or (hi is not None and value > hi):
            raise ValueError(parse.allowed)  # type: ignore[attr-defined]
        return value

    rng = f"a number in [{lo}, {hi}]" if hi is not None else f"a number >= {lo}"
    parse.allowed = rng + (" or 'auto'" if optional else "")  # type: ignore[attr-defined]
    return parse


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("true or false (1/0, yes/no, on/off)")


_bool.allowed = "true/false"  # type: ignore[attr-defined]


def _str(raw: Any) -> str:
    return "" if raw is None else str(raw).strip()


_str.allowed = "text"  # type: ignore[attr-defined]

_NAME = re.compile(r"^[A-Za-z_][\w.+-]*$")


def _names(raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, (list, tuple)) else str(raw or "").split(",")
    names = tuple(str(i).strip() for i in items if str(i).strip())
    for name in names:
        if not _NAME.match(name):
            raise ValueError("a comma-separated list of names")
    if len(set(names)) != len(names):
        raise ValueError("a comma-separated list of names, each at most once")
    return names


_names.allowed = "comma-separated names"  # type: ignore[attr-defined]


# What the built-in stages do fixes their mutual order (outermost first): template re-keys a
# request for exact and scopes semantic's lookup, so it runs outside both (inside, it would
# key nothing: fewer hits, silently); prefetch must see every request of a session, hits
# included, so it runs outside template and exact. Any other stage (a plugin's) goes anywhere.
_OUTSIDE: tuple[tuple[str, str], ...] = (("template", "exact"), ("template", "semantic"),
                                         ("prefetch", "template"), ("prefetch", "exact"))
STAGE_ORDER_RULE = "template before exact and semantic, prefetch before template and exact"


def _stage_names(raw: Any) -> tuple[str, ...]:
    names = _names(raw)
    position = {name: i for i, name in enumerate(names)}
    for outer, inner in _OUTSIDE:
        if outer in position and inner in position and position[outer] > position[inner]:
            raise ValueError(f"stage names outermost first, with {STAGE_ORDER_RULE} ({outer} is listed "
                             f"after {inner}), e.g. metrics,prefetch,template,exact,semantic")
    return names


_stage_names.allowed = "comma-separated names"  # type: ignore[attr-defined]


# The built-in tiers, fastest first: a lookup goes down the list and evictions move down it,
# so RAM listed after the disk makes every lookup read the disk first, and Redis (shared,
# written through) before a local tier stops the demotion chain (a key the next tier holds
# is not moved further). Any other tier (a plugin's) goes anywhere.
_TIER_ORDER = ("l1", "l2", "l3", "l4", "redis")
TIER_ORDER_RULE = "built-in tiers l1, l2, l3, l4, redis in that order"


def _tier_names(raw: Any) -> tuple[str, ...]:
    names = _names(raw)
    if not names:
        raise ValueError("a comma-separated list of at least one name")
    built_in = [name for name in names if name in _TIER_ORDER]
    for early, late in zip(built_in, built_in[1:]):
        if _TIER_ORDER.index(late) < _TIER_ORDER.index(early):
            raise ValueError(f"tier names fastest first, with the {TIER_ORDER_RULE} ({late} is listed "
                             f"after {early}), e.g. l1,l2 or l1,l2,l3,l4,redis")
    return names


_tier_names.allowed = "comma-separated names"  # type: ignore[attr-defined]


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        value = str(raw).strip().lower()
        if value not in options:
            raise ValueError("one of " + ", ".join(options))
        return value

    parse.allowed = "|".join(options)  # type: ignore[attr-defined]
    return parse


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.I)


def _bytes(raw: Any) -> int:
    """Sizes like ``512MB``, ``2GiB`` or plain bytes; 0 means unbounded."""
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    m = _SIZE.match(str(raw))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError("a size like 512MB, 2GiB or a number of bytes (0 = unbounded)")
    number = float(m.group(1))
    size = int(number * _UNITS[m.group(2).lower()])
    if size == 0 and number != 0:  # 0.5 bytes is not "0 = unbounded"
        raise ValueError("a size of at least 1 byte, like 512MB or 2GiB (0 = unbounded)")
    return size


_bytes.allowed = "size (512MB, 2GiB, bytes; 0 = unbounded)"  # type: ignore[attr-defined]


def _path(raw: Any) -> Path | None:
    text = _str(raw)
    return Path(os.path.expanduser(text)) if text else None


_path.allowed = "a path (empty = default)"  # type: ignore[attr-defined]


def _json_map(raw: Any) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return dict(raw)
    text = _str(raw)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError("a JSON object") from None
    if not isinstance(value, dict):
        raise ValueError("a JSON object")
    return value


_json_map.allowed = "JSON object"  # type: ignore[attr-defined]


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "r1mw")


def _off_or(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``parse``, or None for an empty value / ``off`` / ``none`` (a rule switched off)."""

    def parse_or_off(raw: Any) -> Any:
        if raw is None or str(raw).strip().lower() in ("", "off", "none"):
            return None
        return parse(raw)

    parse_or_off.allowed = f"{getattr(parse, 'allowed', 'a value')} or off"  # type: ignore[attr-defined]
    return parse_or_off


# -- the table ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Flag:
    env: str
    attr: str
    default: Any
    parse: Callable[[Any], Any]
    doc: str

    @property
    def allowed(self) -> str:
        return getattr(self.parse, "allowed", "")


FLAGS: tuple[Flag, ...] = (
    # Flag names users already have in their .env (the original design's).
    Flag("CACHE_L1_SIZE", "l1_size", 1000, _int(1), "entries kept in RAM (L1)"),
    Flag("CACHE_L2_SIZE", "l2_size", 10_000, _int(0), "entries kept on the SSD tier (L2)"),
    Flag("CACHE_L3_SIZE", "l3_size", 100_000, _int(0), "entries kept on the HDD tier (L3)"),
    Flag("EMBEDDING_CACHE_SIZE", "embedding_cache_size", 5000, _int(0), "embeddings kept in RAM"),
    Flag("COMPRESSION_THRESHOLD", "compression_threshold", 1000, _int(0),
         "entries larger than this many bytes are compressed (by R1MW_CODEC's compressor)"),
    Flag("SIMILARITY_THRESHOLD", "similarity_threshold", None, _float(0.0, 1.0, optional=True),
         "cosine above which a semantic candidate goes to the guards; unset = calibrated for the model"),
    Flag("R1_TEMPLATE_CACHE_SIZE", "template_cache_size", 100, _int(0),
         "templates mined from traffic kept at most (least used evicted)"),
    Flag("R1_CONTEXT_PREFETCH_ENABLED", "prefetch_enabled", True, _bool,
         "learn what a session asks next and prefetch it"),
    Flag("R1_SEMANTIC_DEDUP_ENABLED", "semantic_dedup_enabled", True, _bool,
         "store a guarded semantic duplicate as an alias, not a second copy"),
    # r1mw's own flags.
    Flag("R1MW_STAGES", "stages", ("metrics", "prefetch", "template", "exact", "semantic"), _stage_names,
         f"stages that run, outermost first ({STAGE_ORDER_RULE}; others anywhere; empty: none, nothing cached)"),
    Flag("R1MW_TIERS", "tiers", ("l1", "l2"), _tier_names,
         f"storage tiers, fastest first ({TIER_ORDER_RULE}; others anywhere)"),
    Flag("R1MW_CODEC", "codec", "msgpack+zstd+dict", _str,
         "codec for the tiers below RAM (msgpack+zstd+dict trains its zstd dictionary by itself)"),
    Flag("R1MW_PLUGINS", "plugins", (), _names, "extra plugin modules to import and register"),
    Flag("R1MW_DISABLE_PLUGINS", "disable_plugins", (), _names,
         "plugins (entry-point names, e.g. r1mw.semantic) not to load"),
    Flag("R1MW_NAMESPACE", "namespace", "", _str, "default namespace (tenant boundary)"),
    Flag("R1MW_SCOPE_BY_USER", "scope_by_user", False, _bool,
         "make each `user` its own namespace"),
    Flag("R1MW_DEFAULT_TTL", "default_ttl", 0.0, _float(0.0), "seconds an entry lives; 0 = no expiry"),
    Flag("R1MW_CACHE_DIR", "cache_dir", None, _path, "directory of the disk tiers and persisted models"),
    Flag("R1MW_L1_MAX_BYTES", "l1_max_bytes", 256 * 10**6, _bytes, "RAM tier byte budget"),
    Flag("R1MW_L2_DIR", "l2_dir", None, _path, "SSD tier directory (default: <cache dir>/l2)"),
    Flag("R1MW_L2_MAX_BYTES", "l2_max_bytes", 2 * 10**9, _bytes, "SSD tier byte budget"),
    Flag("R1MW_L3_DIR", "l3_dir", None, _path, "HDD tier directory (default: <cache dir>/l3)"),
    Flag("R1MW_L3_MAX_BYTES", "l3_max_bytes", 20 * 10**9, _bytes, "HDD tier byte budget"),
    Flag("R1MW_L4_DIR", "l4_dir", None, _path, "archive tier directory (default: <cache dir>/l4)"),
    Flag("R1MW_L4_MAX_BYTES", "l4_max_bytes", 0, _bytes, "archive byte budget; 0 = unbounded"),
    Flag("R1MW_REDIS_URL", "redis_url", "", _str, "shared Redis tier, e.g. redis://host:6379/0"),
    Flag("R1MW_REDIS_TIMEOUT_MS", "redis_timeout_ms", 50.0, _float(1.0),
         "deadline of one Redis call; past it the lookup falls through"),
    Flag("R1MW_EMBEDDER", "embedder", "model2vec", _str, "embedder plugin to use"),
    Flag("R1MW_EMBED_MODEL", "embed_model", "", _str,
         "model2vec model name or path; empty = the offline model of tokenlearn-static-model"),
    Flag("R1MW_TEMPLATES", "templates", None, _path, "template file (TOML, JSON or YAML)"),
    Flag("R1MW_STREAM_STALL_TIMEOUT_S", "stream_stall_timeout_s", 120.0, _float(0.001),
         "identical requests waiting on a stream make their own call once it passed no chunk for this long"),
    Flag("R1MW_PREFETCH_MIN_PROB", "prefetch_min_prob", 0.3, _float(0.0, 1.0),
         "prefetch a predicted next request only above this probability"),
    Flag("R1MW_PREFETCH_MAX_INFLIGHT", "prefetch_max_inflight", 4, _int(0),
         "prefetch calls in flight at most"),
    Flag("R1MW_PREFETCH_MAX_PER_MINUTE", "prefetch_max_per_minute", 30, _int(0),
         "prefetch calls started per minute at most"),
    Flag("R1MW_PREFETCH_TOKEN_BUDGET", "prefetch_token_budget", 200_000, _int(0),
         "tokens prefetch may spend per hour"),
    Flag("R1MW_METRICS_PORT", "metrics_port", 0, _int(0, 65535),
         "serve Prometheus metrics on this port; 0 = off"),
    Flag("R1MW_METRICS_SNAPSHOT", "metrics_snapshot", None, _path,
         "file the pipeline writes metrics snapshots to (for `r1mw report`)"),
    Flag("R1MW_PRICES", "prices", {}, _json_map,
         'price overrides, JSON {"model": {"input": $/Mtok, "output": $/Mtok}}'),
    Flag("R1MW_LOG_LEVEL", "log_level", "warning", _choice("debug", "info", "warning", "error"),
         "log level of the r1mw logger"),
    # -- observability (issue 5): metrics endpoint, snapshots, alert rules -------------------
    Flag("R1MW_METRICS_HOST", "metrics_host", "127.0.0.1", _str,
         "address the metrics endpoint binds (0.0.0.0 to let another host scrape)"),
    Flag("R1MW_METRICS_TOP_N", "metrics_top_n", 20, _int(0, 1000),
         "template ids / namespaces / models exported as their own label; the rest are `other`"),
    Flag("R1MW_METRICS_SNAPSHOT_INTERVAL_S", "metrics_snapshot_interval_s", 60.0, _float(0.01),
         "seconds between two metrics snapshots"),
    Flag("R1MW_METRICS_SNAPSHOT_MAX_BYTES", "metrics_snapshot_max_bytes", 16 * 2**20, _bytes,
         "snapshot file budget: past it, the oldest half is dropped (0 = unbounded)"),
    Flag("R1MW_ALERT_HIT_RATE_BELOW", "alert_hit_rate_below", None, _off_or(_float(0.0, 1.0)),
         "alert when the hit rate over the window is below this (0-1); unset = off"),
    Flag("R1MW_ALERT_P99_MS_ABOVE", "alert_p99_ms_above", None, _off_or(_float(0.0)),
         "alert when p99 latency over the window is above this many ms; unset = off"),
    Flag("R1MW_ALERT_ERROR_RATE_ABOVE", "alert_error_rate_above", None, _off_or(_float(0.0, 1.0)),
         "alert when the share of requests ending in an upstream error is above this (0-1); unset = off"),
    Flag("R1MW_ALERT_DISK_FULL_PCT", "alert_disk_full_pct", None, _off_or(_float(0.0, 100.0)),
         "alert when a tier below RAM is above this % of its byte budget; unset = off"),
    Flag("R1MW_ALERT_REDIS_DOWN", "alert_redis_down", False, _bool,
         "alert while a tier (Redis) reports it cannot be reached"),
    Flag("R1MW_ALERT_WINDOW_S", "alert_window_s", 300.0, _float(1.0),
         "sliding window the alert rules look at, in seconds"),
    Flag("R1MW_ALERT_INTERVAL_S", "alert_interval_s", 15.0, _float(0.01),
         "seconds between two evaluations of the alert rules"),
    Flag("R1MW_ALERT_MIN_REQUESTS", "alert_min_requests", 20, _int(1),
         "rate and latency rules stay quiet below this many requests in the window"),
    # Tiers (RAM and disk).
    Flag("R1MW_L1_POLICY", "l1_policy", "s3fifo", _choice("s3fifo", "lru", "sieve", "wtinylfu"),
         "eviction policy of the RAM tier"),
    Flag("R1MW_L2_FSYNC", "l2_fsync", "none", _choice("none", "file", "full"),
         "L2 durability: none (atomic rename only), file (fsync before rename), full (and the directory)"),
    Flag("R1MW_ZSTD_DICT", "zstd_dict", None, _path,
         "zstd dictionary for R1MW_CODEC=msgpack+zstd (default: <cache dir>/zstd.dict if present; "
         "make one with `r1mw zstd-dict`)"),
    # -- templates (issue 3) --
    Flag("R1MW_TEMPLATE_MINE_MIN", "template_mine_min", 3, _int(2),
         "prompts of one shape (differing in the same positions) before it becomes a mined template"),
    # cold tiers (L3 segments, L4 archive, Redis)
    Flag("R1MW_L3_SEGMENT_BYTES", "l3_segment_bytes", 64 * 2**20, _bytes,
         "L3 segment file size before it is sealed (at most a quarter of R1MW_L3_MAX_BYTES; 0 = 64 MiB)"),
    Flag("R1MW_L3_INLINE_READS", "l3_inline_reads", False, _bool,
         "read L3 on the event loop (fast disks); false keeps slow disks in a thread"),
    Flag("R1MW_L3_COMPACT_RATIO", "l3_compact_ratio", 0.5, _float(0.05, 1.0),
         "compact an L3 segment once this share of its bytes is dead"),
    Flag("R1MW_SHARED_REFRESH_MS", "shared_refresh_ms", 1000.0, _float(0.0),
         "L3/L4 look for other processes' writes and deletes at most this often (on a lookup)"),
    Flag("R1MW_L4_CODEC", "l4_codec", "auto", _choice("auto", "zstd", "lz4"),
         "archive block compression; auto = zstd when zstandard is installed, else lz4"),
    Flag("R1MW_L4_BLOCK_BYTES", "l4_block_bytes", 64 * 2**10, _bytes,
         "records gathered into one compressed L4 block (0 = 64 KiB)"),
    Flag("R1MW_REDIS_PREFIX", "redis_prefix", "r1mw:v2:", _str, "prefix of every key r1mw writes to Redis"),
    Flag("R1MW_REDIS_BREAKER_FAILURES", "redis_breaker_failures", 3, _int(1),
         "Redis failures in a row that open the circuit breaker (Redis skipped)"),
    Flag("R1MW_REDIS_BREAKER_COOLDOWN_S", "redis_breaker_cooldown_s", 5.0, _float(0.0),
         "seconds Redis is skipped before one call probes it again"),
    # Codec: zstd dictionaries trained automatically (R1MW_CODEC=msgpack+zstd+dict).
    # 50: a day of a small desk (the demo: 255 replies) otherwise writes most of its entries
    # before the dictionary exists (40 % of raw JSON stored instead of 34 %); the trainer
    # sizes the first dictionary to its few samples and retrains at 200 (4x), which brings
    # it to what a first training on 200 entries gives (34.0 % against 35.6 % without).
    Flag("R1MW_ZSTD_TRAIN_AFTER", "zstd_train_after", 50, _int(0),
         "compressible entries written before the first zstd dictionary is trained (retrains after 4x as many; 0 = never)"),
    # 6 with the 4x schedule: the 7th dictionary, which removes the 1st, comes at write 204,800.
    Flag("R1MW_ZSTD_DICTS_KEPT", "zstd_dicts_kept", 6, _int(1),
         "zstd dictionaries kept on disk; entries written with an older one become misses"),
    Flag("R1MW_ZSTD_DICT_DIR", "zstd_dict_dir", None, _path,
         "directory of the trained zstd dictionaries (default: <cache dir>/zstd-dicts; share it with every process sharing the disk tiers)"),
    # -- semantic stage (issue 7) --
    Flag("R1MW_SEMANTIC_ANN_MIN", "semantic_ann_min", 100_000, _int(0),
         "entries in one scope beyond which the semantic index uses usearch (HNSW); 0 = never"),
    Flag("R1MW_SEMANTIC_TOP_K", "semantic_top_k", 16, _int(1, 100),
         "semantic candidates above the threshold checked by the guards per lookup"),
)

_BY_ATTR = {f.attr: f for f in FLAGS}
_BY_ENV = {f.env: f for f in FLAGS}
# Variables with our prefix that are not settings (test harness, etc.).
_IGNORED_PREFIXES = ("R1MW_TEST_",)


def _fail(flag: Flag, raw: Any, allowed: str) -> ConfigError:
    if isinstance(raw, (list, tuple)) and all(isinstance(x, str) for x in raw):
        raw = ",".join(raw)  # as it would be written in the environment
    return ConfigError(f"{flag.env}={raw!r} is invalid: expected {allowed}")


class Settings:
    """Every r1mw setting, validated. Attributes are the ``attr`` names of :data:`FLAGS`.

    ``Settings()`` gives the defaults, ``Settings(l1_size=10)`` overrides by keyword,
    ``Settings.from_env()`` reads the environment and ``./.env``.
    """

    __slots__ = ("_values", "_sources")

    def __init__(self, **values: Any) -> None:
        parsed: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for attr, raw in values.items():
            flag = _BY_ATTR.get(attr)
            if flag is None:
                close = difflib.get_close_matches(attr, _BY_ATTR, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"unknown setting {attr!r}{hint}")
            parsed[attr] = _parse(flag, raw)
            sources[attr] = "keyword"
        for flag in FLAGS:
            if flag.attr not in parsed:
                parsed[flag.attr] = flag.default
                sources[flag.attr] = "default"
        object.__setattr__(self, "_values", parsed)
        object.__setattr__(self, "_sources", sources)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, dotenv: str | os.PathLike[str] | None = ".env",
                 **overrides: Any) -> "Settings":
        """Read flags from ``env`` (default ``os.environ``) over ``dotenv`` over the defaults."""
        layers: list[tuple[str, Mapping[str, Any], bool]] = []  # (source, values, from a file)
        if dotenv is not None and os.path.isfile(dotenv):
            layers.append((f"{dotenv}", _read_dotenv(dotenv), True))
        layers.append(("env", os.environ if env is None else env, False))
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for source, layer, from_file in layers:
            for name, raw in layer.items():
                flag = _BY_ENV.get(name)
                if flag is None:
                    meant = _meant_flag(name, fuzzy=from_file)
                    if meant is not None:
                        hint = f"; did you mean {meant}?" if meant else ""
                        raise ConfigError(f"{name}={raw!r} is not an r1mw flag{hint}")
                    continue
                values[flag.attr] = _parse(flag, raw)
                sources[flag.attr] = source
        values.update(overrides)
        settings = cls(**values)
        for attr, source in sources.items():
            if attr not in overrides:
                settings._sources[attr] = source
        return settings

    def replace(self, **changes: Any) -> "Settings":
        """A copy with some settings changed (validated like keywords)."""
        values = dict(self._values)
        values.update(changes)
        new = Settings(**values)
        for attr, source in self._sources.items():
            if attr not in changes:
                new._sources[attr] = source
        return new

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Settings are read-only; use settings.replace(...)")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and self._values == other._values

    def __repr__(self) -> str:
        changed = {a: v for a, v in self._values.items() if self._sources[a] != "default"}
        return f"Settings({', '.join(f'{a}={v!r}' for a, v in changed.items())})"

    def source(self, attr: str) -> str:
        """Where a value came from: default, env, keyword or the .env path."""
        return self._sources[attr]

    def items(self) -> Iterator[tuple[Flag, Any, str]]:
        for flag in FLAGS:
            yield flag, self._values[flag.attr], self._sources[flag.attr]

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    # -- derived paths ------------------------------------------------------------------
    @property
    def cache_path(self) -> Path:
        return self._values["cache_dir"] or Path(_default_cache_dir())

    def tier_dir(self, tier: str) -> Path:
        """Directory of a disk tier (``l2``, ``l3``, ``l4``): its flag, or under the cache dir."""
        return self._values.get(f"{tier}_dir") or self.cache_path / tier


def _read_dotenv(path: str | os.PathLike[str]) -> dict[str, str]:
    """The values of a .env file. A file that cannot be read, or a line naming one of our
    flags that python-dotenv cannot parse (it would skip it with a warning, and the flag
    would silently keep its default: a lost namespace is a lost tenant boundary), is a
    ConfigError in one line."""
    import io

    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the .env file: {exc}".replace("\n", " ")) from None
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.string
        if binding.error and ("R1MW_" in line or any(name in line for name in _BY_ENV)):
            raise ConfigError(f"{path} line {binding.original.line}: cannot parse {line.strip()!r} "
                              "(expected NAME=value, quotes closed on the same line)")
        # A flag named with no "=" (python-dotenv reads it as unset) would keep its default.
        if binding.key is not None and binding.value is None and _ours(binding.key):
            raise ConfigError(f"{path} line {binding.original.line}: {binding.key} has no value "
                              f"(expected {binding.key}=value; {binding.key}= for empty)")
    return {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}


def _meant_flag(name: str, *, fuzzy: bool) -> str | None:
    """For a name that is no flag: the flag it most likely meant ("" when it is ours but
    close to none), or None when it is not ours (another tool's variable). Ours: any case
    of a flag name or of the ``R1MW_`` prefix (names are upper case, a lower-case one would
    silently keep its default), and, when ``fuzzy`` (a .env file, written for this
    application; not the process environment, full of other programs' variables), a name
    within a typo of a flag: ``SIMILARITY_TRESHOLD``, ``CACHE_L1_SIZ``, ``RIMW_STAGES``."""
    upper = name.upper()
    if upper in _BY_ENV:
        return upper
    if upper.startswith("R1MW_") and not upper.startswith(_IGNORED_PREFIXES):
        close = difflib.get_close_matches(upper, _BY_ENV, n=1)
        return close[0] if close else ""
    if fuzzy:
        close = difflib.get_close_matches(upper, _BY_ENV, n=1, cutoff=0.9)
        if close:
            return close[0]
    return None


def _ours(name: str) -> bool:
    return name in _BY_ENV or (name.startswith("R1MW_") and not name.startswith(_IGNORED_PREFIXES))


def flags_markdown() -> str:
    """The flags table of README.md (a test keeps README in sync with :data:`FLAGS`)."""
    rows = ["| flag | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for f in FLAGS:
        default = ",".join(f.default) if isinstance(f.default, tuple) else f.default
        if f.default is None or f.default == {}:
            default = "(unset)"
        rows.append(f"| `{f.env}` | `{default}` | {f.allowed} | {f.doc} |")
    return "\n".join(rows)


def _parse(flag: Flag, raw: Any) -> Any:
    if raw is None and flag.default is None:
        return None
    try:
        return flag.parse(raw)
    except (ValueError, TypeError) as exc:
        raise _fail(flag, raw, str(exc) or flag.allowed) from None
