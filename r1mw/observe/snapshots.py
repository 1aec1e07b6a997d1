"""Metrics snapshots: JSON lines appended to ``R1MW_METRICS_SNAPSHOT``, bounded in size.

Each line is one cumulative snapshot (counters since the recorder started, plus ``started``
so a reader can tell a restart from a counter going down). When the file grows past its
byte budget it is rewritten with its newest half (atomically: temp file + rename), so it
never grows without bound and a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from ..errors import R1mwError

__all__ = ["SnapshotWriter", "read_snapshots"]


class SnapshotWriter:
    def __init__(self, path: str | os.PathLike[str], max_bytes: int = 16 * 2**20) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.written = 0

    def append(self, snapshot: dict[str, Any]) -> None:
        line = (json.dumps(snapshot, separators=(",", ":"), default=str) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            f.write(line)
            size = f.tell()
        self.written += 1
        if self.max_bytes and size > self.max_bytes:
            self._trim()

    def _trim(self) -> None:
        data = self.path.read_bytes()
        keep = data[len(data) - self.max_bytes // 2:]
        cut = keep.find(b"\n")
        keep = keep[cut + 1:] if cut >= 0 else b""
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
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and isinstance(value.get("ts"), (int, float)) and isinstance(value.get("outcomes"), dict):
            yield value
