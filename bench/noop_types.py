"""Two task types that do nothing, for ``bench/isolation.py``: the same no-op run two ways.

Loaded into the benchmark's nodes with ``--task-modules bench.noop_types`` (the repository root on
PYTHONPATH). Both return their target, as ``echo`` does, so any shoal client's round trip accepts them.

- ``noop-inline``: ``async def``, runs on the node's event loop (``isolation="inline"``).
- ``noop-process``: a plain function, runs in a warm worker process of the node's pool
  (``isolation="process"``, the default for sync types, spelt out here).
"""

from __future__ import annotations

from shoal import TaskContext, task_type

INLINE = "noop-inline"
PROCESS = "noop-process"


@task_type(INLINE, isolation="inline")
async def noop_inline(ctx: TaskContext) -> str:
    return ctx.target


@task_type(PROCESS, isolation="process")
def noop_process(ctx: TaskContext) -> str:
    return ctx.target
