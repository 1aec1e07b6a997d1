"""Public test helpers: a fake R1 upstream that counts its calls."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

__all__ = ["FakeR1"]


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
