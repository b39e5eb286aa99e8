"""A submit that waits, on a node that runs its type and has a free slot, runs the task at once, before it is
stored: one that ends within ``RUN_AHEAD_S`` is stored with its end in one store call (``submit_finish``), one
that runs on is stored started on that node while it runs, and anything a submit would not start there is
stored first, as before.

In process, on a real store: a producer's task service given a worker on the same event loop, as a node has
them, its node a member the master has found alive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from shoal import service as service_module
from shoal.errors import StoreUnavailable
from shoal.models import AttemptOutcome, NodeRecord, TaskResult, TaskSpec, TaskState
from shoal.producer import Producer
from shoal.store.nodes import NodeRegistry
from shoal.store.tasks import Report
from shoal.testing import multiplier
from shoal.worker.executor import Executor
from shoal.worker.handlers import TaskContext, TaskTypes

NODE = "n1"
SLOW_S = 0.3


@pytest.fixture
async def producer(redis_url: str) -> AsyncIterator[Producer]:
    async with await Producer.connect(redis_url) as made:
        registry = made._tasks.registry
        await registry.beat(
            NodeRecord(name=NODE, host="127.0.0.1", http="127.0.0.1:1", grpc="127.0.0.1:2", slots=2, running=0,
                       pid=1, types=("echo", "slow", "fail"), run_tasks=True, last_beat=0.0, incarnation=1)
        )  # fmt: skip
        epoch = (await registry.take_lease("master", 30.0)).epoch
        await registry.set_state(epoch, NODE, "alive", 1, "admitted")
        yield made


@pytest.fixture
async def worker(producer: Producer) -> AsyncIterator[Executor]:
    """This node's worker, running echo, slow (SLOW_S) and fail, its ends handed to the producer's waits."""
    service = producer._tasks
    service.store.result_max_bytes = 4096  # as a node's store keeps results; the worker shares it
    types = TaskTypes()

    async def echo(ctx: TaskContext) -> str:
        return ctx.target

    async def slow(ctx: TaskContext) -> str:
        await asyncio.sleep(SLOW_S)
        return ctx.target

    async def fail(ctx: TaskContext) -> str:
        raise ValueError(f"no {ctx.target}")

    for name, handler in (("echo", echo), ("slow", slow), ("fail", fail)):
        types.add(name, handler)
    made = Executor(store=service.store, types=types, node=NODE, slots=2, retry_backoff=1.0, waits=service.hub)
    await made.recover()
    service.worker = made
    try:
        yield made
    finally:
        await made.close(grace=5)


def _calls(producer: Producer) -> list[str]:
    """The names of the scripts the service's store runs from now on."""
    scripts, names = producer._tasks.store.scripts, list[str]()
    run, run_steps = scripts.run, scripts.run_steps

    async def counted(name: str, *args: Any) -> Any:
        names.append(name)
        return await run(name, *args)

    async def counted_steps(name: str, *args: Any) -> Any:
        names.append(name)
        return await run_steps(name, *args)

    scripts.run, scripts.run_steps = counted, counted_steps  # type: ignore[method-assign]
    return names


def _ran_ahead(worker: Executor) -> list[str]:
    """The ids of the tasks ``worker`` is given to run ahead from now on."""
    ran, run_ahead = list[str](), worker.run_ahead

    def recorded(task: Any) -> Any:
        ran.append(task.id)
        return run_ahead(task)

    worker.run_ahead = recorded  # type: ignore[method-assign]
    return ran


async def _entries(producer: Producer) -> list[list[str]]:
    store = producer._tasks.store
    found: Any = await store.redis.xrange(store.keys.task_events)
    return [[e["state"] for e in orjson.loads(fields[b"e"])] for _, fields in found]


