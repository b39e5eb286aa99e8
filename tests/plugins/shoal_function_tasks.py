"""Plain Python functions made task types with ``@shoal.task``, for tests/test_functions.py, loaded into real
nodes with ``--task-modules shoal_function_tasks``.

Sync functions run in the node's worker processes by default, ``async def`` ones on its event loop; each
kind is here in both places. ``whoami`` and ``greet`` read ``shoal.current_task()``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import shoal


@shoal.task
def add(a: int, b: int) -> int:
    """Sync, so in a worker process."""
    return a + b


@shoal.task(isolation="inline")
def scale(values: list[float], factor: float = 2.0, *, offset: float = 0.0) -> list[float]:
    """Sync, on the node's loop (in a thread)."""
    return [v * factor + offset for v in values]


@shoal.task
async def greet(name: str, *, punctuation: str = "!") -> dict[str, Any]:
    """``async def``, so on the node's loop; says which task it is and that it ran in the node itself."""
    await asyncio.sleep(0)
    ctx = shoal.current_task()
    return {"greeting": f"hello {name}{punctuation}", "task": ctx.task_id, "attempt": ctx.attempt,
            "pid": os.getpid()}  # fmt: skip


@shoal.task(isolation="process")
async def greet_apart(name: str) -> dict[str, Any]:
    """``async def`` in a worker process."""
    await asyncio.sleep(0)
    return {"greeting": f"hi {name}", "task": shoal.current_task().task_id, "pid": os.getpid()}


@shoal.task
def whoami() -> dict[str, Any]:
    """Sync, in a worker process: what ``current_task()`` says there."""
    ctx = shoal.current_task()
    return {"task": ctx.task_id, "attempt": ctx.attempt, "node": ctx.node, "pid": os.getpid()}


@shoal.task
def nothing() -> None:
    """Returns None: a value of null, still a value."""
    return None


@shoal.task(name="fn.text")
def text(word: str) -> str:
    """A string value: the result's code is the string itself."""
    return word.upper()


@shoal.task
def not_json() -> Any:
    """Returns what JSON cannot hold: the attempt fails saying so."""
    return {1, 2, 3}


@shoal.task(isolation="inline")
def not_json_inline() -> Any:
    return object()


@shoal.task
def only_positional(a: int, /, b: int = 0) -> int:
    return a - b


@shoal.task
def anything(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@shoal.task(timeout_s=7, priority=8, max_retries=1)
def configured() -> str:
    """Its submits take these fields unless they say otherwise, from any client."""
    return "ok"
