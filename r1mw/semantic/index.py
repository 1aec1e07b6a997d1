"""The vector index: normalized float32 vectors, partitioned by scope, exact top-k with numpy.

A *scope* is everything that must be equal for two requests to share an answer besides the
question itself: namespace, model, answer-changing parameters, system prompt and earlier turns,
template id and slot values (:func:`scope_of`). Each scope is its own :class:`Partition`, so a
search never even sees a vector from another model, temperature, tenant, conversation or
slot value.

A partition keeps a growing matrix; a search is one matrix-vector product and a threshold
filter (``flatnonzero(sims >= threshold)``), then the few candidates are sorted: no full sort.
Removed rows are zeroed and reused. A scope that grows past ``ann_min`` entries is copied
into an ANN backend (usearch HNSW) in a worker thread while exact search
goes on serving it; changes made during the build are journaled and replayed, then the ANN
partition (same methods) takes over.

The index is persisted as two files under the cache dir: ``vectors.npy`` (one float32 matrix,
loaded with ``allow_pickle=False``) and ``records.msgpack`` (keys, scopes, texts, slots):
nothing read back can run code.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import msgpack
import numpy as np

from ..keys import key_of

__all__ = ["Candidate", "ExactPartition", "Record", "UsearchPartition", "VectorIndex", "build_ann", "scope_of"]

log = logging.getLogger("r1mw.semantic")

_FORMAT = 1


def scope_of(namespace: str, model: str, context: list[Any], params: Mapping[str, Any],
             template_id: str | None, slots: Mapping[str, Any] | None = None) -> bytes:
    """The scope of a request: its exact key computed without the question, plus the template id
    and the template's slot values. Requests with other slot values ask another question (the
    slot guard vetoes them): a scope of their own means a search never even sees them. A
    request without slots has the scope it always had (indexes saved before still match)."""
    marker = [{"role": "r1mw:template", "content": template_id or ""}]
    if slots:
        # as canonical JSON text: the key's fast path for string contents (a dict costs 10 us)
        values = json.dumps({str(k): v for k, v in slots.items()}, sort_keys=True, ensure_ascii=False, default=str)
        marker.append({"role": "r1mw:slots", "content": values})
    return key_of(namespace, model, [*context, *marker], params)


@dataclass(frozen=True, slots=True)
class Record:
    """What the index keeps per stored question (the vector lives in the partition)."""

    key: bytes
    scope: bytes
    text: str
    slots: Mapping[str, Any] | None = None
    template_id: str | None = None
    added: float = 0.0  # wall-clock time it was indexed (0 = reloaded from disk)


@dataclass(frozen=True, slots=True)
class Candidate:
    record: Record
    similarity: float


_BLAS: list[Any] | None = None


def _blas_controllers() -> list[Any]:
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS = list(ThreadpoolController().select(user_api="blas").lib_controllers)
        except Exception:  # threadpoolctl missing or unable to find the BLAS: plain numpy
            _BLAS = []
    return _BLAS


def _matvec(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """``matrix @ vector`` on one BLAS thread.

    A multithreaded gemv must wait for a second core: on a busy machine that turns 0.2 ms into
    10 ms and more. One thread is predictable, and the event loop runs one search at a time.
    """
    libs = _BLAS if _BLAS is not None else _blas_controllers()
    if not libs:
        return matrix @ vector
    previous = [lib.num_threads for lib in libs]
    for lib in libs:
        lib.set_num_threads(1)
    try:
        return matrix @ vector
    finally:
        for lib, n in zip(libs, previous):
            lib.set_num_threads(n)


class ExactPartition:
    """Exact search over one scope's vectors."""

    kind = "exact"

    # Small at first: with slot values in the scope, most partitions hold one or two questions.
    def __init__(self, dim: int, capacity: int = 2) -> None:
        self.dim = dim
        self._vectors = np.zeros((capacity, dim), dtype=np.float32)
        self._records: list[Record | None] = [None] * capacity
        self._rows: dict[bytes, int] = {}
        self._free: list[int] = []
        self._end = 0  # rows [0, _end) have been used
        self.journal: list[bytes] | None = None  # keys changed while an ANN copy is built

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, record: Record, vector: np.ndarray) -> None:
        row = self._rows.get(record.key)
        if row is None:
            if self._free:
                row = self._free.pop()
            else:
                if self._end == len(self._records):
                    self._grow()
                row = self._end
                self._end += 1
            self._rows[record.key] = row
        self._vectors[row] = vector
        self._records[row] = record
        if self.journal is not None:
            self.journal.append(record.key)

    def _grow(self) -> None:
        n = len(self._records)
        bigger = np.zeros((n * 2, self.dim), dtype=np.float32)
        bigger[:n] = self._vectors
        self._vectors = bigger
        self._records.extend([None] * n)

    def remove(self, key: bytes) -> bool:
        row = self._rows.pop(key, None)
        if row is None:
            return False
        if self.journal is not None:
            self.journal.append(key)
        self._vectors[row] = 0.0  # a zero row scores 0: never above a positive threshold
        self._records[row] = None
        self._free.append(row)
        return True

    def search(self, vector: np.ndarray, threshold: float, k: int) -> list[Candidate]:
        if not self._rows:
            return []
        sims = _matvec(self._vectors[: self._end], vector)
        rows = np.flatnonzero(sims >= threshold)
        if rows.size == 0:
            return []
        if rows.size > k:
            rows = rows[np.argpartition(-sims[rows], k - 1)[:k]]
        order = rows[np.argsort(-sims[rows], kind="stable")]
        out = []
        for row in order:
            record = self._records[row]
            if record is not None:
                out.append(Candidate(record, float(sims[row])))
        return out

    def items(self) -> Iterator[tuple[Record, np.ndarray]]:
        for key, row in self._rows.items():
            record = self._records[row]
            if record is not None:
                yield record, self._vectors[row]

    def get(self, key: bytes) -> tuple[Record, np.ndarray] | None:
        row = self._rows.get(key)
        if row is None or self._records[row] is None:
            return None
        return self._records[row], self._vectors[row]  # type: ignore[return-value]


