"""Small helpers with no home of their own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any], every_s: float = 0.05) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling again until it does.

    One cancel is not enough on Python 3.11: ``asyncio.wait_for`` (which redis-py uses to send every
    command) drops a cancellation that arrives just as the call it guards completes, and the duty would
    go on running while this waits for it forever. A cancellation of the caller itself propagates.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=every_s)
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.result()  # retrieved, so that asyncio does not log it as never retrieved


async def run_together(*jobs: tuple[str, Coroutine[Any, Any, None]]) -> None:
    """Run each named coroutine as a task until one fails (its error is raised) or the caller is cancelled,
    then stop the others with ``stop_all``. Like ``asyncio.TaskGroup``, except that a group cancels its tasks
    only once, so one whose cancel a store call dropped (see ``cancel_and_wait``) would run on for ever."""
    tasks = [asyncio.create_task(coroutine, name=name) for name, coroutine in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        await stop_all(tasks)


async def stop_all(tasks: list[asyncio.Task[Any]], every_s: float = 0.05) -> None:
    """Cancel ``tasks`` and wait until all have ended, cancelling again until they do. Cancels of the caller
    meanwhile (``cancel_and_wait`` repeats them) do not cut this short: the caller's cancel is raised once
    every task has ended, not while one still runs."""
    cancelled = False
    while not all(task.done() for task in tasks):
        for task in tasks:
            task.cancel()
        try:
            await asyncio.wait(tasks, timeout=every_s)
        except asyncio.CancelledError:
            cancelled = True
    for task in tasks:
        if not task.cancelled():
            with contextlib.suppress(Exception):
                task.result()  # retrieved, so that asyncio does not log it as never retrieved
    if cancelled:
        raise asyncio.CancelledError


def is_digits(text: str) -> bool:
    """Whether ``text`` is a plain decimal number: ASCII digits only. ``str.isdigit`` also takes "²" (which
    ``int`` then refuses) and "٣" (which it reads as 3): numbers a stranger sends are checked with this."""
    return text.isascii() and text.isdigit()


async def every(interval: float, step: Callable[[], Awaitable[None]], log: logging.Logger, failed: str) -> None:
    """Run ``step`` every ``interval`` seconds until cancelled. A step that fails is logged as ``failed: error``
    and the loop goes on: what the last good step read stays in use. A cancel the step's store call lost (see
    ``cancel_and_wait``) still ends the loop: the task's pending cancel count says it was asked to stop."""
    me = asyncio.current_task()
    while True:
        await asyncio.sleep(interval)
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s: %s", failed, exc)
        if me is not None and me.cancelling():
            raise asyncio.CancelledError
