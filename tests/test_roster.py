"""A task placed as it is submitted: the master publishes a roster of its nodes, and the submit script
places on them while they have room and nothing of the type waits before it. On a real Redis, in-process;
the cluster's end-to-end tests run every task through this path as well."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from shoal.cluster.scheduler import ROSTER_TTL_S, Scheduler
from shoal.errors import StaleEpoch
from shoal.keys import SCHEDULER_GROUP, WORKER_GROUP, Keys
from shoal.models import NodeRecord, TaskSpec, TaskState
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


def specs(n: int, task_type: str = "echo") -> list[TaskSpec]:
    return [TaskSpec(name=f"t{i}", type=task_type, target=f"x{i}") for i in range(n)]


async def inbox_ids(redis: Redis, keys: Keys, node: str) -> list[list[str]]:
    """The run orders in ``node``'s inbox, each as the ids it carries."""
    entries: Any = await redis.xrange(keys.inbox(node))
    return [f[b"ids"].decode().split(",") for _, f in entries if f.get(b"op") == b"run"]


async def queued(redis: Redis, keys: Keys, task_type: str = "echo") -> list[str]:
    entries: Any = await redis.xrange(keys.pending(task_type))
    return [f[b"id"].decode() for _, f in entries]


async def test_tasks_go_straight_to_the_roster_node_with_most_room_and_the_rest_queue(
    redis: Redis, keys: Keys, store: TaskStore, epoch: int
) -> None:
    await store.publish_roster(epoch, [("a", 1, ["echo"]), ("b", 2, ["*"]), ("c", 5, ["fetch"])], [], 30)
    created = await store.create(specs(4))
    assert [(t.state, t.node) for t in created] == [
        (TaskState.INQUEUE, "b"),
        (TaskState.INQUEUE, "a"),  # a and b have one slot each left: the first in the roster wins
        (TaskState.INQUEUE, "b"),
        (TaskState.WAITING, None),  # c does not run echo
    ]
    stored = await store.get_many([t.id for t in created])
    assert [(t.state, t.node) for t in stored] == [(t.state, t.node) for t in created]
    assert await inbox_ids(redis, keys, "b") == [[created[0].id, created[2].id]]  # one order per node
    assert await inbox_ids(redis, keys, "a") == [[created[1].id]]
    assert await redis.hget(keys.task(created[0].id), "epoch") == str(epoch).encode()
    assert await redis.hget(keys.task(created[3].id), "epoch") is None
    assert await queued(redis, keys) == [created[3].id]
    assert {m.decode() for m in await redis.smembers(keys.assigned("b"))} == {created[0].id, created[2].id}
    # Nothing overtakes a task waiting in its type's stream, even with room: it goes to the back of it.
    await redis.srem(keys.assigned("b"), created[0].id)
    later = await store.create(specs(1))
    assert later[0].state == TaskState.WAITING
    assert await queued(redis, keys) == [created[3].id, later[0].id]


async def test_a_task_waited_for_on_a_node_with_room_is_started_there_as_it_is_stored(
    redis: Redis, keys: Keys, store: TaskStore, epoch: int
) -> None:
    await store.publish_roster(epoch, [("a", 2, ["*"]), ("w", 1, ["*"])], [], 30)
    first, second, other = await store.create(specs(3), near=["w", "w", None])
    # w had one free slot: the first waited-for task is started there, the second goes where there is room
    assert [(t.state, t.node, t.attempts) for t in (first, second, other)] == [
        (TaskState.RUNNING, "w", 1),
        (TaskState.INQUEUE, "a", 0),
        (TaskState.INQUEUE, "a", 0),
    ]
    started = await store.get(first.id)
    assert (started.state, started.node, started.attempts, started.started_at) == (
        TaskState.RUNNING, "w", 1, started.created_at,
    )  # fmt: skip
    assert [(a.number, a.node, a.epoch, a.outcome) for a in started.history] == [(1, "w", epoch, None)]
    assert await inbox_ids(redis, keys, "w") == []  # no run order: the node that waits runs it
    assert {m.decode() for m in await redis.smembers(keys.assigned("w"))} == {first.id}
    assert await redis.zscore(keys.state_index("RUNNING"), first.id) is not None
    assert await redis.zscore(keys.state_index("INQUEUE"), first.id) is None
    # its events tell the same story as any task's: stored, placed, started
    entries: Any = await redis.xrange(keys.task_events)
    states = [row["state"] for _, f in entries for row in orjson.loads(f[b"e"]) if row["id"] == first.id]
    assert states == ["WAITING", "INQUEUE", "RUNNING"]
    # and it ends as a task its worker started does
    finish = await store.finish(first.id, "w", 1, "succeeded", result=None)
    assert (finish.verdict, finish.state) == ("done", "SUCCEED")
    assert await redis.smembers(keys.assigned("w")) == set()


