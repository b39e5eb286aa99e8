"""The node's watch on its event loop for inline attempts: an ``async def`` handler that blocks (calls
``time.sleep``, crunches numbers, reads a file synchronously) holds the whole node while it does:
heartbeats, the API and every other task stall.

``LoopWatch`` drives the handler's coroutine itself, one step at a time, as the event loop would, and
times each step: the time between two of its awaits is time the loop was held. Steps longer than
``SLOW_STEP_S`` (asyncio's own threshold for a slow callback) add up to the attempt's ``loop_blocked_s``,
kept in its history, and the log names the type, which belongs in ``isolation="process"``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

log = logging.getLogger("shoal.worker.loopwatch")

#: A step that holds the loop longer than this counts as blocking it (asyncio's slow_callback_duration).
SLOW_STEP_S = 0.1
T = TypeVar("T")


class LoopWatch(Generic[T]):
    """Await ``LoopWatch(coro, type_name)`` instead of ``coro``; afterwards ``blocked_s`` says how long it held
    the loop in steps over ``SLOW_STEP_S`` (0.0 if it never did)."""

    def __init__(self, coro: Coroutine[Any, Any, T], type_name: str) -> None:
        self.coro = coro
        self.type_name = type_name
        self.blocked_s = 0.0

    def __await__(self) -> Generator[Any, Any, T]:
        send: Any = None
        throw: BaseException | None = None
        try:
            while True:
                started = time.monotonic()
                try:
                    yielded = self.coro.send(send) if throw is None else self.coro.throw(throw)
                except StopIteration as done:
                    result: T = done.value
                    return result
                finally:
                    self._step(time.monotonic() - started)
                try:
                    send, throw = (yield yielded), None
                except BaseException as exc:  # a cancellation, passed on to the handler as asyncio would
                    send, throw = None, exc
        finally:
            self.coro.close()

    def _step(self, seconds: float) -> None:
        if seconds > SLOW_STEP_S:
            self.blocked_s += seconds
            log.warning(
                "task type %r held the event loop for %.2fs without awaiting: a type that blocks belongs in "
                "isolation='process'",
                self.type_name,
                seconds,
            )
