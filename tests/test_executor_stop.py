"""A task a node took beyond its slots (its prefetch) and has not started goes back to the cluster: when the
node stops (the one running finishes within the grace period), and when it has waited too long for a slot.
In process, with the node's executor on a real store."""

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
from shoal.worker import prefetch
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


class Holding:
    """An executor with one slot, a task running in it until ``release`` is set, and one taken beyond it."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self.release = asyncio.Event()
        self.started: list[str] = []
        types = TaskTypes()
        types.add("hold", self.hold)
        self.executor = Executor(store=store, types=types, node=NODE, slots=1, retry_backoff=1.0)

    async def hold(self, ctx: TaskContext) -> str:
        self.started.append(ctx.target)
        await self.release.wait()
        return "done"

    async def start(self) -> tuple[str, str]:
        await self.executor.recover()
        first, queued = await self.store.create([TaskSpec(name=n, type="hold", target=n) for n in ("first", "queued")])
        epoch = (await NodeRegistry(self.store.redis, self.store.keys).take_lease("master", 30.0)).epoch
        assert await self.store.place(epoch, NODE, 2, [first.id, queued.id]) == [1, 1]  # one in the slot, one beyond
        return first.id, queued.id


async def test_a_stopping_node_hands_back_a_prefetched_task_without_starting_it(store: TaskStore) -> None:
    held = Holding(store)
    executor, started, release = held.executor, held.started, held.release
    first, queued = await held.start()
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
    assert (await store.get(first)).state is TaskState.SUCCEED
    back = await store.get(queued)
    assert (back.state, back.node, back.attempts) == (TaskState.WAITING, None, 0)


async def test_a_task_taken_beyond_the_slots_that_waits_too_long_is_handed_back(
    store: TaskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prefetch, "GIVE_BACK_S", 0.3)
    held = Holding(store)
    first, queued = await held.start()
    runner = asyncio.create_task(held.executor.run())
    try:
        async with asyncio.timeout(10 * multiplier()):
            while (await store.get(queued)).state is not TaskState.WAITING:
                await asyncio.sleep(0.02)
        back = await store.get(queued)
        assert (back.node, back.attempts, held.started) == (None, 0, ["first"])  # the first still runs
        assert (await store.get(first)).state is TaskState.RUNNING
        held.release.set()
    finally:
        await held.executor.close(grace=5 * multiplier())
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
