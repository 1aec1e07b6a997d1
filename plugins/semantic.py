"""The semantic stage: answer a reworded request with the reply to the stored original.

Placed after ``exact``. On a lookup: embed the question (normalized), search the request's
scope (namespace, model, answer-changing parameters, system prompt and earlier turns,
template id and slot values), and pass each candidate above the similarity threshold through
every guard; the first one all guards allow and the store still holds is served (``request.source =
"semantic"``, ``meta["similarity"]``, ``meta["served_by"]``). On a miss the request goes on
down the chain and, once its reply is complete, the question is indexed under the exact key.

* The embedder loads in the background: until it is ready requests skip this stage (counted
  as ``skipped_not_ready``); ``await pipeline.wait_ready()`` waits for it.
* Semantic dedup (``R1_SEMANTIC_DEDUP_ENABLED``): the exact key of a served paraphrase becomes
  an alias of the entry that served it, so asking that paraphrase again skips the embedding
  and the search; a miss whose question turns out to be a guarded duplicate of a stored one
  (a paraphrase that was in flight at the same time) is not stored a second time: its key
  becomes an alias and the bytes saved are counted.
* Deferred indexing: a lookup whose scope holds nothing (no indexed question, none queued)
  cannot hit, so it does not embed; the completed miss is queued (key, scope, question, slots,
  template id, time) and a background indexer embeds queued questions in batches (one
  ``embed()`` call for several, in a worker thread when the embedder is thread-safe) and adds
  them to the index on the loop thread. Before a scope is searched (lookup, or the twin search
  of a completed miss) its queued questions are indexed synchronously, so nothing is missed
  because it is still queued. The queue is capped (the oldest is dropped and counted); close()
  indexes what is queued before the index is saved.
* Every hit is recorded (similarity, served key, both texts) in ``stats()["recent_hits"]`` and
  the debug log, so a wrong hit can be traced to the entry that served it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter, OrderedDict, deque
from typing import Any, Callable, Mapping

import r1mw
from r1mw import Entry, Reply, Request, StreamedReply, key_of
from r1mw.manager import call_each, raise_as_plugin_error
from r1mw.semantic.calibration import threshold_for
from r1mw.semantic.guards import first_veto
from r1mw.semantic.index import Record, VectorIndex, build_ann, scope_of
from r1mw.semantic import vocab
from r1mw.semantic.text import embedding_text, learn_tickers, normalize_question

log = logging.getLogger("r1mw.semantic")

MAX_QUESTION_CHARS = 16_384
"""Longer questions skip the semantic stage (exact hits only): a static embedding of a long
document says little about the question it ends with, and a wrong answer costs more than a call."""

_MAX_ALIASES = 100_000
_RECENT_HITS = 50
_STALE_AFTER = 30.0  # seconds: a younger record missing from the store may still be being stored
MAX_PENDING = 10_000
"""Completed misses waiting for the background indexer; past this the oldest is dropped (a
lost future hit, counted as ``pending_dropped``)."""
_BATCH = 64  # questions per background embed() call
_GATHER = 0.002  # seconds the indexer waits for a batch to fill (visibility never waits: see _flush_scope)


@dataclasses.dataclass(slots=True)
class _Pending:
    """A completed miss queued for indexing (everything its Record needs but the vector)."""

    key: bytes
    scope: bytes
    question: str
    slots: dict[str, Any] | None
    template_id: str | None
    added: float


class SemanticStage:
    name = "semantic"

    def __init__(self, pipeline: r1mw.Pipeline) -> None:
        assert pipeline.store is not None
        s = pipeline.settings
        self.pipeline = pipeline
        self.store = pipeline.store
        self.embedder = pipeline.build("embedders", s.embedder, "R1MW_EMBEDDER")
        # embed_one (batched) when the embedder has it; else the Embedder protocol's embed()
        self._embed_one = getattr(self.embedder, "embed_one", None) or self._embed_via_embed
        self._renormalize = not hasattr(self.embedder, "embed_one")  # a third party's vectors: _usable()
        registered = call_each(pipeline.pm.hook.r1mw_register_guards, raise_as_plugin_error("r1mw_register_guards()"),
                               pipeline=pipeline)
        self.guards = [g for _, found in registered for g in found]
        for guard in self.guards:
            if not callable(getattr(guard, "allows", None)):
                raise r1mw.PluginError(f"r1mw_register_guards returned {guard!r}: a guard needs "
                                       "allows(asked, stored, info) -> bool and a name")
        self.threshold, self.threshold_source = threshold_for(getattr(self.embedder, "model_name", s.embedder),
                                                             s.similarity_threshold)
        self.top_k = s.semantic_top_k
        self.ann_min = s.semantic_ann_min
        self.dedup = s.semantic_dedup_enabled
        self.default_ttl = s.default_ttl
        model = str(getattr(self.embedder, "model_name", s.embedder))
        self.directory = s.cache_path / "semantic" / "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
        self.index: VectorIndex | None = None
        self._loading: asyncio.Future[None] | None = None
        self._stores_itself = False
        self._ann_task: asyncio.Future[None] | None = None
        self._closing = False
        self._last_indexed = 0.0  # when the last entry was indexed or queued (a miss checks for twins only after it)
        self._pending: OrderedDict[bytes, _Pending] = OrderedDict()  # key -> queued miss, oldest first
        self._pending_by_scope: dict[bytes, dict[bytes, _Pending]] = {}
        self.max_pending = MAX_PENDING
        self._indexer: asyncio.Future[None] | None = None
        self._aliases: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()  # alias -> (served, similarity)
        self._aliased_by: dict[bytes, set[bytes]] = {}
        self._recent: deque[dict[str, Any]] = deque(maxlen=_RECENT_HITS)
        self.counts: Counter[str] = Counter()
        self.vetoes: Counter[str] = Counter()
        self.bytes_saved = 0
        self.loaded_entries = 0
        pipeline.services["embedder"] = self.embedder
        pipeline.services["semantic"] = self
        self.store.add_drop_listener(self._dropped)

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.index is not None

    async def start(self) -> None:
        self._stores_itself = self.pipeline.stage("exact") is None
        self._start_loading()

    def _start_loading(self) -> asyncio.Future[None]:
        if self._loading is None:
            self._loading = self.pipeline.spawn(self._load(), name="r1mw-semantic-load")
        return self._loading

    async def _load(self) -> None:
        try:
            await self.embedder.load()
            await asyncio.to_thread(vocab.load)  # the guards' word list, off the event loop
            index = VectorIndex(self.embedder.dim, ann_min=self.ann_min)
            self.loaded_entries = await asyncio.to_thread(index.load, self.directory)
        except Exception:
            log.exception("the semantic stage could not start; requests skip it")
            raise
        self.index = index
        self.pipeline.services["semantic_index"] = index
        self._maybe_build_ann()
        log.info("semantic stage ready: %d entries reloaded, threshold %.3f (%s)",
                 self.loaded_entries, self.threshold, self.threshold_source)

    async def wait_ready(self) -> None:
        """Load the embedder and the persisted index (if not done yet) and wait for both."""
        await asyncio.shield(self._start_loading())

    async def close(self) -> None:
        self._closing = True
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        indexer = self._indexer
        if indexer is not None:  # the pipeline cancels its tasks first; a stage closed alone too
            indexer.cancel()
            await asyncio.gather(indexer, return_exceptions=True)
            self._indexer = None
        if self.index is not None and self._pending:
            try:  # what is queued goes into the saved index
                await self._drain_once(self.index, len(self._pending))
            except Exception:
                self.counts["index_errors"] += 1
                log.exception("indexing the queued semantic entries at close failed")
        if self.index is not None:
            try:
                await asyncio.to_thread(self.index.save, self.directory)
            except OSError as exc:
                log.warning("could not persist the semantic index to %s: %s", self.directory, exc)

    # -- the request path --------------------------------------------------------------------
    async def handle(self, request: Request, call_next: r1mw.Handler) -> Reply | StreamedReply:
        index = self.index
        counts = self.counts
        if index is None:
            counts["skipped_not_ready"] += 1
            return await call_next(request)
        if request.meta.get("template_keyed"):
            # Keyed by a declared template: its candidates would share the template (the scope)
            # and must have equal slots (the slot guard), i.e. the very key the exact stage just
            # missed. Nothing to find, and nothing another request could find here later.
            counts["skipped_templated"] += 1
            return await call_next(request)
        question = normalize_question(request.question)
        if not question or len(question) > MAX_QUESTION_CHARS:
            counts["skipped_empty" if not question else "skipped_too_long"] += 1
            return await call_next(request)
        key = request.key
        if key is None:
            messages = request.meta.get("key_messages", request.messages)
            key = request.key = key_of(request.namespace, request.model, messages, request.params)
        scope = scope_of(request.namespace, request.model, _context(request.messages), request.params,
                         request.meta.get("template_id"), _plain(request.meta.get("slots")))
        vector = None
        looked = float("inf")  # entries indexed before this were checked by the lookup
        # An adapter that cannot take every stored reply yet (see ExactStage._accepting) asks
        # for a lookup under no_cache: only what accepts(reply) takes may be served.
        accepts = request.meta.get("accepts")
        # (A caller with a max_age, LiteLLM's s-maxage, is answered by the exact stage, which
        # knows its entry's age, or not at all: a semantic match's age is not checked.)
        if (not request.control.no_cache or accepts is not None) and request.control.max_age is None:
            looked = time.time()
            counts["lookups"] += 1
            alias = self._aliases.get(key)
            if alias is not None:
                found = await self.store.get(alias[0])
                if found is None or not isinstance(found[0].value, Reply):
                    self._forget_alias(key)
                elif accepts is None or accepts(found[0].value):
                    return self._serve(request, found, alias[0], alias[1], question, None)
            if scope not in self._pending_by_scope and not index.holds(scope):
                counts["empty_scope"] += 1  # nothing to find: no embedding (see _index_or_alias)
            else:
                vector = await self._embed_one(embedding_text(question))
                # its queued questions (even those queued during the await) are indexed before
                # the search (no await in between): none is missed for being queued
                self._flush_scope(index, scope)
                if vector is None:
                    counts["unembeddable"] += 1
                else:
                    hit = await self._find(index, request, scope, question, vector)
                    if hit is not None and (accepts is None or accepts(hit[0][0].value)):
                        found, record, similarity = hit
                        if self.dedup:
                            self._alias(key, record.key, similarity)
                        return self._serve(request, found, record.key, similarity, question, record.text)
            counts["misses"] += 1
        reply = await call_next(request)
        if request.control.no_store or request.source != "upstream":
            return reply
        if isinstance(reply, StreamedReply):
            def completed(done: Reply) -> None:
                self._remember(request, key, scope, question, vector, done, False, looked)
                if self._stores_itself:
                    self.pipeline.spawn(self._store(request, key, done), name="r1mw-semantic-store")

            reply.on_complete(completed)
        else:
            self._remember(request, key, scope, question, vector, reply, True, looked)
            if self._stores_itself and not request.control.no_store:
                await self._store(request, key, reply)
        return reply

    def _embed_via_embed(self, text: str) -> "asyncio.Future[Any]":
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            vectors = self.embedder.embed([text])
            vector = vectors[0] if len(vectors) else None
        except Exception as exc:  # an embedder fault is a miss, never a caller error
            log.warning("embedding failed: %s", exc)
            vector = None
        fut.set_result(_usable(vector))
        return fut

    async def _find(self, index: VectorIndex, request: Request, scope: bytes, question: str,
                    vector: Any) -> tuple[tuple[Entry, str], Record, float] | None:
        candidates = index.search(scope, vector, self.threshold, self.top_k)
        if not candidates:
            return None
        self.counts["candidates"] += len(candidates)
        slots = request.meta.get("slots")
        template_id = request.meta.get("template_id")
        for cand in candidates:
            record = cand.record
            info = {"similarity": cand.similarity, "asked_slots": slots, "stored_slots": record.slots,
                    "asked_template": template_id, "stored_template": record.template_id}
            veto = first_veto(self.guards, question, record.text, info)
            if veto is not None:
                self.vetoes[veto] += 1
                log.debug("semantic candidate vetoed by %s: sim=%.3f asked=%r stored=%r",
                          veto, cand.similarity, question[:200], record.text[:200])
                continue
            found = await self.store.get(record.key)
            if found is None or not isinstance(found[0].value, Reply):
                self.counts["stale"] += 1
                if time.time() - record.added > _STALE_AFTER:
                    index.remove(record.key)
                continue
            return found, record, cand.similarity
        return None

    def _serve(self, request: Request, found: tuple[Entry, str], served: bytes, similarity: float,
               question: str, stored_text: str | None) -> Reply:
        """Answer ``request`` with ``found``; ``stored_text`` None = through an alias."""
        entry, tier = found
        request.source, request.tier = "semantic", tier
        request.meta["similarity"] = similarity
        request.meta["served_by"] = served.hex()
        self.counts["hits"] += 1
        if stored_text is None:
            self.counts["alias_hits"] += 1
            stored_text = "(alias of a paraphrase served before)"
        record = {"similarity": round(similarity, 4), "served_by": served.hex(), "asked": question[:200],
                  "stored": stored_text[:200], "namespace": request.namespace, "model": request.model,
                  "at": time.time()}
        self._recent.append(record)
        log.debug("semantic hit sim=%.4f served_by=%s asked=%r stored=%r", similarity, served.hex(),
                  question[:200], stored_text[:200])
        if self.pipeline.events.enabled:
            self.pipeline.events.emit("semantic_hit", **record)
        return entry.reply

    def _remember(self, request: Request, key: bytes, scope: bytes, question: str, vector: Any,
                  reply: Reply, can_skip_store: bool, looked: float = float("inf")) -> None:
        """Index a completed miss, or make it an alias when an equivalent entry is stored.
        A fault here costs a future hit, never this reply: it is logged and counted."""
        try:
            self._index_or_alias(request, key, scope, question, vector, reply, can_skip_store, looked)
        except Exception:
            self.counts["index_errors"] += 1
            log.exception("indexing a semantic entry failed")

    def _index_or_alias(self, request: Request, key: bytes, scope: bytes, question: str, vector: Any,
                        reply: Reply, can_skip_store: bool, looked: float) -> None:
        index = self.index
        if index is None:
            return
        if scope not in self._pending_by_scope and not index.holds(scope):
            # Nothing in its scope: no twin to find, nothing to search. Its embedding waits for
            # the background indexer (a lookup of this scope indexes it first: _flush_scope).
            self._defer(request, key, scope, question)
            return
        # Its scope's queued questions are indexed first: the twin search must see them.
        self._flush_scope(index, scope)
        if vector is None:
            vector = self._embed_now([embedding_text(question)])[0]
            if vector is None:
                self.counts["unembeddable"] += 1
                return
        # A refetch (no-cache, s-maxage) replaces what is stored: never deduplicated (a lookup an
        # adapter asked for under no_cache, meta["accepts"], is not a refetch).
        if (self.dedup and can_skip_store and not self._stores_itself
                and (not request.control.no_cache or "accepts" in request.meta)
                and self._last_indexed >= looked):  # nothing indexed since the lookup: no twin
            twin = self._twin(index, request, scope, question, vector, key, looked)
            if twin is not None:
                record, similarity = twin
                self._alias(key, record.key, similarity)
                # the exact stage stores after this returns: tell it not to keep a second copy
                request.control = dataclasses.replace(request.control, no_store=True)
                self.bytes_saved += _size(reply)
                self.counts["deduplicated"] += 1
                return
        # Tickers it writes in capitals make the guards stricter for every later prompt; the
        # rest of its analysis waits until a guard compares it (memoized then).
        learn_tickers(question)
        now = time.time()
        added = index.add(Record(key, scope, question, _plain(request.meta.get("slots")),
                                 request.meta.get("template_id"), now), vector)
        if added:
            self._last_indexed = now
        self.counts["indexed" if added else "not_indexed"] += 1
        if index.ann_due:
            self._maybe_build_ann()

    # -- deferred indexing ------------------------------------------------------------------
    def _defer(self, request: Request, key: bytes, scope: bytes, question: str) -> None:
        # Tickers are learnt now, as when indexed at once: guards on other prompts rely on them.
        learn_tickers(question)
        now = time.time()
        item = _Pending(key, scope, question, _plain(request.meta.get("slots")), request.meta.get("template_id"), now)
        self._unqueue(key)
        self._pending[key] = item
        self._pending_by_scope.setdefault(scope, {})[key] = item
        self._last_indexed = now  # a concurrent miss of this scope must look for it as a twin
        self.counts["deferred"] += 1
        while len(self._pending) > self.max_pending:
            self._unqueue(next(iter(self._pending)))
            self.counts["pending_dropped"] += 1
        if self._indexer is None and not self._closing:
            self._indexer = self.pipeline.spawn(self._background_indexer(), name="r1mw-semantic-indexer")

    def _unqueue(self, key: bytes) -> _Pending | None:
        item = self._pending.pop(key, None)
        if item is not None:
            by_key = self._pending_by_scope.get(item.scope)
            if by_key is not None:
                by_key.pop(key, None)
                if not by_key:
                    del self._pending_by_scope[item.scope]
        return item

    def _flush_scope(self, index: VectorIndex, scope: bytes) -> None:
        """Index the queued questions of ``scope`` now (one embed() call, on the loop)."""
        queued = self._pending_by_scope.pop(scope, None)
        if not queued:
            return
        items = list(queued.values())
        for item in items:
            self._pending.pop(item.key, None)
        self.counts["flushed_on_demand"] += len(items)
        vectors = self._embed_now([embedding_text(item.question) for item in items])
        for item, vector in zip(items, vectors):
            self._index_queued(index, item, vector)

    def _embed_now(self, texts: list[str]) -> list[Any]:
        """One synchronous embed() call; a fault or a bad vector is None (a lost hit, never an error)."""
        try:
            vectors = list(self.embedder.embed(texts))
        except Exception as exc:
            log.warning("embedding failed: %s", exc)
            return [None] * len(texts)
        if len(vectors) != len(texts):
            return [None] * len(texts)
        return [_usable(v) for v in vectors] if self._renormalize else vectors

    def _index_queued(self, index: VectorIndex, item: _Pending, vector: Any) -> None:
        try:
            added = index.add(Record(item.key, item.scope, item.question, item.slots, item.template_id,
                                     item.added), vector)
        except Exception:
            self.counts["index_errors"] += 1
            log.exception("indexing a semantic entry failed")
            return
        self.counts["indexed" if added else "not_indexed"] += 1
        if index.ann_due:
            self._maybe_build_ann()

    async def _background_indexer(self) -> None:
        try:
            while self._pending and not self._closing:
                if len(self._pending) < _BATCH:
                    await asyncio.sleep(_GATHER)  # let a batch gather (lookups flush what they need)
                index = self.index
                if index is None:
                    return
                await self._drain_once(index, _BATCH)
        finally:
            self._indexer = None

    async def _drain_once(self, index: VectorIndex, n: int) -> None:
        """Embed up to ``n`` of the oldest queued questions (one embed() call, in a worker thread
        when the embedder says it is thread-safe) and index those still queued, on the loop."""
        batch = [item for item, _ in zip(self._pending.values(), range(n))]
        if not batch:
            return
        texts = [embedding_text(item.question) for item in batch]
        if getattr(self.embedder, "thread_safe", False):
            vectors = await asyncio.to_thread(self._embed_now, texts)
        else:
            vectors = self._embed_now(texts)
        self.counts["background_batches"] += 1
        for item, vector in zip(batch, vectors):
            if self._pending.get(item.key) is item:  # not flushed, replaced nor dropped meanwhile
                self._unqueue(item.key)
                self._index_queued(index, item, vector)

    def _maybe_build_ann(self) -> None:
        index = self.index
        if index is None or not index.ann_due or self._ann_task is not None:
            return
        self._ann_task = self.pipeline.spawn(self._build_ann(index, next(iter(index.ann_due))),
                                             name="r1mw-semantic-ann")

    async def _build_ann(self, index: VectorIndex, scope: bytes) -> None:
        """Copy a scope past R1MW_SEMANTIC_ANN_MIN into usearch off the event loop."""
        snapshot = index.start_ann(scope)
        try:
            if snapshot is not None:
                ann = await asyncio.to_thread(build_ann, index.dim, *snapshot)
                index.finish_ann(scope, ann)
                self.counts["ann_builds"] += 1
        except BaseException:
            index.abort_ann(scope)
            log.exception("building the ANN index failed; the scope stays on exact search")
            raise
        finally:
            self._ann_task = None
            if not self._closing:
                self._maybe_build_ann()

    def _twin(self, index: VectorIndex, request: Request, scope: bytes, question: str,
              vector: Any, key: bytes, looked: float) -> tuple[Record, float] | None:
        # Synchronous: only entries the first tier holds count (no await between the
        # upstream reply and the exact stage's store).
        slots = request.meta.get("slots")
        template_id = request.meta.get("template_id")
        for cand in index.search(scope, vector, self.threshold, self.top_k):
            record = cand.record
            if record.key == key or record.added < looked:
                continue  # its own key (this reply replaces it), or already refused by the lookup
            info = {"similarity": cand.similarity, "asked_slots": slots, "stored_slots": record.slots,
                    "asked_template": template_id, "stored_template": record.template_id}
            if first_veto(self.guards, question, record.text, info) is None \
                    and self.store.get_nowait(record.key) is not None:
                return record, cand.similarity
        return None

    async def _store(self, request: Request, key: bytes, reply: Reply) -> None:
        ttl = request.control.ttl if request.control.ttl is not None else self.default_ttl
        try:
            await self.store.set(key, Entry(reply, time.time() + ttl if ttl else 0.0,
                                            dict(request.meta.get("store_meta", {}))))
        except r1mw.CodecError as exc:  # a cache fault: the caller has the reply already
            self.counts["store_errors"] += 1
            log.warning("semantic: reply not stored: %s", exc)

    # -- aliases and drops -----------------------------------------------------------------
    def _alias(self, alias: bytes, served: bytes, similarity: float) -> None:
        if alias == served:
            return
        self._forget_alias(alias)
        self._aliases[alias] = (served, similarity)
        self._aliased_by.setdefault(served, set()).add(alias)
        while len(self._aliases) > _MAX_ALIASES:
            oldest = next(iter(self._aliases))
            self._forget_alias(oldest)

    def _forget_alias(self, alias: bytes) -> None:
        found = self._aliases.pop(alias, None)
        if found is not None:
            users = self._aliased_by.get(found[0])
            if users is not None:
                users.discard(alias)
                if not users:
                    del self._aliased_by[found[0]]

    def _dropped(self, key: bytes) -> None:
        """The store dropped ``key`` from its last tier: its vector and aliases go too."""
        self._unqueue(key)
        if self.index is not None and self.index.remove(key):
            self.counts["dropped"] += 1
        for alias in list(self._aliased_by.pop(key, ())):
            self._aliases.pop(alias, None)
        self._forget_alias(key)

    # -- stats -----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        c = self.counts
        return {
            "ready": self.ready,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "hits": c["hits"], "alias_hits": c["alias_hits"], "misses": c["misses"], "lookups": c["lookups"],
            "skipped_not_ready": c["skipped_not_ready"], "skipped_empty": c["skipped_empty"],
            "skipped_too_long": c["skipped_too_long"], "skipped_templated": c["skipped_templated"],
            "unembeddable": c["unembeddable"],
            "candidates": c["candidates"], "vetoed_by": dict(self.vetoes), "stale": c["stale"],
            "indexed": c["indexed"], "dropped": c["dropped"], "reloaded": self.loaded_entries,
            "ann_builds": c["ann_builds"], "index_errors": c["index_errors"],
            "deferred": {"empty_scope_lookups": c["empty_scope"], "queued": c["deferred"],
                         "pending": len(self._pending), "pending_dropped": c["pending_dropped"],
                         "flushed_on_demand": c["flushed_on_demand"],
                         "background_batches": c["background_batches"]},
            "dedup": {"enabled": self.dedup, "aliases": len(self._aliases),
                      "deduplicated": c["deduplicated"], "bytes_saved": self.bytes_saved},
            "guards": [g.name for g in self.guards],
            "index": self.index.stats() if self.index is not None else None,
            "embedder": self.embedder.stats() if hasattr(self.embedder, "stats") else {},
            "recent_hits": list(self._recent),
        }


def _usable(vector: Any) -> Any:
    """A third-party embedder's vector as normalized float32, or None."""
    if vector is None:
        return None
    from r1mw.semantic.embedder import normalize_rows

    return normalize_rows(vector)[0]