async def test_a_roster_of_an_earlier_epoch_or_gone_stale_places_nothing(
    redis: Redis, keys: Keys, store: TaskStore, epoch: int
) -> None:
    await store.publish_roster(epoch, [("a", 4, ["*"])], [], 30)
    assert (await store.create(specs(1)))[0].state == TaskState.INQUEUE
    await redis.incr(keys.epoch)  # another master took over and has not published its roster yet
    assert (await store.create(specs(1)))[0].state == TaskState.WAITING
    with pytest.raises(StaleEpoch):
        await store.publish_roster(epoch, [("a", 4, ["*"])], [], 30)
    with pytest.raises(StaleEpoch):
        await store.withdraw_roster(epoch)

    current = int(await redis.get(keys.epoch) or 0)
    await store.publish_roster(current, [("a", 4, ["*"])], [], 0.05)
    deadline = time.monotonic() + 5 * multiplier()
    while await redis.exists(keys.prefix + "roster"):  # a master that stops renewing it stops vouching
        assert time.monotonic() < deadline, "the roster did not expire"
        await asyncio.sleep(0.01)
    assert (await store.create(specs(1, "other")))[0].state == TaskState.WAITING


async def test_no_placement_on_a_node_declared_dead_leaving_or_for_a_type_the_master_keeps(
    redis: Redis, keys: Keys, store: TaskStore, epoch: int
) -> None:
    registry = NodeRegistry(redis, keys)
    await store.publish_roster(epoch, [("dead", 8, ["*"]), ("leaving", 8, ["*"]), ("ok", 1, ["*"])], ["fetch"], 30)
    await redis.hset(keys.node("dead"), mapping={"incarnation": 1})
    assert await registry.set_state(epoch, "dead", DEAD, 1, "silent")
    await redis.hset(keys.node("leaving"), "draining", 1)
    fetch = await store.create(specs(1, "fetch"))
    assert fetch[0].state == TaskState.WAITING  # fetches go to their URL's cache owner: the master's rule
    created = await store.create(specs(2))
    assert [(t.state, t.node) for t in created] == [(TaskState.INQUEUE, "ok"), (TaskState.WAITING, None)]


async def test_the_scheduler_publishes_its_live_nodes_and_submits_then_skip_it(
    redis: Redis, keys: Keys, store: TaskStore, epoch: int
) -> None:
    registry = NodeRegistry(redis, keys)
    worker = NodeRecord(
        name="worker", host="127.0.0.1", http="127.0.0.1:1", grpc="127.0.0.1:2", slots=3, running=0, pid=1,
        types=("echo",), run_tasks=True, last_beat=0.0, incarnation=1,
    )  # fmt: skip
    await registry.beat(worker)
    assert await registry.set_state(epoch, "worker", ALIVE, 1, "joined")
    await store.ensure_groups("worker", types=["echo"])
    scheduler = Scheduler(store=store, registry=registry, node="master", epoch=epoch, alive_within=30)
    await scheduler.tick()
    ttl = await redis.pttl(keys.prefix + "roster")
    assert 0 < ttl <= ROSTER_TTL_S * 1000
    created = await store.create(specs(4))
    assert [t.node for t in created] == ["worker"] * 3 + [None]  # its 3 slots, then the stream
    assert await queued(redis, keys) == [created[3].id]
    # The worker takes its order as one read; its tasks never passed through the scheduler's stream.
    reply: Any = await redis.xreadgroup(WORKER_GROUP, "worker", {keys.inbox("worker"): ">"})
    assert [f[b"ids"].decode().split(",") for _, f in reply[0][1]] == [[t.id for t in created[:3]]]
    summary: Any = await redis.xpending(keys.pending("echo"), SCHEDULER_GROUP)
    assert summary["pending"] == 0


async def test_a_worker_acknowledges_the_orders_it_took_with_its_next_read(
    redis: Redis, keys: Keys, store: TaskStore, epoch: int
) -> None:
    await store.ensure_groups("w")
    await store.publish_roster(epoch, [("w", 4, ["*"])], [], 30)
    created = await store.create(specs(2))
    orders = await store.read_orders("w", again=False, count=10, block_ms=10)
    assert [o.ids for o in orders] == [[t.id for t in created]]
    # Not taken in hand yet (the node stopped before its next read): read again at its next start.
    assert [o.ids for o in await store.read_orders("w", again=True, count=10, block_ms=10)] == [o.ids for o in orders]
    assert await store.read_orders("w", again=False, count=10, block_ms=10, taken=orders) == []
    assert await redis.xlen(keys.inbox("w")) == 0
    assert await store.read_orders("w", again=True, count=10, block_ms=10) == []
