"""The model2vec embedder: loads once per process in a thread, batches, caches, normalizes.

* The offline default is the Model2Vec model shipped inside the ``tokenlearn-static-model``
  wheel (64 dimensions); ``R1MW_EMBED_MODEL`` names another model2vec model (a Hub name such
  as ``minishlab/potion-base-8M`` for users with network access, or a local path).
* Loading takes seconds, so it runs in a worker thread; :attr:`ready` says when it is done and
  a stage skips semantic lookups until then. A model is loaded once per process, whatever
  the number of pipelines.
* :meth:`embed_one` queues a text; texts queued during the same event-loop turn are encoded
  in one batch (one call into the model for N requests that arrive together).
* An LRU of ``EMBEDDING_CACHE_SIZE`` texts skips the model for repeated questions.
* Vectors are L2-normalized float32. A text the model cannot place (empty, unknown tokens)
  gives ``None``, as does any vector with a NaN: such a vector is never indexed nor searched.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import threading
import time
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError

__all__ = ["OFFLINE_MODEL", "Model2VecEmbedder", "load_model", "normalize_rows"]

log = logging.getLogger("r1mw.semantic")

OFFLINE_MODEL = "tokenlearn-static-model"
"""The name the offline default goes by in stats and the calibration table."""

# Longer texts are cut before encoding: a mean-pooled static model gains nothing past a few
# hundred tokens, and a 1 MB prompt must not stall the event loop.
MAX_EMBED_CHARS = 4096

_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


def _offline_path() -> str:
    spec = importlib.util.find_spec("static_model")
    if spec is None or spec.origin is None:
        raise ConfigError("R1MW_EMBED_MODEL='' is invalid: the offline model needs the package "
                          "tokenlearn-static-model (pip install tokenlearn-static-model)")
    return os.path.join(os.path.dirname(spec.origin), "model")


def load_model(name: str) -> Any:
    """Load a model2vec ``StaticModel`` once per process (thread-safe). ``name`` empty = offline."""
    key = name or OFFLINE_MODEL
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is not None:
            return model
        from model2vec import StaticModel

        if not name:
            model = StaticModel.from_pretrained(_offline_path())
        elif os.path.isdir(os.path.expanduser(name)):
            model = StaticModel.from_pretrained(os.path.expanduser(name))
        else:  # a Hub name: model2vec's own download and cache (needs network the first time)
            model = StaticModel.from_pretrained(name, force_download=False)
        _MODELS[key] = model
        return model


def normalize_rows(matrix: np.ndarray) -> list[np.ndarray | None]:
    """L2-normalize each row as float32; a zero, NaN or infinite row becomes None."""
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    norms = np.linalg.norm(matrix, axis=1)
    out: list[np.ndarray | None] = []
    for row, norm in zip(matrix, norms):
        if not np.isfinite(norm) or norm < 1e-12:
            out.append(None)
            continue
        vec = (row / norm).astype(np.float32)
        out.append(vec if np.isfinite(vec).all() else None)
    return out


def _fast_encoder(model: Any) -> Any:
    """``model.encode`` without its per-call batching and progress-bar set-up (~0.1 ms of a
    0.2 ms call): model2vec's own batch function, used only if it gives the same vectors here."""
    batch = getattr(model, "_encode_batch", None)
    if batch is not None:
        try:
            sample = ["Probe: is the fast path the same as encode()?", "AAPL 5% below"]
            fast = np.asarray(batch(sample, False), dtype=np.float32)
            slow = np.asarray(model.encode(sample, normalize=False), dtype=np.float32)
            if fast.shape == slow.shape and np.allclose(fast, slow, atol=1e-5):
                return lambda texts: batch(list(texts), False)
        except Exception:  # another model2vec version: use the public API
            pass
    return model.encode


