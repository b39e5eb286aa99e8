"""The node registry, the membership timeline and the master lease in Redis.

Each node writes its own fields of ``node:{name}`` (addresses, load, incarnation, beat) and its beat
time in the ``nodes`` zset. The master writes the node's membership ``state`` there (member.lua, fenced
by its epoch), with the reason, so that every node and every user sees the same verdict and why.
The lease and its fencing epoch change only through lease.lua, release.lua and break.lua.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from shoal._utils import is_digits
from shoal.errors import StaleEpoch
from shoal.keys import Keys
from shoal.store.scripts import Scripts

ALIVE, SUSPECT, DEAD, REJECTED = "alive", "suspect", "dead", "rejected"
#: Seconds the record of a node that left stays behind, marked draining (far longer than any master
#: keeps a list of nodes before placing from it).
LEFT_TTL_S = 60


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A node as it last described itself, and what the master last decided about it."""

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
    incarnation: int = 0
    priority: int = 0
    master_eligible: bool = True
    draining: bool = False
    state: str = ""  # the master's verdict; "" until it has seen this node
    state_incarnation: int = 0  # the incarnation the verdict is about
    reason: str = ""
    assigned: int = 0  # tasks placed on it and not finished
    cache: dict[str, int] | None = None  # its cache shard's stats as of its last beat
    proxy: str = ""  # its forward proxy's advertised host:port; "" when it runs none

    @property
    def admitted(self) -> bool:
        """Verified by the master in its current incarnation, and not since declared dead or rejected."""
        return self.state in (ALIVE, SUSPECT) and self.state_incarnation == self.incarnation

    def schedulable(self, now: float, alive_within: float, *, ignore_load: bool = False) -> bool:
        return (
            self.run_tasks
            and not self.draining
            and self.state == ALIVE
            and self.admitted
            and now - self.last_beat <= alive_within
            and (ignore_load or self.assigned < self.slots)
        )


@dataclass(frozen=True, slots=True)
class LeaseState:
    """Who holds the master lease after a take-or-renew: ``verdict`` is won, renewed or held."""

    verdict: str
    holder: str
    epoch: int


