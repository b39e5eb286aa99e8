"""The task type the selftest's nodes run (loaded with ``--task-modules shoal.selftest.tasks``).

``selftest`` sleeps ``params.delay_s``, fails while its attempt number is at most ``params.fail_first`` (a
deterministic flaky task), and records every execution in the run's journal: one JSON line when it starts
and one when it ends, with the task, attempt, node, pid and wall time. The journal is written beside the
store, so it tells what really ran even when the store forgets, which is how the checker proves that no
attempt runs twice at once and none starts after its kill was acknowledged.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from typing import Any

import orjson

from shoal.errors import InvalidInput
from shoal.worker.handlers import Output, TaskContext, task_type

TYPE = "selftest"
MAX_DELAY_S = 600.0


class PlannedFailure(RuntimeError):
    """Raised by an attempt that the task's ``fail_first`` says must fail."""


def validate(target: str, params: dict[str, Any]) -> None:
    journal = params.get("journal")
    if not isinstance(journal, str) or not os.path.isabs(journal):
        raise InvalidInput("params.journal must be the absolute path of the run's journal file")
    delay = params.get("delay_s", 0)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not math.isfinite(delay):
        raise InvalidInput("params.delay_s must be a number of seconds")
    if not 0 <= delay <= MAX_DELAY_S:
        raise InvalidInput(f"params.delay_s must be between 0 and {MAX_DELAY_S:g}")
    fail_first = params.get("fail_first", 0)
    if isinstance(fail_first, bool) or not isinstance(fail_first, int) or fail_first < 0:
        raise InvalidInput("params.fail_first must be a whole number of attempts, 0 or more")


def record(journal: str, event: dict[str, Any]) -> None:
    """Append one line in a single write to a file opened with O_APPEND, so lines from several node
    processes never interleave, and flush it to the kernel at once: a node SIGKILLed right after keeps it."""
    line = orjson.dumps(event) + b"\n"
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@task_type(TYPE, validate=validate, isolation="inline")
async def selftest(ctx: TaskContext) -> Output:
    journal = str(ctx.params["journal"])
    base = {"task": ctx.task_id, "attempt": ctx.attempt, "node": ctx.node, "pid": os.getpid()}
    record(journal, {**base, "event": "start", "at": time.time()})
    outcome = "cancelled"
    try:
        delay = float(ctx.params.get("delay_s", 0))
        if delay > 0:
            await asyncio.sleep(delay)
        if ctx.attempt <= int(ctx.params.get("fail_first", 0)):
            outcome = "failed"
            raise PlannedFailure(f"attempt {ctx.attempt} fails as planned (fail_first {ctx.params['fail_first']})")
        outcome = "succeeded"
        return Output(ctx.target)
    finally:
        record(journal, {**base, "event": "end", "at": time.time(), "outcome": outcome})
