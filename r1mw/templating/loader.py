"""Template files (TOML, JSON, YAML) and templates declared in code.

File format (JSON shown; TOML and YAML have the same structure)::

    {
      "version": 1,
      "slot_types": {"symbol": "ticker", "account_size": "money"},
      "slot_equivalents": {"symbol": {"AAPL": ["Apple (AAPL)"]}},
      "templates": [
        {"id": "analyze_strategy",
         "template": "Analyze {symbol} using {strategy}",
         "variants": ["Use {strategy} to analyze {symbol}"],
         "slots": ["strategy", "symbol"]}
      ]
    }

A slot's type comes from, in order: an inline ``{slot:type}``, the template's ``slots`` map
(``{"symbol": "ticker"}``; a list only names the slots), the file's ``slot_types``, the type
every example value of the file's ``slots`` map parses as (``"slots": {"stock": ["AAPL",
"MSFT"]}``, strictly: capital tickers, money with a currency mark), else ``text``.
``slot_equivalents`` (file-wide) and a template's own ``equivalents`` list spellings of one
value (``{"AAPL": ["Apple (AAPL)"]}``): they key alike. A listed example value its slot's
type rejects ("ES futures" among tickers) is accepted as written.
Any other top-level key is ignored (descriptions, example data).

A malformed file raises :class:`~r1mw.ConfigError` naming the file, the line and the reason.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import ConfigError
from .slots import infer_type, slot_type
from .template import Template, parse_pattern

__all__ = ["BUNDLED", "load_file", "templates_from_data", "to_template"]

BUNDLED = Path(__file__).resolve().parent.parent / "data" / "trading_templates.json"
"""The trading team's template set shipped with r1mw."""

_ENTRY_KEYS = frozenset({"id", "template", "variants", "slots", "weight", "example", "examples",
                         "description", "tags", "source", "uses", "phrases", "equivalents"})


class _Bad(Exception):
    """A semantic error in parsed data; ``needle`` (a regex) and ``nth`` locate its line."""

    def __init__(self, reason: str, needle: str | None = None, nth: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.needle = needle
        self.nth = nth


def _id_needle(tid: Any) -> str | None:
    # The line that declares the entry's id, in any of the three syntaxes.
    if not isinstance(tid, str) or not tid:
        return None
    return rf"""["']?\bid["']?\s*[:=]\s*["']?{re.escape(tid)}["']?\s*(,|\}}|$)"""


def _read(path: Path) -> tuple[Any, str]:
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"R1MW_TEMPLATES={str(path)!r}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}:1: cannot read the template file: {exc}") from None
    suffix = path.suffix.lower()
    if suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # the same parser before it joined the standard library (a dependency on 3.10)
            try:
                import tomli as tomllib
            except ImportError:
                raise ConfigError(f"{path}:1: TOML template files on Python 3.10 need tomli: "
                                  "pip install tomli") from None
        try:
            return tomllib.loads(raw), raw
        except tomllib.TOMLDecodeError as exc:
            m = re.search(r"at line (\d+)", str(exc))
            line = m.group(1) if m else "1"
            raise ConfigError(f"{path}:{line}: invalid TOML: {exc}") from None
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"{path}:1: YAML template files need pyyaml: pip install 'r1mw[yaml]'") from None
        try:
            return yaml.safe_load(raw), raw
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 1
            reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{path}:{line}: invalid YAML: {reason}") from None
    if suffix == ".json":
        try:
            return json.loads(raw), raw
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from None
    raise ConfigError(f"R1MW_TEMPLATES={str(path)!r}: expected a .toml, .json, .yaml or .yml file")


def _line_of(raw: str, needle: str | None, nth: int = 1) -> int:
    if needle:
        pattern = re.compile(needle)
        for i, line in enumerate(raw.splitlines(), 1):
            if pattern.search(line):
                nth -= 1
                if nth == 0:
                    return i
    return 1


def load_file(path: str | Path) -> list[Template]:
    """Templates declared in a TOML, JSON or YAML file; ConfigError names file, line, reason."""
    path = Path(path)
    data, raw = _read(path)
    try:
        return templates_from_data(data, source="file")
    except _Bad as bad:
        raise ConfigError(f"{path}:{_line_of(raw, bad.needle, bad.nth)}: {bad.reason}") from None


def templates_from_data(data: Any, *, source: str = "file") -> list[Template]:
    """Templates from parsed file data (raises an internal error type with a line hint)."""
    if not isinstance(data, Mapping):
        raise _Bad("the top level must be a table/object with a 'templates' list")
    entries = data.get("templates")
    if not isinstance(entries, list) or not entries:
        raise _Bad("'templates' must be a non-empty list", "templates")
    declared = data.get("slot_types") or {}
    if not isinstance(declared, Mapping):
        raise _Bad("'slot_types' must map slot names to types", "slot_types")
    for name, t in declared.items():
        try:
            slot_type(str(t))
        except KeyError as exc:
            raise _Bad(f"slot_types.{name}: {exc.args[0]}", re.escape(str(name))) from None
    examples = data.get("slots")
    inferred: dict[str, str] = {}
    if isinstance(examples, Mapping):
        for name, values in examples.items():
            if isinstance(values, list) and values and name not in declared:
                inferred[str(name)] = infer_type([str(v) for v in values])
    defaults = {**inferred, **{str(k): str(v) for k, v in declared.items()}}
    equivalents = _equivalents(data.get("slot_equivalents"), "'slot_equivalents'", "slot_equivalents")
    if isinstance(examples, Mapping):
        # Listed values a typed slot would refuse are values all the same: accept them as written.
        for name, values in examples.items():
            kind = defaults.get(str(name))
            if kind is None or not isinstance(values, list):
                continue
            normalize = slot_type(kind).normalize
            for value in values:
                if isinstance(value, str) and normalize(value) is None:
                    equivalents.setdefault(str(name), {}).setdefault(value, [])
    out: list[Template] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries, 1):
        tid = entry.get("id") if isinstance(entry, Mapping) else None
        nth = seen.get(tid, 0) + 1 if isinstance(tid, str) else 1
        template = _entry(entry, i, defaults, source, nth, equivalents)
        if template.id in seen:
            raise _Bad(f"template #{i}: id {template.id!r} is declared twice", _id_needle(template.id), nth)
        seen[template.id] = nth
        out.append(template)
    return out


