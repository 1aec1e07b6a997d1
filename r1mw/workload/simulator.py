"""A simulated DeepSeek-R1 upstream: an async callable taking OpenAI chat kwargs.

It answers like R1 does: after a time to first token, a reasoning part (about 1-3k tokens)
then an answer (a few hundred), streamed at tens of tokens per second, with usage counts
(``completion_tokens_details.reasoning_tokens``). Latencies are drawn from a realistic
distribution and multiplied by ``speed`` (``speed=0.001`` turns a 60 s answer into 60 ms,
so the demo replays a day in about a minute).

Replies are a pure function of the question id (see :mod:`r1mw.workload.truth`), and the
answer names it: :func:`served_question_id` reads it back, so a reply served for another
question is caught as a false hit. Errors can be injected (a share of calls, or the next n).

>>> import asyncio
>>> sim = SimulatedR1(speed=0.0)
>>> reply = asyncio.run(sim(model="deepseek-reasoner",
...                         messages=[{"role": "user", "content": "Analyze AAPL using RSI(14) mean reversion"}]))
>>> served_question_id(reply) == sim.identify([{"role": "user", "content": "analyze aapl using RSI(14) mean reversion"}])
True
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import math
import random
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Mapping, Sequence

import xxhash

from .truth import Catalog

__all__ = ["Call", "LatencyModel", "SimulatedR1", "SimulatedUpstreamError", "served_question_id"]

_QID = re.compile(r"\[answers question ([^\]\s]+)\]")


class SimulatedUpstreamError(Exception):
    """What an injected upstream failure raises (like an HTTP 503 from the provider)."""

    status_code = 503


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """R1-like latency: lognormal time to first token, then tokens at a normal rate.

    Defaults follow what DeepSeek-R1 users report on the hosted API: first token after
    a few seconds (queueing, prompt), 20-40 tokens/s, so a 2,000-token reply takes a minute.
    """

    ttft_median_s: float = 3.0
    ttft_sigma: float = 0.6
    tokens_per_s: float = 30.0
    tokens_per_s_sd: float = 6.0

    def sample(self, rng: random.Random, completion_tokens: int) -> tuple[float, float]:
        """(time to first token, total time) in real seconds for one reply."""
        ttft = rng.lognormvariate(math.log(self.ttft_median_s), self.ttft_sigma)
        rate = max(5.0, rng.gauss(self.tokens_per_s, self.tokens_per_s_sd))
        return ttft, ttft + completion_tokens / rate


@dataclass(frozen=True, slots=True)
class Call:
    """One upstream call, as the simulator saw it (``started``/``ended``: perf_counter)."""

    id: str
    question_id: str
    stream: bool
    started: float
    ended: float
    real_s: float            # what the call would take at R1 speed
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    raw_bytes: int           # the reply as JSON, what a naive cache would store
    error: str | None = None


# Words R1 uses when it reasons about a trade; the text is varied enough to compress like prose.
_OPENERS = ("Okay, let me think about", "First, I need to consider", "Hmm, looking at", "Let me check",
            "Wait, I should also weigh", "Now, considering", "So far the evidence on", "Another angle is")
_TOPICS = ("the recent price action", "the volatility regime", "the earnings trend", "the macro backdrop",
           "the options skew", "the volume profile", "the sector rotation", "the rate outlook",
           "the drawdown risk", "the correlation with the index", "the liquidity at the open",
           "the momentum signal", "the mean-reversion setup", "the support zone", "the funding costs",
           "the position's beta", "the implied move", "the stop placement", "the risk/reward ratio")
_CLAUSES = ("which suggests a move of about {p}% over the horizon", "with the indicator near {x}",
            "so the expected drawdown is roughly {p}%", "and the 20-day average sits at {x}",
            "which puts the probability near {q}%", "though the sample of {n} similar setups is small",
            "and the spread has widened by {n} basis points", "implying a ratio of {r} to 1",
            "while realized volatility runs at {p}% annualized", "against a historical median of {x}")
_ANSWER_LEADS = ("Conclusion:", "Bottom line:", "Summary:", "Recommendation:")
_ANSWER_POINTS = ("Entry near {x} with a stop at {y}.", "Expected move: {p}% (1 sigma).",
                  "Risk per trade: {q} bps of capital.", "Probability of success: about {q}%.",
                  "Hedge with a {n}-delta put if exposure exceeds the limit.",
                  "Position size: {n} units keeps the loss under {p}%.", "Key level to watch: {x}.",
                  "Reassess after {n} sessions or on a close beyond {y}.")


# Free prose: words drawn Zipf-like (s = 1.05) from common and made-up words. Measured, it
# compresses like English (lz4 1.4x, zlib 2.4x; DESIGN.md itself: 1.42x, 2.1x), so stored
# sizes are not flattered by an over-repetitive text.
_COMMON = """the of and to a in is that for it as with was on be by this are or at from but not have an
they which one you were all we can has there been if more when will would who so no out up into than
them only other its then time these two may first new some could any like now over such our how most
also made after should well where much those price risk trade market move level volume trend stock
option rate yield return loss gain hedge spread signal entry stop target week month day session close
open high low average volatility support resistance momentum sector index futures position size capital
exposure drawdown earnings guidance margin revenue growth value""".split()


def _vocabulary() -> tuple[list[str], list[float]]:
    rng = random.Random(20240101)
    syllables = ("ka", "ro", "ti", "men", "sa", "lo", "ver", "an", "ex", "pro", "ta", "li", "con", "de",
                 "ri", "un", "st", "ga", "mo", "ne", "pa", "cu", "fi", "ble", "tion", "ing", "er", "al")
    tail: set[str] = set()
    while len(tail) < 3000:
        tail.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    words = _COMMON + sorted(tail)
    return words, list(itertools.accumulate(1.0 / rank ** 1.05 for rank in range(1, len(words) + 1)))


_WORDS, _CUM = _vocabulary()


def _free_sentence(rng: random.Random) -> str:
    top = _CUM[-1]
    words = [_WORDS[bisect.bisect_left(_CUM, rng.random() * top)] for _ in range(rng.randint(8, 22))]
    return words[0].capitalize() + " " + " ".join(words[1:]) + "."


def _sentence(rng: random.Random, parts: Sequence[str]) -> str:
    return rng.choice(parts).format(p=round(rng.uniform(0.3, 18), 1), x=round(rng.uniform(10, 900), 2),
                                    y=round(rng.uniform(10, 900), 2), q=rng.randint(5, 95),
                                    n=rng.randint(2, 250), r=round(rng.uniform(0.5, 4), 1))


def _prose(rng: random.Random, words: int, builder: Callable[[random.Random], str]) -> str:
    out: list[str] = []
    count = 0
    while count < words:
        s = builder(rng)
        out.append(s)
        count += s.count(" ") + 1
    return " ".join(out)


def _reasoning_sentence(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return _free_sentence(rng)
    return f"{rng.choice(_OPENERS)} {rng.choice(_TOPICS)}, {_sentence(rng, _CLAUSES)}."


def _answer_sentence(rng: random.Random) -> str:
    return _free_sentence(rng) if rng.random() < 0.6 else _sentence(rng, _ANSWER_POINTS)


class SimulatedR1:
    """An async callable shaped like ``AsyncOpenAI().chat.completions.create`` returning dicts
    (and ``chat.completion.chunk`` dicts when ``stream=True``).

    ``identify(messages) -> question id`` names the question a request asks (by default the
    bundled catalog's judge). ``speed`` scales every latency; ``error_rate`` fails that share
    of calls with ``error()``; :meth:`fail_next` fails the next n calls.
    """

    def __init__(self, *, speed: float = 1.0, latency: LatencyModel | None = None, seed: int = 0,
                 identify: Callable[[Sequence[Mapping[str, Any]]], str] | None = None,
                 error_rate: float = 0.0, error: Callable[[], BaseException] | None = None,
                 model: str = "deepseek-reasoner") -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError("error_rate must be in [0, 1]")
        self.speed = speed
        self.latency = latency or LatencyModel()
        self.identify = identify or Catalog.load().identify_messages
        self.error_rate = error_rate
        self.error = error or (lambda: SimulatedUpstreamError("simulated R1 upstream error (503)"))
        self.model = model
        self._rng = random.Random(seed)
        self._fail_next = 0
        self._replies: OrderedDict[str, tuple[str, str, int, int]] = OrderedDict()
        self.calls: list[Call] = []
        self.by_id: dict[str, Call] = {}

    # -- figures ----------------------------------------------------------------------------
    @property
    def ok_calls(self) -> list[Call]:
        return [c for c in self.calls if c.error is None]

    def totals(self) -> dict[str, int]:
        ok = self.ok_calls
        return {"calls": len(self.calls), "errors": len(self.calls) - len(ok),
                "prompt_tokens": sum(c.prompt_tokens for c in ok),
                "completion_tokens": sum(c.completion_tokens for c in ok),
                "reasoning_tokens": sum(c.reasoning_tokens for c in ok),
                "raw_bytes": sum(c.raw_bytes for c in ok)}

    def fail_next(self, n: int = 1) -> None:
        """Make the next ``n`` calls raise ``error()``."""
        self._fail_next += n

    # -- replies ------------------------------------------------------------------------------
    def texts_for(self, question_id: str) -> tuple[str, str, int, int]:
        """(reasoning, answer, reasoning tokens, answer tokens) for a question: a pure function
        of its id. The answer ends by naming the id."""
        found = self._replies.get(question_id)
        if found is not None:
            return found
        rng = random.Random(xxhash.xxh64_intdigest(question_id.encode()))
        reasoning_tokens = int(min(3500, max(800, rng.lognormvariate(math.log(1800), 0.35))))
        answer_tokens = int(min(900, max(120, rng.lognormvariate(math.log(320), 0.4))))
        # About 1.3 tokens per English word.
        reasoning = _prose(rng, int(reasoning_tokens / 1.3), _reasoning_sentence)
        lead = rng.choice(_ANSWER_LEADS)
        answer = f"{lead} " + _prose(rng, int(answer_tokens / 1.3), _answer_sentence) + \
            f"\n\n[answers question {question_id}]"
        found = (reasoning, answer, reasoning_tokens, answer_tokens)
        self._replies[question_id] = found
        if len(self._replies) > 4096:
            self._replies.popitem(last=False)
        return found

    async def __call__(self, **kwargs: Any) -> Any:
        messages = kwargs.get("messages")
        if not messages:
            raise TypeError("messages is required")
        started = time.perf_counter()
        n = len(self.calls) + 1
        call_id = f"simr1-{n:06d}-{self._rng.getrandbits(32):08x}"
        qid = self.identify(messages)
        stream = bool(kwargs.get("stream"))
        if self._fail_next or (self.error_rate and self._rng.random() < self.error_rate):
            self._fail_next = max(0, self._fail_next - 1)
            await asyncio.sleep(self._rng.uniform(0.05, 0.5) * self.speed)
            exc = self.error()
            self._record(Call(call_id, qid, stream, started, time.perf_counter(), 0.0, 0, 0, 0, 0,
                              error=type(exc).__name__))
            raise exc
        reasoning, answer, r_tok, a_tok = self.texts_for(qid)
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in messages) // 4 + 8 * len(messages)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": r_tok + a_tok,
                 "total_tokens": prompt_tokens + r_tok + a_tok,
                 "completion_tokens_details": {"reasoning_tokens": r_tok}}
        ttft, total = self.latency.sample(self._rng, r_tok + a_tok)
        reply = {"id": call_id, "object": "chat.completion", "created": int(time.time()),
                 "model": str(kwargs.get("model") or self.model), "system_fingerprint": "fp_simr1",
                 "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None, "message": {
                     "role": "assistant", "content": answer, "reasoning_content": reasoning}}],
                 "usage": usage}
        raw = len(json.dumps(reply))
        if stream:
            return self._stream(reply, call_id, qid, started, ttft, total, raw, usage, kwargs)
        await asyncio.sleep(total * self.speed)
        self._record(Call(call_id, qid, False, started, time.perf_counter(), total, prompt_tokens,
                          r_tok + a_tok, r_tok, raw))
        return reply

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        self.by_id[call.id] = call

    async def _stream(self, reply: dict[str, Any], call_id: str, qid: str, started: float, ttft: float,
                      total: float, raw: int, usage: dict[str, Any], kwargs: Mapping[str, Any]) -> AsyncIterator[Any]:
        head = {"id": reply["id"], "object": "chat.completion.chunk", "created": reply["created"],
                "model": reply["model"], "system_fingerprint": "fp_simr1"}
        message = reply["choices"][0]["message"]

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

        done = False
        try:
            await asyncio.sleep(ttft * self.speed)
            yield chunk({"role": "assistant", "content": ""})
            pieces = [("reasoning_content", p) for p in _split_text(message["reasoning_content"], 12)]
            pieces += [("content", p) for p in _split_text(message["content"], 4)]
            step = (total - ttft) * self.speed / len(pieces)
            for field, piece in pieces:
                await asyncio.sleep(step)
                yield chunk({field: piece})
            yield chunk({}, "stop")
            options = kwargs.get("stream_options") or {}
            if options.get("include_usage"):
                yield {**head, "choices": [], "usage": usage}
            done = True
        finally:
            # A stream closed early is billed for what was generated; counted as an error here.
            self._record(Call(call_id, qid, True, started, time.perf_counter(), total, usage["prompt_tokens"],
                              usage["completion_tokens"], usage["completion_tokens_details"]["reasoning_tokens"],
                              raw, error=None if done else "closed"))


def _split_text(text: str, parts: int) -> list[str]:
    size = max(1, math.ceil(len(text) / parts))
    return [text[i:i + size] for i in range(0, len(text), size)]


def served_question_id(reply: Any) -> str | None:
    """The question id a simulated reply answers (dict, SDK object, :class:`~r1mw.Reply`,
    or the answer text), or None when it names none."""
    content = reply if isinstance(reply, str) else _content(reply)
    if not content:
        return None
    m = _QID.search(content)
    return m.group(1) if m else None


def _content(reply: Any) -> str | None:
    if isinstance(reply, Mapping):
        choices = reply.get("choices") or ()
        if not choices:
            return None
        message = choices[0].get("message") or {}
        return message.get("content")
    content = getattr(reply, "content", None)  # r1mw.Reply
    if isinstance(content, str):
        return content
    choices = getattr(reply, "choices", None)
    if choices:
        message = getattr(choices[0], "message", None)
        return getattr(message, "content", None)
    return None
