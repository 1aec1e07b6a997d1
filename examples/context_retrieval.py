"""The original design's expanded-context system, in miniature, cached by r1mw.

A document set is split into a hierarchy (document -> section -> paragraph); a query is
answered coarse to fine: the closest documents, then their closest sections, then paragraphs,
expanded with their neighbours until a token budget is spent. The result is what an R1 prompt
gets: a long context string plus the embeddings of the chunks it holds (a float32 array).

Building it is the expensive part, so it is cached:

* :func:`build_context` is decorated with ``@r1mw.cached``: the same query (with the same
  budget) is built once, then served from RAM, or from the disk tier after a restart
  (``R1MW_TIERS=l1,l2``), compressed there.
* :func:`get_context` / :func:`set_context` are the original design's explicit pair, keyed by a
  hash of the query, over ``pipe.context_cache``.

Run it::

    R1MW_TIERS=l1,l2 python examples/context_retrieval.py "liquidity risk at JPM"

Embeddings come from the offline model2vec model of ``tokenlearn-static-model`` (64 dims).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

import r1mw

TICKERS = ("AAPL", "MSFT", "NVDA", "TSLA", "JPM", "XOM")
SECTIONS = ("Business overview", "Risk factors", "Management discussion", "Liquidity and capital",
            "Outlook and guidance")
_TOPICS = {
    "Business overview": ["segment revenue", "customer concentration", "product launches", "regional sales"],
    "Risk factors": ["supply chain disruption", "regulatory scrutiny", "interest rate exposure", "litigation"],
    "Management discussion": ["gross margin", "operating expenses", "free cash flow", "share repurchases"],
    "Liquidity and capital": ["cash and equivalents", "credit facility", "debt maturities", "capital spending"],
    "Outlook and guidance": ["revenue guidance", "margin outlook", "hiring plans", "dividend policy"],
}
CHARS_PER_TOKEN = 4  # the usual rough ratio for English prose
NAMESPACE = "research"


@dataclass(frozen=True, slots=True)
class Chunk:
    id: str
    level: int  # 0 document, 1 section, 2 paragraph
    parent: str | None
    title: str
    text: str


def corpus(paragraphs: int = 8, seed: int = 20240101) -> list[Chunk]:
    """A deterministic set of 10-K-like filings, as a chunk hierarchy."""
    rnd = random.Random(seed)
    chunks: list[Chunk] = []
    for ticker in TICKERS:
        doc_id = f"{ticker}"
        summaries = []
        for s, section in enumerate(SECTIONS):
            sec_id = f"{ticker}/{s}"
            texts = []
            for p in range(paragraphs):
                topic = rnd.choice(_TOPICS[section])
                change = rnd.choice(["rose", "fell", "held steady at", "recovered to"])
                pct = rnd.randint(1, 40)
                quarter = rnd.choice(["Q1", "Q2", "Q3", "Q4"])
                text = (f"{ticker} {section.lower()}: in {quarter} {topic} {change} {pct}% year over year. "
                        f"Management attributes the move in {topic} to demand, pricing and costs, and expects "
                        f"{rnd.choice(['continued', 'slower', 'faster'])} change next year.")
                texts.append(text)
                chunks.append(Chunk(f"{sec_id}/{p}", 2, sec_id, f"{ticker} / {section} / {p + 1}", text))
            summary = f"{ticker} {section.lower()}: " + "; ".join(t.split(": ", 1)[1].split(".")[0] for t in texts[:3])
            chunks.append(Chunk(sec_id, 1, doc_id, f"{ticker} / {section}", summary))
            summaries.append(section.lower())
        chunks.append(Chunk(doc_id, 0, None, f"{ticker} annual report",
                            f"{ticker} annual report covering " + ", ".join(summaries) + "."))
    return chunks


class HierarchicalIndex:
    """Chunks and their unit vectors, searched coarse to fine."""

    def __init__(self, chunks: list[Chunk], vectors: np.ndarray, embed: Any) -> None:
        self.chunks = chunks
        self.vectors = vectors
        self.embed = embed
        self.by_id = {c.id: i for i, c in enumerate(chunks)}
        self.children: dict[str | None, list[int]] = {}
        for i, c in enumerate(chunks):
            self.children.setdefault(c.parent, []).append(i)
        for kids in self.children.values():
            kids.sort(key=lambda i: chunks[i].id)

    def top(self, query_vec: np.ndarray, candidates: list[int], n: int) -> list[int]:
        scores = self.vectors[candidates] @ query_vec
        order = np.argsort(-np.nan_to_num(scores, nan=-1.0), kind="stable")[:n]
        return [candidates[i] for i in order]


_index: HierarchicalIndex | None = None
_index_lock: asyncio.Lock | None = None
BUILDS: list[str] = []  # queries actually built (the test counts them)


def _load_model() -> Any:
    from model2vec import StaticModel

    path = os.path.join(os.path.dirname(importlib.util.find_spec("static_model").origin), "model")
    return StaticModel.from_pretrained(path)


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


async def index() -> HierarchicalIndex:
    """The index, built once per process (the model load runs in a thread)."""
    global _index, _index_lock
    if _index is None:
        if _index_lock is None:
            _index_lock = asyncio.Lock()
        async with _index_lock:
            if _index is None:
                model = await asyncio.to_thread(_load_model)
                chunks = corpus()
                vectors = _unit(model.encode([f"{c.title}. {c.text}" for c in chunks]))
                _index = HierarchicalIndex(chunks, vectors, lambda texts: _unit(model.encode(texts)))
    return _index


@r1mw.cached(namespace=NAMESPACE, ttl=24 * 3600, name="examples.context_retrieval.build_context")
async def build_context(query: str, budget_tokens: int = 2_000, docs: int = 2, sections: int = 3) -> dict[str, Any]:
    """Expand ``query`` into a context of at most ``budget_tokens``: document headers, section
    summaries, the best paragraphs and their neighbours. Returns the context string, the
    float32 embeddings of its chunks, their ids and the token estimate."""
    BUILDS.append(query)
    idx = await index()
    q = idx.embed([query])[0]
    best_docs = idx.top(q, idx.children[None], docs)
    picked_sections = idx.top(q, [s for d in best_docs for s in idx.children[idx.chunks[d].id]], sections)
    paragraphs = idx.top(q, [p for s in picked_sections for p in idx.children[idx.chunks[s].id]], 10**6)
    budget = budget_tokens * CHARS_PER_TOKEN
    chosen: list[int] = []
    used = 0

    def take(i: int) -> bool:
        nonlocal used
        if i in chosen:
            return True
        size = len(idx.chunks[i].text) + len(idx.chunks[i].title) + 8
        if used + size > budget:
            return False
        chosen.append(i)
        used += size
        return True

    for d in best_docs:
        take(d)
    for s in picked_sections:
        take(s)
    for p in paragraphs:  # expansion: each hit brings its neighbours, as the original design did
        siblings = idx.children[idx.chunks[p].parent]
        at = siblings.index(p)
        if not take(p):
            break
        for n in (at - 1, at + 1):
            if 0 <= n < len(siblings):
                take(siblings[n])
    chosen.sort(key=lambda i: (idx.chunks[i].level, idx.chunks[i].id))
    context = "\n\n".join(f"## {idx.chunks[i].title}\n{idx.chunks[i].text}" for i in chosen)
    return {
        "query": query,
        "context": context,
        "embedding": idx.vectors[chosen],
        "chunk_ids": [idx.chunks[i].id for i in chosen],
        "tokens": len(context) // CHARS_PER_TOKEN,
    }


def query_hash(query: str) -> str:
    """The original design's key: a hash of the normalized query."""
    return hashlib.sha256(" ".join(query.lower().split()).encode()).hexdigest()[:32]


