"""Waiting tasks of a type no live node runs never keep runnable tasks from being placed: each type waits in
a pending stream of its own. A store written by an older version (one pending stream for every type) is
moved to that layout when a master starts, and nothing in it is lost."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from shoal.cluster import scheduler as scheduler_module
from shoal.cluster.scheduler import Scheduler
from shoal.keys import SCHEDULER_GROUP, Keys
from shoal.models import TaskResult, TaskSpec
from shoal.store.nodes import ALIVE, NodeRecord, NodeRegistry
from shoal.store.tasks import TaskStore
from shoal.testing import TestNode, multiplier, wait_for

pytestmark = pytest.mark.e2e

PLUGINS = Path(__file__).parent / "plugins"
#: More than the scheduler ever held in memory before it kept a backlog per type (20,000).
STRANDED = 25_000


def plugin_env() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(PLUGINS), os.environ.get("PYTHONPATH", "")) if p)}


async def create_many(redis_url: str, specs: list[TaskSpec], chunk: int = 1000) -> list[str]:
    """Submit ``specs`` through the store layer, ``chunk`` to an atomic call (the REST API takes one at a time)."""
    client = Redis.from_url(redis_url)
    try:
        store = TaskStore(client, Keys("shoal"), result_max_bytes=4096)
        ids: list[str] = []
        for at in range(0, len(specs), chunk):
            ids += [t.id for t in await store.create(specs[at : at + chunk])]
        return ids
    finally:
        await client.aclose()


def test_a_runnable_task_is_placed_while_tens_of_thousands_wait_for_a_node_that_stopped(
    node_factory: Callable[..., TestNode], redis_url: str
) -> None:
    node = node_factory(name="node-1")
    runs_progress = node_factory(name="node-2", args=["--task-modules", "shoal_test_types"], env=plugin_env())
    assert runs_progress.stop() == 0  # the only node that runs "progress" is gone
    stranded = asyncio.run(
        create_many(redis_url, [TaskSpec(name="p", type="progress", target="/nonexistent")] * STRANDED)
    )
    with httpx.Client(base_url=node.http_url, headers=node.headers(), timeout=30.0, trust_env=False) as http:
        submitted = http.post("/api/v1/tasks", json={"name": "echo", "type": "echo", "target": "through"})
        assert submitted.status_code == 201, submitted.text
        task_id = submitted.json()["id"]

        def succeeded() -> bool:
            return bool(http.get(f"/api/v1/tasks/{task_id}").json()["state"] == "SUCCEED")

        wait_for(succeeded, 30, "the echo submitted after the stranded tasks to succeed")
        assert http.get(f"/api/v1/tasks/{task_id}/result").json()["code"] == "through"
        waiting = http.get("/api/v1/tasks", params={"state": "WAITING", "limit": 1}).json()
        assert waiting["total"] == STRANDED  # none of them lost, none placed on a node that does not run them
        first = http.get(f"/api/v1/tasks/{stranded[0]}").json()
        assert (first["state"], first["node"]) == ("WAITING", None)


# -- in-process, on the real Redis: the scheduler of one master term -----------------------------------


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def record(name: str, types: tuple[str, ...], slots: int) -> NodeRecord:
    return NodeRecord(
        name=name, host="127.0.0.1", http="127.0.0.1:1", grpc="127.0.0.1:2", slots=slots, running=0, pid=1,
        types=types, run_tasks=True, last_beat=0.0, incarnation=1,
    )  # fmt: skip


async def until(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout * multiplier()
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


class Term:
    """A master term on the test's Redis with the given worker nodes alive."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.keys = Keys("shoal")
        self.registry = NodeRegistry(redis, self.keys)
        self.store = TaskStore(redis, self.keys, result_max_bytes=4096)

    async def begin(self, *workers: NodeRecord) -> Scheduler:
        epoch = (await self.registry.take_lease("master", 30)).epoch
        for worker in workers:
            await self.registry.beat(worker)
            assert await self.registry.set_state(epoch, worker.name, ALIVE, 1, "joined")
        return Scheduler(store=self.store, registry=self.registry, node="master", epoch=epoch, alive_within=30)

    async def states(self, ids: list[str]) -> list[tuple[str, str | None]]:
        return [(t.state.name, t.node) for t in await self.store.get_many(ids)]