def _equivalents(data: Any, where: str, needle: str) -> dict[str, dict[str, list[str]]]:
    """``{slot: {canonical: [spellings]}}`` checked; keys starting with ``_`` are notes."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise _Bad(f"{where} must map slot names to {{canonical: [spellings]}}", needle)
    out: dict[str, dict[str, list[str]]] = {}
    for name, table in data.items():
        if str(name).startswith("_"):
            continue
        if not isinstance(table, Mapping) or not all(
                isinstance(c, str) and isinstance(r, list) and all(isinstance(x, str) for x in r)
                for c, r in table.items()):
            raise _Bad(f"{where}.{name} must map each canonical value to a list of spellings",
                       re.escape(str(name)))
        out[str(name)] = {c: list(r) for c, r in table.items()}
    return out


def _entry(entry: Any, i: int, defaults: Mapping[str, str], source: str, nth: int = 1,
           equivalents: Mapping[str, Mapping[str, list[str]]] | None = None) -> Template:
    if not isinstance(entry, Mapping):
        raise _Bad(f"template #{i} must be a table/object with 'id' and 'template'",
                   re.escape(entry) if isinstance(entry, str) else None)
    tid = entry.get("id")
    pattern = entry.get("template")
    needle = _id_needle(tid) or (re.escape(pattern) if isinstance(pattern, str) and pattern else None)
    where = f"template #{i}" + (f" ({tid!r})" if tid else "")
    if not isinstance(tid, str) or not tid.strip():
        raise _Bad(f"{where}: 'id' must be a non-empty string", needle, nth)
    if not isinstance(pattern, str) or not pattern.strip():
        raise _Bad(f"{where}: 'template' must be a non-empty string", needle, nth)
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise _Bad(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_ENTRY_KEYS)}",
                   rf"\b{re.escape(sorted(map(str, unknown))[0])}\b")
    variants = entry.get("variants") or []
    if not isinstance(variants, list) or not all(isinstance(v, str) and v.strip() for v in variants):
        raise _Bad(f"{where}: 'variants' must be a list of non-empty strings", needle, nth)
    slots = entry.get("slots") or {}
    try:
        names = {p[0] for p in parse_pattern(pattern) if isinstance(p, tuple)}
    except ValueError as exc:
        raise _Bad(f"{where}: {exc}", needle, nth) from None
    if isinstance(slots, list):
        if set(map(str, slots)) != names:
            raise _Bad(f"{where}: 'slots' lists {sorted(map(str, slots))} but the template has "
                       f"{sorted(names)}", needle, nth)
        types = {}
    elif isinstance(slots, Mapping):
        types = {str(k): str(v) for k, v in slots.items()}
    else:
        raise _Bad(f"{where}: 'slots' must be a list of names or a map of name -> type", needle, nth)
    for name in names:
        if name not in types and name in defaults:
            types[name] = defaults[name]
    own = _equivalents(entry.get("equivalents"), f"{where}: 'equivalents'", "equivalents")
    tables = {name: {**(equivalents or {}).get(name, {}), **own.get(name, {})} for name in names}
    tables = {name: table for name, table in tables.items() if table}
    try:
        return Template(tid.strip(), pattern, tuple(variants), types, source=source, equivalents=tables)
    except (ValueError, KeyError) as exc:
        raise _Bad(f"{where}: {exc.args[0] if exc.args else exc}", needle, nth) from None


def to_template(item: Any, *, source: str = "code") -> Template:
    """A template declared in code: a :class:`Template`, a file-style mapping, or a string
    (its own id)."""
    if isinstance(item, Template):
        return item
    if isinstance(item, str):
        return Template(item, item, source=source)
    if isinstance(item, Mapping):
        try:
            return _entry(item, 1, {}, source)
        except _Bad as bad:
            raise ValueError(bad.reason) from None
    raise TypeError(f"a template must be a Template, a mapping or a string, not {type(item).__name__}")


def code_templates(results: Iterable[Iterable[Any] | None]) -> list[Template]:
    """Flatten the results of the ``r1mw_register_templates`` hook."""
    out: list[Template] = []
    for result in results:
        for item in result or ():
            try:
                out.append(to_template(item))
            except (TypeError, ValueError, KeyError) as exc:
                raise ConfigError(f"r1mw_register_templates: bad template {item!r}: "
                                  f"{exc.args[0] if exc.args else exc}") from None
    return out
