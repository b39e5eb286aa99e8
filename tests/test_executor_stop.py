"""A node that stops does not start a task it took beyond its slots (its prefetch): that task is handed back
with the rest, for another node, while the one running finishes within the grace period. In process, with
the node's executor on a real store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

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


@pytest.fixture
async def store(redis_admin_url: str) -> AsyncIterator[TaskStore]:
    redis = Redis.from_url(redis_admin_url)
    try:
        yield TaskStore(redis, Keys("stopping"), result_max_bytes=4096)
    finally:
        await redis.aclose()


async def test_a_stopping_node_hands_back_a_prefetched_task_without_starting_it(store: TaskStore) -> None:
    release = asyncio.Event()
    started: list[str] = []

    async def hold(ctx: TaskContext) -> str:
        started.append(ctx.target)
        await release.wait()
        return "done"

    types = TaskTypes()
    types.add("hold", hold)
    executor = Executor(store=store, types=types, node=NODE, slots=1, retry_backoff=1.0)
    await executor.recover()
    first, queued = await store.create([TaskSpec(name=n, type="hold", target=n) for n in ("first", "queued")])
    registry = NodeRegistry(store.redis, store.keys)
    epoch = (await registry.take_lease("master", 30.0)).epoch
    assert await store.place(epoch, NODE, 2, [first.id, queued.id]) == [1, 1]  # one slot, one taken beyond it
    runner = asyncio.create_task(executor.run())
    try:
        async with asyncio.timeout(10 * multiplier()):
            while started != ["first"] or len(executor.running) != 2:
                await asyncio.sleep(0.01)
        closing = asyncio.create_task(executor.close(grace=10 * multiplier()))
        await asyncio.sleep(0)  # the executor knows it is stopping before the slot frees
        release.set()
        async with asyncio.timeout(15 * multiplier()):
            await closing
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert started == ["first"]  # the queued one never started here
    assert (await store.get(first.id)).state is TaskState.SUCCEED
    back = await store.get(queued.id)
    assert (back.state, back.node, back.attempts) == (TaskState.WAITING, None, 0)
