"""Shared fixtures. Every test runs on asyncio (anyio's pytest plugin) with its own cache dir."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest  # noqa: E402


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    # No developer .env or R1MW_* variable may leak into a test.
    for name in list(os.environ):
        if (name.startswith("R1MW_") and not name.startswith("R1MW_TEST_")) or name in (
            "CACHE_L1_SIZE", "CACHE_L2_SIZE", "CACHE_L3_SIZE", "EMBEDDING_CACHE_SIZE",
            "COMPRESSION_THRESHOLD", "SIMILARITY_THRESHOLD", "R1_TEMPLATE_CACHE_SIZE",
            "R1_CONTEXT_PREFETCH_ENABLED", "R1_SEMANTIC_DEDUP_ENABLED"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("R1MW_CACHE_DIR", str(tmp_path / "cache"))
    # Settings(...) built by keyword ignore the environment: their default cache dir must be
    # per test too, or state (a persisted model, a disk tier) leaks between tests and runs.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.chdir(tmp_path)
