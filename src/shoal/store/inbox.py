"""A node's placements as the store holds them: its ``assigned`` set and its inbox stream of run and kill
orders, read for the worker's reconciler (shoal.worker.reconcile) and the service manager's watchdog.

The worker's own reads and acknowledgements of the inbox are the hot path and stay with it; this module
only looks, never writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shoal.keys import WORKER_GROUP, Keys
from shoal.store.client import translated
from shoal.store.tasks import TaskStore

Record = tuple[str | None, str | None, str | None]
"""A task's state, node and attempts as the store holds them (None for a missing task or field)."""


@dataclass(frozen=True, slots=True)
class Order:
    """One entry of the inbox. ``unacked``: delivered to the worker but not acknowledged (it reads those
    again after a failed read or acknowledgement); ``acked``: acknowledged, but its deletion failed."""

    task_id: str
    op: str
    unacked: bool
    acked: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Task records and the inbox's orders, read in one MULTI; ``complete`` if the whole inbox was seen."""

    records: dict[str, Record]
    orders: list[Order]
    complete: bool


class NodeInbox:
    """Reads of one node's placements. Safe to share between coroutines."""

    def __init__(self, redis: Redis, keys: Keys, node: str) -> None:
        self.redis = redis
        self.keys = keys
        self.node = node

    @classmethod
    def of(cls, tasks: TaskStore, node: str) -> NodeInbox:
        """The inbox of ``node`` in the store ``tasks`` uses."""
        return cls(tasks.redis, tasks.keys, node)

    async def assigned(self) -> set[str]:
        """The ids of the tasks the store places on this node now (INQUEUE or RUNNING there)."""
        members: Any = await self.redis.smembers(self.keys.assigned(self.node))
        return {m.decode() if isinstance(m, bytes) else m for m in members}

    async def length(self) -> int:
        """Orders in the inbox, read or not (the worker deletes each once it has acknowledged it)."""
        return int(await self.redis.xlen(self.keys.inbox(self.node)))

    async def snapshot(self, ids: Sequence[str], scan: int) -> Snapshot:
        """The records of tasks ``ids`` and the first ``scan`` orders of the inbox, as of one instant.

        An order counts as acknowledged when it is at or before the worker group's last delivered entry and
        not pending. A missing stream or group means nothing was delivered yet: every order is unread.
        """
        inbox = self.keys.inbox(self.node)
        async with self.redis.pipeline(transaction=True) as pipe:
            for task_id in ids:
                pipe.hmget(self.keys.task(task_id), "state", "node", "attempts")
            pipe.xinfo_groups(inbox)
            pipe.xpending_range(inbox, WORKER_GROUP, "-", "+", scan)
            pipe.xrange(inbox, "-", "+", scan)
            replies = await pipe.execute(raise_on_error=False)
        groups, pending, entries = replies[len(ids) :]
        for reply in (*replies[: len(ids)], entries):  # the others' errors have a meaning: see above
            if isinstance(reply, Exception):
                raise translated(reply) if isinstance(reply, RedisError) else reply
        records = {task_id: _record(reply) for task_id, reply in zip(ids, replies, strict=False)}
        last = (0, 0)
        if not isinstance(groups, Exception):
            for group in groups:
                if group.get("name") == WORKER_GROUP.encode():
                    last = _stream_id(group.get("last-delivered-id"))
        unacked = set() if isinstance(pending, Exception) else {p["message_id"] for p in pending}
        orders = [
            Order(
                task_id=task_id,
                op=(fields.get(b"op") or b"").decode(),
                unacked=entry_id in unacked,
                acked=entry_id not in unacked and _stream_id(entry_id) <= last,
            )
            for entry_id, fields in entries
            # a run order names every task one placement put here ("ids"); a kill order one ("id")
            for task_id in (fields.get(b"ids") or fields.get(b"id") or b"").decode().split(",")
        ]
        return Snapshot(records, orders, complete=len(entries) < scan)


def _record(reply: Any) -> Record:
    state, node, attempts = (v.decode() if isinstance(v, bytes) else None for v in reply)
    return state, node, attempts


def _stream_id(raw: Any) -> tuple[int, int]:
    """``b"1700000000000-3"`` -> (1700000000000, 3), so that entry ids compare in stream order."""
    text = raw.decode() if isinstance(raw, bytes) else str(raw or "0-0")
    ms, _, seq = text.partition("-")
    return int(ms or 0), int(seq or 0)