async def test_a_type_whose_nodes_are_full_does_not_hold_up_another_type(redis: Redis) -> None:
    term = Term(redis)
    scheduler = await term.begin(record("busy", ("progress",), 1), record("idle", ("echo",), 1))
    older = [t.id for t in await term.store.create([TaskSpec(name="p", type="progress", target="x")] * 50)]
    [echo] = [t.id for t in await term.store.create([TaskSpec(name="e", type="echo", target="x")])]
    task = asyncio.create_task(scheduler.run())
    try:

        async def echo_placed() -> bool:
            return await term.states([echo]) == [("INQUEUE", "idle")]

        await until(echo_placed, 10, "the echo to be placed on the idle node")
        states = await term.states(older)
        assert states.count(("INQUEUE", "busy")) == 1 and states.count(("WAITING", None)) == 49
    finally:
        task.cancel()


async def test_the_single_pending_stream_of_an_older_version_is_moved_when_a_master_starts(redis: Redis) -> None:
    term = Term(redis)
    keys = term.keys
    echoes = [
        t.id for t in await term.store.create([TaskSpec(name="e", type="echo", target=f"{i}") for i in range(30)])
    ]
    stranded = [t.id for t in await term.store.create([TaskSpec(name="p", type="progress", target="x")] * 10)]
    gone = (await term.store.create([TaskSpec(name="e", type="echo", target="deleted")]))[0].id
    # Put the store as an older version left it: one stream for every type, part of it read by the old master.
    await redis.delete(keys.pending("echo"), keys.pending("progress"), keys.pending_types)
    for task_id in [*echoes[:20], *stranded, gone, *echoes[20:]]:
        await redis.xadd(keys.legacy_pending, {"id": task_id, "type": "progress" if task_id in stranded else "echo"})
    await redis.xgroup_create(keys.legacy_pending, SCHEDULER_GROUP, id="0")
    await redis.xreadgroup(SCHEDULER_GROUP, "old-master", {keys.legacy_pending: ">"}, count=15)
    await term.store.delete(gone)

    scheduler = await term.begin(record("worker", ("echo",), 64))
    task = asyncio.create_task(scheduler.run())
    try:

        async def all_placed() -> bool:
            return await term.states(echoes) == [("INQUEUE", "worker")] * len(echoes)

        await until(all_placed, 10, "every echo queued in the old stream to be placed")
    finally:
        task.cancel()
    assert not await redis.exists(keys.legacy_pending)
    assert await term.states(stranded) == [("WAITING", None)] * len(stranded)
    assert await term.store.pending_types() == {"echo", "progress"}
    moved: Any = await redis.xrange(keys.pending("progress"))
    assert [f[b"id"].decode() for _, f in moved] == stranded  # still queued, in their order
    assert await term.store.pending_count() == len(stranded)


