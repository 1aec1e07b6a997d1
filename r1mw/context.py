"""The context cache: ``@r1mw.cached`` for any async function, and ``pipe.context_cache``.

The original design caches more than replies: the expensive context a retrieval step builds
(hierarchical chunks, a long context string, embeddings) is kept under a hash of the query,
in the same tiers as the replies. Here that is::

    @r1mw.cached(ttl=3600, namespace="research")
    async def build_context(query: str, k: int = 8) -> dict:
        ...                                    # expensive: retrieval, expansion, embedding

    ctx = await build_context("AAPL earnings")  # computed once, then served from the tiers
    await pipe.context_cache.set("q:AAPL", ctx) # the explicit get/set/delete API

Values go through the same :class:`~r1mw.tiers.TieredStore` (and, below RAM, the same codec)
as the replies, so a large context lands compressed in the disk tiers and survives a restart.

Accepted values (checked on the way in, whatever tiers are configured, so behaviour never
depends on them): ``None``, ``bool``, ``int`` (64-bit), ``float``, ``str``, ``bytes``
(``bytearray``/``memoryview`` come back as ``bytes``), ``list`` and ``tuple`` (both come
back as ``list``), ``dict`` with ``str`` keys, numpy arrays of plain dtypes (they come back
read-only) and numpy scalars. Anything else (an object, a set, a lambda) raises
:class:`~r1mw.UnencodableValueError` naming where it sits in the value, at the first call.
Nothing is ever pickled. What a cached function returns is that normalized value, on a miss
as on a hit, so the caller sees the same types whichever tier answered; each call gets its
own lists and dicts, so changing them never changes what the cache answers next.

The key is a 16-byte hash of the function's qualified name (or ``name=``) and its arguments,
bound through :func:`inspect.signature` with defaults applied: ``f(1, b=2)``,
``f(b=2, a=1)`` and ``f(1)`` (when ``b=2`` is the default) share an entry. Arguments may be
the value types above plus sets, enums, dataclasses, pydantic models, dates, decimals, UUIDs
and paths; numpy arrays are keyed by dtype, shape and a hash of their bytes. Anything else is
refused with a clear error (use ``key=`` or ``ignore=``). A bound method's instance, a
partial's arguments and the immutable values a closure captured are part of the key too:
one qualified name can be many functions. Concurrent identical calls run the function once
(single-flight); an exception reaches every waiter and is never cached.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import decimal
import enum
import functools
import inspect
import logging
import pathlib
import time
import uuid
import weakref
from collections import Counter
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Mapping, TypeVar

import msgpack
import xxhash

from .errors import ConfigError, PipelineStateError, UnencodableValueError, WrapError
from .singleflight import SingleFlight
from .tiers import Entry
from .types import CacheControl

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .tiers import TieredStore

__all__ = ["ContextCache", "cached", "canonical", "close_default_pipeline", "default_pipeline", "normalize"]

log = logging.getLogger("r1mw")

T = TypeVar("T")

_KEY_VERSION = 1
_MAX_DEPTH = 100  # msgpack itself stops at 512; a deeper value is almost surely a cycle
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
# numpy dtype kinds stored exactly by dtype string + raw bytes (not objects, not structured).
_ARRAY_KINDS = frozenset("biufcmMSU")
_NO_CONTROL = CacheControl()


# -- values: validate and normalize on the way in --------------------------------------


def _where(path: str) -> str:
    return f" at {path}" if path else ""


def _refuse(value: Any, path: str, why: str = "") -> UnencodableValueError:
    kind = type(value)
    what = f"{kind.__module__}.{kind.__qualname__}" if kind.__module__ != "builtins" else kind.__qualname__
    return UnencodableValueError(
        f"cannot cache a value of type {what}{_where(path)}{why}: the context cache takes None, bool, int, "
        "float, str, bytes, list, tuple, dict with str keys and numpy arrays of plain dtypes (never pickle)")


def normalize(value: Any, path: str = "") -> Any:
    """``value`` in the form the cache stores and returns, or UnencodableValueError.

    Tuples become lists, bytes-likes ``bytes``, subclasses of str/int/float their base type,
    numpy arrays read-only C-contiguous copies (the cached array cannot be changed through
    a reference the caller kept).
    """
    return _normalize(value, path, 0)


def _normalize(value: Any, path: str, depth: int) -> Any:
    kind = type(value)
    if value is None or kind is str or kind is bool or kind is float or kind is bytes:
        return value
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise _refuse(value, path, " (an int outside the 64-bit range)")
        return value
    if depth > _MAX_DEPTH:
        raise UnencodableValueError(f"value nested deeper than {_MAX_DEPTH} levels{_where(path)} (a cycle?)")
    if kind is list or kind is tuple:
        return [_normalize(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if kind is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise UnencodableValueError(
                    f"cannot cache a dict with a {type(k).__qualname__} key {k!r}{_where(path)}: keys must be str")
            out[k] = _normalize(v, f"{path}[{k!r}]", depth + 1)
        return out
    if kind.__module__ == "numpy":
        return _normalize_numpy(value, path)
    if isinstance(value, enum.Enum):  # an IntEnum would pass as int and come back as one
        raise _refuse(value, path)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return _normalize(int(value), path, depth)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (list, tuple)):
        return _normalize(list(value), path, depth)
    if isinstance(value, Mapping) and not isinstance(value, type):
        return _normalize(dict(value), path, depth)
    raise _refuse(value, path)


def _fresh(value: Any) -> Any:
    """``value`` (normalized) with its own lists and dicts: what a caller is handed. Changing
    it must never change what the cache answers next (a shared list a caller appends to would
    be served, appended, to every later hit). Strings, bytes and numbers are immutable and
    arrays read-only, so they are shared; only containers are copied, at C speed when flat."""
    kind = type(value)
    if kind is list:
        out = value.copy()
        for i, v in enumerate(out):
            if type(v) is list or type(v) is dict:
                out[i] = _fresh(v)
        return out
    if kind is dict:
        out = value.copy()
        for k, v in out.items():
            if type(v) is list or type(v) is dict:
                out[k] = _fresh(v)
        return out
    return value


def _normalize_numpy(value: Any, path: str) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _ARRAY_KINDS or value.dtype.hasobject or value.dtype.fields:
            raise _refuse(value, path, f" (dtype {value.dtype} is not a plain dtype)")
        if not value.flags.writeable and value.flags.c_contiguous and type(value) is np.ndarray:
            return value  # already what we would make
        frozen = np.array(value, copy=True, order="C", subok=False)
        frozen.setflags(write=False)
        return frozen
    if isinstance(value, np.generic) and value.dtype.kind in _ARRAY_KINDS:
        return value
    raise _refuse(value, path)


# -- keys: canonical arguments ------------------------------------------------------------

# Containers are tagged arrays and scalars are never arrays, so no two different arguments
# can canonicalize to the same structure.


def canonical(value: Any, path: str = "") -> Any:
    """A msgpack-able structure that is equal for equal arguments (dict and set order
    ignored) and different for different ones; UnencodableValueError for what cannot be keyed."""
    return _canon(value, path, 0)


def _packed(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _canon(value: Any, path: str, depth: int) -> Any:
    kind = type(value)
    if value is None or kind is str or kind is bool or kind is float or kind is bytes:
        return value
    if kind is int:
        return value if _INT_MIN <= value <= _INT_MAX else ("I", str(value))
    if depth > _MAX_DEPTH:
        raise UnencodableValueError(f"argument nested deeper than {_MAX_DEPTH} levels{_where(path)} (a cycle?)")
    d = depth + 1
    if kind is list:
        return ("L", *(_canon(v, f"{path}[{i}]", d) for i, v in enumerate(value)))
    if kind is tuple:
        return ("T", *(_canon(v, f"{path}[{i}]", d) for i, v in enumerate(value)))
    if kind is dict or (isinstance(value, Mapping) and not isinstance(value, type)):
        items = [(_canon(k, f"{path}.key", d), _canon(v, f"{path}[{k!r}]", d)) for k, v in value.items()]
        items.sort(key=lambda kv: _packed(kv[0]))
        return ("D", *(x for kv in items for x in kv))
    if kind is set or kind is frozenset:
        members = [_canon(v, f"{path}{{}}", d) for v in value]
        members.sort(key=_packed)
        return ("S", *members)
    if kind.__module__ == "numpy":
        return _canon_numpy(value, path)
    if isinstance(value, enum.Enum):
        return ("E", _qualname(kind), _canon(value.value, path, d))
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (bool, int, float, str)):  # subclasses other than enums
        return _canon(_base(value), path, d)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time, _dt.timedelta, decimal.Decimal, uuid.UUID,
                          pathlib.PurePath, complex)):
        return ("O", _qualname(kind), str(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return ("C", _qualname(kind), _canon(fields, path, d))
    dump = getattr(value, "model_dump", None)  # pydantic models
    if dump is not None and callable(dump) and not isinstance(value, type):
        return ("P", _qualname(kind), _canon(dump(), path, d))
    if isinstance(value, (list, tuple)):
        return _canon(list(value), path, depth)
    kind_name = _qualname(kind)
    raise UnencodableValueError(
        f"cannot build a cache key from a {kind_name}{_where(path)}: pass key=... to cached(), "
        "or ignore=(<parameter>,) if it does not change the result")


def _base(value: Any) -> Any:
    for base in (bool, int, float, str):
        if isinstance(value, base):
            return base(value)
    return value


def _canon_numpy(value: Any, path: str) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.dtype.hasobject or value.dtype.fields:
            raise UnencodableValueError(f"cannot build a cache key from an array of dtype {value.dtype}{_where(path)}")
        data = value if value.flags.c_contiguous else np.ascontiguousarray(value)
        return ("A", value.dtype.str, list(value.shape), xxhash.xxh3_128_digest(data.data if data.size else b""))
    if isinstance(value, np.generic) and not value.dtype.hasobject:
        return ("N", value.dtype.str, value.tobytes())
    raise UnencodableValueError(f"cannot build a cache key from a {_qualname(type(value))}{_where(path)}")


def _qualname(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _hash(*parts: Any) -> bytes:
    return xxhash.xxh3_128_digest(msgpack.packb((_KEY_VERSION, *parts), use_bin_type=True))


# -- the cache ------------------------------------------------------------------------------

_MISSING: Any = object()


class ContextCache:
    """Any encodable value over a pipeline's tiered store: ``get`` / ``set`` / ``delete``.

    Reached as ``pipe.context_cache``; ``@r1mw.cached`` uses the same object. The pipeline is
    started on first use. Keys are anything :func:`canonical` accepts (a query string, a
    tuple, a dict...), hashed with the namespace, so namespaces never share an entry and no
    context key can meet a reply's key.
    """

    def __init__(self, pipeline: "Pipeline") -> None:
        self.pipeline = pipeline
        self.flight = SingleFlight()
        self._counts: Counter[str] = Counter()
        self._lock: asyncio.Lock | None = None

    # -- plumbing ----------------------------------------------------------------------
    async def _store(self) -> "TieredStore":
        pipe = self.pipeline
        if pipe._closed:
            raise PipelineStateError("the pipeline of this context cache is closed")
        store = pipe.store
        if store is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:  # two first calls must not build the pipeline twice
                if pipe.store is None:
                    await pipe.start()
            store = pipe.store
            assert store is not None
        return store

    def namespace(self, namespace: str | None = None) -> str:
        return self.pipeline.settings.namespace if namespace is None else namespace

    def key(self, key: Any, *, namespace: str | None = None) -> bytes:
        """The store key of a user key (what ``get``/``set``/``delete`` use)."""
        return _hash("k", self.namespace(namespace), canonical(key, "key"))

    async def _lookup(self, store: "TieredStore", key: bytes) -> tuple[Entry, str] | None:
        entry = store.get_nowait(key)
        if entry is not None:
            return entry, store.first.name
        if len(store.tiers) > 1 or not store.has_nowait:
            return await store.get(key, after_nowait=True)
        return None

    def _hit(self, tier: str) -> None:
        self._counts["hits"] += 1
        self._counts[f"hit:{tier}"] += 1

    async def _put(self, store: "TieredStore", key: bytes, value: Any, ttl: float | None, label: str) -> None:
        ttl = self.pipeline.settings.default_ttl if ttl is None else ttl
        entry = Entry(value, time.time() + ttl if ttl else 0.0, {"context": label})
        try:
            await store.set(key, entry)
        except Exception:  # a full disk or a dead Redis: the value is still good, only not kept
            self._counts["store_errors"] += 1
            log.warning("context cache: storing %s failed", label, exc_info=True)
        else:
            self._counts["stored"] += 1

    # -- the explicit API --------------------------------------------------------------
    async def get(self, key: Any, default: Any = None, *, namespace: str | None = None) -> Any:
        """The value stored under ``key``, or ``default``."""
        store = await self._store()
        found = await self._lookup(store, self.key(key, namespace=namespace))
        if found is None:
            self._counts["misses"] += 1
            return default
        self._hit(found[1])
        return _fresh(found[0].value)

    async def set(self, key: Any, value: Any, *, ttl: float | None = None, namespace: str | None = None) -> Any:
        """Store ``value`` (validated: UnencodableValueError if the cache cannot take it);
        returns the normalized value. ``ttl`` in seconds, default ``R1MW_DEFAULT_TTL``."""
        value = self._checked(value, "set()")
        store = await self._store()
        await self._put(store, self.key(key, namespace=namespace), value, ttl, "set")
        return _fresh(value)

    async def delete(self, key: Any, *, namespace: str | None = None) -> bool:
        """Remove ``key`` from every tier; True if it was there."""
        store = await self._store()
        return await store.delete(self.key(key, namespace=namespace))

    async def get_or_set(self, key: Any, factory: Callable[[], Awaitable[Any]], *, ttl: float | None = None,
                         namespace: str | None = None) -> Any:
        """The stored value, or ``await factory()`` stored under ``key`` (single-flight)."""
        store = await self._store()
        store_key = self.key(key, namespace=namespace)
        return await self._serve(store, store_key, factory, ttl, _NO_CONTROL, "get_or_set")

    def _checked(self, value: Any, label: str) -> Any:
        try:
            return normalize(value)
        except UnencodableValueError as exc:
            self._counts["refused"] += 1
            raise UnencodableValueError(f"{label}: {exc}") from None

    # -- the decorator's path ----------------------------------------------------------
    async def _serve(self, store: "TieredStore", key: bytes, compute: Callable[[], Awaitable[Any]],
                     ttl: float | None, control: CacheControl, label: str) -> Any:
        # Every caller gets its own lists and dicts (_fresh): the stored value, the one a
        # miss computed and the one coalesced callers share are the cache's, not theirs.
        if control.no_cache:
            return _fresh(await self._compute(store, key, compute, ttl, control, label))
        found = await self._lookup(store, key)
        if found is not None and control.too_old(found[0].stored_at):
            # older than this caller accepts (s-maxage): computed afresh, replacing it
            return _fresh(await self._compute(store, key, compute, ttl, control, label))
        if found is not None:
            self._hit(found[1])
            return _fresh(found[0].value)
        value, coalesced = await self.flight.run(key, lambda: self._compute(store, key, compute, ttl, control, label))
        if coalesced:
            self._counts["coalesced"] += 1
        return _fresh(value)

    async def _compute(self, store: "TieredStore", key: bytes, compute: Callable[[], Awaitable[Any]],
                       ttl: float | None, control: CacheControl, label: str) -> Any:
        self._counts["misses"] += 1
        try:
            value = await compute()
        except BaseException:
            self._counts["errors"] += 1
            raise
        value = self._checked(value, label)
        if not control.no_store:
            await self._put(store, key, value, control.ttl if control.ttl is not None else ttl, label)
        return value

    async def close(self) -> None:
        """Cancel computations still in flight (the pipeline calls this when it closes)."""
        await self.flight.close()

    def stats(self) -> dict[str, Any]:
        c = self._counts
        return {
            "hits": c["hits"], "misses": c["misses"], "coalesced": c["coalesced"], "stored": c["stored"],
            "errors": c["errors"], "refused": c["refused"], "store_errors": c["store_errors"],
            "hits_by_tier": {k[4:]: v for k, v in c.items() if k.startswith("hit:")},
            "inflight": len(self.flight),
        }


# -- the default pipeline -------------------------------------------------------------------

# One per event loop: asyncio objects belong to the loop that made them, and a program that
# runs asyncio.run() twice must not reuse a pipeline whose background tasks died with the loop.
_defaults: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pipeline]" = weakref.WeakKeyDictionary()


def default_pipeline() -> "Pipeline":
    """The pipeline ``@r1mw.cached`` uses when given none: ``Pipeline(Settings.from_env())``,
    one per event loop, started on first use."""
    from .pipeline import Pipeline
    from .settings import Settings

    loop = asyncio.get_running_loop()
    pipe = _defaults.get(loop)
    if pipe is None or pipe._closed:
        pipe = _defaults[loop] = Pipeline(Settings.from_env())
        pipe.close_with_loop()  # nobody else closes it: its write-behind would be lost at exit
    return pipe


async def close_default_pipeline() -> None:
    """Close this loop's default pipeline (flushes and closes its tiers), if one was made."""
    pipe = _defaults.pop(asyncio.get_running_loop(), None)
    if pipe is not None:
        await pipe.close()


