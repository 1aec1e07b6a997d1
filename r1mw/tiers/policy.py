"""Eviction policies: bounded maps that decide who leaves when the RAM tier is full.

Each policy is a map ``key -> Node`` bounded by entries and bytes: ``get`` records a hit,
``put`` inserts and returns the nodes it evicted, ``pop`` removes. The RAM tier owns TTLs
and stats; the disk tier reuses a policy with ``value=None`` to order its files.

Why S3-FIFO is the default (figures in docs/benchmarks.md, "Tiers"; essay in docs/tiers.md):
on Zipf traces (alpha 0.8 and 1.0, cache 1 % and 10 % of keys) it had the best hit ratio of
the four here, 4-11 points above LRU, because one-hit wonders leave through the small FIFO
without disturbing the main one; and a hit costs one integer increment, with no list surgery
and no sketch update, which keeps ``get_nowait`` near 0.2 us. LRU, SIEVE and W-TinyLFU are
here for comparison (``R1MW_L1_POLICY``) and for the benchmark.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable, Iterator

__all__ = ["LRU", "POLICIES", "SIEVE", "Node", "Policy", "S3FIFO", "WTinyLFU", "make_policy"]


class Node:
    """One cached item: value, accounted size, expiry (0 = never) and the policy's state."""

    __slots__ = ("key", "value", "size", "expires", "freq", "prev", "next")

    def __init__(self, key: Hashable, value: Any, size: int, expires: float = 0.0) -> None:
        self.key = key
        self.value = value
        self.size = size
        self.expires = expires
        self.freq = 0
        self.prev: Node | None = None
        self.next: Node | None = None


class Policy:
    """Base: the index, the byte count and the bounds. Subclasses order and evict."""

    name = "base"

    def __init__(self, max_entries: int, max_bytes: int = 0) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.index: dict[Hashable, Node] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.index

    def keys(self) -> Iterator[Hashable]:
        return iter(list(self.index))

    def get(self, key: Hashable) -> Node | None:
        """The node of ``key``, recording a hit (None on a miss, recorded as such)."""
        node = self.index.get(key)
        if node is None:
            self.record_miss(key)
            return None
        self.hit(node)
        return node

    def peek(self, key: Hashable) -> Node | None:
        return self.index.get(key)

    def hit(self, node: Node) -> None:  # pragma: no cover - overridden
        pass

    def record_miss(self, key: Hashable) -> None:
        pass

    def put(self, key: Hashable, value: Any, size: int = 1, expires: float = 0.0) -> list[Node]:
        """Insert or replace ``key``; return the nodes evicted to make room (maybe the new one)."""
        node = self.index.get(key)
        if node is not None:
            self.bytes += size - node.size
            self._resized(node, size - node.size)
            node.value, node.size, node.expires = value, size, expires
            self.hit(node)
        else:
            node = Node(key, value, size, expires)
            self.index[key] = node
            self.bytes += size
            self._insert(node)
        evicted: list[Node] = []
        while len(self.index) > self.max_entries or (self.max_bytes and self.bytes > self.max_bytes):
            victim = self._evict()
            del self.index[victim.key]
            self.bytes -= victim.size
            evicted.append(victim)
        return evicted

    def pop(self, key: Hashable) -> Node | None:
        node = self.index.pop(key, None)
        if node is not None:
            self.bytes -= node.size
            self._unlink(node)
        return node

    def clear(self) -> None:
        self.__init__(self.max_entries, self.max_bytes)  # type: ignore[misc]

    def _resized(self, node: Node, delta: int) -> None:
        """``node`` (in the index) is being replaced by a value ``delta`` bytes larger."""

    def _insert(self, node: Node) -> None:
        raise NotImplementedError

    def _evict(self) -> Node:
        """Choose and unlink a victim (still in ``index``; ``put`` removes it)."""
        raise NotImplementedError

    def _unlink(self, node: Node) -> None:
        raise NotImplementedError


