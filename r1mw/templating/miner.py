"""Templates mined from live traffic: Drain-style online clustering of prompt shapes.

Each unmatched prompt is split into tokens (words, with trailing punctuation and a
possessive ``'s`` split off). Prompts of the same length are compared position by position
with the clusters filed under their first or last token (Drain's fixed-depth tree, keyed at
both ends so a prompt that starts with a value still finds its cluster); when enough
positions agree the prompt joins the cluster and the positions that differ become
wildcards. After ``min_support`` prompts, with every wildcard seen with at least two
values, the cluster becomes a template whose slots are those positions, typed when every
value seen parses strictly as a type (``infer_type``), else ``text``.

Safety: a mined slot holds exactly one token and its value goes into the canonical key
literally (or normalized exactly by its type), so a mined template only merges prompts that
differ in whitespace or the case of the fixed text. It can never merge different questions.

At most ``capacity`` mined templates live at once (``R1_TEMPLATE_CACHE_SIZE``); the least
used is evicted. They are saved as a template file in the cache dir (on each promotion and
at close) so ``r1mw templates export`` works on a running or previous process's data.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict
from operator import eq
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from .registry import TemplateRegistry
from .slots import SLOT_TYPES, infer_type
from .template import Template, normalize_text, parse_pattern

__all__ = ["Miner", "tokenize"]

log = logging.getLogger("r1mw.templates")

_TRAILING = ",.;:!?"
_MAX_VALUES = 32  # distinct values remembered per wildcard (for typing)
_MAX_TOKENS = 64  # longer prompts are not mined: shapes of essays do not repeat
_MAX_LEAF = 64  # clusters compared with one prompt at most (per leaf)
_SPLIT_MEMO = 1024  # recent prompts whose tokens are kept
_UNSEEN: Any = object()


def tokenize(text: str) -> list[str]:
    """Whitespace tokens with trailing punctuation and a possessive ``'s`` split off."""
    out: list[str] = []
    for chunk in normalize_text(text).split():
        tail: list[str] = []
        while len(chunk) > 1 and chunk[-1] in _TRAILING:
            tail.append(chunk[-1])
            chunk = chunk[:-1]
        if len(chunk) > 2 and chunk.endswith("'s"):
            out.extend((chunk[:-2], "'s"))
        else:
            out.append(chunk)
        out.extend(reversed(tail))
    return out


def _is_punct(token: str) -> bool:
    return token == "'s" or (len(token) == 1 and token in _TRAILING)


def _join(tokens: list[str]) -> str:
    """Tokens back to text: punctuation and ``'s`` attach to the word before them."""
    out: list[str] = []
    for token in tokens:
        if out and not _is_punct(token):
            out.append(" ")
        out.append(token)
    return "".join(out)


@dataclass(slots=True)
class _Cluster:
    tokens: list[str | None]  # None marks a wildcard position
    folded: list[str | None]
    count: int = 1
    values: dict[int, set[str]] = field(default_factory=dict)
    keys: tuple[tuple[int, str], ...] = ()
    # A gap cluster: fixed prefix, one wildcard of any number of tokens at ``gap``, fixed suffix.
    gap: int | None = None


@dataclass(slots=True)
class _Mined:
    template: Template
    uses: int = 0
    created: float = field(default_factory=time.time)
    shape: tuple[tuple[str, str], ...] = ()  # ("lit", folded token) or ("slot", type name)

    def __post_init__(self) -> None:
        self.shape = _shape(self.template)


def _shape(template: Template) -> tuple[tuple[str, str], ...]:
    if template.phrases:
        return ()  # a phrase slot has no fixed length: never compared
    out: list[tuple[str, str]] = []
    for part in parse_pattern(template.text):
        if isinstance(part, str):
            out.extend(("lit", t.casefold()) for t in tokenize(part))
        else:
            out.append(("slot", template.slots[part[0]]))
    return tuple(out)


def _subsumes(general: tuple[tuple[str, str], ...], specific: tuple[tuple[str, str], ...]) -> bool:
    """True when every prompt ``specific`` matches is also matched by ``general``."""
    if not general or len(general) != len(specific) or general == specific:
        return False
    for (gk, gv), (sk, sv) in zip(general, specific):
        if gk == "lit":
            if sk != "lit" or sv != gv:
                return False
        elif gv != "text":  # a typed slot covers the same type, or fixed text of that type
            if (sk == "slot" and sv != gv) or (sk == "lit" and SLOT_TYPES[gv].normalize(sv) is None):
                return False
    return True