# -- the decorator ---------------------------------------------------------------------------


def _qualified(func: Any) -> str:
    while isinstance(func, functools.partial):
        func = func.func
    func = getattr(func, "__func__", func)  # a bound method: its function
    return f"{func.__module__}.{func.__qualname__}"


_FROZEN = (type(None), bool, int, float, complex, str, bytes, enum.Enum)


def _frozen(value: Any) -> bool:
    if isinstance(value, (tuple, frozenset)):
        return all(_frozen(v) for v in value)
    return isinstance(value, _FROZEN)


def _binding(func: Any) -> Callable[[], list[Any]] | None:
    """What changes ``func``'s result besides its arguments, and that its qualified name does
    not tell apart: a bound method's instance and a partial's arguments (read at each call,
    as a ``self`` argument is), the immutable values a closure captured when it was decorated
    (``make(2)`` and ``make(3)`` of one factory). None for a plain function.

    Captured objects and mutable values (a client, a list of calls) are left out, as
    ``ignore=`` would; so are values the function rebinds itself later (a ``nonlocal`` counter):
    the snapshot is taken once, at decoration."""
    if isinstance(func, functools.partial):
        inner = _binding(func.func)
        return lambda: [("partial", canonical(list(func.args), "partial args"),
                         canonical(func.keywords, "partial keywords")), *(inner() if inner else ())]
    if inspect.ismethod(func):
        inner = _binding(func.__func__)
        return lambda: [("self", canonical(func.__self__, "bound instance")), *(inner() if inner else ())]
    captured = []
    code = getattr(func, "__code__", None)
    for name, cell in zip(code.co_freevars if code else (), getattr(func, "__closure__", None) or ()):
        try:
            value = cell.cell_contents
        except ValueError:  # not bound yet
            continue
        if _frozen(value):
            captured.append((name, canonical(value, name)))
    return (lambda: captured) if captured else None