class LRU(Policy):
    """Least recently used: the baseline every other policy is measured against."""

    name = "lru"

    def __init__(self, max_entries: int, max_bytes: int = 0) -> None:
        super().__init__(max_entries, max_bytes)
        self._order: OrderedDict[Hashable, Node] = OrderedDict()

    def hit(self, node: Node) -> None:
        self._order.move_to_end(node.key)

    def _insert(self, node: Node) -> None:
        self._order[node.key] = node

    def _evict(self) -> Node:
        return self._order.popitem(last=False)[1]

    def _unlink(self, node: Node) -> None:
        del self._order[node.key]


class S3FIFO(Policy):
    """S3-FIFO (Yang et al., SOSP 2023): a small FIFO (10 %) filters one-hit wonders, a main
    FIFO with 2-bit frequencies and lazy reinsertion keeps the rest, a ghost FIFO of evicted
    keys sends returning keys straight to main. A hit only bumps ``node.freq``."""

    name = "s3fifo"

    def __init__(self, max_entries: int, max_bytes: int = 0, small_ratio: float = 0.1) -> None:
        super().__init__(max_entries, max_bytes)
        self.small_ratio = small_ratio
        self._small_cap = max(1, int(max_entries * small_ratio))
        self._small: OrderedDict[Hashable, Node] = OrderedDict()
        self._main: OrderedDict[Hashable, Node] = OrderedDict()
        self._ghost: OrderedDict[Hashable, None] = OrderedDict()
        self._small_bytes = 0

    def clear(self) -> None:
        self.__init__(self.max_entries, self.max_bytes, self.small_ratio)  # type: ignore[misc]

    def hit(self, node: Node) -> None:
        if node.freq < 3:
            node.freq += 1

    def _insert(self, node: Node) -> None:
        if node.key in self._ghost:  # evicted recently and back already: straight to main
            del self._ghost[node.key]
            self._main[node.key] = node
        else:
            self._small[node.key] = node
            self._small_bytes += node.size

    def _resized(self, node: Node, delta: int) -> None:
        # The small queue's byte count bounds it; it must follow a replaced value's size.
        if node.key in self._small:
            self._small_bytes += delta

    def _small_over(self) -> bool:
        if len(self._small) > self._small_cap:
            return True
        return bool(self.max_bytes) and self._small_bytes > self.max_bytes * self.small_ratio

    def _evict(self) -> Node:
        small, main = self._small, self._main
        while True:
            if small and (self._small_over() or not main):
                key, node = small.popitem(last=False)
                self._small_bytes -= node.size
                if node.freq > 0:  # seen again while in small: it earns a place in main
                    node.freq = 0
                    main[key] = node
                    continue
                ghost = self._ghost
                ghost[key] = None
                if len(ghost) > self.max_entries:
                    ghost.popitem(last=False)
                return node
            key, node = main.popitem(last=False)
            if node.freq > 0:  # lazy promotion: reinsert with one credit spent
                node.freq -= 1
                main[key] = node
                continue
            return node

    def _unlink(self, node: Node) -> None:
        if self._small.pop(node.key, None) is not None:
            self._small_bytes -= node.size
        else:
            self._main.pop(node.key, None)


class SIEVE(Policy):
    """SIEVE (Zhang et al., NSDI 2024): one FIFO list, a visited bit, a hand that sweeps
    from the oldest end and evicts the first unvisited node."""

    name = "sieve"

    def __init__(self, max_entries: int, max_bytes: int = 0) -> None:
        super().__init__(max_entries, max_bytes)
        self._head: Node | None = None  # newest
        self._tail: Node | None = None  # oldest
        self._hand: Node | None = None

    def hit(self, node: Node) -> None:
        node.freq = 1

    def _insert(self, node: Node) -> None:
        node.prev, node.next = None, self._head
        if self._head is not None:
            self._head.prev = node
        self._head = node
        if self._tail is None:
            self._tail = node

    def _evict(self) -> Node:
        tail = self._tail
        node = self._hand or tail
        assert node is not None and tail is not None
        while node.freq:
            node.freq = 0
            node = node.prev or tail
        self._hand = node.prev
        self._unlink(node)
        return node

    def _unlink(self, node: Node) -> None:
        if self._hand is node:
            self._hand = node.prev
        if node.prev is not None:
            node.prev.next = node.next
        else:
            self._head = node.next
        if node.next is not None:
            node.next.prev = node.prev
        else:
            self._tail = node.prev
        node.prev = node.next = None


