"""The prefetch stage: learn what a session asks next and have it cached before it is asked.

Placement: outside ``template`` and ``exact`` (default ``metrics,prefetch,template,exact,semantic``)
so it sees every request of a session, hits included, with the template stage's annotations.
On the request path it only appends to a queue; learning and prefetching happen in a
background task, so it never delays or fails a caller.

A prefetch goes down the same chain below this stage (template, exact, semantic, upstream)
with ``meta["prefetch"] = True``: the exact stage's single-flight makes a real request that
arrives meanwhile wait for that call instead of making a second one, and the reply is stored
as a normal entry marked ``prefetched``. Spending is bounded by R1MW_PREFETCH_MAX_INFLIGHT,
R1MW_PREFETCH_MAX_PER_MINUTE and R1MW_PREFETCH_TOKEN_BUDGET (per hour); a prediction must
reach R1MW_PREFETCH_MIN_PROB. Off when R1_CONTEXT_PREFETCH_ENABLED is false.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any, Callable

import msgpack
import xxhash

import r1mw
from r1mw import CacheControl, Reply, Request, StreamedReply
from r1mw.budget import Grant, SharedBudget
from r1mw.predictor import Prediction, SequenceModel
from r1mw.singleflight import Withdrawn

log = logging.getLogger("r1mw.prefetch")

_EXAMPLE_MAX_CHARS = 8_000  # untemplated requests remembered for re-issue only when small
_OUTSTANDING_MAX = 10_000
_SAVE_EVERY_S = 300.0
_STREAM_ONLY = frozenset({"stream_options"})
_CAPS = frozenset({"max_tokens", "max_completion_tokens"})
_SYSTEM_ROLES = frozenset({"system", "developer"})
_PREFIXES_MAX = 10_000
_WRITTEN_MAX = 20_000
_SYMBOLS_MAX = 10_000


class PrefetchStage:
    name = "prefetch"

    def __init__(self, pipeline: r1mw.Pipeline, *, clock: Any = time.monotonic,
                 horizon_s: float = 3600.0) -> None:
        s = pipeline.settings
        self.pipeline = pipeline
        self.min_prob = s.prefetch_min_prob
        self.model = SequenceModel()
        self.clock = clock
        self.horizon_s = horizon_s  # a prefetched entry unused this long counts as wasted
        self.path = Path(s.cache_path) / "prefetch" / "model.msgpack"
        # One budget for the processes sharing the cache directory (a service's workers).
        self.budget = SharedBudget(self.path.parent, max_inflight=s.prefetch_max_inflight,
                                   max_per_minute=s.prefetch_max_per_minute, tokens_per_hour=s.prefetch_token_budget)
        self._queue: deque[tuple[Request, Reply | StreamedReply | None]] = deque(maxlen=10_000)
        self._wake: asyncio.Event | None = None
        self._call_next: r1mw.Handler | None = None
        self._via_learning: r1mw.Handler = self._learning_first
        self._inflight: dict[int, Request] = {}
        self._pending: set[bytes] = set()  # signatures of predictions in flight
        self._outstanding: OrderedDict[bytes, tuple[str, int, float]] = OrderedDict()
        self._cost: dict[str, int] = {}  # symbol -> most tokens one real reply of it cost
        # (namespace, symbol) -> the system messages last seen before it: each template of a
        # desk may come with its own system prompt, and the prefetch must be keyed as asked.
        self._prefix: OrderedDict[tuple[str, str], list[Any]] = OrderedDict()
        # (namespace, slot, value) -> how the desk last wrote that value ("the 5-minute",
        # "$50,000 ... NVDA"): a prefetch asks in the desk's words, not in canonical form.
        self._written: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._last_save = 0.0
        self._snapshots = self._saved_seq = 0
        self._write_lock = threading.Lock()
        self.counts = {"observed": 0, "predicted": 0, "issued": 0, "already_cached": 0, "used": 0,
                       "used_in_flight": 0, "wasted": 0, "errors": 0, "no_estimate": 0, "not_learnt": 0,
                       "tokens_spent": 0, "tokens_saved": 0}
        # symbol -> [issued, used]; LRU-capped: each untemplated question prefetched is a symbol.
        self.by_symbol: OrderedDict[str, list[int]] = OrderedDict()

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._load()
        # The first periodic save is a period from now: at the first request it would write
        # back what was just loaded, while the process is busiest.
        self._last_save = time.monotonic()
        self.pipeline.spawn(self._work(), name="r1mw-prefetch")

    async def close(self) -> None:
        # The pipeline has cancelled our worker and prefetch calls already; keep what we learnt.
        self._save()
        self.budget.close()

    # -- request path: append and go -----------------------------------------------------
    async def handle(self, request: Request, call_next: r1mw.Handler) -> Reply | StreamedReply:
        self._call_next = call_next
        if not (request.control.session or request.user or "session" in request.meta):
            reply = await call_next(request)
            if request.source != "upstream" and not self._outstanding and not self._inflight:
                # A hit outside any session teaches nothing: no sequence, and its cost and system
                # prompt were learnt when it missed. Nothing prefetched waits to be counted used.
                return reply
            self._queue.append((request, reply))
            if self._wake is not None:
                self._wake.set()
            return reply
        upstream = request.upstream
        if upstream is None or request.control.no_store:
            reply = await call_next(request)
        else:
            request.meta["prefetch_upstream"] = upstream  # also what prefetches built from it call
            request.upstream = self._via_learning  # bound once: nothing allocated per request
            try:
                reply = await call_next(request)
            finally:
                request.upstream = upstream  # the learning one was for this call only
        if not request.meta.get("prefetch_learnt"):  # else learnt as it went upstream
            # What is learnt (and maybe re-issued much later) is this request as asked now: the
            # caller may reuse its message dicts for its next question once this call returns.
            request.messages = [dict(m) if type(m) is dict else m for m in request.messages]
        self._queue.append((request, reply))  # (as _enqueue: inline on the hit path)
        if self._wake is not None:
            self._wake.set()
        return reply

    async def _learning_first(self, request: Request) -> Reply | StreamedReply:
        """The request's upstream, learning the request as it reaches it: R1 takes seconds to
        minutes to answer, and what follows this question is worth prefetching meanwhile."""
        if not request.meta.get("prefetch_learnt"):  # once, even if the call is made again
            request.meta["prefetch_learnt"] = True
            request.messages = [dict(m) if type(m) is dict else m for m in request.messages]
            self._enqueue(request, None)
        upstream: r1mw.Handler = request.meta["prefetch_upstream"]
        return await upstream(request)

    def _enqueue(self, request: Request, reply: Reply | StreamedReply | None) -> None:
        self._queue.append((request, reply))
        wake = self._wake
        if wake is not None:
            wake.set()

    # -- background ------------------------------------------------------------------------
    async def _work(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                request, reply = self._queue.popleft()
                try:
                    self._observe(request, reply)
                except Exception:  # a learning bug must never reach a caller
                    log.exception("prefetch: observing a request failed")
            if time.monotonic() - self._last_save > _SAVE_EVERY_S:
                await self._save_in_thread()  # never raises: a dead worker would stop learning for good

    def _observe(self, request: Request, reply: Reply | StreamedReply | None) -> None:
        """Learn ``request``; with ``reply`` None, as it goes upstream (its answer comes later,
        and is seen again here with it, for its cost and the accounts only)."""
        if reply is not None:
            self._account(request)
            if request.meta.get("prefetch_learnt"):
                symbol = request.meta.get("prefetch_symbol")
                if symbol is not None:  # (None: learning it failed, logged then)
                    self._learn_cost(symbol, reply)
                return
        self.counts["observed"] += 1
        if request.control.no_store:
            # Asked not to be kept: not learnt (the model, examples included, is saved to disk)
            # and so never re-issued, which would store its answer after all.
            self.counts["not_learnt"] += 1
            return
        session = request.control.session or request.meta.get("session") or request.user
        symbol, slots, example = _symbol_of(request, with_example=bool(session))
        upstream = reply is None or request.source == "upstream"
        if reply is None:
            request.meta["prefetch_symbol"] = symbol
        # A hit's cost and system prompt were learnt when it missed; they are learnt again
        # only where this process has not seen them (another process stored the entry).
        elif upstream or symbol not in self._cost:
            self._learn_cost(symbol, reply)
        # Only a template's prefetch reads a system prompt learnt here (an untemplated one is
        # re-issued as asked): one per untemplated question would keep 10,000 RAG prompts.
        if symbol[0] == "t" and (upstream or (request.namespace, symbol) not in self._prefix):
            self._learn_prefix(request, symbol)
        if slots and not request.meta.get("prefetch"):
            self._learn_written(request.namespace, slots, request.meta.get("slot_text"))
        if not session:
            return
        user = f"{request.namespace}\x00{request.user}" if request.user else None
        key = f"{request.namespace}\x00{session}"
        if not self.model.observe(key, symbol, slots, example, user=user, desk=request.namespace):
            return  # the session's latest request again: what it predicts was acted on then
        for prediction in self.model.predict(key):
            if prediction.probability >= self.min_prob:
                self._prefetch(request, prediction)

    def _account(self, request: Request) -> None:
        """Was this request answered by a prefetch (stored or in flight)?"""
        now = self.clock()
        while self._outstanding:  # unused for too long: wasted
            _, (_, _, at) = next(iter(self._outstanding.items()))
            if now - at < self.horizon_s:
                break
            self._outstanding.popitem(last=False)
            self.counts["wasted"] += 1
        key = request.key
        if key is None or not request.hit:
            return
        found = self._outstanding.pop(key, None)
        if found is None:
            for pending in self._inflight.values():
                if pending.key == key:
                    found = (_symbol_of(pending)[0], 0, now)
                    pending.meta["prefetch_used"] = True
                    break
        if found is not None:
            symbol, tokens, _ = found
            self.counts["used"] += 1
            if request.coalesced:  # it waited for the rest of the prefetch call
                self.counts["used_in_flight"] += 1
            self.counts["tokens_saved"] += tokens
            self._tally(symbol)[1] += 1
            request.meta["prefetch_hit"] = True

    def _tally(self, symbol: str) -> list[int]:
        tally = self.by_symbol.get(symbol)
        if tally is None:
            tally = self.by_symbol[symbol] = [0, 0]
            while len(self.by_symbol) > _SYMBOLS_MAX:
                self.by_symbol.popitem(last=False)
        else:
            self.by_symbol.move_to_end(symbol)
        return tally

    def _learn_prefix(self, request: Request, symbol: str) -> None:
        prefix = request.messages[:-1]
        if all(type(m) is dict and m.get("role") in _SYSTEM_ROLES for m in prefix):
            key = (request.namespace, symbol)
            self._prefix[key] = prefix
            self._prefix.move_to_end(key)
            if len(self._prefix) > _PREFIXES_MAX:
                self._prefix.popitem(last=False)

    def _learn_written(self, namespace: str, slots: Any, written: Any) -> None:
        if not written:
            return
        table = self._written
        for name, value in slots.items():
            text = written.get(name)
            if text is not None:
                key = (namespace, name, str(value))
                if table.get(key) != text:
                    table[key] = text
                table.move_to_end(key)
                if len(table) > _WRITTEN_MAX:
                    table.popitem(last=False)

    def _learn_cost(self, symbol: str, reply: Reply | StreamedReply) -> None:
        if isinstance(reply, StreamedReply):
            reply.on_complete(lambda done: self._record_cost(symbol, done))
        else:
            self._record_cost(symbol, reply)

    def _record_cost(self, symbol: str, done: Reply) -> None:
        usage = done.usage
        if usage is not None and usage.total_tokens:
            cost = self._cost
            if usage.total_tokens > cost.get(symbol, 0):
                cost[symbol] = usage.total_tokens
                if len(cost) > 10_000:
                    cost.pop(next(iter(cost)))

    def _prefetch(self, current: Request, prediction: Prediction) -> None:
        built = self._build(current, prediction)
        if built is None:
            return
        signature = xxhash.xxh3_128_digest(msgpack.packb(
            [built.namespace, built.model, built.messages, sorted(built.params.items())], default=str,
            unicode_errors="surrogatepass"))
        if signature in self._pending:
            return
        self.counts["predicted"] += 1
        estimate = _reservation(built, self._cost.get(prediction.symbol) or max(self._cost.values(), default=0))
        if not estimate:
            self.counts["no_estimate"] += 1
            return
        self._pending.add(signature)
        self._inflight[id(built)] = built
        self.pipeline.spawn(self._run(built, estimate, prediction.symbol, signature), name="r1mw-prefetch-call")

    def _build(self, current: Request, prediction: Prediction) -> Request | None:
        model = current.model
        if prediction.symbol.startswith("t:"):
            templates = self.pipeline.services.get("templates")
            if templates is None:
                return None
            slots = dict(prediction.slots or {})
            written = {name: text for name, value in slots.items()
                       if (text := self._written.get((current.namespace, name, str(value)))) is not None}
            try:
                try:
                    text = templates.render(prediction.symbol[2:], slots, written)
                except TypeError:  # a template service that takes no spellings (a plugin's own)
                    text = templates.render(prediction.symbol[2:], slots)
            except Exception:  # a template that changed or a slot it refuses: no guess
                return None
            # The system prompt this template was last asked with; else (a conversation goes
            # on) what precedes the current question.
            prefix = self._prefix.get((current.namespace, prediction.symbol), current.messages[:-1])
            messages = [*(dict(m) for m in prefix), {"role": "user", "content": text}]
            params = dict(current.params)
        else:
            example = prediction.example
            # Symbols are learned across namespaces; a remembered request is re-issued only in
            # the namespace that asked it (never under another tenant's identity or cache).
            if not example or example.get("namespace") != current.namespace:
                return None
            # Copies: the issued request owns its dicts (its key and its upstream call must
            # see the same text, whatever happens to the remembered example meanwhile).
            messages = [dict(m) if isinstance(m, dict) else m for m in example["messages"]]
            params = dict(example["params"])
            # Its symbol names its model: asked on another one, the prefetch is a key nobody asks.
            model = example.get("model") or model
        # A plain call: stream-only options would make the upstream refuse it (HTTP 400).
        passthrough = {k: v for k, v in current.passthrough.items() if k not in _STREAM_ONLY}
        return Request(
            model=model, messages=messages, params=params, passthrough=passthrough,
            stream=False, control=CacheControl(session=current.control.session), namespace=current.namespace,
            user=current.user, upstream=current.meta.get("prefetch_upstream", current.upstream),
            meta={"prefetch": True, "store_meta": {"prefetched": True}},
        )

    async def _run(self, request: Request, estimate: int, symbol: str, signature: bytes) -> None:
        # The budget is asked at the upstream, not before the lookup: a prediction the cache
        # already answers costs nothing and must not use up the calls that would.
        granted: list[Grant] = []
        failed: list[BaseException] = []
        upstream = request.upstream
        assert upstream is not None

        async def gated(req: Request) -> Reply | StreamedReply:
            grant = self.budget.try_acquire(estimate)
            if grant is None:
                raise Withdrawn("prefetch budget")
            granted.append(grant)
            try:
                return await upstream(req)
            except Exception as exc:
                # A real request waiting on this call (single-flight) must not get the
                # prefetch's error (its client, its moment): it makes its own call instead.
                failed.append(exc)
                raise Withdrawn("prefetch call failed") from exc

        request.upstream = gated
        spent = 0
        try:
            assert self._call_next is not None
            reply = await self._call_next(request)
            if request.source == "upstream" and not request.coalesced:
                usage = reply.usage if isinstance(reply, Reply) else None
                spent = usage.total_tokens if usage is not None else estimate
                if isinstance(reply, Reply):
                    self._record_cost(symbol, reply)  # a dearer reply than any seen raises the estimate
                self.counts["issued"] += 1
                self.counts["tokens_spent"] += spent
                self._tally(symbol)[0] += 1
                if request.meta.get("prefetch_used"):  # a real request already waited on it
                    pass
                elif request.key is not None:
                    # Fetched again (its first answer was evicted unused): that one was wasted,
                    # and this one waits at the back, where the hour-old are taken from the front.
                    if self._outstanding.pop(request.key, None) is not None:
                        self.counts["wasted"] += 1
                    self._outstanding[request.key] = (symbol, spent, self.clock())
                    while len(self._outstanding) > _OUTSTANDING_MAX:
                        self._outstanding.popitem(last=False)
                        self.counts["wasted"] += 1
            else:
                self.counts["already_cached"] += 1
        except Withdrawn:
            # Refused by the budget (counted there), or the call failed; a real request waiting
            # on it makes its own call.
            if failed:
                self.counts["errors"] += 1
                log.debug("prefetch call failed: %r", failed[0])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # upstream failure during prefetch: nobody's problem but ours
            self.counts["errors"] += 1
            log.debug("prefetch call failed: %r", exc)
        finally:
            if granted:
                # A failed call is charged its reservation: what it cost is unknown, and a call
                # that timed out while R1 reasoned is billed for every token it generated.
                self.budget.release(granted[0], granted[0].reserved if failed else spent)
            self._pending.discard(signature)
            self._inflight.pop(id(request), None)

    # -- persistence -----------------------------------------------------------------------
    def _load(self) -> None:
        try:
            data = msgpack.unpackb(self.path.read_bytes(), raw=False, strict_map_key=False,
                                   unicode_errors="surrogatepass")
            self.model.load_data(data["model"])
            self._cost.update({str(k): int(v) for k, v in data.get("cost", {}).items()})
            for row in data.get("written", ())[-_WRITTEN_MAX:]:
                if len(row) == 4:
                    self._written[(str(row[0]), str(row[1]), str(row[2]))] = str(row[3])
            budget = data.get("budget")
            if budget is not None:  # wall-clock times: another process's monotonic clock differs
                elapsed = max(0.0, time.time() - float(budget["saved"]))
                self.budget.restore({"spent": [[float(age) + elapsed, int(n)] for age, n in budget["spent"]],
                                     "starts": [[float(age) + elapsed] for (age,) in budget["starts"]]})
        except FileNotFoundError:
            pass
        except Exception as exc:  # a damaged model file: start afresh, never fail start-up
            log.warning("prefetch: ignoring unreadable model %s (%s)", self.path, exc)

    def _save(self) -> None:
        """Save now, on this thread (at close: the worker is gone, nothing learns meanwhile)."""
        self._last_save = time.monotonic()
        snapshot = self._snapshot()
        if snapshot is not None:
            self._write(*snapshot)

    async def _save_in_thread(self) -> None:
        # A full model packs into tens of MB: on the loop that stalled every request for up
        # to seconds every 5 minutes. The snapshot refers to the model's own dicts, so the
        # worker (the only code that changes them) waits here until the write is done.
        self._last_save = time.monotonic()
        snapshot = self._snapshot()
        if snapshot is not None:
            await asyncio.to_thread(self._write, *snapshot)

    def _snapshot(self) -> tuple[int, dict[str, Any]] | None:
        try:
            written = [[*key, text] for key, text in self._written.items()]
            # The hour's spending goes with the model: a restart must not reset the budget.
            budget = {"saved": time.time(), **self.budget.ledger()}
            # _cost changes outside the worker (replies completing): a copy.
            data = {"model": self.model.to_data(), "cost": dict(self._cost), "written": written, "budget": budget}
        except Exception as exc:
            log.warning("prefetch: could not save the model (%s)", exc)
            return None
        self._snapshots += 1
        return self._snapshots, data

    def _write(self, seq: int, data: dict[str, Any]) -> None:
        # Serialized, and never older over newer: a periodic write still running in its thread
        # when close() saves must not replace the final snapshot.
        with self._write_lock:
            if seq <= self._saved_seq:
                return
            # Unique per stage object: two pipelines of one process (threads) share the path.
            tmp = self.path.with_suffix(f".tmp{os.getpid()}-{id(self):x}")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # surrogatepass: a request with a lone surrogate (a broken client) is learnt
                # like any other; refusing it here would make every later save fail.
                tmp.write_bytes(msgpack.packb(data, use_bin_type=True, default=str, unicode_errors="surrogatepass"))
                os.replace(tmp, self.path)
                self._saved_seq = seq
            except Exception as exc:  # a full disk, an unpackable value: keep serving, keep the old file
                log.warning("prefetch: could not save the model to %s (%s)", self.path, exc)
                with contextlib.suppress(OSError):  # a half-written file at every failed save fills the disk
                    tmp.unlink(missing_ok=True)

    # -- stats -----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return True

    def stats(self) -> dict[str, Any]:
        c = self.counts
        settled = c["used"] + c["wasted"]
        top = sorted(self.by_symbol.items(), key=lambda kv: -kv[1][0])[:20]
        return {
            **c,
            "outstanding": len(self._outstanding),
            "inflight": self.budget.inflight,
            "wasted_share": c["wasted"] / settled if settled else 0.0,
            "refused": dict(self.budget.refused),
            "tokens_last_hour": self.budget.spent_last_hour(),
            "contexts": len(self.model),
            "accuracy_by_template": {s: {"issued": i, "used": u, "accuracy": u / i if i else 0.0}
                                     for s, (i, u) in top},
        }


def _reservation(request: Request, dearest: int) -> int:
    """Tokens a prefetch call reserves: what it can cost at most when the request caps its
    reply (max_tokens, plus the prompt's bound, see _prompt_bound), else the dearest reply of
    its kind seen, an estimate: a reply dearer than any seen overshoots by the difference,
    once, and is the estimate from then on."""
    cap = request.params.get("max_completion_tokens") or request.params.get("max_tokens")
    if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0:
        return cap + _prompt_bound(request)
    return dearest


def _prompt_bound(request: Request) -> int:
    """The most tokens the prompt can cost: a token per UTF-8 byte (a byte-level tokenizer's
    token covers at least one byte; a character may take several tokens) of what the model
    reads: the messages as JSON (their keys and quotes outnumber a chat format's tokens per
    message) and every parameter but the caps: tools and response_format schemas are billed
    as prompt tokens too, often more than the question."""
    sent = [request.messages, {k: v for k, v in request.params.items() if k not in _CAPS}]
    return len(json.dumps(sent, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass"))


def _symbol_of(request: Request, with_example: bool = True) -> tuple[str, dict[str, Any] | None, Any]:
    template = request.meta.get("template_id")
    if template is not None:
        return f"t:{template}", request.meta.get("slots"), None
    text = request.question
    digest = xxhash.xxh3_64_hexdigest(f"{request.namespace}\x00{request.model}\x00{text}".encode("utf-8", "surrogatepass"))
    if not with_example:  # only a session's model keeps examples
        return f"q:{digest}", None, None
    size = 0
    for m in request.messages:  # a plain loop: this runs for every request in a session
        content = m.get("content", "")
        size += len(content) if type(content) is str else len(str(content))
    example = None
    if size <= _EXAMPLE_MAX_CHARS:
        example = {"messages": request.messages, "params": request.params, "namespace": request.namespace,
                   "model": request.model}
    return f"q:{digest}", None, example


@r1mw.hookimpl
def r1mw_register_stages() -> dict[str, Callable[[r1mw.Pipeline], r1mw.Stage | None]]:
    def build(pipeline: r1mw.Pipeline) -> PrefetchStage | None:
        return PrefetchStage(pipeline) if pipeline.settings.prefetch_enabled else None

    return {"prefetch": build}