@dataclasses.dataclass(frozen=True, slots=True)
class _Spec:
    name: str
    signature: inspect.Signature
    ttl: float | None
    namespace: str | None
    key: Callable[..., Any] | None
    ignore: frozenset[str]
    binding: Callable[[], list[Any]] | None = None

    def store_key(self, namespace: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        if self.key is not None:
            return _hash("f", namespace, self.name, "key=", canonical(self.key(*args, **kwargs), "key()"))
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None
        bound.apply_defaults()
        parts = []
        for name, value in bound.arguments.items():
            if name in self.ignore:
                continue
            kind = self.signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                value = list(value)
            parts.append((name, canonical(value, f"{self.name}({name}=...)")))
        owner = self.binding() if self.binding is not None else None
        if owner:  # a plain function's key stays what it was
            parts.append(("<bound>", owner))
        return _hash("f", namespace, self.name, parts)


def cached(
    fn: Callable[..., Awaitable[T]] | None = None,
    *,
    ttl: float | None = None,
    namespace: str | None = None,
    key: Callable[..., Any] | None = None,
    name: str | None = None,
    pipeline: "Pipeline | None" = None,
    ignore: Iterable[str] = (),
    control: str = "cache",
) -> Any:
    """Cache an async function's results in the pipeline's tiers.

    ``@r1mw.cached`` or ``@r1mw.cached(ttl=..., namespace=..., key=..., name=..., pipeline=...)``:

    * ``ttl``: seconds an entry lives (default ``R1MW_DEFAULT_TTL``; 0 = no expiry);
    * ``namespace``: entries of different namespaces never meet (default ``R1MW_NAMESPACE``);
    * ``key``: ``key(*args, **kwargs)`` returns what identifies a call, instead of all arguments;
    * ``name``: replaces the qualified name in the key (keep entries across a rename);
    * ``pipeline``: the :class:`~r1mw.Pipeline` whose store to use (default: one made from
      ``Settings.from_env()`` per event loop, started lazily);
    * ``ignore``: parameter names left out of the key (``self``, a client, a logger);
    * ``control``: the keyword that carries per-call control, LiteLLM's spelling:
      ``await f(q, cache={"no-cache": True, "no-store": False, "ttl": 60, "namespace": "t1"})``.

    The wrapper has ``await wrapper.invalidate(*args, **kwargs)`` (remove that call's entry)
    and ``wrapper.__wrapped__``.
    """

    def decorate(func: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        target = inspect.unwrap(func)
        if not (inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(target)):
            raise WrapError(f"r1mw.cached takes an async function (async def), not {func!r}")
        signature = inspect.signature(func)
        if control in signature.parameters:
            raise ConfigError(
                f"cached(control={control!r}): {_qualified(func)} has a parameter named {control!r}; "
                "pick another name for the per-call control keyword")
        unknown = set(ignore) - set(signature.parameters)
        if unknown:
            raise ConfigError(f"cached(ignore=...): {_qualified(func)} has no parameter {sorted(unknown)}")
        if ttl is not None and ttl < 0:
            raise ConfigError(f"cached(ttl={ttl!r}): expected seconds >= 0 (0 = no expiry)")
        # name= or key= say what identifies a call; else what the function is bound to counts
        binding = _binding(func) if name is None and key is None else None
        if binding is not None:
            try:
                binding()
            except UnencodableValueError as exc:
                why = str(exc).split(": pass key=")[0]  # its own advice (ignore=) does not apply here
                raise WrapError(f"r1mw.cached({_qualified(func)}): {why}; pass name=... (one per instance) "
                                "or key=...") from None
        spec = _Spec(name or _qualified(func), signature, ttl, namespace, key, frozenset(ignore), binding)

        def cache_of() -> ContextCache:
            return (pipeline if pipeline is not None else default_pipeline()).context_cache

        def resolve(args: tuple[Any, ...], kwargs: dict[str, Any],
                    control_value: Any) -> tuple[ContextCache, CacheControl, bytes]:
            ctl = CacheControl.from_mapping(control_value) if control_value is not None else _NO_CONTROL
            ctx = cache_of()
            ns = ctl.namespace if ctl.namespace is not None else spec.namespace
            return ctx, ctl, spec.store_key(ctx.namespace(ns), args, kwargs)

        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> T:
            ctx, ctl, store_key = resolve(args, kwargs, kwargs.pop(control, None))
            store = await ctx._store()
            return await ctx._serve(store, store_key, lambda: func(*args, **kwargs), spec.ttl, ctl, spec.name)

        async def invalidate(*args: Any, **kwargs: Any) -> bool:
            ctx, _, store_key = resolve(args, kwargs, kwargs.pop(control, None))
            store = await ctx._store()
            return await store.delete(store_key)

        wrapper.invalidate = invalidate  # type: ignore[attr-defined]
        wrapper.__r1mw_cached__ = spec  # type: ignore[attr-defined]
        return wrapper

    return decorate(fn) if fn is not None else decorate