class WTinyLFU(Policy):
    """W-TinyLFU (Einziger et al., as in Caffeine): a 1 % LRU window, a segmented LRU main
    (20 % probation, 80 % protected), and a count-min sketch of 4-bit frequencies that
    decides whether a window victim may replace the main victim. Every access (hits and
    misses) updates the sketch: more accurate on static skew, dearer per hit in Python."""

    name = "wtinylfu"

    def __init__(self, max_entries: int, max_bytes: int = 0) -> None:
        super().__init__(max_entries, max_bytes)
        self._window_cap = max(1, max_entries // 100)
        main_cap = max(1, max_entries - self._window_cap)
        self._protected_cap = max(1, int(main_cap * 0.8))
        self._window: OrderedDict[Hashable, Node] = OrderedDict()
        self._probation: OrderedDict[Hashable, Node] = OrderedDict()
        self._protected: OrderedDict[Hashable, Node] = OrderedDict()
        width = 1
        while width < max_entries * 2:
            width <<= 1
        self._mask = width - 1
        self._table = [0] * (width * 4)
        self._width = width
        self._additions = 0
        self._reset_at = 10 * max_entries

    def _slots(self, key: Hashable) -> tuple[int, int, int, int]:
        h = hash(key) & 0xFFFFFFFFFFFFFFFF
        w, m = self._width, self._mask
        return (h & m, w + (((h >> 16) ^ (h * 0x9E3779B1)) & m),
                2 * w + (((h >> 32) ^ (h * 0x85EBCA77)) & m), 3 * w + (((h >> 48) ^ (h * 0xC2B2AE3D)) & m))

    def _count(self, key: Hashable) -> None:
        table = self._table
        for i in self._slots(key):
            if table[i] < 15:
                table[i] += 1
        self._additions += 1
        if self._additions >= self._reset_at:  # aging: halve every counter
            self._table = [c >> 1 for c in table]
            self._additions //= 2

    def frequency(self, key: Hashable) -> int:
        table = self._table
        return min(table[i] for i in self._slots(key))

    def record_miss(self, key: Hashable) -> None:
        self._count(key)

    def hit(self, node: Node) -> None:
        key = node.key
        self._count(key)
        if key in self._window:
            self._window.move_to_end(key)
        elif key in self._probation:
            del self._probation[key]
            self._protected[key] = node
            if len(self._protected) > self._protected_cap:
                k, n = self._protected.popitem(last=False)
                self._probation[k] = n
        else:
            self._protected.move_to_end(key)

    def _insert(self, node: Node) -> None:
        window = self._window
        window[node.key] = node
        # While the cache is not full, the window overflows into main without a contest.
        if len(window) > self._window_cap and len(self.index) <= self.max_entries:
            key, moved = window.popitem(last=False)
            self._probation[key] = moved

    def _evict(self) -> Node:
        window, probation, protected = self._window, self._probation, self._protected
        if len(window) > self._window_cap or not (probation or protected):
            key, candidate = window.popitem(last=False)
            if not probation:
                if not protected:
                    return candidate
                k, n = protected.popitem(last=False)
                probation[k] = n
            victim_key = next(iter(probation))
            # Admission: the window's victim replaces main's only if the sketch saw it more.
            if self.frequency(key) > self.frequency(victim_key):
                victim = probation.pop(victim_key)
                probation[key] = candidate
                return victim
            return candidate
        return self._evict_main()

    def _evict_main(self) -> Node:
        for queue in (self._probation, self._protected, self._window):
            if queue:
                return queue.popitem(last=False)[1]
        raise RuntimeError("evict from an empty policy")

    def _unlink(self, node: Node) -> None:
        for queue in (self._window, self._probation, self._protected):
            if queue.pop(node.key, None) is not None:
                return


POLICIES: dict[str, type[Policy]] = {p.name: p for p in (S3FIFO, LRU, SIEVE, WTinyLFU)}


def make_policy(name: str, max_entries: int, max_bytes: int = 0) -> Policy:
    """A policy by name (``s3fifo``, ``lru``, ``sieve``, ``wtinylfu``)."""
    return POLICIES[name](max_entries, max_bytes)