async def test_a_task_that_ends_at_once_is_stored_with_its_end_in_one_call(
    producer: Producer, worker: Executor
) -> None:
    service = producer._tasks
    calls = _calls(producer)
    async with asyncio.timeout(10 * multiplier()):
        task, stored, found = await service.submit_and_wait(TaskSpec(name="echo", type="echo", target="x"), 30)
    assert calls == ["submit_finish"]
    assert (task.state, task.node, stored, found and found.code) == (TaskState.SUCCEED, NODE, True, "x")
    assert (task, found) == await service.store.get_with_result(task.id)  # the answer is what the store holds
    assert [(a.number, a.node, a.outcome) for a in task.history] == [(1, NODE, "succeeded")]
    assert task.started_at is not None and task.finished_at is not None
    assert task.created_at <= task.started_at <= task.finished_at
    # one event entry tells the whole story; nothing is left assigned to the node or ordered to it
    assert (await _entries(producer))[-1] == ["WAITING", "INQUEUE", "RUNNING", "SUCCEED"]
    keys, redis = service.store.keys, service.store.redis
    assert await redis.smembers(keys.assigned(NODE)) == set()
    assert await redis.xlen(keys.inbox(NODE)) == 0
    assert worker.completed == 1 and not worker.running
    counts = await service.store.counts()  # in the index of its last state only
    assert (counts.get("SUCCEED"), counts.get("RUNNING", 0), counts.get("WAITING", 0)) == (1, 0, 0)


async def test_a_task_that_runs_on_is_stored_running_on_its_node_meanwhile(
    producer: Producer, worker: Executor
) -> None:
    service = producer._tasks
    calls = _calls(producer)
    waiting = asyncio.create_task(service.submit_and_wait(TaskSpec(name="slow", type="slow", target="y"), 30))
    async with asyncio.timeout(10 * multiplier()):
        while not service.hub._waiters:
            await asyncio.sleep(0.005)
    (task_id,) = service.hub._waiters
    running = await service.store.get(task_id)
    assert (running.state, running.node, running.attempts) == (TaskState.RUNNING, NODE, 1)
    async with asyncio.timeout(10 * multiplier()):
        task, stored, found = await waiting
    assert calls == ["submit", "finish"]
    assert (task.id, task.state, stored, found and found.code) == (task_id, TaskState.SUCCEED, True, "y")
    assert [(a.number, a.node, a.outcome) for a in task.history] == [(1, NODE, "succeeded")]
    assert task.started_at == running.started_at and task.finished_at is not None
    assert task.finished_at - task.started_at >= SLOW_S * 0.9  # started when it began, not when it was stored


async def test_a_task_that_fails_at_once_is_stored_and_reported_as_any_attempt(
    producer: Producer, worker: Executor
) -> None:
    service = producer._tasks
    async with asyncio.timeout(10 * multiplier()):
        task, _stored, found = await service.submit_and_wait(TaskSpec(name="fail", type="fail", target="z"), 30)
    assert (task.state, task.node, found) == (TaskState.RUNTIME_ERROR, NODE, None)
    assert task.error is not None and "no z" in task.error
    assert [(a.number, a.node, a.outcome) for a in task.history] == [(1, NODE, "failed")]
    assert worker.failed == 1


async def test_a_caller_that_gives_up_while_its_task_runs_ahead_leaves_it_stored_and_run(
    producer: Producer, worker: Executor
) -> None:
    service = producer._tasks
    ran = _ran_ahead(worker)
    waiting = asyncio.create_task(service.submit_and_wait(TaskSpec(name="slow", type="slow", target="w"), 30))
    async with asyncio.timeout(10 * multiplier()):
        while not ran:
            await asyncio.sleep(0.001)
    waiting.cancel()  # within the window: the task is not stored yet
    with pytest.raises(asyncio.CancelledError):
        await waiting
    async with asyncio.timeout(10 * multiplier()):
        while worker.running:  # stored after the window, then run to its end and reported
            await asyncio.sleep(0.02)
    task, found = await service.store.get_with_result(ran[0])
    assert (task.state, task.node, found and found.code) == (TaskState.SUCCEED, NODE, "w")