class Model2VecEmbedder:
    """:class:`r1mw.Embedder` on model2vec. ``model`` empty = the offline default."""

    def __init__(self, model: str = "", cache_size: int = 5000) -> None:
        self.model_name = model or OFFLINE_MODEL
        self.name = "model2vec"
        self._spec = model
        self._model: Any = None
        self._encode: Any = None
        self.dim = 0
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray | None] = OrderedDict()
        self._lock = threading.Lock()  # the cache and counters: embed() may run in a worker thread
        self.thread_safe = False  # True once loaded with model2vec's read-only batch encoder
        self._load_task: asyncio.Future[None] | None = None
        self._pending: list[tuple[str, asyncio.Future[np.ndarray | None]]] = []
        self._flush_scheduled = False
        self.load_seconds: float | None = None
        self.load_error: str | None = None
        self.cache_hits = self.cache_misses = self.batches = self.encoded = self.max_batch = 0

    # -- loading ---------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._model is not None

    def start_loading(self) -> asyncio.Future[None]:
        """Start loading in a worker thread (once); returns the future of the load."""
        if self._load_task is None:
            self._load_task = asyncio.ensure_future(self._load())
        return self._load_task

    async def load(self) -> None:
        """Load the model without blocking the event loop; returns when it is ready."""
        await asyncio.shield(self.start_loading())

    async def _load(self) -> None:
        started = time.perf_counter()
        try:
            model = await asyncio.to_thread(load_model, self._spec)
            probe = np.asarray(model.encode(["probe"]), dtype=np.float32)
            self._encode = _fast_encoder(model)
            # model2vec's batch function only reads the model; encode() may reset the
            # tokenizer's truncation (a write), so only the former may run in several threads
            self.thread_safe = getattr(self._encode, "__self__", None) is not model  # not model.encode
        except ConfigError:
            raise
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            # One line, as every ConfigError (huggingface_hub's messages span several).
            detail = " ".join(self.load_error.split())
            raise ConfigError(f"R1MW_EMBED_MODEL={self._spec!r} is invalid: cannot load a model2vec model "
                              f"({detail}); expected a model2vec model name or path, or empty "
                              "for the offline default") from exc
        self.dim = int(probe.shape[1])
        self._model = model
        self.load_seconds = time.perf_counter() - started
        log.info("embedder %s ready in %.2f s (dim %d)", self.model_name, self.load_seconds, self.dim)

    # -- embedding ---------------------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> list[np.ndarray | None]:
        """Embed synchronously (the model must be ready): one normalized vector or None per text.
        Callable from a worker thread when :attr:`thread_safe` (the cache is behind a lock that
        is never held while the model encodes)."""
        if self._model is None:
            raise RuntimeError("the embedder is not loaded yet; await load() first")
        out: list[np.ndarray | None] = [None] * len(texts)
        todo: list[int] = []
        cache = self._cache
        with self._lock:
            for i, text in enumerate(texts):
                if text in cache:
                    cache.move_to_end(text)
                    out[i] = cache[text]
                    self.cache_hits += 1
                else:
                    todo.append(i)
        if todo:
            cut = [_clean(texts[i]) for i in todo]
            vectors = normalize_rows(self._encode(cut)) if any(cut) else [None] * len(cut)
            with self._lock:
                self.cache_misses += len(todo)
                self.batches += 1
                self.encoded += len(todo)
                self.max_batch = max(self.max_batch, len(todo))
                for i, vec in zip(todo, vectors):
                    out[i] = vec
                    if self.cache_size:
                        cache[texts[i]] = vec
                while len(cache) > self.cache_size:
                    cache.popitem(last=False)
        return out

    def embed_one(self, text: str) -> asyncio.Future[np.ndarray | None]:
        """A future of the vector of ``text``; texts asked in the same loop turn share a batch."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[np.ndarray | None] = loop.create_future()
        with self._lock:
            cached = self._cache.get(text, _MISSING)
            if cached is not _MISSING:
                self._cache.move_to_end(text)
                self.cache_hits += 1
        if cached is not _MISSING:
            fut.set_result(cached)  # type: ignore[arg-type]
            return fut
        self._pending.append((text, fut))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        live = [(t, f) for t, f in pending if not f.done()]
        if not live:
            return
        try:
            vectors = self.embed([t for t, _ in live])
        except Exception as exc:  # a model fault is a semantic miss, never a caller error
            log.warning("embedding failed: %s", exc)
            vectors = [None] * len(live)
        for (_, fut), vec in zip(live, vectors):
            if not fut.done():
                fut.set_result(vec)

    def stats(self) -> dict[str, Any]:
        return {"model": self.model_name, "ready": self.ready, "dim": self.dim,
                "load_seconds": self.load_seconds, "load_error": self.load_error,
                "cache_entries": len(self._cache), "cache_size": self.cache_size,
                "cache_hits": self.cache_hits, "cache_misses": self.cache_misses,
                "batches": self.batches, "encoded": self.encoded, "max_batch": self.max_batch}


_MISSING = object()


def _clean(text: str) -> str:
    # Valid UTF-8 only (the tokenizer rejects lone surrogates), and bounded.
    return text[:MAX_EMBED_CHARS].encode("utf-8", "replace").decode("utf-8")
