"""Built-in plugin r1mw.template: the ``template`` stage and ``r1mw templates`` commands.

The stage runs before ``exact``. It matches the last user message against the declared
templates (``R1MW_TEMPLATES`` file, then the ``r1mw_register_templates`` hook) and the
templates mined from traffic. On a match it leaves, for the stages after it:

* ``meta["template_id"]`` and ``meta["slots"]`` (slot name -> normalized value),
* ``meta["key_messages"]``: the messages with the matched one replaced by its canonical
  form, so every spelling of one templated request has one exact key, and
  ``meta["template_keyed"] = True`` (declared templates only: a mined one annotates, never
  re-keys),
* the same id and slots in ``meta["store_meta"]`` (kept with the stored entry).

An unmatched prompt passes through unchanged and feeds the miner. The registry is
published as ``pipeline.services["templates"]`` (``match``, ``render``, ``canonical``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Awaitable, Callable

import r1mw
from r1mw.manager import call_each, raise_as_plugin_error
from r1mw.templating import Miner, TemplateRegistry, code_templates, load_file

log = logging.getLogger("r1mw.templates")

MINED_FILE = "templates/mined.json"  # under the cache dir
TEMPLATE_ROLE = "r1mw:template"  # role of the canonical message in meta["key_messages"]


class TemplateStage:
    name = "template"

    def __init__(self, pipeline: r1mw.Pipeline) -> None:
        s = pipeline.settings
        templates = load_file(s.templates) if s.templates is not None else []
        registered = call_each(pipeline.pm.hook.r1mw_register_templates,
                               raise_as_plugin_error("r1mw_register_templates()"), pipeline=pipeline)
        templates += code_templates([found for _, found in registered])
        self.registry = TemplateRegistry()
        for template in templates:
            try:
                self.registry.add(template)
            except ValueError as exc:
                raise r1mw.ConfigError(f"templates: {exc}") from None
        self.miner: Miner | None = None
        if s.template_cache_size > 0:
            self.miner = Miner(self.registry, capacity=s.template_cache_size, min_support=s.template_mine_min,
                               path=s.cache_path / MINED_FILE)
        self.pipeline = pipeline  # its event bus is set up after the stages are built
        self.matched: Counter[str] = Counter()
        self.unmatched = 0
        self.mining_faults = 0
        self.match_faults = 0
        pipeline.services["templates"] = self.registry

    async def start(self) -> None:
        if self.miner is not None:
            self.miner.load()
        self.registry.compile()  # the first request should not pay for it

    async def close(self) -> None:
        if self.miner is not None and self.miner.mined:
            self.miner.save()

    def handle(self, request: r1mw.Request, call_next: r1mw.Handler) -> Awaitable[r1mw.Reply | r1mw.StreamedReply]:
        # Only annotates, then hands on: a plain function returning the next stage's awaitable
        # (one coroutine less per request; the pipeline awaits what a stage returns).
        messages = request.messages
        i = len(messages) - 1
        while i >= 0 and not (isinstance(messages[i], dict) and messages[i].get("role") == "user"):
            i -= 1
        content = messages[i].get("content") if i >= 0 else None
        if isinstance(content, str):
            try:
                found = self.registry.match_full(content)
            except Exception:  # a fault in matching: the request goes on with its raw key
                self.match_faults += 1
                log.exception("template matching failed; the request passes through")
                return call_next(request)
            if found is not None:
                tid = found.template.id
                meta = request.meta
                meta["template_id"] = tid
                slots = dict(found.slots)  # the match is memoized: each request gets its own dict
                meta["slots"] = slots
                meta["slot_text"] = found.written  # as written (read-only: shared by the memo)
                # A mined template annotates but never re-keys: it appears after requests of
                # its shape were stored under their raw key, and re-keying would strand them.
                if found.template.source != "mined":
                    base = meta.get("key_messages")
                    key_messages = list(base if base is not None and len(base) == len(messages) else messages)
                    # Its own role keeps a canonical form apart from any prompt a user could type
                    # (a user message has role "user"); two keys keep key_of on its fast path.
                    # (Its other fields, e.g. `name`, stay: another author may be another question.)
                    key_messages[i] = {**messages[i], "role": TEMPLATE_ROLE, "content": found.canonical}
                    meta["key_messages"] = key_messages
                    meta["template_keyed"] = True
                store_meta = meta.setdefault("store_meta", {})
                store_meta["template_id"] = tid
                store_meta["slots"] = slots
                self.matched[tid] += 1
                if found.template.source == "mined" and self.miner is not None:
                    self.miner.touch(tid)
            else:
                self.unmatched += 1
                # Prefetch requests are our own guesses, not traffic: they teach nothing.
                if self.miner is not None and not request.meta.get("prefetch"):
                    self._learn(content)
        return call_next(request)

    def _learn(self, content: str) -> None:
        # Mining is best effort: a fault in it must never fail the request it watched.
        try:
            mined = self.miner.observe(content)  # type: ignore[union-attr]
        except Exception:
            self.mining_faults += 1
            log.exception("template mining failed; the request goes on")
            return
        if mined is not None and self.pipeline.events.enabled:  # rare: no hot-path cost
            self.pipeline.events.emit("template_mined", template_id=mined.id, template=mined.text,
                                      slots=dict(mined.slots))

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"templates": len(self.registry), "matched": sum(self.matched.values()),
                               "unmatched": self.unmatched, "faults": self.match_faults,
                               "by_template": dict(self.matched.most_common(20))}
        if self.miner is not None:
            out["mining"] = {**self.miner.stats(), "faults": self.mining_faults}
        return out


@r1mw.hookimpl
def r1mw_register_stages() -> dict[str, Callable[[r1mw.Pipeline], r1mw.Stage | None]]:
    return {"template": TemplateStage}


# -- the command line ------------------------------------------------------------------------


def _export(args: argparse.Namespace) -> int:
    settings = r1mw.Settings.from_env()
    cache_dir = Path(args.cache_dir) if args.cache_dir else settings.cache_path
    if args.cache_dir and not cache_dir.is_dir():
        # A mistyped directory printed an empty list, like one where nothing was mined yet.
        raise r1mw.ConfigError(f"--cache-dir={args.cache_dir!r} is invalid: no such directory; expected the "
                               "cache dir of the process that mined the templates")
    path = cache_dir / MINED_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = data["templates"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise r1mw.R1mwError(f"cannot read mined templates at {path}: {exc}") from None
    else:
        entries = []
    out = {"version": 1, "description": "templates mined from traffic by r1mw; review, then add to R1MW_TEMPLATES",
           "templates": entries}
    if args.out and args.out.endswith(".toml"):
        text = _toml(out)
    elif args.out and args.out.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise r1mw.ConfigError("--out *.yaml needs pyyaml: pip install 'r1mw[yaml]'") from None
        text = yaml.safe_dump(out, sort_keys=False, allow_unicode=True)
    else:
        text = json.dumps(out, indent=2, ensure_ascii=False) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {len(entries)} mined templates to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if not cache_dir.is_dir():  # the default one: no process has run with it yet
        print(f"r1mw: no cache dir at {cache_dir} (R1MW_CACHE_DIR) yet: nothing mined", file=sys.stderr)
    return 0


def _toml(data: dict[str, Any]) -> str:
    def q(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string

    lines = [f"version = {data['version']}", f"description = {q(data['description'])}", ""]
    for entry in data["templates"]:
        lines.append("[[templates]]")
        lines.append(f"id = {q(entry['id'])}")
        lines.append(f"template = {q(entry['template'])}")
        if entry.get("variants"):
            lines.append("variants = [" + ", ".join(q(v) for v in entry["variants"]) + "]")
        if "uses" in entry:
            lines.append(f"uses = {int(entry['uses'])}")
        slots = entry.get("slots") or {}
        lines.append("slots = {" + ", ".join(f"{q(k)} = {q(v)}" for k, v in slots.items()) + "}")
        if entry.get("phrases"):
            lines.append("phrases = [" + ", ".join(q(p) for p in entry["phrases"]) + "]")
        lines.append("")
    return "\n".join(lines)


def _check(args: argparse.Namespace) -> int:
    templates = load_file(args.file)
    registry = TemplateRegistry(templates)
    registry.compile()
    for t in templates:
        print(f"{t.id}: {t.text}  slots={dict(t.slots)}  variants={len(t.variants)}")
    print(f"{len(templates)} templates OK", file=sys.stderr)
    return 0


@r1mw.hookimpl
def r1mw_add_cli_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser("templates", help="export mined templates, check a template file")
    sub = parser.add_subparsers(dest="templates_command", metavar="ACTION", required=True)
    export = sub.add_parser("export", help="write the templates mined from traffic, in the template-file format")
    export.add_argument("--out", help="file to write (.json, .toml or .yaml; default: stdout as JSON)")
    export.add_argument("--cache-dir", help="cache dir of the process that mined them (default: R1MW_CACHE_DIR)")
    export.set_defaults(func=_export)
    check = sub.add_parser("check", help="load a template file and list its templates")
    check.add_argument("file", help="template file (.toml, .json or .yaml), e.g. the R1MW_TEMPLATES one")
    check.set_defaults(func=_check)