class UsearchPartition:
    """Approximate search (HNSW, inner product) with usearch; same methods as ExactPartition."""

    kind = "usearch"

    def __init__(self, dim: int) -> None:
        from usearch.index import Index

        self.dim = dim
        self._index = Index(ndim=dim, metric="ip", dtype="f32", connectivity=16,
                            expansion_add=128, expansion_search=64)
        self._records: dict[int, Record] = {}
        self._ids: dict[bytes, int] = {}
        self._vectors: dict[int, np.ndarray] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, record: Record, vector: np.ndarray) -> None:
        self.remove(record.key)
        ident = self._next
        self._next += 1
        self._index.add(ident, vector)
        self._ids[record.key] = ident
        self._records[ident] = record
        self._vectors[ident] = vector

    def add_many(self, records: list[Record], vectors: np.ndarray) -> None:
        ids = np.arange(self._next, self._next + len(records), dtype=np.uint64)
        self._next += len(records)
        self._index.add(ids, np.ascontiguousarray(vectors, dtype=np.float32))
        for ident, record, vec in zip(ids.tolist(), records, vectors):
            self._ids[record.key] = ident
            self._records[ident] = record
            self._vectors[ident] = vec

    def remove(self, key: bytes) -> bool:
        ident = self._ids.pop(key, None)
        if ident is None:
            return False
        self._index.remove(ident)
        self._records.pop(ident, None)
        self._vectors.pop(ident, None)
        return True

    def search(self, vector: np.ndarray, threshold: float, k: int) -> list[Candidate]:
        if not self._ids:
            return []
        found = self._index.search(vector, k)
        out = []
        for ident, distance in zip(found.keys.tolist(), found.distances.tolist()):
            record = self._records.get(int(ident))
            similarity = 1.0 - float(distance)  # usearch's "ip" distance is 1 - dot
            if record is not None and similarity >= threshold:
                out.append(Candidate(record, similarity))
        return out

    def items(self) -> Iterator[tuple[Record, np.ndarray]]:
        for ident, record in self._records.items():
            yield record, self._vectors[ident]


def ann_available() -> bool:
    try:
        import usearch.index  # noqa: F401
    except ImportError:
        return False
    return True