class NodeRegistry:
    """Reads and writes of node records, the timeline and the lease. Safe to share between coroutines."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = Scripts(redis)

    async def _run(self, script: str, *args: Any) -> builtins.list[Any]:
        reply: Any = await self.scripts.run(script, self.keys.prefix, *args)
        if not isinstance(reply, list):
            return [reply]
        return [v.decode() if isinstance(v, bytes) else v for v in reply]

    async def beat(self, record: NodeRecord) -> float:
        """Write this node's own fields with the Redis clock as its beat time, and return that time."""
        secs, micros = await self.redis.time()
        now = secs + micros / 1e6
        fields: dict[Any, Any] = {
            "name": record.name,
            "host": record.host,
            "http": record.http,
            "grpc": record.grpc,
            "proxy": record.proxy,
            "slots": record.slots,
            "running": record.running,
            "pid": record.pid,
            "types": orjson.dumps(list(record.types)),
            "run_tasks": int(record.run_tasks),
            "incarnation": record.incarnation,
            "priority": record.priority,
            "master_eligible": int(record.master_eligible),
            "draining": int(record.draining),
            "last_beat": now,
        }
        if record.cache is not None:
            fields["cache"] = orjson.dumps(record.cache)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.node(record.name), mapping=fields)
            pipe.persist(self.keys.node(record.name))  # back within LEFT_TTL_S of leaving: keep the record
            pipe.zadd(self.keys.nodes, {record.name: now})
            await pipe.execute()
        return now

    async def now(self) -> float:
        secs, micros = await self.redis.time()
        return float(secs + micros / 1e6)

    async def get(self, name: str) -> NodeRecord | None:
        fields, assigned = await self._pipeline_one(name)
        return _record(fields, assigned) if fields else None

    async def _pipeline_one(self, name: str) -> tuple[dict[bytes, bytes], int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.node(name))
            pipe.scard(self.keys.assigned(name))
            fields, assigned = await pipe.execute()
        return fields, assigned

    async def all(self) -> builtins.list[NodeRecord]:
        """Every node that ever beat and was not forgotten, with how many tasks are placed on it now."""
        return (await self.all_with_time())[1]

    async def all_with_time(self) -> tuple[float, builtins.list[NodeRecord]]:
        """The Redis clock and every node record."""
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
        records = [_record(f, a) for f, a in zip(replies[::2], replies[1::2], strict=True) if f]
        return now, records

    async def forget(self, name: str) -> None:
        """Remove a node that left on purpose (it handed back all its work first).

        Its record stays for LEFT_TTL_S, marked draining, so that a master still placing from an older
        list of nodes gets no room there from place.lua (a task placed on it now would wait for ever).
        """
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.node(name), "draining", 1)
            pipe.expire(self.keys.node(name), LEFT_TTL_S)
            pipe.zrem(self.keys.nodes, name)
            await pipe.execute()

    # -- the master's verdicts -----------------------------------------------------------------

    async def set_state(
        self, epoch: int, name: str, state: str, incarnation: int, reason: str, extra: dict[str, Any] | None = None
    ) -> bool:
        """Record the master's verdict on a node, fenced by ``epoch``; False if it was already so."""
        reply = await self._run("member", epoch, name, state, incarnation, reason, orjson.dumps(extra or {}))
        if reply[0] == "stale":
            raise StaleEpoch(epoch, int(reply[1]))
        return bool(reply[0] == "ok")

    async def note(self, kind: str, node: str, rule: str, epoch: int, extra: dict[str, Any] | None = None) -> None:
        """Add an event to the membership timeline that changes no state (e.g. tasks re-placed)."""
        await self._run("note", kind, node, rule, epoch, orjson.dumps(extra or {}))

    async def timeline(self, count: int = 200) -> builtins.list[dict[str, Any]]:
        """The latest membership events, newest first: in the order of their stream IDs (the store's clock in
        ms, then a counter), which is the order they were written in; ``at`` agrees with it."""
        entries: Any = await self.redis.xrevrange(self.keys.timeline, count=count)
        events = []
        for entry_id, fields in entries:
            event = {k.decode(): v.decode() for k, v in fields.items()}
            event["id"] = entry_id.decode()
            event["at"] = float(event.get("at", 0))
            event["epoch"] = int(event.get("epoch", 0))
            event["extra"] = orjson.loads(event.get("extra") or "{}")
            events.append(event)
        return events

    # -- the lease -------------------------------------------------------------------------------

    async def take_lease(self, name: str, ttl_s: float) -> LeaseState:
        reply = await self._run("lease", name, int(ttl_s * 1000))
        if reply[0] == "held":
            return LeaseState("held", reply[1], int(reply[2]))
        return LeaseState(reply[0], name, int(reply[1]))

    async def release_lease(self, name: str, candidate: str | None = None, note_ttl_s: float = 5.0) -> bool:
        """Give up the lease now, naming the node that should take it (``None``: the next in line)."""
        reply = await self._run("release", name, candidate or "", int(note_ttl_s * 1000))
        return bool(reply[0])

    async def break_lease(self, holder: str, rule: str) -> bool:
        """Free the lease of a master that is known to be gone, noting ``rule`` (why) on the timeline in the
        same step; False if someone else holds it now."""
        reply = await self._run("break", holder, rule)
        return bool(reply[0])

    async def master(self) -> tuple[str | None, int]:
        reply: Any = await self.redis.mget(self.keys.lease, self.keys.epoch)
        holder, epoch = reply
        return (holder.decode() if holder else None), int(epoch or 0)

    async def handover(self) -> str | None:
        """The node a leaving master named to take over, while that note lasts."""
        value: Any = await self.redis.get(self.keys.handover)
        return value.decode() if value else None


def _record(fields: dict[bytes, bytes], assigned: int) -> NodeRecord:
    def s(key: str) -> str:
        return fields.get(key.encode(), b"").decode()

    def i(key: str, default: int = 0) -> int:
        text = s(key)
        return int(text) if is_digits(text.lstrip("-")) else default

    return NodeRecord(
        name=s("name"),
        host=s("host"),
        http=s("http"),
        grpc=s("grpc"),
        proxy=s("proxy"),
        slots=i("slots"),
        running=i("running"),
        pid=i("pid"),
        types=tuple(orjson.loads(fields.get(b"types") or b"[]")),
        run_tasks=s("run_tasks") == "1",
        last_beat=float(s("last_beat") or 0),
        incarnation=i("incarnation"),
        priority=i("priority"),
        master_eligible=s("master_eligible") != "0",
        draining=s("draining") == "1",
        state=s("state"),
        state_incarnation=i("state_incarnation"),
        reason=s("reason"),
        assigned=assigned,
        cache=_stats(fields.get(b"cache")),
    )


def _stats(raw: bytes | None) -> dict[str, int] | None:
    """A node's published cache stats; None when it publishes none (or something unreadable)."""
    if not raw:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    return {str(k): int(v) for k, v in data.items() if isinstance(v, int) and not isinstance(v, bool)}
