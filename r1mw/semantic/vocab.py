"""English words of ticker length, to tell a lower-case ticker ("celh", "smci") from a word.

The list is the whole-word pieces of the offline model's vocabulary (the ``tokenlearn-static-model``
wheel, a core dependency): about 38,000 lower-case words of 2 to 5 letters. It is read once
(about 0.3 s; the semantic stage reads it in a worker thread while its model loads). Without
the wheel the list is empty and every short word could be a ticker: the guards get stricter,
never looser.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path

__all__ = ["could_be_ticker", "load"]

_WORDS: frozenset[str] | None = None
_LOCK = threading.Lock()


def load() -> frozenset[str]:
    """The word list (read on first use, then kept)."""
    global _WORDS
    words = _WORDS
    if words is None:
        with _LOCK:
            if _WORDS is None:
                _WORDS = _read()
            words = _WORDS
    return words


def _read() -> frozenset[str]:
    try:
        spec = importlib.util.find_spec("static_model")
        if spec is None or spec.origin is None:
            return frozenset()
        path = Path(spec.origin).parent / "model" / "tokenizer.json"
        vocab = json.loads(path.read_text(encoding="utf-8"))["model"]["vocab"]
    except Exception:  # noqa: BLE001 - no list is a stricter guard, never an error
        return frozenset()
    out = set()
    for entry in vocab:
        piece = entry[0] if isinstance(entry, list) else entry
        if isinstance(piece, str) and piece.startswith("▁"):
            word = piece[1:]
            if 2 <= len(word) <= 5 and word.isascii() and word.isalpha() and word.islower():
                out.add(word)
    return frozenset(out)


def could_be_ticker(word: str) -> bool:
    """True for a lower-case word of ticker length (2-5 letters) that is not an English word."""
    return 2 <= len(word) <= 5 and word.isascii() and word.isalpha() and word not in load()