_BESIDE_TEXT = "r1mw:beside-text"  # role of the scope message holding the last user message's non-text parts


def _context(messages: list[dict[str, Any]]) -> list[Any]:
    """Every message but the last user message's text: system prompt, earlier turns, and what
    the last user message carries besides its text (images, files, audio, its ``name``...).

    The question is the text alone; a chart of AAPL and one of TSLA under the same words ask two
    questions, so everything else of that message must be equal, like the system prompt."""
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if isinstance(m, dict) and m.get("role") == "user":
            beside = _beside_text(m)
            tail = [{"role": _BESIDE_TEXT, "content": beside}] if beside is not None else []
            return [*messages[:i], *messages[i + 1:], *tail]
    return list(messages)


def _beside_text(message: dict[str, Any]) -> dict[str, Any] | None:
    """The last user message without its text, or None when it is only role and text (its scope
    stays what it always was: indexes saved before still match). Text parts stay as
    placeholders, so where an image sits among the text parts counts too."""
    rest = {str(k): v for k, v in message.items() if k not in ("role", "content")}
    content = message.get("content")
    if isinstance(content, list):
        parts: list[Any] = []
        only_text = True
        for part in content:
            if isinstance(part, Mapping) and part.get("type", "text") == "text" and isinstance(part.get("text", ""), str):
                other = {str(k): v for k, v in part.items() if k not in ("type", "text")}
                only_text = only_text and not other  # e.g. cache_control: kept, as in the exact key
                parts.append({"type": "text", **other})
            else:
                only_text = False
                parts.append(part)
        if not only_text:
            rest["content"] = parts
    elif content is not None and not isinstance(content, str):
        rest["content"] = content  # an odd shape: all of it, never nothing
    return rest or None


