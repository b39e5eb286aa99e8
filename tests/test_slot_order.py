"""A node's slots as the store shows them: the end of an attempt reaches the store before the start of the
next task in its slot, so a node never shows more tasks running than it has slots, however late the end's
report is on its way. In process, with the node's executor on a real store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from shoal.keys import Keys
from shoal.models import TaskSpec, TaskState
from shoal.store.nodes import NodeRegistry
from shoal.store.tasks import TaskStore
from shoal.testing import multiplier
from shoal.worker.executor import Executor
from shoal.worker.handlers import TaskContext, TaskTypes

NODE = "n1"
#: How late every store call that carries a report is sent.
LATE_S = 0.2


@pytest.fixture
async def store(redis_admin_url: str) -> AsyncIterator[TaskStore]:
    redis = Redis.from_url(redis_admin_url)
    try:
        yield TaskStore(redis, Keys("slot-order"), result_max_bytes=4096)
    finally:
        await redis.aclose()


def late_reports(store: TaskStore) -> None:
    """Send each store call that carries a report ``LATE_S`` late, as on a busy connection."""
    scripts = store.scripts
    run, run_steps = scripts.run, scripts.run_steps

    async def run_late(name: str, *args: Any) -> Any:
        if name == "finish":
            await asyncio.sleep(LATE_S)
        return await run(name, *args)

    async def run_steps_late(name: str, *args: Any) -> Any:
        if "finish" in name:
            await asyncio.sleep(LATE_S)
        return await run_steps(name, *args)

    scripts.run, scripts.run_steps = run_late, run_steps_late  # type: ignore[method-assign]


async def most_running_at_once(store: TaskStore) -> int:
    """Replaying the store's task events: the most tasks RUNNING at once."""
    running: set[str] = set()
    most = 0
    entries: Any = await store.redis.xrange(store.keys.task_events)
    for _, fields in entries:
        for event in orjson.loads(fields[b"e"]):
            if event["state"] == "RUNNING":
                running.add(event["id"])
            else:
                running.discard(event["id"])
            most = max(most, len(running))
    return most


async def test_a_one_slot_node_whose_report_is_late_never_shows_two_tasks_running(store: TaskStore) -> None:
    seen_first: list[TaskState] = []
    types = TaskTypes()

    async def quick(ctx: TaskContext) -> str:
        return ctx.target

    async def second(ctx: TaskContext) -> str:
        seen_first.append((await store.get(first.id)).state)
        return ctx.target

    types.add("quick", quick)
    types.add("second", second)
    executor = Executor(store=store, types=types, node=NODE, slots=1, retry_backoff=1.0)
    await executor.recover()
    late_reports(store)
    first, then = await store.create(
        [TaskSpec(name="first", type="quick", target="a"), TaskSpec(name="then", type="second", target="b")]
    )
    epoch = (await NodeRegistry(store.redis, store.keys).take_lease("master", 30.0)).epoch
    assert await store.place(epoch, NODE, 2, [first.id, then.id]) == [1, 1]  # one in the slot, one beyond
    runner = asyncio.create_task(executor.run())
    try:
        async with asyncio.timeout(10 * multiplier()):
            while (await store.get(then.id)).state is not TaskState.SUCCEED:
                await asyncio.sleep(0.02)
    finally:
        await executor.close(grace=5 * multiplier())
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert seen_first == [TaskState.SUCCEED]  # the first had ended in the store when the second began
    assert await most_running_at_once(store) == 1
    assert (executor.completed, executor.failed) == (2, 0)