async def test_a_delayed_task_of_a_type_never_queued_is_placed_when_due(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its promotion makes the type's pending stream; the master reads it at once, not at its next look at
    the streams (made never here, as is the periodic look for due tasks: only the due time may bring it)."""
    # Never again after the first look, however short the machine's uptime (its monotonic clock) is.
    monkeypatch.setattr(scheduler_module, "NODES_TTL", math.inf)
    monkeypatch.setattr(scheduler_module, "PROMOTE_EVERY_S", math.inf)
    term = Term(redis)
    scheduler = await term.begin(record("idle", ("echo",), 1))
    [delayed] = await term.store.create([TaskSpec(name="d", type="echo", target="x", delay_s=0.3)])
    assert not await redis.exists(term.keys.pending("echo")), "no echo was ever queued"
    task = asyncio.create_task(scheduler.run())
    try:

        async def placed() -> bool:
            return await term.states([delayed.id]) == [("INQUEUE", "idle")]

        await until(placed, 10, "the delayed task to be placed once due")
    finally:
        task.cancel()


class _AFetchEndsBetweenTwoOffers(TaskStore):
    """The real store, where the first fetch placed ends right after the master's first offer that a limit
    refused (as a fetch finishing on a node does, at any moment): the host's limit has room again before the
    master offers the rest of its batch."""

    ended = False

    async def place_many(self, epoch: int, nodes: Any, tasks: Any) -> list[int | str]:
        verdicts = await super().place_many(epoch, nodes, tasks)
        if any(isinstance(v, str) for v in verdicts) and not self.ended:
            self.ended = True
            first = next(t.task_id for t, v in zip(tasks, verdicts, strict=True) if isinstance(v, int) and v > 0)
            attempt = await self.start(first, "owner")
            assert attempt is not None
            result = TaskResult(task_id=first, code="x", node="owner", attempt=attempt, finished_at=time.time())
            assert (await self.finish(first, "owner", attempt, "succeeded", result=result)).verdict == "done"
        return verdicts


async def test_a_fetch_held_by_its_hosts_limit_waits_for_its_owner_however_soon_the_limit_frees(redis: Redis) -> None:
    """Fetches of one URL go to its cache owner; one its owner refused for the host's limit is not offered to
    every node in the same pass (the limit may have room by then, and the fetch would land elsewhere)."""
    term = Term(redis)
    term.store = _AFetchEndsBetweenTwoOffers(redis, term.keys, result_max_bytes=4096)
    scheduler = await term.begin(record("owner", ("fetch",), 8), record("other", ("fetch",), 8))
    scheduler.owner_of = lambda key: "owner"
    url = "http://127.0.0.1:9/same"
    ids = [t.id for t in await term.store.create([TaskSpec(name="f", type="fetch", target=url)] * 3)]
    task = asyncio.create_task(scheduler.run())
    try:

        async def all_placed() -> bool:
            return all(state != "WAITING" for state, _ in await term.states(ids))

        await until(all_placed, 10, "the three fetches to be placed")  # two at once per host by default
        assert task.done() is False, "the scheduler is still running"
    finally:
        task.cancel()
    assert [node for _, node in await term.states(ids)] == ["owner"] * 3


async def test_a_master_whose_nodes_are_full_offers_about_as_many_tasks_as_ends_freed_slots(redis: Redis) -> None:
    """Every end pokes the master: offering the nodes' whole capacity each time would build, send and answer
    for tens of tasks per slot freed. Room freed without an end (a task handed back) is still filled."""
    term = Term(redis)
    ends = [0]
    scheduler = await term.begin(record("worker", ("echo",), 40))
    scheduler.ends_heard = lambda: ends[0]
    ids = [t.id for t in await term.store.create([TaskSpec(name="e", type="echo", target="x")] * 200)]
    offered: list[int] = []
    place_many = term.store.place_many

    async def counted(epoch: int, nodes: Any, tasks: Any) -> Any:
        offered.append(len(tasks))
        return await place_many(epoch, nodes, tasks)

    term.store.place_many = counted  # type: ignore[method-assign]
    task = asyncio.create_task(scheduler.run())
    try:

        async def placed(n: int) -> bool:
            return [s for s, _ in await term.states(ids)].count("INQUEUE") == n

        async def offers(n: int) -> bool:
            return len(offered) >= n

        await until(lambda: placed(40), 10, "the worker's 40 slots to be filled")
        await until(lambda: offers(2), 10, "a placement that finds no room")
        assert offered[:2] == [40, 40]  # all it may take, then every node full
        await term.store.hand_back("worker", [ids[0]], "test")  # a slot frees, and no end tells of it
        ends[0] += 3  # three ends heard meanwhile (of tasks elsewhere)
        scheduler.poke()
        await until(lambda: placed(40), 10, "the freed slot to be filled again")
        await until(lambda: offers(3), 10, "the next placement")
        assert offered[2] == scheduler_module.MIN_OFFER
        ends[0] += 100
        before = len(offered)
        await term.store.hand_back("worker", [ids[1]], "test")
        scheduler.poke()
        await until(lambda: offers(before + 1), 10, "a placement after many ends")
        assert offered[before] == 40  # many ends: as many as the node may take
    finally:
        task.cancel()
