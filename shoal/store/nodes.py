"""The node registry and the master lease in Redis.

Each node writes its own ``node:{name}`` hash and its beat time in the ``nodes`` zset; anyone reads them.
The lease and its fencing epoch change only through lease.lua and release.lua.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from shoal.keys import Keys
from shoal.store.scripts import Scripts


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """What a node last wrote about itself."""

    name: str
    host: str
    http: str
    grpc: str
    slots: int
    running: int
    pid: int
    types: tuple[str, ...]
    run_tasks: bool
    last_beat: float
    assigned: int = 0


@dataclass(frozen=True, slots=True)
class LeaseState:
    """Who holds the master lease after a take-or-renew: ``verdict`` is won, renewed or held."""

    verdict: str
    holder: str
    epoch: int


class NodeRegistry:
    """Reads and writes of node records and of the lease. Safe to share between coroutines."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = Scripts(redis)

    async def beat(self, record: NodeRecord) -> float:
        """Write this node's record with the Redis clock as its beat time, and return that time."""
        secs, micros = await self.redis.time()
        now = secs + micros / 1e6
        fields: dict[Any, Any] = {
            "name": record.name,
            "host": record.host,
            "http": record.http,
            "grpc": record.grpc,
            "slots": record.slots,
            "running": record.running,
            "pid": record.pid,
            "types": orjson.dumps(list(record.types)),
            "run_tasks": int(record.run_tasks),
            "last_beat": now,
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.node(record.name), mapping=fields)
            pipe.zadd(self.keys.nodes, {record.name: now})
            await pipe.execute()
        return now

    async def now(self) -> float:
        secs, micros = await self.redis.time()
        return float(secs + micros / 1e6)

    async def all(self) -> list[NodeRecord]:
        """Every node that ever beat, with how many tasks are placed on it now."""
        return (await self.all_with_time())[1]

    async def all_with_time(self) -> tuple[float, list[NodeRecord]]:
        """The Redis clock and every node record, read in one round trip."""
        members: Any = await self.redis.zrange(self.keys.nodes, 0, -1)
        names = [n.decode() for n in members]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.time()
            for name in names:
                pipe.hgetall(self.keys.node(name))
                pipe.scard(self.keys.assigned(name))
            replies = await pipe.execute()
        secs, micros = replies.pop(0)
        now = secs + micros / 1e6
        records = []
        for fields, assigned in zip(replies[::2], replies[1::2], strict=True):
            if fields:
                records.append(_record(fields, assigned))
        return now, records

    async def forget(self, name: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.node(name))
            pipe.zrem(self.keys.nodes, name)
            await pipe.execute()

    async def take_lease(self, name: str, ttl_s: float) -> LeaseState:
        reply = await self.scripts.run("lease", self.keys.prefix, name, int(ttl_s * 1000))
        reply = [v.decode() if isinstance(v, bytes) else v for v in reply]
        if reply[0] == "held":
            return LeaseState("held", reply[1], int(reply[2]))
        return LeaseState(reply[0], name, int(reply[1]))

    async def release_lease(self, name: str) -> bool:
        return bool(await self.scripts.run("release", self.keys.prefix, name))

    async def master(self) -> tuple[str | None, int]:
        reply: Any = await self.redis.mget(self.keys.lease, self.keys.epoch)
        holder, epoch = reply
        return (holder.decode() if holder else None), int(epoch or 0)


def _record(fields: dict[bytes, bytes], assigned: int) -> NodeRecord:
    def s(key: str) -> str:
        return fields.get(key.encode(), b"").decode()

    return NodeRecord(
        name=s("name"),
        host=s("host"),
        http=s("http"),
        grpc=s("grpc"),
        slots=int(s("slots") or 0),
        running=int(s("running") or 0),
        pid=int(s("pid") or 0),
        types=tuple(orjson.loads(fields.get(b"types") or b"[]")),
        run_tasks=s("run_tasks") == "1",
        last_beat=float(s("last_beat") or 0),
        assigned=assigned,
    )
