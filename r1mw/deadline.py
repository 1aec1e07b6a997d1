"""``await within(coro, seconds)``: ``asyncio.wait_for`` that never swallows a cancellation.

Before Python 3.12, ``asyncio.wait_for`` returns the inner call's outcome when the caller is
cancelled in the same loop turn as that call ends: the caller's ``cancel()`` is lost (its
request goes on, an ``asyncio.timeout`` around it never fires, a TaskGroup cannot stop it),
and when the inner call ended with an exception instead, that exception is logged as "Task
exception was never retrieved". The Redis and aiocache tiers bound every call this way: with a
server that hangs, each call ends at its deadline, exactly when a caller's own deadline tends
to cancel it. 3.12's ``wait_for`` is built on ``asyncio.timeout`` and has neither fault.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Awaitable, TypeVar

__all__ = ["within"]

T = TypeVar("T")


def _retrieve(task: "asyncio.Future[Any]") -> None:
    if not task.cancelled():
        task.exception()  # nobody awaits it any more: not an unretrieved error


async def _within(aw: Awaitable[T], timeout: float | None) -> T:
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout)
    except asyncio.CancelledError:  # the caller was cancelled: it must see it, always
        task.cancel()
        task.add_done_callback(_retrieve)
        raise
    if not done:
        task.cancel()
        try:
            await asyncio.wait((task,))  # as wait_for does: the call is over when we return
        except asyncio.CancelledError:
            task.add_done_callback(_retrieve)
            raise
        if task.cancelled():
            raise asyncio.TimeoutError
    return task.result()  # (it may have ended on its own as the deadline passed)


if sys.version_info >= (3, 12):
    within = asyncio.wait_for
else:
    within = _within
