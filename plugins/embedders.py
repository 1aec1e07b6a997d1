"""Built-in plugin r1mw.embedders: ``model2vec`` (``R1MW_EMBEDDER`` picks the embedder,
``R1MW_EMBED_MODEL`` the model; empty = the offline model of tokenlearn-static-model)."""

from __future__ import annotations

from typing import Any, Callable

import r1mw
from r1mw.semantic.embedder import Model2VecEmbedder


def _model2vec(pipeline: r1mw.Pipeline) -> Model2VecEmbedder:
    s = pipeline.settings
    return Model2VecEmbedder(s.embed_model, cache_size=s.embedding_cache_size)


@r1mw.hookimpl
def r1mw_register_embedders() -> dict[str, Callable[[r1mw.Pipeline], r1mw.Embedder]]:
    return {"model2vec": _model2vec}
