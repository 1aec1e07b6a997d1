"""False hits a review found with default settings: a request answered with the cached reply to
a different question. Each pair asks two different questions; the stage must miss. Real
offline model, real pipeline (or the guards alone where the pipeline adds nothing)."""

from __future__ import annotations

from typing import Any

import pytest

import r1mw
from r1mw.testing import FakeR1

import semantic_helpers
from semantic_helpers import M, content

pytestmark = pytest.mark.anyio

CHART = "What does this chart show? Should I buy?"


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def user(*parts: Any, **fields: Any) -> list[dict[str, Any]]:
    body: Any = parts[0] if len(parts) == 1 and isinstance(parts[0], str) else list(parts)
    return [{"role": "user", "content": body, **fields}]


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


MULTIMODAL = [  # (stored, asked, what differs): same text, another attachment
    (user(text(CHART), image("https://x/aapl.png")), user(text(CHART), image("https://x/tsla.png")), "image"),
    (user(text("Summarize the risk factors in this filing"), {"type": "file", "file": {"file_id": "file-AAPL-10K"}}),
     user(text("Summarize the risk factors in this filing"), {"type": "file", "file": {"file_id": "file-TSLA-10K"}}),
     "file"),
    (user(text("Transcribe this earnings call and list the guidance"),
          {"type": "input_audio", "input_audio": {"data": "UklGRiQAAABXQVZF", "format": "wav"}}),
     user(text("Transcribe this earnings call and list the guidance"),
          {"type": "input_audio", "input_audio": {"data": "UklGRjQAAABXQVZF", "format": "wav"}}), "audio"),
    (user(text(CHART), image("https://x/aapl.png")), user(CHART), "image vs none"),
    (user(CHART), user(text(CHART), image("https://x/aapl.png")), "none vs image"),
    (user(text(CHART), image("https://x/a.png"), image("https://x/b.png")),
     user(text(CHART), image("https://x/b.png"), image("https://x/a.png")), "image order"),
    (user("What is my current position in AAPL?", name="alice"),
     user("What is my current position in AAPL?", name="bob"), "name"),
]


def pipeline(**settings: Any) -> r1mw.Pipeline:
    return semantic_helpers.pipeline(**settings)


@pytest.mark.parametrize("stored,asked,kind", MULTIMODAL, ids=[m[2] for m in MULTIMODAL])
async def test_another_attachment_or_name_on_the_last_user_message_misses(stored, asked, kind):
    fake = FakeR1()
    async with pipeline() as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        await llm(model=M, messages=stored)
        reply = await llm(model=M, messages=asked)
        sem = pipe.stats()["stages"]["semantic"]
    assert content(reply) == fake.answer_for(asked[-1]["content"]), kind
    assert len(fake.calls) == 2 and sem["hits"] == 0


async def test_a_reworded_question_about_the_same_attachment_still_hits():
    # The attachment is scope, not a reason to skip the stage: the same chart asked in other
    # words is served, and plain text and a list of text parts are the same question.
    fake = FakeR1()
    chart = image("https://x/aapl.png")
    stored = user(text("What is the RSI of AAPL on the daily chart?"), chart)
    async with pipeline() as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        await llm(model=M, messages=stored)
        reply = await llm(model=M, messages=user(text("what's the RSI for AAPL on the daily chart"), chart))
        await llm(model=M, messages=user("Explain the difference between a stock and a bond"))
        plain = await llm(model=M, messages=user(text("Explain the difference between stocks and bonds")))
        sem = pipe.stats()["stages"]["semantic"]
    assert content(reply) == fake.answer_for(stored[-1]["content"])
    assert content(plain) == fake.answer_for("Explain the difference between a stock and a bond")
    assert sem["hits"] == 2 and len(fake.calls) == 2
