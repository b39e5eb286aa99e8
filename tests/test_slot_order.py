"""A node's slots as the store shows them: the end of an attempt reaches the store before the start of the
next task in its slot, so a node never shows more tasks running than it has slots, however late the end's
report, or the submit of a task it ran before storing it, is on its way. In process, with the node's
executor (and for a task run ahead, its task service) on a real store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from shoal.keys import Keys
from shoal.models import NodeRecord, TaskSpec, TaskState
from shoal.producer import Producer
from shoal.store.nodes import NodeRegistry
from shoal.store.tasks import TaskStore
from shoal.testing import multiplier
from shoal.worker.executor import Executor
from shoal.worker.handlers import TaskContext, TaskTypes

NODE = "n1"
#: How late every store call that carries a report (or the submit of a task run ahead) is sent.
LATE_S = 0.2
#: How long the task run ahead runs (longer than the run-ahead window, shorter than LATE_S) and the next.
RUNS_S = {"ahead": 0.1, "queued": 1.5 * LATE_S}


@pytest.fixture
async def store(redis_admin_url: str) -> AsyncIterator[TaskStore]:
    redis = Redis.from_url(redis_admin_url)
    try:
        yield TaskStore(redis, Keys("slot-order"), result_max_bytes=4096)
    finally:
        await redis.aclose()


def late_reports(store: TaskStore, late: str = "finish") -> None:
    """Send each store call that runs the script ``late`` ``LATE_S`` late, as on a busy connection."""
    scripts = store.scripts
    run, run_steps = scripts.run, scripts.run_steps

    async def run_late(name: str, *args: Any) -> Any:
        if name == late:
            await asyncio.sleep(LATE_S)
        return await run(name, *args)

    async def run_steps_late(name: str, *args: Any) -> Any:
        if late in name:
            await asyncio.sleep(LATE_S)
        return await run_steps(name, *args)

    scripts.run, scripts.run_steps = run_late, run_steps_late  # type: ignore[method-assign]


async def run_until_ended(executor: Executor, store: TaskStore, task_id: str) -> None:
    """Run ``executor`` until the task ``task_id`` has ended, then stop it."""
    runner = asyncio.create_task(executor.run())
    try:
        async with asyncio.timeout(10 * multiplier()):
            while not (await store.get(task_id)).state.terminal:
                await asyncio.sleep(0.02)
    finally:
        await executor.close(grace=5 * multiplier())
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


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
    await run_until_ended(executor, store, then.id)
    assert seen_first == [TaskState.SUCCEED]  # the first had ended in the store when the second began
    assert await most_running_at_once(store) == 1
    assert (executor.completed, executor.failed) == (2, 0)


async def test_a_one_slot_node_whose_task_run_ahead_ends_before_its_submit_is_stored_shows_one_running(
    redis_url: str,
) -> None:
    async with await Producer.connect(redis_url) as producer:
        service = producer._tasks
        store, registry = service.store, service.registry
        store.result_max_bytes = 4096  # as a node's store keeps results; the worker shares it
        await registry.beat(
            NodeRecord(name=NODE, host="127.0.0.1", http="127.0.0.1:1", grpc="127.0.0.1:2", slots=1, running=0,
                       pid=1, types=("sleep",), run_tasks=True, last_beat=0.0, incarnation=1)
        )  # fmt: skip
        epoch = (await registry.take_lease("master", 30.0)).epoch
        await registry.set_state(epoch, NODE, "alive", 1, "admitted")
        types = TaskTypes()

        async def sleep(ctx: TaskContext) -> str:
            await asyncio.sleep(RUNS_S[ctx.target])
            return ctx.target

        types.add("sleep", sleep)
        executor = Executor(store=store, types=types, node=NODE, slots=1, retry_backoff=1.0, waits=service.hub)
        await executor.recover()
        service.worker = executor
        runner = asyncio.create_task(executor.run())
        try:
            (queued,) = await store.create([TaskSpec(name="queued", type="sleep", target="queued")])
            late_reports(store, late="submit")  # the submit of the task run ahead is stored after it ended
            waiting = asyncio.create_task(service.submit_and_wait(TaskSpec(name="a", type="sleep", target="ahead"), 30))
            async with asyncio.timeout(10 * multiplier()):
                while not executor.executing:  # the task run ahead holds the one slot
                    await asyncio.sleep(0.002)
            assert await store.place(epoch, NODE, 2, [queued.id]) == [1]  # taken beyond the slot: it waits
            async with asyncio.timeout(10 * multiplier()):
                ahead, _stored, found = await waiting
                while not (await store.get(queued.id)).state.terminal:
                    await asyncio.sleep(0.02)
        finally:
            await executor.close(grace=5 * multiplier())
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        assert (ahead.state, ahead.node, found and found.code) == (TaskState.SUCCEED, NODE, "ahead")
        assert (await store.get(queued.id)).state is TaskState.SUCCEED
        assert await most_running_at_once(store) == 1
