"""Calls made close together go to the store as one: the batching of shoal's hot path.

A caller awaits its own item's answer; the items queued while no batch is in flight leave together once
the loop has run the callers that were ready (one turn: so that a caller woken by another's item, such as
the next task in the slot a report frees, has its item in the same batch), and those queued while one is in
flight leave together as soon as it is back. An idle node so sends each call at once (no timer, no added
latency), and a busy one sends few, large calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class Coalescer(Generic[In, Out]):
    """Send queued items through ``send`` (which answers one value per item, in order), ``most`` at a time.

    An error of a batch is every caller's error in it. A caller cancelled while waiting does not take its
    item out of a batch already sent: the store may have done it, as with any call cancelled mid-flight.
    """

    def __init__(self, send: Callable[[list[In]], Awaitable[Sequence[Out]]], most: int = 1000) -> None:
        self._send = send
        self._most = most
        self._queue: list[tuple[In, asyncio.Future[Out]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def __call__(self, item: In) -> Out:
        return await self.put(item)

    def put(self, item: In) -> asyncio.Future[Out]:
        """Queue ``item`` now, behind those queued before it (the store takes them in that order); its answer."""
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # one turn: what the callers woken meanwhile queue leaves in this batch too
        while self._queue:
            batch, self._queue = self._queue[: self._most], self._queue[self._most :]
            try:
                answers = await self._send([item for item, _ in batch])
            except asyncio.CancelledError:  # the node is stopping: no one is left to send the rest
                for _, future in batch + self._queue:
                    future.cancel()
                self._queue.clear()
                raise
            except Exception as exc:  # each caller's own error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), answer in zip(batch, answers, strict=True):
                if not future.done():
                    future.set_result(answer)
