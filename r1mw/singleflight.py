"""Single-flight: one upstream call per key, however many identical requests arrive.

The call runs in its own task, so cancelling the request that started it (or any waiter)
cancels nobody else. An upstream error reaches every waiter as the same exception object
and leaves nothing behind. A streaming leader is shared through its assembled reply: waiters
get the complete reply when the stream ends normally; if it does not (or the call withdrew
without asking), the waiters go through single-flight again: one of them makes a new call,
the others wait on it (they must not inherit the leader's cancellation or a truncated answer).
A stream that stops moving (its consumer broke out of the loop but keeps the object, or the
upstream hangs) is waited on for ``stall_timeout`` seconds without a chunk at most: then the
waiters go through single-flight again as well.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Hashable

from .deadline import within
from .errors import PipelineStateError, StreamIncomplete
from .types import Reply, StreamedReply

__all__ = ["SingleFlight", "Withdrawn"]


class Withdrawn(Exception):
    """Raised by a call that gave up before asking anything (a prefetch its budget refused at
    the upstream): not an answer to the question, so each waiter makes its own call."""


class _Stalled(Exception):
    """The stream a waiter waits on passed no chunk for ``stall_timeout`` seconds."""


class SingleFlight:
    def __init__(self, *, stall_timeout: float = 120.0) -> None:
        self.stall_timeout = stall_timeout
        self.stalled = 0  # waiters that gave up on a stream that stopped moving
        self._inflight: dict[Hashable, asyncio.Future[Reply | StreamedReply]] = {}
        self.leaders = 0
        self.coalesced = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._owners: dict[int, asyncio.Task[Any] | None] = {}  # id(future) -> the leading caller's task
        self._closed = False

    def __len__(self) -> int:
        return len(self._inflight)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._inflight

    async def run(
        self, key: Hashable, call: Callable[[], Awaitable[Reply | StreamedReply]],
        on_wait: Callable[[], Any] | None = None,
    ) -> tuple[Reply | StreamedReply, bool]:
        """Run ``call`` unless an identical one is in flight; returns (reply, coalesced)."""
        future = self._inflight.get(key)
        if future is not None:
            self.coalesced += 1
            if on_wait is not None:
                on_wait()
            try:
                reply = await asyncio.shield(future)
            except Withdrawn:
                return await self._again(key, future, call, on_wait)
            except asyncio.CancelledError:
                self._raise_if_closed()
                raise
            if isinstance(reply, StreamedReply):
                if not reply.done and self._owners.get(id(future)) is asyncio.current_task():
                    # The task holding the live stream asks again before reading it to the end:
                    # waiting for that stream would wait on itself.
                    self.coalesced -= 1
                    return await call(), False
                try:
                    return await self._stream_result(reply), True
                except StreamIncomplete:
                    return await self._again(key, future, call, on_wait)  # the leader's stream broke
                except _Stalled:
                    self.stalled += 1
                    return await self._again(key, future, call, on_wait)
            return reply, True
        self.leaders += 1
        loop = asyncio.get_running_loop()
        # Registered before the task starts, so requests arriving meanwhile find it.
        future = self._inflight[key] = loop.create_future()
        self._owners[id(future)] = asyncio.current_task()
        task = loop.create_task(self._lead(key, future, call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(task), False
        except asyncio.CancelledError:
            self._raise_if_closed()
            # The caller is gone; the call goes on for the waiters. A stream it returns would
            # have nobody to read it and its waiters would wait for its end forever.
            task.add_done_callback(self._orphaned)
            raise

    async def _stream_result(self, reply: StreamedReply) -> Reply:
        # Not one deadline for the whole stream (R1 streams for minutes): a deadline since the
        # last chunk. A consumer that stops reading but keeps the stream would hold every
        # identical request forever otherwise (an async generator broken out of is not closed).
        while True:
            wait = self.stall_timeout - reply.idle_s
            if wait <= 0:
                raise _Stalled
            try:
                return await within(reply.result(), wait)
            except asyncio.TimeoutError:
                continue  # moved meanwhile? measured again above

    async def _again(self, key: Hashable, failed: asyncio.Future[Any],
                     call: Callable[[], Awaitable[Reply | StreamedReply]],
                     on_wait: Callable[[], Any] | None) -> tuple[Reply | StreamedReply, bool]:
        # The call we waited on gave no answer (withdrawn, or its stream broke): the waiters
        # go through single-flight again, so the first of them makes the one new call and the
        # others wait on it, instead of one call each. (A broken stream may still be
        # registered: it is not waited on again.)
        self._forget(key, failed)
        self.coalesced -= 1
        return await self.run(key, call, on_wait)

    def _raise_if_closed(self) -> None:
        # The call was cancelled by close(), not the caller: a caller that was not cancelled
        # must not see CancelledError (a TaskGroup would take it for its own cancellation).
        # (Python 3.10 cannot tell the two apart: there the CancelledError stays.)
        cancelling = getattr(asyncio.current_task(), "cancelling", None)
        if self._closed and cancelling is not None and not cancelling():
            raise PipelineStateError("the pipeline closed while this request was in flight") from None

    def _orphaned(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        reply = task.result()
        if isinstance(reply, StreamedReply) and not reply.done:
            reply.abandon()  # waiters make their own calls; nothing is stored
            closing = asyncio.get_running_loop().create_task(reply.aclose())  # release the connection
            self._tasks.add(closing)
            closing.add_done_callback(self._tasks.discard)

    async def _lead(self, key: Hashable, future: asyncio.Future[Reply | StreamedReply],
                    call: Callable[[], Awaitable[Reply | StreamedReply]]) -> Reply | StreamedReply:
        try:
            reply = await call()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no waiter is not an error
            raise
        else:
            future.set_result(reply)
            return reply
        finally:
            streaming = _open_stream(future)
            if streaming is None:
                self._forget(key, future)
            else:  # a stream in progress: later identical requests wait for its end
                streaming.add_done_callback(lambda: self._forget(key, future))

    def _forget(self, key: Hashable, future: asyncio.Future[Any]) -> None:
        self._owners.pop(id(future), None)
        if self._inflight.get(key) is future:
            del self._inflight[key]

    async def close(self) -> None:
        """Cancel the calls still in flight (pipeline shutdown) and wait until they are gone."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _open_stream(future: asyncio.Future[Any]) -> StreamedReply | None:
    if not future.done() or future.cancelled() or future.exception() is not None:
        return None
    reply = future.result()
    return reply if isinstance(reply, StreamedReply) and not reply.done else None