async def test_what_a_submit_would_not_start_here_is_stored_before_it_runs(
    producer: Producer, worker: Executor
) -> None:
    service = producer._tasks
    epoch = (await NodeRegistry(service.store.redis, service.store.keys).take_lease("master", 30.0)).epoch
    await service.store.publish_roster(epoch, [(NODE, 2, ["echo", "slow", "fail"])], [], 30)
    calls = _calls(producer)
    keyed = TaskSpec(name="echo", type="echo", target="k", idempotency_key="once")
    async with asyncio.timeout(10 * multiplier()):
        task, _stored, found = await service.submit_and_wait(keyed, 30)
    assert (task.state, found and found.code) == (TaskState.SUCCEED, "k")
    assert calls == ["submit", "finish"]  # stored (started here) first, reported after


async def test_a_node_that_is_no_healthy_member_stores_first(
    producer: Producer, worker: Executor, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = producer._tasks
    registry = service.registry
    epoch = (await registry.take_lease("master", 30.0)).epoch
    await registry.set_state(epoch, NODE, "suspect", 1, "beats late")
    monkeypatch.setattr(service_module, "TYPES_TTL", 0.0)  # the verdict read at once
    calls = _calls(producer)
    placing = asyncio.create_task(service.submit_and_wait(TaskSpec(name="echo", type="echo", target="d"), 0.5))
    async with asyncio.timeout(10 * multiplier()):
        task, _stored, _found = await placing
    assert calls[0] == "submit" and "submit_finish" not in calls
    assert task.state is TaskState.WAITING and not worker.running


async def test_a_task_stopped_while_it_runs_ahead_is_not_stored_and_the_caller_told_so(
    producer: Producer, worker: Executor
) -> None:
    service = producer._tasks
    ran = _ran_ahead(worker)
    waiting = asyncio.create_task(service.submit_and_wait(TaskSpec(name="slow", type="slow", target="s"), 30))
    async with asyncio.timeout(10 * multiplier()):
        while not ran or not worker.executing:
            await asyncio.sleep(0.001)
    await worker.drop_all()  # as when the master declares the node dead, within the window
    with pytest.raises(StoreUnavailable, match="stopped the task before it was stored"):
        async with asyncio.timeout(10 * multiplier()):
            await waiting
    assert (await service.store.counts())["total"] == 0  # not stored, so not run again elsewhere either


async def test_a_task_run_ahead_on_a_node_declared_dead_meanwhile_is_stored_for_another(
    producer: Producer, worker: Executor
) -> None:
    service = producer._tasks
    async with asyncio.timeout(10 * multiplier()):  # the node is a healthy member as far as this one knows
        await service.submit_and_wait(TaskSpec(name="echo", type="echo", target="warm"), 30)
    registry = service.registry
    epoch = (await registry.take_lease("master", 30.0)).epoch
    await registry.set_state(epoch, NODE, "dead", 1, "silent")  # its verdict, not read here yet (TYPES_TTL)
    calls = _calls(producer)
    async with asyncio.timeout(10 * multiplier()):
        task, stored, _found = await service.submit_and_wait(TaskSpec(name="slow", type="slow", target="d"), 0.2)
    assert calls == ["submit", "submit"]  # refused for this node, then stored as any submit
    assert (task.state, task.node, stored) == (TaskState.WAITING, None, True)
    keys, redis = service.store.keys, service.store.redis
    assert await redis.smembers(keys.assigned(NODE)) == set()
    assert not worker.running  # the attempt run ahead was stopped


async def test_storing_a_task_that_ran_ahead_again_writes_nothing_twice(producer: Producer, worker: Executor) -> None:
    store = producer._tasks.store
    spec = TaskSpec(name="echo", type="echo", target="x")
    result = TaskResult("t1", "x", NODE, 1, 0.0, {}, 0)
    report = Report("t1", 1, AttemptOutcome.SUCCEEDED, result=result)
    first = await store.create_ended(spec, "t1", NODE, 0.001, report)
    assert first is not None and first[0].state is TaskState.SUCCEED
    again = await store.create_ended(spec, "t1", NODE, 0.001, report)  # a retry whose first reply was lost
    assert again is None and await store.get_with_result("t1") == first
    assert await store.redis.zcard(store.keys.names) == 1
    assert (await store.counts())["total"] == 1
