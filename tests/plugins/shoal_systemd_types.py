"""A task type for the watchdog tests, loaded with ``--task-modules shoal_systemd_types``.

``block_loop`` is the classic bug the watchdog is there for: an async handler that calls a blocking
function, holding the node's whole event loop (heartbeats, API, every other task) for its duration.
"""

from __future__ import annotations

import time

from shoal.worker.handlers import TaskContext, task_type


@task_type("block_loop")
async def block_loop(ctx: TaskContext) -> str:
    """Sleep ``params.seconds`` (default 3) without yielding to the event loop."""
    seconds = float(ctx.params.get("seconds", 3))
    time.sleep(seconds)  # deliberately blocking: this is what the test looks for
    return f"held the loop for {seconds:g}s"
