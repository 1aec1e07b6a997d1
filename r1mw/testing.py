"""Public test helpers: a fake R1 upstream callable (:class:`FakeR1`) and a fake DeepSeek-R1
HTTP server for the real SDKs (:class:`R1Peer`, an ``httpx.MockTransport`` handler)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

__all__ = ["FakeR1", "R1Peer"]


class FakeR1:
    """An async callable shaped like an OpenAI chat endpoint returning dicts.

    Answers name the question they answer, so a reply served for another question shows.
    ``fail`` makes the next calls raise it; ``latency`` delays each call; ``stream=True``
    yields ``chat.completion.chunk`` dicts (``truncate`` stops before the final chunk).
    """

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.calls: list[dict[str, Any]] = []
        self.fail: BaseException | None = None
        self.truncate = False

    def answer_for(self, question: str) -> str:
        return f"Answer to: {question}"

    async def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.fail is not None:
            raise self.fail
        question = kwargs["messages"][-1]["content"]
        n = len(self.calls)
        if kwargs.get("stream"):
            return self._stream(question, n)
        return {
            "id": f"fake-{n}", "object": "chat.completion", "created": 1_700_000_000 + n,
            "model": kwargs["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": self.answer_for(question),
                "reasoning_content": f"Reasoning about: {question}"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
        }

    async def _stream(self, question: str, n: int) -> AsyncIterator[dict[str, Any]]:
        head = {"id": f"fake-{n}", "object": "chat.completion.chunk", "created": 1_700_000_000 + n, "model": "m"}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        yield chunk({"role": "assistant", "content": ""})
        for word in f"Reasoning about: {question}".split(" "):
            await asyncio.sleep(0)
            yield chunk({"reasoning_content": word + " "})
        for word in self.answer_for(question).split(" "):
            await asyncio.sleep(0)
            yield chunk({"content": word + " "})
        if self.fail is not None:
            raise self.fail
        if not self.truncate:
            yield chunk({}, "stop")


class R1Peer:
    """A fake DeepSeek-R1 HTTP server for ``httpx.MockTransport`` (the real SDK on top).

    Speaks ``POST /chat/completions`` the way DeepSeek's API does: ``message.reasoning_content``
    beside ``content``, usage with ``completion_tokens_details.reasoning_tokens``, and for
    ``stream=True`` server-sent events ending with ``data: [DONE]`` (the last chunk carries
    the finish reason and usage). ``think_tags=True`` answers like an open-weight R1 server:
    the reasoning inside ``content`` as ``<think>...</think>``.

    ``status`` makes the next calls fail with that HTTP status (and an OpenAI-style error
    body); ``truncate`` ends a stream before its finish chunk and ``[DONE]``.

    >>> import httpx, openai
    >>> peer = R1Peer()
    >>> client = openai.AsyncOpenAI(api_key="test", base_url="http://r1.test/v1", max_retries=0,
    ...     http_client=httpx.AsyncClient(transport=httpx.MockTransport(peer.handle)))
    """

    def __init__(self, *, think_tags: bool = False, piece: int = 7) -> None:
        self.think_tags = think_tags
        self.piece = piece  # characters per streamed delta
        self.calls: list[dict[str, Any]] = []
        self.status: int | None = None
        self.truncate = False

    def reasoning_for(self, question: str) -> str:
        return f"The user asks: {question!r}. Check the numbers twice.\nThen answer briefly."

    def answer_for(self, question: str) -> str:
        return f"Answer to: {question} \u2713"

    def transport(self) -> Any:
        import httpx

        return httpx.MockTransport(self.handle)

    def handle(self, request: Any) -> Any:
        import httpx

        body = json.loads(request.content)
        self.calls.append(body)
        if self.status is not None:
            return httpx.Response(self.status, json={"error": {
                "message": f"simulated HTTP {self.status}", "type": "server_error", "code": None}})
        n = len(self.calls)
        question = body["messages"][-1]["content"]
        reasoning, answer = self.reasoning_for(question), self.answer_for(question)
        message: dict[str, Any] = {"role": "assistant", "content": answer, "reasoning_content": reasoning}
        if self.think_tags:
            message = {"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n\n{answer}"}
        usage = {"prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52,
                 "prompt_tokens_details": {"cached_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": 28},
                 "prompt_cache_hit_tokens": 0, "prompt_cache_miss_tokens": 12}
        head = {"id": f"r1-{n}", "created": 1_700_000_000 + n, "model": body["model"],
                "system_fingerprint": "fp_r1_test"}
        if not body.get("stream"):
            return httpx.Response(200, json={**head, "object": "chat.completion", "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}], "usage": usage})
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              content=self._events(head, message, usage))

    async def _events(self, head: dict[str, Any], message: dict[str, Any], usage: dict[str, Any]) -> Any:
        def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            chunk = {**head, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        yield event({"role": "assistant", "content": None, "reasoning_content": ""})
        for field in ("reasoning_content", "content"):
            text = message.get(field) or ""
            for start in range(0, len(text), self.piece):
                other = "content" if field == "reasoning_content" else "reasoning_content"
                yield event({field: text[start:start + self.piece], other: None})
                await asyncio.sleep(0)
        if self.truncate:
            return
        yield event({"content": "", "reasoning_content": None}, "stop", usage=usage)
        yield b"data: [DONE]\n\n"
