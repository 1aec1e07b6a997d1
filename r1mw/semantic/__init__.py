"""Semantic dedup: embedder, scoped vector index, guards (issue 7)."""
