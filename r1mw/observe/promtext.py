"""A small reader of the Prometheus text format, enough for ``r1mw top`` (no dependency).

Parses sample lines ``name{label="value",...} number`` and skips comments; label values
may hold escaped quotes, backslashes and newlines.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable

__all__ = ["Metrics", "Sample", "parse"]

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass(slots=True)
class Metrics:
    """Samples by metric name."""

    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def get(self, name: str) -> list[Sample]:
        return self.samples.get(name, [])

    def total(self, name: str, **match: str) -> float:
        return sum(s.value for s in self.get(name) if all(s.labels.get(k) == v for k, v in match.items()))

    def __contains__(self, name: str) -> bool:
        return name in self.samples


def _unescape(value: str) -> str:
    return value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def _number(text: str) -> float:
    text = text.strip()
    if text in ("+Inf", "Inf"):
        return math.inf
    if text == "-Inf":
        return -math.inf
    return float(text)


def parse(text: str | Iterable[str]) -> Metrics:
    """Parse exposition text; raises ValueError on a malformed sample line."""
    out = Metrics()
    lines = text.splitlines() if isinstance(text, str) else text
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _NAME.match(line)
        if m is None:
            raise ValueError(f"not a Prometheus sample line: {raw!r}")
        name, rest = m.group(0), line[m.end():]
        labels: dict[str, str] = {}
        if rest.startswith("{"):
            end = 1
            while True:
                lm = _LABEL.match(rest, end)
                if lm is None:
                    break
                labels[lm.group(1)] = _unescape(lm.group(2))
                end = lm.end()
            rest = rest[end:].lstrip()
            if not rest.startswith("}"):
                raise ValueError(f"unterminated labels: {raw!r}")
            rest = rest[1:]
        parts = rest.split()
        if not parts:
            raise ValueError(f"sample without a value: {raw!r}")
        out.samples.setdefault(name, []).append(Sample(name, labels, _number(parts[0])))
    return out
