"""Metrics snapshots: JSON lines appended to ``R1MW_METRICS_SNAPSHOT``, bounded in size.

Each line is one cumulative snapshot (counters since the recorder started, plus ``started``
so a reader can tell a restart from a counter going down), and ``prev_ts``: the ``ts`` of the
previous line this writer wrote for the same run, ``null`` on the run's first line. A trim
drops the oldest lines, so the first line a reader finds of a long run is usually not its
first: ``prev_ts`` says so, and the reader takes that line as a baseline rather than as one
interval holding all the traffic since the process started. When the file grows past its
byte budget it is rewritten with its newest half (atomically: temp file + rename), so it
never grows without bound and a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..errors import R1mwError

__all__ = ["SnapshotWriter", "read_snapshots"]


class SnapshotWriter:
    def __init__(self, path: str | os.PathLike[str], max_bytes: int = 16 * 2**20) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.written = 0
        self._last_ts: dict[Any, Any] = {}  # started -> ts of the last line written for that run

    def append(self, snapshot: dict[str, Any]) -> None:
        run = snapshot.get("started")
        if "prev_ts" not in snapshot:
            snapshot = {**snapshot, "prev_ts": self._last_ts.get(run)}
        line = (json.dumps(snapshot, separators=(",", ":"), default=str) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as f:
            size = f.seek(0, os.SEEK_END)
            if size:
                f.seek(size - 1)
                if f.read(1) != b"\n":  # a torn last line (a crash mid-write) must not swallow this one
                    line = b"\n" + line
            f.write(line)  # append mode: at the end, whatever was read
            size = f.tell()
        self.written += 1
        self._last_ts[run] = snapshot.get("ts")  # only once written: a failed write is no previous line
        if self.max_bytes and size > self.max_bytes:
            self._trim()

    def _trim(self) -> None:
        data = self.path.read_bytes()
        keep = data[len(data) - self.max_bytes // 2:]
        cut = keep.find(b"\n")
        keep = keep[cut + 1:] if cut >= 0 else b""
        if not keep.strip():
            # The newest half holds no whole line (a budget under two snapshots): keep the newest
            # snapshot anyway, or every trim would leave `r1mw report` an empty file.
            keep = data[data.rfind(b"\n", 0, len(data) - 1) + 1:]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(keep)
        os.replace(tmp, self.path)


def read_snapshots(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every well-formed snapshot of the file, oldest first; a torn or foreign line is skipped."""
    p = Path(path)
    if not p.is_file():
        raise R1mwError(f"no metrics snapshot file at {p} (set R1MW_METRICS_SNAPSHOT in the running process)")
    return list(_parse(p.read_text(encoding="utf-8", errors="replace").splitlines()))


def _parse(lines: list[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except (json.JSONDecodeError, RecursionError):  # torn, or garbage nested too deep
            continue
        if _well_formed(value):
            yield value


# The list sections of a snapshot: the keys each row must have, and which of them are numbers.
_ROWS: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "series": (frozenset(), ("count", "sum")),
    "models": (frozenset({"label"}), ("requests", "hits", "tokens", "cost_usd")),
    "templates": (frozenset({"label"}), ("requests", "hits", "tokens", "cost_usd")),
    "namespaces": (frozenset({"label"}), ("requests", "hits", "tokens", "cost_usd")),
    "slots": (frozenset({"template", "slot", "value"}), ("count",)),
}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _well_formed(value: Any) -> bool:
    """Whether a parsed line has the shape the report reads. JSON that parses is not enough:
    a damaged or foreign line (``NaN``, ``1e400``, a string count, a row without its label)
    is skipped like a torn one; it must never crash ``r1mw report``."""
    if not isinstance(value, dict) or not _number(value.get("ts")) or not isinstance(value.get("outcomes"), dict):
        return False
    try:
        time.gmtime(value["ts"])  # the report puts each snapshot in an hour of the day
    except (OverflowError, OSError, ValueError):
        return False
    if not all(_number(n) for n in value["outcomes"].values()):
        return False
    if "started" in value and not _number(value["started"]):
        return False
    if value.get("prev_ts") is not None and not _number(value["prev_ts"]):
        return False
    savings = value.get("savings", {})
    if not isinstance(savings, dict) or not all(_number(v) for v in savings.values()):
        return False
    for section, (keys, numbers) in _ROWS.items():
        rows = value.get(section, [])
        if not isinstance(rows, list) or not all(_row_ok(row, keys, numbers) for row in rows):
            return False
    tiers = value.get("tiers", {})
    if not isinstance(tiers, dict) or not all(isinstance(t, dict) for t in tiers.values()):
        return False
    alerts = value.get("alerts_firing", [])
    return isinstance(alerts, list) and all(isinstance(a, str) for a in alerts)


def _row_ok(row: Any, keys: frozenset[str], numbers: tuple[str, ...]) -> bool:
    if not isinstance(row, Mapping) or not keys <= row.keys() or not all(_number(row.get(f, 0)) for f in numbers):
        return False
    buckets = row.get("buckets", [])
    return isinstance(buckets, list) and all(_number(n) for n in buckets)
