"""The ``r1mw`` command line (also ``python -m r1mw``).

Sub-commands of the core: ``config``. Plugins add theirs through ``r1mw_add_cli_commands``
(the built-ins add ``demo``, ``bench``, ``templates``, ``top``, ``report``); each sets
``func`` on its parser, called with the parsed arguments, returning an exit code.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, Mapping, Sequence

from .errors import ConfigError, R1mwError
from .manager import build_plugin_manager, call_each, raise_as_plugin_error, registrations, select
from .settings import Settings

__all__ = ["AT_LEAST_ONE", "NON_NEGATIVE", "POSITIVE", "SHARE", "HelpFormatter", "check_numbers", "main"]


# Ranges of numeric options: (accepts the value, what is expected). NaN fails every one.
Range = tuple[Callable[[float], bool], str]
SHARE: Range = (lambda v: 0.0 <= v <= 1.0, "a share in [0, 1]")
POSITIVE: Range = (lambda v: 0.0 < v < math.inf, "a number > 0")
NON_NEGATIVE: Range = (lambda v: 0.0 <= v < math.inf, "a number >= 0")
AT_LEAST_ONE: Range = (lambda v: v >= 1, "an integer >= 1")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's defaults in the help, but only where they say something: not ``None`` or
    ``False`` (the help text explains what an unset option does), and not twice (a help that
    already shows ``%(default)s``)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def check_numbers(args: argparse.Namespace, ranges: Mapping[str, Range]) -> None:
    """Check numeric options (``{dest: range}``) before a command runs: one ConfigError line
    naming the option (exit 2). argparse's own error would print the whole usage first, a
    screenful for ``demo``; an unchecked value ran, or failed later with a traceback."""
    for dest, (ok, expected) in ranges.items():
        value = getattr(args, dest)
        if not ok(value):
            raise ConfigError(f"--{dest.replace('_', '-')}={value!r} is invalid: expected {expected}")


def _config(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    settings = Settings.from_env()
    _check_plugin_names(settings)
    table = Table(title="r1mw settings (keyword > env > .env > default)")
    for column in ("flag", "value", "source", "meaning"):
        table.add_column(column)
    for flag, value, source in settings.items():
        shown = ",".join(value) if isinstance(value, tuple) else ("" if value is None else str(value))
        if flag.attr == "similarity_threshold" and value is None:
            shown = "auto (calibrated for the embedding model)"
        table.add_row(flag.env, shown, source, flag.doc)
    Console(width=200 if not sys.stdout.isatty() else None).print(table)
    return 0


def _check_plugin_names(settings: Settings) -> None:
    """The names Pipeline start looks up in the plugin registry (stages, tiers, codec), checked
    the same way: an unknown one is the same one-line ConfigError, before the table prints."""
    pm = build_plugin_manager(plugins=settings.plugins, disable=settings.disable_plugins)
    for kind, flag, names in (("stages", "R1MW_STAGES", settings.stages), ("tiers", "R1MW_TIERS", settings.tiers),
                              ("codecs", "R1MW_CODEC", (settings.codec,))):
        select(registrations(pm, kind)[0], names, flag, settings.disable_plugins)


def build_parser(*, plugin_commands: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r1mw", description="Caching middleware for LLM calls.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    config = sub.add_parser("config", help="print the effective settings and where each came from",
                            description="Print every flag's effective value and where it came from (keyword > "
                                        "environment > ./.env > default); a bad flag is one line, exit status 2.")
    config.set_defaults(func=_config)
    from . import demo
    from .workload import bench

    demo.add_parser(sub)
    bench.add_parser(sub)
    if not plugin_commands:
        return parser
    settings = Settings.from_env()
    pm = build_plugin_manager(plugins=settings.plugins, disable=settings.disable_plugins)
    call_each(pm.hook.r1mw_add_cli_commands, raise_as_plugin_error("r1mw_add_cli_commands()"), subparsers=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            parser = build_parser()
        except ConfigError as exc:
            # The plugins' commands need the settings; a bad flag must not hide the help itself.
            if not {"-h", "--help"} & set(sys.argv[1:] if argv is None else argv):
                raise
            print(f"r1mw: configuration error: {exc}", file=sys.stderr)
            parser = build_parser(plugin_commands=False)
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except ConfigError as exc:  # one line naming the flag, the value and what is allowed
        print(f"r1mw: configuration error: {exc}", file=sys.stderr)
        return 2
    except R1mwError as exc:
        print(f"r1mw: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file named on the command line (--out, --json): one line, no traceback
        print(f"r1mw: {_os_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _os_error(exc: OSError) -> str:
    what = exc.strerror or str(exc) or type(exc).__name__
    return f"{exc.filename}: {what}" if exc.filename is not None else what


if __name__ == "__main__":
    sys.exit(main())
