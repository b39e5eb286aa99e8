"""Two of the master's duties in-process, on the real Redis, where an end-to-end test can only hit them by
chance: the detector verifies again a node it could not reach (instead of leaving it rejected for
good), and the scheduler takes over pending entries that an earlier master read but never placed.
The network is the only stand-in: a prober that answers as the test says."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from shoal.cluster import detector as detector_module
from shoal.cluster import scheduler as scheduler_module
from shoal.cluster.detector import Detector
from shoal.cluster.scheduler import Scheduler
from shoal.keys import SCHEDULER_GROUP, Keys
from shoal.liveness import verdict
from shoal.models import TaskSpec
from shoal.rpc.peers import Verdict
from shoal.store.nodes import ALIVE, DEAD, REJECTED, NodeRecord, NodeRegistry
from shoal.store.tasks import TaskStore
from shoal.testing import multiplier

pytestmark = pytest.mark.cluster

INTERVAL = 0.1
DEAD_AFTER = 5


class ScriptedProber:
    """Answers verification with the next verdict of a list; every node answers probes."""

    def __init__(self, verdicts: list[Verdict]) -> None:
        self.verdicts = verdicts
        self.asked: list[str] = []

    async def is_alive(self, name: str, addr: str, timeout_s: float) -> tuple[str, int] | None:
        return ("someone", 1)

    async def ask_alive(
        self, via_name: str, via_addr: str, target_name: str, target_addr: str, timeout_s: float
    ) -> bool:
        return True

    async def verify(self, addr: str, expected_name: str, timeout_s: float) -> Verdict:
        self.asked.append(expected_name)
        return self.verdicts.pop(0) if len(self.verdicts) > 1 else self.verdicts[0]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def record(name: str, incarnation: int = 1) -> NodeRecord:
    return NodeRecord(
        name=name, host="127.0.0.1", http="127.0.0.1:1", grpc="127.0.0.1:2", slots=8, running=0, pid=1,
        types=("echo",), run_tasks=True, last_beat=0.0, incarnation=incarnation,
    )  # fmt: skip


async def until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout * multiplier()
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_a_node_rejected_as_unreachable_is_verified_again_and_admitted(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(detector_module, "REVERIFY_AFTER", 0.3)
    keys = Keys("shoal")
    registry = NodeRegistry(redis, keys)
    epoch = (await registry.take_lease("master", 30)).epoch
    prober = ScriptedProber([
        Verdict(False, "unreachable: failed to connect to all addresses", unreachable=True),
        Verdict(True, "verified", 1),
    ])  # fmt: skip
    detector = Detector(
        registry=registry, store=TaskStore(redis, keys, result_max_bytes=4096), prober=prober, me="master",
        epoch=epoch, interval=INTERVAL, dead_after=DEAD_AFTER,
    )  # fmt: skip

    async def state_is(state: str) -> bool:
        await registry.beat(record("master"))
        await registry.beat(record("node-x"))
        await detector.tick()
        found = await registry.get("node-x")
        return found is not None and found.state == state

    await until(lambda: state_is(REJECTED), 5, "node-x to be rejected as unreachable")
    await until(lambda: state_is(ALIVE), 5, "node-x to be verified again and admitted")
    node = await registry.get("node-x")
    assert node is not None and verdict(node) == ALIVE and "joined" in node.reason
    assert prober.asked.count("node-x") >= 2
    kinds = [e["kind"] for e in reversed(await registry.timeline()) if e["node"] == "node-x"]
    assert kinds == ["rejected", "alive"]


async def test_a_node_rejected_for_its_proof_is_not_asked_again_until_a_while_or_a_new_master(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(detector_module, "REVERIFY_AFTER", 0.0)
    keys = Keys("shoal")
    registry = NodeRegistry(redis, keys)
    epoch = (await registry.take_lease("master", 30)).epoch
    prober = ScriptedProber([Verdict(False, "wrong admission proof: it does not hold the cluster token")])
    detector = Detector(
        registry=registry, store=TaskStore(redis, keys, result_max_bytes=4096), prober=prober, me="master",
        epoch=epoch, interval=INTERVAL, dead_after=DEAD_AFTER,
    )  # fmt: skip
    for _ in range(10):
        await registry.beat(record("master"))
        await registry.beat(record("node-x"))
        await detector.tick()
        await asyncio.sleep(0.03)
    node = await registry.get("node-x")
    assert node is not None and node.state == REJECTED and "wrong admission proof" in node.reason
    assert prober.asked == ["node-x"]
    # The next master looks once more: a refusal is not for ever (an operator may have fixed the token).
    epoch = (await registry.take_lease("master", 30, term=0)).epoch
    successor = Detector(
        registry=registry, store=TaskStore(redis, keys, result_max_bytes=4096), prober=prober, me="master",
        epoch=epoch, interval=INTERVAL, dead_after=DEAD_AFTER,
    )  # fmt: skip
    for _ in range(10):
        await registry.beat(record("master"))
        await registry.beat(record("node-x"))
        await successor.tick()
        await asyncio.sleep(0.03)
    assert prober.asked == ["node-x", "node-x"]


async def test_the_scheduler_takes_over_entries_an_earlier_master_read_and_never_placed(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_module, "STRAY_IDLE_MS", 300)
    keys = Keys("shoal")
    registry = NodeRegistry(redis, keys)
    store = TaskStore(redis, keys, result_max_bytes=4096)
    epoch = (await registry.take_lease("new-master", 30)).epoch
    await registry.beat(record("worker"))
    assert await registry.set_state(epoch, "worker", ALIVE, 1, "joined")
    scheduler = Scheduler(store=store, registry=registry, node="new-master", epoch=epoch, alive_within=30)
    await store.ensure_groups(types=["echo"])
    await scheduler.tick()  # the new term has begun and found nothing to place
    await store.withdraw_roster(epoch)  # submits queue their tasks for the master instead of placing them
    # Submitted after the new master took over, and served to the old one's last blocking read.
    ids = {t.id for t in await store.create([TaskSpec(name="echo", type="echo", target=f"t{i}") for i in range(5)])}
    reply: Any = await redis.xreadgroup(SCHEDULER_GROUP, "old-master", {keys.pending("echo"): ">"}, count=100)
    assert {f[b"id"].decode() for _, f in reply[0][1]} == ids

    async def placed() -> bool:
        await scheduler.tick()
        got = await store.get_many(list(ids))
        return all(t.state.name == "INQUEUE" and t.node == "worker" for t in got)

    await until(placed, 10, "the tasks read by the old master to be placed")
    summary: Any = await redis.xpending(keys.pending("echo"), SCHEDULER_GROUP)
    assert summary["pending"] == 0
    for task_id in ids:
        assert int(await redis.hget(keys.task(task_id), "epoch") or 0) == epoch


async def test_a_dead_nodes_poison_task_is_quarantined_and_noted_on_the_timeline(redis: Redis) -> None:
    keys = Keys("shoal")
    registry = NodeRegistry(redis, keys)
    store = TaskStore(redis, keys, result_max_bytes=4096)
    epoch = (await registry.take_lease("master", 30)).epoch
    await registry.beat(record("node-x"))
    poison, fine = await store.create([
        TaskSpec(name="poison", type="echo", target="x", max_lost_attempts=1),
        TaskSpec(name="fine", type="echo", target="x"),
    ])  # fmt: skip
    assert await store.place(epoch, "node-x", 8, [poison.id, fine.id]) == [1, 1]
    assert await store.start(poison.id, "node-x") == 1 and await store.start(fine.id, "node-x") == 1
    assert await registry.set_state(epoch, "node-x", DEAD, 1, "no beat")  # its tasks are left to hand back
    detector = Detector(
        registry=registry, store=store, prober=ScriptedProber([Verdict(True, "verified", 1)]), me="master",
        epoch=epoch, interval=INTERVAL, dead_after=DEAD_AFTER,
    )  # fmt: skip

    async def noted() -> bool:
        await registry.beat(record("master"))
        await detector.tick()
        return any(e["kind"] == "re-placed" for e in await registry.timeline())

    await until(noted, 5, "the dead node's tasks to be handed back")
    [event] = [e for e in await registry.timeline() if e["kind"] == "re-placed"]
    assert event["extra"]["tasks"] == [fine.id] and event["extra"]["quarantined"] == [poison.id]
    assert "1 task(s) back to WAITING, 1 quarantined" in event["rule"]
    assert (await store.get(poison.id)).error == "lost 1 attempt: node-x lost"
    assert (await store.get(fine.id)).state.name == "WAITING"
