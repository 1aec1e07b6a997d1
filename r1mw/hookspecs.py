"""Every hook a plugin (built-in or third-party) can implement.

pluggy is the registry and the event bus, not a request dispatcher: registration hooks run
once, when a :class:`~r1mw.Pipeline` starts; observer hooks run from a background task that
drains a bounded event buffer, not in a request's path. They run on the event loop: one that
blocks holds every request meanwhile (hand slow work to a thread). Each implementation is
called on its own: one that raises is logged and the others are still called.

Registration hooks return ``{name: factory}`` where ``factory(pipeline)`` builds the object;
only the names a setting selects are built (``R1MW_STAGES``, ``R1MW_TIERS``, ...).

A plugin is a module (or object) with functions marked ``@r1mw.hookimpl``::

    import r1mw

    class Shout:
        name = "shout"
        async def handle(self, request, call_next):
            return await call_next(request)

    @r1mw.hookimpl
    def r1mw_register_stages():
        return {"shout": lambda pipeline: Shout()}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import pluggy

if TYPE_CHECKING:
    import argparse

    from .events import Event
    from .pipeline import Pipeline
    from .protocols import Codec, Embedder, Guard, Stage, Tier

hookspec = pluggy.HookspecMarker("r1mw")
hookimpl = pluggy.HookimplMarker("r1mw")

__all__ = ["hookimpl", "hookspec"]


# -- registration (called once per Pipeline start) -------------------------------------


@hookspec
def r1mw_register_stages() -> Mapping[str, Callable[["Pipeline"], "Stage | None"]]:
    """Stages by name; ``R1MW_STAGES`` picks which run and in which order.

    A factory may return None when the stage's own switch is off: it is then left out."""


@hookspec
def r1mw_register_tiers() -> Mapping[str, Callable[["Pipeline"], "Tier"]]:
    """Storage tiers by name; ``R1MW_TIERS`` picks which are used, fastest first."""


@hookspec
def r1mw_register_codecs() -> Mapping[str, Callable[["Pipeline"], "Codec"]]:
    """Codecs by name (``msgpack``, ``msgpack+lz4``, ...)."""


@hookspec
def r1mw_register_embedders() -> Mapping[str, Callable[["Pipeline"], "Embedder"]]:
    """Embedders by name; ``R1MW_EMBEDDER`` picks one."""


@hookspec
def r1mw_register_guards(pipeline: "Pipeline") -> Sequence["Guard"]:
    """Guards that veto semantic candidates; every registered guard applies."""


@hookspec
def r1mw_register_templates(pipeline: "Pipeline") -> Sequence[Any]:
    """Prompt templates declared in code (strings or template objects)."""


@hookspec
def r1mw_add_cli_commands(subparsers: "argparse._SubParsersAction") -> None:
    """Add sub-commands to the ``r1mw`` command line."""


# -- lifecycle ---------------------------------------------------------------------------


@hookspec
def r1mw_pipeline_started(pipeline: "Pipeline") -> None:
    """The pipeline is built and started (stages and tiers are up)."""


@hookspec
def r1mw_pipeline_closing(pipeline: "Pipeline") -> None:
    """The pipeline is about to close its stages and tiers."""


# -- observers (called from the background event drain) ---------------------------------


@hookspec
def r1mw_events(pipeline: "Pipeline", events: Sequence["Event"]) -> None:
    """A batch of events (request served, stored, evicted, fault, ...), oldest first."""


@hookspec
def r1mw_alert(pipeline: "Pipeline", alert: Mapping[str, Any]) -> None:
    """An alert rule fired or cleared. ``alert`` has name, state, value, threshold, message."""
