"""A task its submit placed on a node with room comes with its run order (the order carries the task as
stored), so the node runs it at once, before it reports the start: one that ends within START_WITH_END_S is
started and ended in one call to the store; one that runs on has its start stored then, and is stopped if the
task may no longer start there.

In process, on a real store: a producer stores the tasks (placed on node NODE, which has room on the
master's roster) and a worker of NODE on the same event loop runs them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from shoal.models import AttemptOutcome, NodeRecord, TaskSpec, TaskState
from shoal.producer import Producer
from shoal.store.nodes import NodeRegistry
from shoal.store.tasks import TaskStore
from shoal.testing import multiplier
from shoal.worker.executor import START_WITH_END_S, Executor
from shoal.worker.handlers import TaskContext, TaskTypes

NODE = "n1"


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[TaskStore]:
    """The store as NODE's worker has it, NODE alive with room on the master's roster: a submit places there."""
    async with await Producer.connect(redis_url) as producer:
        service = producer._tasks
        await service.registry.beat(
            NodeRecord(name=NODE, host="127.0.0.1", http="127.0.0.1:1", grpc="127.0.0.1:2", slots=4, running=0,
                       pid=1, types=("echo", "slow"), run_tasks=True, last_beat=0.0, incarnation=1)
        )  # fmt: skip
        worker_store = TaskStore(service.store.redis, service.store.keys, result_max_bytes=4096)
        epoch = (await NodeRegistry(worker_store.redis, worker_store.keys).take_lease("master", 30.0)).epoch
        await worker_store.publish_roster(epoch, [(NODE, 4, ["echo", "slow"])], [], 30)
        yield worker_store


class Slow:
    """A task type that runs until ``release`` is set, and says whether it was stopped instead."""

    def __init__(self) -> None:
        self.running = asyncio.Event()
        self.release = asyncio.Event()
        self.stopped = asyncio.Event()

    async def __call__(self, ctx: TaskContext) -> str:
        self.running.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.stopped.set()
            raise
        return ctx.target


async def echo(ctx: TaskContext) -> str:
    return ctx.target


@pytest.fixture
async def worker(store: TaskStore) -> AsyncIterator[tuple[Executor, Slow, list[Any]]]:
    """NODE's worker, reading its inbox; the slow type's handler; the starts it reported, one list per call."""
    slow, types = Slow(), TaskTypes()
    types.add("echo", echo)
    types.add("slow", slow)
    executor = Executor(store=store, types=types, node=NODE, slots=4, retry_backoff=1.0)
    starts: list[Any] = []
    begin_many = store.begin_many

    async def counted(node: str, asked: Any) -> Any:
        starts.append(list(asked))
        return await begin_many(node, asked)

    store.begin_many = counted  # type: ignore[method-assign]
    await executor.recover()
    runner = asyncio.create_task(executor.run())
    yield executor, slow, starts
    await executor.close(grace=0)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


async def until(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout * multiplier()
    while not (found := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)
    return found


async def ended(store: TaskStore, task_id: str) -> Any:
    async def check() -> Any:
        task = await store.get(task_id)
        return task if task.state is TaskState.SUCCEED else None

    return await until(check, f"task {task_id} to succeed")


async def test_a_task_whose_order_carries_it_is_started_and_ended_in_one_call(
    store: TaskStore, worker: tuple[Executor, Slow, list[Any]]
) -> None:
    _, _, starts = worker
    (created,) = await store.create([TaskSpec(name="echo", type="echo", target="x")])
    assert (created.state, created.node) == (TaskState.INQUEUE, NODE)
    task = await ended(store, created.id)
    assert starts == []  # no start of its own: the report started it
    result = await store.result(task.id)
    assert (task.attempts, result.code, result.attempt) == (1, "x", 1)
    assert [(a.number, a.node, a.outcome) for a in task.history] == [(1, NODE, AttemptOutcome.SUCCEEDED)]
    # started when the node began it, not when it reported
    assert task.started_at is not None and task.finished_at is not None
    assert created.created_at <= task.started_at <= task.finished_at


async def test_a_carried_task_that_runs_on_has_its_start_stored_while_it_runs(
    store: TaskStore, worker: tuple[Executor, Slow, list[Any]]
) -> None:
    _, slow, starts = worker
    (created,) = await store.create([TaskSpec(name="slow", type="slow", target="x")])
    async with asyncio.timeout(10 * multiplier()):
        await slow.running.wait()
    began = time.time()

    async def running() -> Any:
        task = await store.get(created.id)
        return task if task.state is TaskState.RUNNING else None

    task = await until(running, "the start to be stored while the task runs")
    assert not slow.release.is_set() and [s[0] for s in starts] == [(created.id, False)]
    assert task.started_at is not None and task.started_at <= began + START_WITH_END_S + 0.01
    slow.release.set()
    task = await ended(store, created.id)
    assert [(a.number, a.outcome) for a in task.history] == [(1, AttemptOutcome.SUCCEEDED)]


async def test_a_carried_task_no_longer_placed_here_is_stopped_without_a_report(store: TaskStore) -> None:
    """Handed back (or re-placed) after its order went out: its start is refused once it has run on for
    START_WITH_END_S, and the attempt is stopped; nothing is stored of it."""
    (created,) = await store.create([TaskSpec(name="slow", type="slow", target="x")])
    assert await store.hand_back(NODE, [created.id], "re-placed for the test")
    slow, types = Slow(), TaskTypes()
    types.add("slow", slow)
    executor = Executor(store=store, types=types, node=NODE, slots=4, retry_backoff=1.0)
    await store.ensure_groups(NODE)
    runner = asyncio.create_task(executor.run())
    try:
        async with asyncio.timeout(10 * multiplier()):
            await slow.running.wait()
            await slow.stopped.wait()
            while created.id in executor.running:
                await asyncio.sleep(0.01)
    finally:
        await executor.close(grace=0)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    task = await store.get(created.id)
    assert (task.state, task.late_results) == (TaskState.WAITING, ())
    assert executor.completed + executor.failed == 0


async def test_a_carried_task_that_ended_after_it_was_handed_back_is_kept_as_a_late_result(store: TaskStore) -> None:
    """Ended at once, but no longer placed here when its report starts it: the report is refused as a late one
    (kept beside the task), and the task is not started."""
    (created,) = await store.create([TaskSpec(name="echo", type="echo", target="x")])
    assert await store.hand_back(NODE, [created.id], "re-placed for the test")
    types = TaskTypes()
    types.add("echo", echo)
    executor = Executor(store=store, types=types, node=NODE, slots=4, retry_backoff=1.0)
    await store.ensure_groups(NODE)
    runner = asyncio.create_task(executor.run())
    try:

        async def reported() -> bool:
            return executor.completed == 1

        await until(reported, "the attempt's report")
    finally:
        await executor.close(grace=0)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    task = await store.get(created.id)
    assert (task.state, task.attempts) == (TaskState.WAITING, 0)
    assert [(late.node, late.attempt, late.outcome) for late in task.late_results] == [(NODE, 1, "succeeded")]


async def test_an_order_whose_tasks_cannot_be_read_is_taken_without_them(store: TaskStore) -> None:
    """The worker then starts each task as it would one placed by the master (a start that reads it)."""
    await store.ensure_groups(NODE)
    inbox = store.keys.inbox(NODE)
    await store.redis.xadd(inbox, {"op": "run", "ids": "a,b", "tasks": '[["name", "x"]]'})
    await store.redis.xadd(inbox, {"op": "run", "ids": "c", "tasks": "not json"})
    orders = await store.read_orders(NODE, again=False, count=10, block_ms=100)
    assert [(o.op, o.ids, o.carried) for o in orders] == [("run", ["a", "b"], {}), ("run", ["c"], {})]
