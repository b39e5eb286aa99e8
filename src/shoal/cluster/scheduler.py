"""The master's scheduler: places pending tasks on the nodes with the most free slots, in batches.

A ``fetch`` goes first to the node that owns its URL in the cache ring (``owner_of``), if that node runs
fetches and has a free slot: its fill of the cache is then local, and one URL's fetches meet at one node.
Those tasks are offered to place.lua with their owner as the only node; what finds no room there joins
the rest of the batch, placed by free slots.

It runs only while this node holds the master lease, and every placement carries the lease's epoch:
place.lua refuses it once another master has taken over, and the scheduler stops (``StaleEpoch``).
Tasks are read from the pending stream with a blocking XREADGROUP and acknowledged only once placed
(or found gone), so a master that dies mid-batch leaves them for the next one, which claims them all.
It goes on claiming: a deposed master's blocking read can still be served by Redis after the new master
took over (its connection outlives its term by a moment, or it was paused), and what it got there would
otherwise wait in its name for ever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shoal.cache.keys import http_key
from shoal.keys import SCHEDULER_GROUP
from shoal.store.nodes import NodeRecord, NodeRegistry
from shoal.store.redis import BLOCK_MS
from shoal.store.tasks import TaskStore

log = logging.getLogger("shoal.cluster.scheduler")

#: Most tasks read from the pending stream at once, and most held unplaced in memory.
READ_BATCH = 1000
MAX_BACKLOG = 20_000
#: Entries another consumer has held unacknowledged this long are taken over (a live master acknowledges
#: each one within milliseconds of reading it, unless no node has room, and then it is the only consumer).
STRAY_IDLE_MS = 2 * BLOCK_MS
#: Seconds between two looks for such entries.
STRAY_EVERY_S = 1.0
#: Most tasks offered to place.lua in one call.
PLACE_BATCH = 500
#: Seconds the list of schedulable nodes is trusted (place.lua counts their free slots fresh each time,
#: and refuses nodes declared dead or rejected since).
NODES_TTL = 0.5
#: The task type placed on the owner of its target's cache key.
FETCH = "fetch"


@dataclass(slots=True)
class _Pending:
    task_id: str
    type: str | None = None
    target: str | None = None  # read only for fetches, when they are first placed


class Scheduler:
    """Owns placement for one master term. Built per term with its epoch; ``run()`` until deposed."""

    def __init__(
        self,
        *,
        store: TaskStore,
        registry: NodeRegistry,
        node: str,
        epoch: int,
        alive_within: float,
        may_write: Callable[[], bool] = lambda: True,
        owner_of: Callable[[str], str] | None = None,
    ) -> None:
        self.may_write = may_write
        self.owner_of = owner_of
        self.store = store
        self.registry = registry
        self.node = node
        self.epoch = epoch
        self.alive_within = alive_within
        self.backlog: OrderedDict[str, _Pending] = OrderedDict()  # stream entry id -> task
        self.placed = 0
        self.last_tick = time.monotonic()  # when the loop last looked at the backlog (the watchdog reads it)
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._next_promote = 0.0
        self._next_strays = 0.0
        self._nodes: list[NodeRecord] = []
        self._nodes_read = 0.0

    def __repr__(self) -> str:
        return f"<Scheduler epoch={self.epoch} backlog={len(self.backlog)} placed={self.placed}>"

    def poke(self) -> None:
        """Something changed (a slot freed, a node joined, a retry fell due): look again. Thread: loop only."""
        self._wake.set()

    async def run(self) -> None:
        await self.store.ensure_groups()
        await self._claim_orphans()
        # A flag per run, not per scheduler: the leader runs this again after a store error, and the
        # reader of the new run must not see the flag that stopped the old one.
        stopped = asyncio.Event()
        reader = asyncio.create_task(self._read(stopped), name="scheduler reader")
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                await self.tick()
                self.last_tick = time.monotonic()
                if reader.done():
                    reader.result()  # re-raise what stopped it
        finally:
            # The flag as well as the cancel: on Python 3.11 a cancel can be lost in a Redis call (see
            # leader.cancel_and_wait), and the reader must not go on taking entries for a term that is over.
            stopped.set()
            reader.cancel()

    async def tick(self) -> None:
        now = time.monotonic()
        if now >= self._next_promote:
            due = await self.store.promote_due()
            self._next_promote = now + 0.25
            if due is not None:
                delay = max(0.0, due - await self.registry.now())
                asyncio.get_running_loop().call_later(delay + 0.01, self.poke)
        if now >= self._next_strays:
            self._next_strays = now + STRAY_EVERY_S
            await self._claim_strays()
        if self.backlog:
            await self._place()

    async def _claim_orphans(self) -> None:
        """Take every entry read but not acknowledged by an earlier master (or an earlier life of this one)."""
        start = "0-0"
        while True:
            reply = await self.store.redis.xautoclaim(
                self.store.keys.pending, SCHEDULER_GROUP, self.node, min_idle_time=0, start_id=start, count=READ_BATCH
            )
            start, entries = reply[0], reply[1]
            self._add(entries)
            if start in (b"0-0", "0-0") or not entries:
                break
        if self.backlog:
            log.info("took over %d unplaced task(s) from the previous master", len(self.backlog))
            self.poke()

    async def _claim_strays(self) -> None:
        """Take the entries other consumers (earlier masters) read and have left unacknowledged for long."""
        redis, stream = self.store.redis, self.store.keys.pending
        summary: Any = await redis.xpending(stream, SCHEDULER_GROUP)
        for consumer in summary.get("consumers") or ():
            name = consumer["name"].decode() if isinstance(consumer["name"], bytes) else consumer["name"]
            if name == self.node or not int(consumer["pending"]):
                continue
            rows: Any = await redis.xpending_range(
                stream, SCHEDULER_GROUP, min="-", max="+", count=READ_BATCH, consumername=name, idle=STRAY_IDLE_MS
            )
            if rows:
                claimed: Any = await redis.xclaim(
                    stream, SCHEDULER_GROUP, self.node, STRAY_IDLE_MS, [r["message_id"] for r in rows]
                )
                self._add(claimed)
                if claimed:
                    log.warning("took over %d unplaced task(s) left unacknowledged by %s", len(claimed), name)
                    self.poke()

    async def _read(self, stopped: asyncio.Event) -> None:
        redis, stream = self.store.redis, self.store.keys.pending
        while not stopped.is_set():
            while len(self.backlog) >= MAX_BACKLOG:
                self._room.clear()
                await self._room.wait()
            reply: Any = await redis.xreadgroup(
                SCHEDULER_GROUP, self.node, {stream: ">"}, count=READ_BATCH, block=BLOCK_MS
            )
            if reply:
                self._add(reply[0][1])
                self.poke()

    def _add(self, entries: Any) -> None:
        for msg_id, fields in entries:
            if fields and b"id" in fields:
                task_type = fields.get(b"type")
                self.backlog[msg_id.decode()] = _Pending(fields[b"id"].decode(), task_type and task_type.decode())

    async def _place(self) -> None:
        nodes = await self._candidates()
        if not nodes:
            return
        await self._learn_types()
        runnable = set().union(*(n.types for n in nodes))
        room = min(PLACE_BATCH, sum(n.slots for n in nodes))  # free slots are counted by place.lua
        batch = [(m, p) for m, p in self.backlog.items() if p.type in runnable][:room]
        if not batch:
            return
        if self.owner_of is not None:
            batch = await self._place_on_owners(nodes, batch)
            if not batch:
                self._room.set()
                return
        outcome = await self.store.place_many(
            self.epoch, [(n.name, n.slots, n.types) for n in nodes], [(p.task_id, m, p.type or "") for m, p in batch]
        )
        for (msg_id, _), verdict in zip(batch, outcome, strict=True):
            if verdict >= 0:  # placed or gone: place.lua acknowledged its entry
                self.backlog.pop(msg_id, None)
                self.placed += verdict > 0
        self._room.set()

    async def _place_on_owners(
        self, nodes: list[NodeRecord], batch: list[tuple[str, _Pending]]
    ) -> list[tuple[str, _Pending]]:
        """Offer each fetch in ``batch`` to the owner of its URL's cache key; return what is left to place."""
        assert self.owner_of is not None
        fetches = [p for _, p in batch if p.type == FETCH]
        if not fetches:
            return batch
        await self._learn_targets(fetches)
        runs_fetch = {n.name: n for n in nodes if FETCH in n.types or "*" in n.types}
        groups: dict[str, list[tuple[str, _Pending]]] = {}
        for msg_id, p in batch:
            if p.type == FETCH and p.target:
                try:
                    owner = self.owner_of(http_key(p.target))
                except ValueError:  # not a URL the cache can key: placed as any other task
                    continue
                if owner in runs_fetch:
                    groups.setdefault(owner, []).append((msg_id, p))
        done: set[str] = set()
        for owner, group in groups.items():
            node = runs_fetch[owner]
            outcome = await self.store.place_many(
                self.epoch, [(node.name, node.slots, node.types)], [(p.task_id, m, p.type or "") for m, p in group]
            )
            for (msg_id, _), verdict in zip(group, outcome, strict=True):
                if verdict >= 0:  # placed on its owner, or gone
                    self.backlog.pop(msg_id, None)
                    self.placed += verdict > 0
                    done.add(msg_id)
        return [(m, p) for m, p in batch if m not in done]

    async def _learn_targets(self, fetches: list[_Pending]) -> None:
        unknown = [p for p in fetches if p.target is None]
        if not unknown:
            return
        for p, t in zip(unknown, await self._read_field(unknown, "target"), strict=True):
            p.target = t

    async def _candidates(self) -> list[NodeRecord]:
        """Nodes that may get work; the list is read at most every NODES_TTL seconds."""
        if not self.may_write():  # the lease may have run out by this master's own clock: place nothing
            return []
        if time.monotonic() - self._nodes_read > NODES_TTL:
            now, records = await self.registry.all_with_time()
            self._nodes = [n for n in records if n.schedulable(now, self.alive_within, ignore_load=True)]
            self._nodes_read = time.monotonic()
        return self._nodes

    async def _learn_types(self) -> None:
        unknown = [p for p in self.backlog.values() if p.type is None]
        if not unknown:
            return
        gone = []
        for p, t in zip(unknown, await self._read_field(unknown, "type"), strict=True):
            p.type = t
            if not t:
                gone.append(p)
        if gone:  # deleted before placement: nothing to place
            await self._ack([m for m, p in self.backlog.items() if p in gone])

    async def _read_field(self, pending: list[_Pending], field: str) -> list[str]:
        """One field of each pending task's hash, in one round trip; "" for a task that is gone."""
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for p in pending:
                pipe.hget(self.store.keys.task(p.task_id), field)
            values = await pipe.execute()
        return [v.decode() if v else "" for v in values]

    async def _ack(self, msg_ids: list[str]) -> None:
        stream = self.store.keys.pending
        async with self.store.redis.pipeline(transaction=False) as pipe:
            pipe.xack(stream, SCHEDULER_GROUP, *msg_ids)
            pipe.xdel(stream, *msg_ids)
            await pipe.execute()
        for msg_id in msg_ids:
            self.backlog.pop(msg_id, None)
        self._room.set()
