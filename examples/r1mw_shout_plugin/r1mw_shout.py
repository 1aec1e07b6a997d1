"""r1mw-shout: a third-party r1mw plugin in one module (an example to copy).

It adds a stage named ``shout`` that upper-cases the answer of every complete reply passing
through it, and counts the requests it saw. Where it sits in ``R1MW_STAGES`` matters:

* ``R1MW_STAGES=shout,exact``: shout is outside the cache; it sees every request, hits
  included, and the cache stores the answer as the upstream gave it;
* ``R1MW_STAGES=exact,shout``: shout is inside; it sees only misses, and the cache stores
  the shouted answer.

Streams pass through untouched (a stage never sees SDK chunks). Install the package (its
``pyproject.toml`` declares the entry point ``shout`` in the group ``r1mw``) and add ``shout``
to ``R1MW_STAGES``; or register the module by hand: ``r1mw.Pipeline(settings, plugins=[r1mw_shout])``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import r1mw


class ShoutStage:
    """Upper-cases answers; ``seen`` counts the requests that reached it."""

    name = "shout"

    def __init__(self, pipeline: r1mw.Pipeline) -> None:
        self.seen = 0

    async def handle(self, request: r1mw.Request, call_next: r1mw.Handler) -> r1mw.Reply | r1mw.StreamedReply:
        self.seen += 1
        reply = await call_next(request)
        if not isinstance(reply, r1mw.Reply):  # a live stream: its chunks are not ours to touch
            return reply
        # Replies are shared between hits: build a new one, never mutate.
        return dataclasses.replace(reply, choices=tuple(
            dataclasses.replace(c, content=c.content.upper() if c.content else c.content)
            for c in reply.choices))

    def stats(self) -> dict[str, Any]:
        return {"seen": self.seen}


@r1mw.hookimpl
def r1mw_register_stages() -> dict[str, Any]:
    return {"shout": ShoutStage}
