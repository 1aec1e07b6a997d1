"""R1-shaped replies made of real English/markdown text, for codec size figures.

Text comes from the long descriptions (README files) of the packages installed next to
r1mw (``*.dist-info/METADATA``): real prose and markdown written by people, not repeated
strings. A reply has a reasoning part of 2-6 KB (prose paragraphs, opened the way R1 opens
its thinking) and an answer of 1-3 KB (markdown paragraphs, lists, and, as R1 does, one or
two sentences restated from its reasoning). ``split`` keeps the training files of a zstd
dictionary apart from the files the figures are measured on.
"""

from __future__ import annotations

import json
import random
import re
import sys
from importlib.metadata import distributions
from typing import Any

_OPENERS = ["Okay, let me think about this.", "Alright, so the user is asking about this.",
            "Hmm, let me work through it step by step.", "Let me start by recalling what I know.",
            "First, I need to understand the question."]


def _documents() -> list[tuple[str, list[str]]]:
    docs = []
    for dist in distributions():
        body = dist.read_text("METADATA") or ""
        _, _, text = body.partition("\n\n")
        paras = [p.strip() for p in re.split(r"\n\s*\n", text) if len(p.strip()) > 80]
        if len(paras) >= 6:
            docs.append((dist.metadata["Name"] or "?", paras))
    docs.sort(key=lambda d: d[0].lower())
    return docs


def _prose(p: str) -> bool:
    letters = sum(ch.isalpha() or ch in " ,.'" for ch in p)
    return letters / len(p) > 0.85 and not p.startswith(("```", "    ", ">>>", "|"))


def _take(rng: random.Random, paras: list[str], lo: int, hi: int, want: Any) -> str:
    target = rng.randint(lo, hi)
    start = rng.randrange(len(paras))
    out: list[str] = []
    size = 0
    for p in paras[start:] + paras[:start]:
        if want(p) and size + len(p) <= hi:
            out.append(p)
            size += len(p) + 2
        if size >= target:
            break
    return "\n\n".join(out)


def replies(n: int, seed: int = 7, part: str = "test") -> list[dict[str, Any]]:
    """``n`` OpenAI chat.completion dicts from R1 (``part``: ``test`` or ``train`` files)."""
    docs = [d for i, d in enumerate(_documents()) if (i % 4 == 0) == (part == "train")]
    rng = random.Random(seed)
    out = []
    tries = 0
    while len(out) < n and tries < n * 20:
        tries += 1
        (_, paras), (_, other) = rng.sample(docs, 2)  # answer text from another document
        reasoning = _take(rng, paras, 2000, 6000, _prose)
        answer = _take(rng, other, 1000, 3000, lambda p: True)
        if len(reasoning) < 2000 or len(answer) < 1000:
            continue
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", reasoning) if 40 < len(s) < 300]
        if sentences:
            answer = " ".join(rng.sample(sentences, min(2, len(sentences)))) + "\n\n" + answer
        reasoning = rng.choice(_OPENERS) + " " + reasoning
        i = len(out)
        completion_tokens = (len(reasoning) + len(answer)) // 4
        out.append({
            "id": f"{rng.getrandbits(128):032x}"[:8] + "-" + f"{rng.getrandbits(64):016x}",
            "object": "chat.completion", "created": 1_760_000_000 + i, "model": "deepseek-reasoner",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None, "message": {
                "role": "assistant", "content": answer, "reasoning_content": reasoning}}],
            "usage": {"prompt_tokens": 40 + i % 200, "completion_tokens": completion_tokens,
                      "total_tokens": 40 + i % 200 + completion_tokens,
                      "prompt_tokens_details": {"cached_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": len(reasoning) // 4},
                      "prompt_cache_hit_tokens": 0, "prompt_cache_miss_tokens": 40 + i % 200},
            "system_fingerprint": "fp_7e73fd9a08_prod0425fp8",
        })
    return out


if __name__ == "__main__":
    sample = replies(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    print(json.dumps(sample[0], indent=1)[:3000])
