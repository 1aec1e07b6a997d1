"""Built-in plugin r1mw.context: the ``r1mw litellm-config PATH`` command.

It reads a LiteLLM config YAML the way :func:`r1mw.integrations.litellm.enable` does and
prints the r1mw settings it maps to (and what it skipped), so a config can be checked
before a service starts with it. A bad config exits with status 2 and one line naming the key.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import r1mw
import r1mw.integrations.litellm_config as r1mw_litellm


def _litellm_config(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    settings, parsed = r1mw_litellm.settings_from_config(r1mw_litellm.load_config(args.path))
    console = Console(width=200 if not sys.stdout.isatty() else None)
    if not parsed.enabled:
        console.print(f"{args.path}: litellm_settings.cache is not true: r1mw would not be enabled")
        return 0
    table = Table(title=f"r1mw settings from {args.path} (config > env > .env > default)")
    for column in ("flag", "value", "source"):
        table.add_column(column)
    for flag, value, source in settings.items():
        if source == "default":
            continue
        shown = ",".join(value) if isinstance(value, tuple) else ("" if value is None else str(value))
        table.add_row(flag.env, shown, "config" if source == "keyword" else source)
    console.print(table)
    console.print(f"LiteLLM cache mode: {parsed.mode}")
    if parsed.max_context_expansion is not None:
        console.print(f"max_context_expansion: {parsed.max_context_expansion} tokens "
                      "(pipe.services['max_context_expansion'])")
    for what in parsed.skipped:
        console.print(f"skipped: the {what} is not provided by any installed plugin")
    return 0


@r1mw.hookimpl
def r1mw_add_cli_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser("litellm-config",
                                   help="check a LiteLLM config YAML and print the r1mw settings it maps to")
    parser.add_argument("path", help="LiteLLM config file (litellm_settings + r1_optimizations)")
    parser.set_defaults(func=_litellm_config)
