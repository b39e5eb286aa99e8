"""Two failover measurements, each on a fresh cluster of unsupervised nodes (``bench.nodes.NodeSet``).

- ``master_failover``: a steady trickle of echo tasks goes in through the nodes that will survive; the
  master is killed with SIGKILL at a random point of its beat; the figure is the time from the kill to
  the first task placed by the new master, i.e. the first INQUEUE event (``shoal:shoal:events``) whose
  task hash carries an ``epoch`` above the old master's. The placement time is the event's own ``at``
  (Redis's clock, the same host clock as the kill's), so polling adds no error.
- ``worker_loss``: echo tasks with a 10 s delay run on every node; a worker (not the master) holding
  some of them is killed with SIGKILL; the figure is the time from the kill until every one of its tasks
  is RUNNING (or terminal) on another node, read from the task hashes every 20 ms.

Both also return where the time went, from the membership timeline (``shoal:shoal:timeline``): the
victim's last beat before the kill, the master-lost / suspect / dead verdicts, the election, the
re-placement. Times in the returned dicts are seconds after the kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

import orjson

from bench.machine import OtherLoad
from bench.nodes import PREFIX, TERMINAL, Node, NodeSet

ECHO = {"name": "echo", "type": "echo", "target": "x"}


class PlacementTap:
    """Every INQUEUE event of the task event stream from ``start()`` on: (task id, node, Redis time)."""

    def __init__(self, nodes: NodeSet) -> None:
        self.nodes = nodes
        self.placed: list[tuple[str, str, float]] = []
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    async def start(self) -> None:
        newest = await self.nodes.store.xrevrange(f"{PREFIX}task-events", count=1)
        self._task = asyncio.create_task(self._read(newest[0][0] if newest else "0-0"))

    async def _read(self, last: Any) -> None:
        stream = f"{PREFIX}task-events"
        while not self._stopped:
            reply: Any = await self.nodes.store.xread({stream: last}, count=500, block=1000)
            for _key, entries in reply or ():
                for entry, fields in entries:
                    last = entry
                    for event in orjson.loads(fields["e"]):  # the bench's store client decodes replies
                        if event["state"] == "INQUEUE":
                            self.placed.append((event["id"], event["node"], float(event["at"])))
                            self.changed.set()

    async def first_with_epoch_above(self, epoch: int, timeout: float) -> tuple[str, str, float, int]:
        """The first placement whose task hash says a master of a later term placed it."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            fresh, seen = self.placed[seen:], len(self.placed)
            if fresh:
                epochs = await self.nodes.tasks([p[0] for p in fresh], "epoch")
                for (task_id, node, at), (task_epoch,) in zip(fresh, epochs, strict=True):
                    if task_epoch is not None and int(task_epoch) > epoch:
                        return task_id, node, at, int(task_epoch)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no task placed under an epoch above {epoch} within {timeout:.0f} s")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    async def stop(self) -> None:
        """Stop reading. The flag as well as the cancel: on Python 3.11 redis-py can lose a cancel that lands
        in a blocking read, and the loop would then go on for ever (a hang seen in ``bench/cluster.py``)."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Trickle:
    """One echo task every ``every`` seconds, round robin through ``via``; each submission on its own, so a
    slow answer does not hold the next one back."""

    def __init__(self, nodes: NodeSet, via: list[Node], every: float) -> None:
        self.nodes, self.via, self.every = nodes, via, every
        self.accepted: list[str] = []
        self.refused = 0
        self._loop: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run())

    async def _run(self) -> None:
        i = 0
        while True:
            task = asyncio.create_task(self._one(self.via[i % len(self.via)]))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            i += 1
            await asyncio.sleep(self.every)

    async def _one(self, node: Node) -> None:
        task_id = await self.nodes.submit(node, ECHO)
        if task_id is None:
            self.refused += 1
        else:
            self.accepted.append(task_id)

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=10)


def _first(events: list[dict[str, Any]], kind: str, node: str | None = None) -> dict[str, Any] | None:
    return next((e for e in events if e.get("kind") == kind and (node is None or e.get("node") == node)), None)


def _after(event: dict[str, Any] | None, t0: float) -> float | None:
    return None if event is None else round(event["at"] - t0, 3)


async def master_failover(nodes: NodeSet, rng: random.Random, *, interval: float, trickle_every: float = 0.05,
                          timeout: float = 30.0) -> dict[str, Any]:  # fmt: skip
    """Kill the master of a settled cluster; seconds from the kill to the first placement of the new one."""
    view = await nodes.wait_agreed()
    master, old_epoch = view["master"], int(view["epoch"])
    survivors = nodes.live(but=master)
    tap = PlacementTap(nodes)
    await tap.start()
    trickle = Trickle(nodes, survivors, trickle_every)
    trickle.start()
    load = OtherLoad()
    load.start()
    try:
        await asyncio.sleep(1.0 + rng.uniform(0, interval))  # tasks flowing; the kill lands anywhere in a beat
        beat = await nodes.last_beat(master)
        killed_at = nodes.kill(master)
        task_id, on, placed_at, new_epoch = await tap.first_with_epoch_above(old_epoch, timeout)
    finally:
        await trickle.stop()
        await tap.stop()
    other = load.stop()
    late = [p for p in tap.placed if p[2] >= killed_at]
    stale = sum(1 for (e,) in await nodes.tasks([p[0] for p in late], "epoch") if e is not None and int(e) <= old_epoch)
    events = await nodes.timeline_since(killed_at - 1)
    elected = next((e for e in events if e.get("kind") == "elected" and int(e.get("epoch", 0)) > old_epoch), None)
    return {
        "seconds": round(placed_at - killed_at, 3),
        "old_master": master,
        "old_epoch": old_epoch,
        "new_master": elected and elected["node"],
        "new_epoch": new_epoch,
        "first_task": task_id,
        "placed_on": on,
        "silent_at_kill": None if beat is None else round(killed_at - beat, 3),
        "master_lost_at": _after(_first(events, "master lost", master), killed_at),
        "elected_at": _after(elected, killed_at),
        "placements_after_kill_under_old_epoch": stale,
        "trickle_accepted": len(trickle.accepted),
        "trickle_refused": trickle.refused,
        "other_cpu_pct": round(other, 1),
    }


async def worker_loss(nodes: NodeSet, rng: random.Random, *, interval: float, tasks: int = 12,
                      delay_s: float = 10.0, timeout: float = 60.0) -> dict[str, Any]:  # fmt: skip
    """Kill a worker running delayed echo tasks; seconds until each of its tasks runs on another node."""
    view = await nodes.wait_agreed()
    master = view["master"]
    entry = nodes.nodes[master]
    body = {**ECHO, "params": {"delay_s": delay_s}}
    ids = [i for i in await asyncio.gather(*(nodes.submit(entry, body) for _ in range(tasks))) if i is not None]
    if len(ids) != tasks:
        raise RuntimeError(f"only {len(ids)} of {tasks} delayed echo tasks were accepted")
    deadline = time.monotonic() + timeout
    while True:
        rows = await nodes.tasks(ids, "state", "node")
        if all(state == "RUNNING" for state, _ in rows):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"tasks not all RUNNING: {sorted({str(s) for s, _ in rows})}")
        await asyncio.sleep(0.02)
    held: dict[str, list[str]] = {}
    for task_id, (_, node) in zip(ids, rows, strict=True):
        held.setdefault(str(node), []).append(task_id)
    workers = sorted(n for n in held if n != master)
    if not workers:
        raise RuntimeError(f"no worker besides the master {master} runs any task: {held}")
    most = max(len(held[n]) for n in workers)
    victim = rng.choice([n for n in workers if len(held[n]) == most])
    mine = held[victim]
    load = OtherLoad()
    load.start()
    await asyncio.sleep(rng.uniform(0, interval))
    beat = await nodes.last_beat(victim)
    killed_at = nodes.kill(victim)
    moved: dict[str, float] = {}
    while len(moved) < len(mine):
        now = time.time()
        for task_id, (state, node) in zip(mine, await nodes.tasks(mine, "state", "node"), strict=True):
            if task_id not in moved and node not in (None, "", victim) and state in ("RUNNING", *TERMINAL):
                moved[task_id] = now - killed_at
        if time.time() - killed_at > timeout:
            raise TimeoutError(f"{len(mine) - len(moved)} of {len(mine)} tasks of {victim} not running elsewhere")
        await asyncio.sleep(0.02)
    other = load.stop()
    events = await nodes.timeline_since(killed_at - 1)
    replaced = _first(events, "re-placed", victim)
    return {
        "seconds": round(max(moved.values()), 3),
        "first_task_seconds": round(min(moved.values()), 3),
        "victim": victim,
        "master": master,
        "victim_tasks": len(mine),
        "tasks_per_node": {n: len(v) for n, v in sorted(held.items())},
        "silent_at_kill": None if beat is None else round(killed_at - beat, 3),
        "suspect_at": _after(_first(events, "suspect", victim), killed_at),
        "dead_at": _after(_first(events, "dead", victim), killed_at),
        "dead_rule": (_first(events, "dead", victim) or {}).get("rule"),
        "re_placed_at": _after(replaced, killed_at),
        "other_cpu_pct": round(other, 1),
    }
