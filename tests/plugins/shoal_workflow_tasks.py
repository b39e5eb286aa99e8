"""Task types the workflow tests load into real nodes with ``--task-modules shoal_workflow_tasks``: functions
whose values flow from parent to child, a handler that shows what it got from its parents, and one that
always fails."""

from __future__ import annotations

import json
import time

import shoal
from shoal.worker.handlers import Output, TaskContext, task_type


@shoal.task(name="wf.add")
def add(a: float, b: float, delay_s: float = 0.0) -> float:
    """``a + b``, after ``delay_s`` seconds (in a worker process)."""
    time.sleep(delay_s)
    return a + b


@shoal.task(name="wf.mul")
def mul(a: float, b: float) -> float:
    return a * b


@shoal.task(name="wf.collect")
def collect(*values: float) -> list[float]:
    """Its arguments as a list: what a fan-in got from its parents."""
    return list(values)


@task_type("wf.parents")
async def parents(ctx: TaskContext) -> Output:
    """The parents' results this task was given (``ctx.parents``), as JSON with sorted keys."""
    return Output(json.dumps(ctx.parents, sort_keys=True))


@task_type("wf.fail")
async def fail(ctx: TaskContext) -> Output:
    """Always fails, saying ``target``."""
    raise RuntimeError(f"failed on purpose: {ctx.target}")