class VectorIndex:
    """Scoped vector index. ``ann_min`` entries in one scope switch it to usearch (0 = never)."""

    def __init__(self, dim: int, *, ann_min: int = 100_000) -> None:
        self.dim = dim
        self.ann_min = ann_min if ann_min and ann_available() else 0
        self._parts: dict[bytes, ExactPartition | UsearchPartition] = {}
        self._scope_of_key: dict[bytes, bytes] = {}
        self.ann_due: set[bytes] = set()  # scopes past ann_min waiting for their ANN build
        self.added = self.removed = self.rejected = 0

    def __len__(self) -> int:
        return len(self._scope_of_key)

    def __contains__(self, key: bytes) -> bool:
        return key in self._scope_of_key

    def holds(self, scope: bytes) -> bool:
        """Whether ``scope`` has at least one indexed question (an empty scope has no partition)."""
        return scope in self._parts

    def add(self, record: Record, vector: np.ndarray | None) -> bool:
        """Index ``record`` under its scope. A None, zero, NaN or wrong-sized vector is refused."""
        if vector is None or vector.shape != (self.dim,) or not np.isfinite(vector).all() \
                or float(np.dot(vector, vector)) < 1e-6:
            self.rejected += 1
            return False
        old_scope = self._scope_of_key.get(record.key)
        if old_scope is not None and old_scope != record.scope:
            self.remove(record.key)
        part = self._parts.get(record.scope)
        if part is None:
            part = self._parts[record.scope] = ExactPartition(self.dim)
        part.add(record, vector.astype(np.float32, copy=False))
        self._scope_of_key[record.key] = record.scope
        self.added += 1
        if self.ann_min and part.kind == "exact" and len(part) >= self.ann_min:
            self.ann_due.add(record.scope)
        return True

    # -- switching a large scope to the ANN backend ---------------------------------------------
    def start_ann(self, scope: bytes) -> tuple[list[Record], np.ndarray] | None:
        """Snapshot a large exact scope (event-loop thread) for :func:`build_ann` (any thread);
        changes made meanwhile are journaled and replayed by :meth:`finish_ann`."""
        self.ann_due.discard(scope)
        part = self._parts.get(scope)
        if not isinstance(part, ExactPartition) or part.journal is not None:
            return None
        items = list(part.items())
        part.journal = []
        return [r for r, _ in items], np.stack([v for _, v in items]).astype(np.float32)

    def abort_ann(self, scope: bytes) -> None:
        part = self._parts.get(scope)
        if isinstance(part, ExactPartition):
            part.journal = None

    def finish_ann(self, scope: bytes, ann: "UsearchPartition") -> None:
        """Replay what changed during the build, then serve the scope from ``ann`` (loop thread)."""
        part = self._parts.get(scope)
        if not isinstance(part, ExactPartition) or part.journal is None:
            return
        for key in dict.fromkeys(part.journal):
            current = part.get(key)
            if current is None:
                ann.remove(key)
            else:
                ann.add(*current)
        part.journal = None
        self._parts[scope] = ann
        log.info("a scope of %d entries now uses the usearch ANN index", len(ann))

    def remove(self, key: bytes) -> bool:
        """Forget ``key`` (its entry left the last tier). Unknown keys are ignored."""
        scope = self._scope_of_key.pop(key, None)
        if scope is None:
            return False
        part = self._parts.get(scope)
        if part is not None:
            part.remove(key)
            if not len(part):
                del self._parts[scope]
        self.removed += 1
        return True

    def search(self, scope: bytes, vector: np.ndarray, threshold: float, k: int = 4) -> list[Candidate]:
        """Up to ``k`` candidates of ``scope`` with similarity >= ``threshold``, best first."""
        part = self._parts.get(scope)
        if part is None:
            return []
        return part.search(vector, threshold, k)

    def stats(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for part in self._parts.values():
            kinds[part.kind] = kinds.get(part.kind, 0) + 1
        return {"entries": len(self), "scopes": len(self._parts), "partitions": kinds, "dim": self.dim,
                "added": self.added, "removed": self.removed, "rejected": self.rejected,
                "ann_min": self.ann_min}

    # -- persistence -------------------------------------------------------------------------
    def save(self, directory: Path) -> int:
        """Write the index atomically under ``directory``; returns the number of entries."""
        directory.mkdir(parents=True, exist_ok=True)
        records: list[list[Any]] = []
        vectors: list[np.ndarray] = []
        for part in self._parts.values():
            for record, vector in part.items():
                records.append([record.key, record.scope, record.text,
                                dict(record.slots) if record.slots else None, record.template_id])
                vectors.append(vector)
        matrix = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, self.dim), np.float32)
        meta = msgpack.packb({"format": _FORMAT, "dim": self.dim, "records": records}, use_bin_type=True)
        _atomic_write(directory / "vectors.npy", lambda f: np.save(f, matrix, allow_pickle=False))
        _atomic_write(directory / "records.msgpack", lambda f: f.write(meta))
        return len(records)

    def load(self, directory: Path) -> int:
        """Load what :meth:`save` wrote. A missing, corrupt or mismatched index loads nothing
        (a cold semantic stage, counted in the log) and never raises."""
        vec_path, rec_path = directory / "vectors.npy", directory / "records.msgpack"
        if not vec_path.exists() or not rec_path.exists():
            return 0
        try:
            matrix = np.load(vec_path, allow_pickle=False)
            meta = msgpack.unpackb(rec_path.read_bytes(), raw=False)
            if meta.get("format") != _FORMAT or meta.get("dim") != self.dim:
                log.warning("semantic index at %s is for another model or format; starting empty", directory)
                return 0
            records = meta["records"]
            if matrix.shape != (len(records), self.dim):
                raise ValueError(f"vectors {matrix.shape} do not match {len(records)} records")
            loaded = 0
            for (key, scope, text, slots, template_id), vector in zip(records, matrix):
                record = Record(bytes(key), bytes(scope), str(text), slots, template_id)
                loaded += self.add(record, np.asarray(vector, dtype=np.float32))
            return loaded
        except Exception as exc:  # a damaged index is a cold start, not a failure
            log.warning("semantic index at %s is unreadable (%s); starting empty", directory, exc)
            self._parts.clear()
            self._scope_of_key.clear()
            return 0


def build_ann(dim: int, records: list[Record], vectors: np.ndarray) -> "UsearchPartition":
    """Build a usearch partition from a snapshot (CPU-bound: run it in a worker thread)."""
    ann = UsearchPartition(dim)
    if records:
        ann.add_many(records, vectors)
    return ann


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