def _cache(pipe: r1mw.Pipeline | None) -> r1mw.ContextCache:
    return (pipe or r1mw.context.default_pipeline()).context_cache


async def get_context(query: str, pipe: r1mw.Pipeline | None = None) -> dict[str, Any] | None:
    """The stored context of ``query`` (any tier), or None."""
    return await _cache(pipe).get(("context", query_hash(query)), namespace=NAMESPACE)


async def set_context(query: str, context: dict[str, Any], pipe: r1mw.Pipeline | None = None,
                      ttl: float | None = 24 * 3600) -> None:
    """Store a context built elsewhere under the hash of ``query``."""
    await _cache(pipe).set(("context", query_hash(query)), context, ttl=ttl, namespace=NAMESPACE)


async def main(query: str) -> None:
    t0 = time.perf_counter()
    first = await build_context(query)
    t1 = time.perf_counter()
    second = await build_context(query)
    t2 = time.perf_counter()
    print(f"query: {query!r}")
    print(f"context: {first['tokens']} tokens from {len(first['chunk_ids'])} chunks; "
          f"embeddings {second['embedding'].shape} {second['embedding'].dtype}")
    print(f"first call {1000 * (t1 - t0):.1f} ms (built: {bool(BUILDS)}), second call {1e6 * (t2 - t1):.0f} us")
    await set_context(query, first)
    assert (await get_context(query))["context"] == first["context"]
    print("stats:", r1mw.context.default_pipeline().stats()["context"])
    await r1mw.context.close_default_pipeline()


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "liquidity risk and debt maturities at JPM"))
