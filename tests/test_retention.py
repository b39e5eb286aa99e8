"""Retention on a real Redis, in-process: finished tasks leave the store, with everything kept about them,
once older than the retention or their own ``result_ttl_s``; nothing else does. The sweep is fenced by the
master's epoch and bounded per call; tasks finished before retention existed are indexed and expire too.
(tests/test_retention_api.py drives the same through real nodes.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson
import pytest
from redis.asyncio import Redis

from shoal.errors import StaleEpoch, TaskNotFound
from shoal.keys import Keys
from shoal.models import Task, TaskResult, TaskSpec, TaskState
from shoal.store.nodes import ALIVE, DEAD, NodeRegistry
from shoal.store.tasks import TaskStore
from shoal.testing import multiplier

pytestmark = pytest.mark.cluster


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def keys() -> Keys:
    return Keys("shoal")


@pytest.fixture
def store(redis: Redis, keys: Keys) -> TaskStore:
    return TaskStore(redis, keys, result_max_bytes=4096)


@pytest.fixture
async def epoch(redis: Redis, keys: Keys) -> int:
    return (await NodeRegistry(redis, keys).take_lease("master", 30)).epoch


async def run_to_end(
    store: TaskStore, epoch: int, n: int, *, ttl: float | None = None, fail: bool = False
) -> list[Task]:
    """``n`` tasks placed on node ``w``, started, and ended (SUCCEED with a result, or failed for good)."""
    created = await store.create([TaskSpec(name=f"t{i}", type="echo", target="x", result_ttl_s=ttl) for i in range(n)])
    await store.place(epoch, "w", n, [t.id for t in created])
    for task in created:
        attempt = await store.start(task.id, "w")
        assert attempt == 1
        if fail:
            await store.finish(task.id, "w", attempt, "failed", error="boom")
        else:
            result = TaskResult(task_id=task.id, code="x", node="w", attempt=attempt, finished_at=time.time())
            await store.finish(task.id, "w", attempt, "succeeded", result=result)
    return created


async def gone(store: TaskStore, task_id: str) -> bool:
    try:
        await store.get(task_id)
    except TaskNotFound:
        return True
    return False


async def sweep_until(store: TaskStore, epoch: int, retention_s: float, done: object) -> None:
    """Sweep as the master does until ``done()`` holds, within a deadline."""
    deadline = time.monotonic() + 10 * multiplier()
    while not await done():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the sweep did not remove what was due"
        await store.expire(epoch, retention_s, 100)
        await asyncio.sleep(0.02)


async def test_finished_tasks_past_the_retention_leave_with_all_that_is_kept_about_them(
    redis: Redis, keys: Keys, store: TaskStore, epoch: int
) -> None:
    finished = await run_to_end(store, epoch, 3)
    failed = await run_to_end(store, epoch, 1, fail=True)
    waiting = await store.create([TaskSpec(name="w", type="echo", target="x")])
    assert not await redis.exists(keys.legacy_all, keys.legacy_ended)  # a task is in its state's index only
    late = {"node": "v", "attempt": 1, "outcome": "failed", "error": "late", "finished_at": 1.0, "result": ""}
    await redis.rpush(keys.dupes(finished[0].id), orjson.dumps(late))  # a late result kept beside it

    assert await store.expire(epoch, 3600, 100) == (0, False)  # nothing is an hour old
    ended = [t.id for t in finished + failed]
    await sweep_until(store, epoch, 0.001, lambda: _all_gone(store, ended))

    for task_id in ended:
        for key in (keys.task(task_id), keys.attempts(task_id), keys.dupes(task_id), keys.result(task_id)):
            assert not await redis.exists(key)
    counts = await store.counts()
    assert (counts["SUCCEED"], counts["RUNTIME_ERROR"], counts["WAITING"], counts["total"]) == (0, 0, 1, 1)
    assert await redis.zcard(keys.state_index("SUCCEED")) == await redis.zcard(keys.state_index("RUNTIME_ERROR")) == 0
    assert await redis.zrange(keys.names, 0, -1) == [f"w\0{await store.last_seq()}\0{waiting[0].id}".encode()]
    assert (await store.get(waiting[0].id)).state is TaskState.WAITING  # never what has not ended


async def _all_gone(store: TaskStore, ids: list[str]) -> bool:
    return all([await gone(store, task_id) for task_id in ids])


async def test_a_task_may_ask_to_be_kept_less_and_retention_zero_keeps_the_rest(
    redis: Redis, keys: Keys, store: TaskStore, epoch: int
) -> None:
    short = await run_to_end(store, epoch, 2, ttl=0.05)
    kept = await run_to_end(store, epoch, 2)
    assert (await store.get(short[0].id)).result_ttl_s == 0.05
    await sweep_until(store, epoch, 0, lambda: _all_gone(store, [t.id for t in short]))
    for task in kept:
        assert (await store.get(task.id)).state is TaskState.SUCCEED
    assert await redis.zcard(keys.expiry) == 0


async def test_a_deposed_master_removes_nothing_and_each_call_is_bounded(
    redis: Redis, keys: Keys, store: TaskStore, epoch: int
) -> None:
    finished = await run_to_end(store, epoch, 5)
    await asyncio.sleep(0.01)
    await redis.incr(keys.epoch)
    with pytest.raises(StaleEpoch):
        await store.expire(epoch, 0.001, 100)
    assert (await store.counts())["SUCCEED"] == 5
    current = epoch + 1
    assert await store.expire(current, 0.001, 2) == (2, True)
    assert await store.expire(current, 0.001, 2) == (2, True)
    assert await store.expire(current, 0.001, 2) == (1, False)
    assert all([await gone(store, t.id) for t in finished])


async def test_a_task_deleted_or_killed_and_deleted_leaves_nothing_for_the_sweep(
    redis: Redis, keys: Keys, store: TaskStore, epoch: int
) -> None:
    finished = await run_to_end(store, epoch, 1, ttl=30)
    await store.delete(finished[0].id)
    running = await store.create([TaskSpec(name="r", type="echo", target="x", result_ttl_s=30)])
    await store.place(epoch, "w", 1, [running[0].id])
    await store.start(running[0].id, "w")
    await store.delete(running[0].id)  # killed, then deleted, in one step
    assert (await store.counts())["total"] == 0
    assert await redis.zcard(keys.expiry) == await redis.zcard(keys.names) == 0
    killed = await store.create([TaskSpec(name="k", type="echo", target="x")])
    await store.kill(killed[0].id)
    await sweep_until(store, epoch, 0.001, lambda: gone(store, killed[0].id))  # expires like the others


async def test_a_task_made_long_ago_that_ended_lately_holds_up_no_younger_one(
    redis: Redis, keys: Keys, store: TaskStore, epoch: int
) -> None:
    """The sweep walks a finished state's index from the oldest-made task: one made before the others but
    ended after the cutoff is passed over, and the younger tasks behind it that are due go all the same."""
    (long,) = await store.create([TaskSpec(name="long", type="echo", target="x")])
    await store.place(epoch, "v", 1, [long.id])
    attempt = await store.start(long.id, "v")
    short = await run_to_end(store, epoch, 3)
    await asyncio.sleep(0.3)
    assert attempt == 1
    result = TaskResult(task_id=long.id, code="x", node="v", attempt=attempt, finished_at=time.time())
    await store.finish(long.id, "v", attempt, "succeeded", result=result)

    await sweep_until(store, epoch, 0.2, lambda: _all_gone(store, [t.id for t in short]))
    assert (await store.get(long.id)).state is TaskState.SUCCEED
    await sweep_until(store, epoch, 0.001, lambda: gone(store, long.id))


async def test_an_index_entry_left_without_its_task_is_swept(
    redis: Redis, keys: Keys, store: TaskStore, epoch: int
) -> None:
    await redis.zadd(keys.state_index("SUCCEED"), {"no-such-task": 1})
    await sweep_until(store, epoch, 3600, lambda: _no_entry(redis, keys))


async def _no_entry(redis: Redis, keys: Keys) -> bool:
    return await redis.zscore(keys.state_index("SUCCEED"), "no-such-task") is None


async def test_nodes_dead_and_silent_for_long_are_forgotten_with_their_inbox(
    redis: Redis, keys: Keys, epoch: int
) -> None:
    registry = NodeRegistry(redis, keys)
    for name, state in (("gone", DEAD), ("holding", DEAD), ("quiet", ALIVE), ("recent", DEAD)):
        await redis.hset(keys.node(name), mapping={"incarnation": 1})
        assert await registry.set_state(epoch, name, state, 1, "test")
        await redis.xadd(keys.inbox(name), {"op": "run", "ids": "x"})
    now = float((await redis.time())[0])
    await redis.zadd(keys.nodes, {"gone": now - 7200, "holding": now - 7200, "quiet": now - 7200, "recent": now})
    await redis.sadd(keys.assigned("holding"), "some-task")

    with pytest.raises(StaleEpoch):
        await registry.prune(epoch - 1, 3600, 10)
    assert await registry.prune(epoch, 3600, 10) == ["gone"]
    assert not await redis.exists(keys.node("gone"), keys.inbox("gone"))
    assert await redis.zscore(keys.nodes, "gone") is None
    for kept in ("holding", "quiet", "recent"):  # tasks still placed there, not declared dead, or not silent
        assert await redis.exists(keys.node(kept), keys.inbox(kept)) == 2
