"""Task types that the end-to-end tests load into real nodes with ``--task-modules shoal_test_types``.

Each one shows one behaviour a test needs to see from outside the node: progress written to a file
(to prove a killed task really stops), a first attempt that fails (retries), and a sync function (run in
a worker process).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from shoal.worker.handlers import Output, TaskContext, task_type


@task_type("progress")
async def progress(ctx: TaskContext) -> Output:
    """Append one line per tick to the file ``target`` for ``params.seconds``; the count is the result."""
    path = Path(ctx.target)
    ticks = int(float(ctx.params.get("seconds", 5)) / 0.05)
    for i in range(ticks):
        with path.open("a") as f:
            f.write(f"{i}\n")
        await asyncio.sleep(0.05)
    return Output(str(ticks), {"pid": os.getpid()})


@task_type("flaky")
async def flaky(ctx: TaskContext) -> str:
    """Fail every attempt up to ``params.failures`` (default 1), then succeed with the attempt number."""
    if ctx.attempt <= int(ctx.params.get("failures", 1)):
        raise RuntimeError(f"flaky failure on attempt {ctx.attempt}")
    return f"ok on attempt {ctx.attempt}"


@task_type("upper")
def upper(ctx: TaskContext) -> Output:
    """A plain function: runs in a worker process of the node's pool, never on the node's event loop."""
    time.sleep(float(ctx.params.get("sleep_s", 0)))
    return Output(ctx.target.upper(), {"pid": os.getpid()})
