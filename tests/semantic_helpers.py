"""Shared by the semantic stage's test files: a small pipeline around the real offline model,
and the shapes of its requests and replies."""

from __future__ import annotations

import os
from typing import Any

import r1mw

M = "deepseek-reasoner"


def q(text: str, system: str | None = None) -> list[dict[str, Any]]:
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": text}]


def content(reply: dict[str, Any]) -> str:
    return reply["choices"][0]["message"]["content"]


def pipeline(plugins: Any = (), **settings: Any) -> r1mw.Pipeline:
    settings.setdefault("stages", "exact,semantic")
    settings.setdefault("tiers", "l1")
    settings.setdefault("cache_dir", os.environ["R1MW_CACHE_DIR"])  # conftest: one per test
    return r1mw.Pipeline(r1mw.Settings(**settings), plugins=plugins)
