"""Semantic hits: the model2vec embedder, the scoped vector index, the guards.

::

    r1mw/semantic/embedder.py     Model2VecEmbedder: threaded load, batching, LRU, normalized float32
    r1mw/semantic/index.py        VectorIndex: scopes, exact numpy search, usearch ANN, persistence
    r1mw/semantic/text.py         analyze(): numbers, symbols, periods, negations, roles of a prompt
    r1mw/semantic/lexicon.py      the word tables the guards read
    r1mw/semantic/guards.py       the built-in guards
    r1mw/semantic/calibration.py  similarity threshold per model

The stage itself is the built-in plugin ``r1mw_plugins.semantic``.
"""