def _leaf_keys(tokens: list[str]) -> tuple[tuple[int, str], ...]:
    n = len(tokens)
    return ((n, "F" + tokens[0].casefold()), (n, "L" + tokens[-1].casefold()))


def _ends(folded: list[str] | list[str | None]) -> tuple[str, str]:
    return (folded[0] or "", folded[-1] or "")


class Miner:
    """Online template miner feeding a :class:`TemplateRegistry`.

    ``similarity``: share of positions that must agree for a prompt to join a cluster.
    ``min_literal``: share of positions a template must keep fixed (else it is too vague).
    """

    def __init__(self, registry: TemplateRegistry, *, capacity: int = 100, min_support: int = 3,
                 similarity: float = 0.5, min_literal: float = 0.5, path: Path | None = None,
                 max_clusters: int | None = None) -> None:
        self.registry = registry
        self.capacity = capacity
        self.min_support = max(2, min_support)
        self.similarity = similarity
        self.min_literal = min_literal
        self.path = path
        self.max_clusters = max_clusters or max(1000, 10 * capacity)
        self._leaves: dict[tuple[int, str], list[_Cluster]] = {}
        # By (first, last) token, any length: where prompts of one shape but different
        # lengths meet (a slot that takes a phrase), and where gap clusters live.
        self._by_ends: dict[tuple[str, str], list[_Cluster]] = {}
        self._clusters: OrderedDict[int, _Cluster] = OrderedDict()  # LRU of live clusters
        self.mined: dict[str, _Mined] = {}
        self.observed = 0
        self.promoted = 0
        self.evicted = 0
        self.retired = 0
        self.load_faults = 0
        # prompt -> (tokens, folded tokens, leaf keys, ends), or None when it is not mined
        self._homes: dict[str, _Cluster] = {}  # prompt -> the cluster it last repeated exactly
        self._splits: dict[str, tuple[list[str], list[str], tuple[tuple[int, str], ...], tuple[str, str]] | None] = {}

    # -- the online part ---------------------------------------------------------------
    def observe(self, text: str) -> Template | None:
        """Feed one unmatched prompt; returns the template it completed, if any."""
        if len(text) > 16 * _MAX_TOKENS:  # cheaper than tokenizing an essay to learn that
            return None
        split = self._splits.get(text, _UNSEEN)
        if split is _UNSEEN:
            # Unmatched prompts repeat (every hit on an untemplated prompt comes here):
            # tokenizing is pure, so its result is memoized (callers never mutate these lists).
            tokens = tokenize(text)
            if 3 <= len(tokens) <= _MAX_TOKENS:
                folded = [t.casefold() for t in tokens]
                split = (tokens, folded, _leaf_keys(tokens), _ends(folded))
            else:
                split = None
            splits = self._splits
            if len(splits) >= _SPLIT_MEMO:
                del splits[next(iter(splits))]  # oldest first
            splits[text] = split
        if split is None:
            return None
        tokens, folded, leaf_keys, ends = split
        self.observed += 1
        cluster: _Cluster | None = self._join_gap(tokens, folded, ends)
        if cluster is not None:
            return self._promote(cluster) if cluster.count >= self.min_support else None
        home = self._homes.get(text)
        if home is not None and self._clusters.get(id(home)) is home and home.folded == folded:
            # Still alive and unwidened, the cluster this prompt repeated last time is what
            # _best would find: the only cluster scoring 1.0 (identical prompts never form two).
            cluster = home
        else:
            cluster = self._best(tokens, folded, leaf_keys)
        if cluster is None:
            cluster = self._form_gap(tokens, folded)
            if cluster is None:
                self._new_cluster(tokens, folded)
            elif cluster.count >= self.min_support:
                return self._promote(cluster)
            return None
        self._clusters.move_to_end(id(cluster))
        cluster.count += 1
        if cluster.folded == folded:
            # A repeat of the cluster's own prompt (e.g. every cache hit on it): no position
            # differs and none is a wildcard, so nothing widens and it cannot be ripe.
            if home is not cluster:
                homes = self._homes
                if len(homes) >= _SPLIT_MEMO:
                    del homes[next(iter(homes))]
                homes[text] = cluster
            return None
        for i, (mine, theirs) in enumerate(zip(cluster.folded, folded)):
            if mine is not None and mine != theirs:
                # A position that differs becomes a wildcard; remember the values it took.
                cluster.values[i] = {cluster.tokens[i] or "", tokens[i]}
                cluster.tokens[i] = cluster.folded[i] = None
            elif mine is None:
                seen = cluster.values[i]
                if len(seen) < _MAX_VALUES:
                    seen.add(tokens[i])
        if cluster.count >= self.min_support and self._ripe(cluster):
            return self._promote(cluster)
        return None

    def _best(self, tokens: list[str], folded: list[str],
              leaf_keys: tuple[tuple[int, str], ...]) -> _Cluster | None:
        n = len(tokens)
        best: _Cluster | None = None
        best_score = self.similarity
        seen: set[int] = set()
        for key in leaf_keys:
            for cluster in self._leaves.get(key, ()):
                if id(cluster) in seen:
                    continue
                seen.add(id(cluster))
                # A wildcard (None) never equals a token of the prompt: counted as a mismatch.
                same = sum(map(eq, cluster.folded, folded))
                score = same / n
                if score >= best_score:
                    best, best_score = cluster, score
        return best

    # -- phrases: one slot of any length between a fixed prefix and a fixed suffix ---------
    def _join_gap(self, tokens: list[str], folded: list[str], ends: tuple[str, str]) -> _Cluster | None:
        n = len(tokens)
        for cluster in self._by_ends.get(ends, ()):
            p = cluster.gap
            if p is None:
                continue
            s = len(cluster.tokens) - p - 1
            if n > p + s and folded[:p] == cluster.folded[:p] and folded[n - s:] == cluster.folded[p + 1:]:
                self._clusters.move_to_end(id(cluster))
                cluster.count += 1
                seen = cluster.values[p]
                if len(seen) < _MAX_VALUES:
                    seen.add(_join(tokens[p:n - s]))
                return cluster
        return None

    def _form_gap(self, tokens: list[str], folded: list[str]) -> _Cluster | None:
        """Pair a prompt with a single earlier prompt of another length and the same ends:
        their common prefix and suffix become fixed text, what lies between a phrase slot."""
        n = len(tokens)
        best: tuple[int, int, _Cluster] | None = None
        for other in self._by_ends.get(_ends(folded), ()):
            m = len(other.tokens)
            if other.gap is not None or other.count != 1 or m == n:
                continue
            limit = min(n, m) - 1  # both keep a non-empty middle
            p = 0
            while p < limit and folded[p] == other.folded[p]:
                p += 1
            s = 0
            while p + s < limit and folded[n - 1 - s] == other.folded[m - 1 - s]:
                s += 1
            words = sum(1 for t in folded[:p] + folded[n - s:] if not _is_punct(t))
            if p and s and words >= 3 and p + s >= self.similarity * max(n, m):
                if best is None or p + s > best[0] + best[1]:
                    best = (p, s, other)
        if best is None:
            return None
        p, s, other = best
        m = len(other.tokens)
        self._drop(other)
        cluster = _Cluster(list(tokens[:p]) + [None] + list(tokens[n - s:]),
                           list(folded[:p]) + [None] + list(folded[n - s:]), count=2, gap=p,
                           values={p: {_join([t or "" for t in other.tokens[p:m - s]]), _join(tokens[p:n - s])}})
        self._by_ends.setdefault(_ends(folded), []).append(cluster)
        self._clusters[id(cluster)] = cluster
        return cluster

    def _new_cluster(self, tokens: list[str], folded: list[str]) -> None:
        cluster = _Cluster(list(tokens), list(folded), keys=_leaf_keys(tokens))
        for key in cluster.keys:
            leaf = self._leaves.setdefault(key, [])
            if len(leaf) >= _MAX_LEAF:  # bounds the scan of one prompt: the oldest goes
                self._drop(leaf[0])
                leaf = self._leaves.setdefault(key, [])
            leaf.append(cluster)
        ends = self._by_ends.setdefault(_ends(folded), [])
        if len(ends) >= _MAX_LEAF:
            self._drop(ends[0])
            ends = self._by_ends.setdefault(_ends(folded), [])
        ends.append(cluster)
        self._clusters[id(cluster)] = cluster
        while len(self._clusters) > self.max_clusters:
            _, old = self._clusters.popitem(last=False)
            self._drop(old)

    def _drop(self, cluster: _Cluster) -> None:
        self._clusters.pop(id(cluster), None)
        for key in cluster.keys:
            leaf = self._leaves.get(key)
            if leaf is not None:
                leaf[:] = [c for c in leaf if c is not cluster]
                if not leaf:
                    del self._leaves[key]
        ends = _ends(cluster.folded)
        leaf = self._by_ends.get(ends)
        if leaf is not None:
            leaf[:] = [c for c in leaf if c is not cluster]
            if not leaf:
                del self._by_ends[ends]

    def _ripe(self, cluster: _Cluster) -> bool:
        n = len(cluster.tokens)
        wild = [i for i, t in enumerate(cluster.tokens) if t is None]
        if not wild or any(len(cluster.values[i]) < 2 for i in wild):
            return False
        fixed_words = [t for t in cluster.tokens if t is not None and not _is_punct(t)]
        return len(fixed_words) >= 2 and (n - len(wild)) / n >= self.min_literal

    def _promote(self, cluster: _Cluster) -> Template | None:
        self._drop(cluster)
        parts: list[str] = []
        types: dict[str, str] = {}
        counters: dict[str, int] = {}
        phrases: tuple[str, ...] = ()
        for i, token in enumerate(cluster.tokens):
            if token is None:
                kind = infer_type(sorted(cluster.values[i]))
                counters[kind] = counters.get(kind, 0) + 1
                name = f"{kind}{counters[kind]}"
                types[name] = kind
                if i == cluster.gap:
                    phrases = (name,)
                piece = "{" + name + "}"
            else:
                piece = token.replace("{", "{{").replace("}", "}}")
            if parts and not _is_punct(token or ""):
                parts.append(" ")
            parts.append(piece)
        text = "".join(parts)
        tid = "mined-" + xxhash.xxh64_hexdigest(text.casefold().encode())[:12]
        if tid in self.registry:
            return None
        try:
            template = Template(tid, text, (), types, source="mined", single_token=True, phrases=phrases)
        except (ValueError, KeyError):
            return None
        if self.capacity <= 0:
            return None
        while len(self.mined) >= self.capacity:
            self._evict()
        self.registry.add(template)
        mined = self.mined[tid] = _Mined(template)
        self.promoted += 1
        # A shape first seen with one value in a position ("the current ratio") or with values
        # that all looked like tickers is retired once its general form is mined.
        for old in [m for m in self.mined.values() if _subsumes(mined.shape, m.shape)]:
            self.registry.remove(old.template.id)
            del self.mined[old.template.id]
            mined.uses += old.uses
            self.retired += 1
        log.info("mined template %s: %s", tid, text)
        self.save()
        return template

    def _evict(self) -> None:
        victim = min(self.mined.values(), key=lambda m: (m.uses, m.created))
        self.registry.remove(victim.template.id)
        del self.mined[victim.template.id]
        self.evicted += 1

    def touch(self, template_id: str) -> None:
        """Count one use of a mined template (least used is evicted first)."""
        mined = self.mined.get(template_id)
        if mined is not None:
            mined.uses += 1

    # -- persistence -----------------------------------------------------------------------
    def to_data(self) -> dict[str, Any]:
        """The mined templates in the template-file format (what export writes)."""
        entries = []
        for m in sorted(self.mined.values(), key=lambda m: (-m.uses, m.created)):
            entry = m.template.to_dict()
            entry["uses"] = m.uses
            entries.append(entry)
        return {"version": 1, "description": "templates mined from traffic by r1mw; review before use",
                "templates": entries}

    def save(self) -> None:
        """Write the mined templates atomically to ``path`` (no-op without a path)."""
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.to_data(), indent=2, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:  # a cache that cannot persist still serves
            log.warning("cannot save mined templates to %s: %s", self.path, exc)

    def load(self) -> int:
        """Read templates mined by an earlier process; a corrupt file or entry is skipped
        (counted in ``load_faults``), never an error."""
        if self.path is None or not self.path.is_file():
            return 0
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            entries = data["templates"]
            assert isinstance(entries, list)
        except (OSError, ValueError, KeyError, TypeError, AssertionError):
            self.load_faults += 1
            log.warning("ignoring unreadable mined-template file %s", self.path)
            return 0
        loaded = 0
        for entry in entries:
            if len(self.mined) >= self.capacity:
                break
            try:
                template = Template(str(entry["id"]), str(entry["template"]), (), dict(entry.get("slots") or {}),
                                    source="mined", single_token=True,
                                    phrases=tuple(map(str, entry.get("phrases") or ())))
                if template.id in self.registry:
                    continue
                self.registry.add(template)
            except (ValueError, KeyError, TypeError):
                self.load_faults += 1
                continue
            self.mined[template.id] = _Mined(template, uses=int(entry.get("uses", 0) or 0))
            loaded += 1
        return loaded

    def stats(self) -> dict[str, Any]:
        return {"observed": self.observed, "clusters": len(self._clusters), "mined": len(self.mined),
                "promoted": self.promoted, "evicted": self.evicted, "retired": self.retired,
                "load_faults": self.load_faults}