def _plain(slots: Any) -> dict[str, Any] | None:
    if not slots:
        return None
    return {str(k): v if isinstance(v, (str, int, float, bool)) or v is None else str(v) for k, v in dict(slots).items()}


def _size(reply: Reply) -> int:
    n = 0
    for c in reply.choices:
        n += len((c.content or "").encode("utf-8", "replace")) + len((c.reasoning_content or "").encode("utf-8", "replace"))
    return n


@r1mw.hookimpl
def r1mw_register_stages() -> dict[str, Callable[[r1mw.Pipeline], r1mw.Stage | None]]:
    return {"semantic": SemanticStage}


def _explain(args: Any) -> int:
    """``r1mw semantic "stored prompt" "asked prompt"``: would the stored reply serve the ask?"""
    import numpy as np

    settings = r1mw.Settings.from_env()
    from r1mw.semantic.embedder import Model2VecEmbedder
    from r1mw.semantic.guards import BUILTIN_GUARDS

    embedder = Model2VecEmbedder(settings.embed_model)
    asyncio.run(embedder.load())
    threshold, source = threshold_for(embedder.model_name, settings.similarity_threshold)
    stored, asked = normalize_question(args.stored), normalize_question(args.asked)
    va, vb = embedder.embed([embedding_text(stored), embedding_text(asked)])
    similarity = float(np.dot(va, vb)) if va is not None and vb is not None else float("nan")
    print(f"model {embedder.model_name}; threshold {threshold:.2f} ({source})")
    print(f"cosine {similarity:.4f}: {'a candidate' if similarity >= threshold else 'below the threshold'}")
    vetoes = []
    for guard in (cls() for cls in BUILTIN_GUARDS):
        try:
            ok = guard.allows(asked, stored, {})
        except Exception as exc:  # noqa: BLE001 - shown, and a raising guard vetoes
            ok = False
            print(f"  {guard.name:<10} raised {exc!r}")
        print(f"  {guard.name:<10} {'allows' if ok else 'VETOES'}")
        if not ok:
            vetoes.append(guard.name)
    served = similarity >= threshold and not vetoes
    print("served from cache" if served else "not served: " + (", ".join(vetoes) or "cosine below threshold"))
    return 0


@r1mw.hookimpl
def r1mw_add_cli_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser("semantic", help="explain whether a stored prompt's reply would serve another "
                                                    "(cosine, threshold and each built-in guard)")
    parser.add_argument("stored", help="the prompt whose reply is stored")
    parser.add_argument("asked", help="the prompt asked now")
    parser.set_defaults(func=_explain)
