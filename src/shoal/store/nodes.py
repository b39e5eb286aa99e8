"""The node registry, the membership timeline and the master lease in Redis.

Each node writes its own fields of ``node:{name}`` (addresses, load, incarnation, beat) and its beat
time in the ``nodes`` zset, and announces its beats on the ``public`` channel (``NodeRegistry.public``). The
master writes the node's membership ``state`` there (member.lua, fenced by its epoch), with the reason, so
that every node and every user sees the same verdict and why.
The lease and its fencing epoch change only through lease.lua, release.lua and break.lua.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from shoal._utils import is_digits
from shoal.clock import NodeClock
from shoal.errors import StaleEpoch
from shoal.keys import Keys
from shoal.models import ALIVE, DEAD, REJECTED, SUSPECT, NodeRecord
from shoal.store.public import PublicChannel
from shoal.store.scripts import Scripts

__all__ = ["ALIVE", "DEAD", "LEFT_TTL_S", "REJECTED", "SUSPECT", "LeaseState", "NodeRecord", "NodeRegistry"]

#: Seconds the record of a node that left stays behind, marked draining (far longer than any master
#: keeps a list of nodes before placing from it).
LEFT_TTL_S = 60


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
        #: The cluster's ``public`` channel: beats announced, elections asked for.
        self.public = PublicChannel(redis, keys)
        #: The highest epoch this node has seen. The store may lose writes (a restart without persistence, a
        #: failover to a replica that lagged) and with them its epoch; a term this node starts begins above it.
        self.highest_epoch = 0
        self._draining: dict[str, bool] = {}  # what this registry last wrote of each node's draining flag

    def saw_epoch(self, epoch: int) -> int:
        """Remember ``epoch`` if it is the highest seen so far; return it."""
        self.highest_epoch = max(self.highest_epoch, epoch)
        return epoch

    async def _run(self, script: str, *args: Any) -> builtins.list[Any]:
        reply: Any = await self.scripts.run(script, self.keys.prefix, *args)
        if not isinstance(reply, list):
            return [reply]
        return [v.decode() if isinstance(v, bytes) else v for v in reply]

    async def new_incarnation(self, name: str) -> int:
        """Count one more life of node ``name`` (a start, a return after being declared dead) and return
        its number, so that the master tells this life from the previous one."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(self.keys.node(name), "incarnation", 1)
            pipe.incr(self.keys.membership)
            incarnation, _ = await pipe.execute()
        self._draining[name] = False
        return int(incarnation)

    async def membership_version(self) -> int:
        """A number that changes whenever who is a member may have (see ``keys.membership``), not on beats."""
        return int(await self.redis.get(self.keys.membership) or 0)

    async def beat(self, record: NodeRecord, clock: NodeClock | None = None) -> float:
        """Write this node's own fields with the Redis clock as its beat time, and return that time.

        With ``clock``, also measure how far the node's wall clock is from the store's (read on both sides of
        the ``TIME`` call, so the round trip does not count), tell ``clock``, and record it as ``clock_skew``.
        """
        before = clock.wall() if clock is not None else 0.0
        secs, micros = await self.redis.time()
        now = secs + micros / 1e6
        skew = None
        if clock is not None:
            skew = round((before + clock.wall()) / 2 - now, 3)
            clock.observe(skew)
        fields: dict[Any, Any] = {
            "name": record.name,
            "host": record.host,
            "http": record.http,
            "grpc": record.grpc,
            "proxy": record.proxy,
            "slots": record.slots,
            "prefetch": record.prefetch,
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
        if record.labels:
            fields["labels"] = orjson.dumps(record.labels)
        if skew is not None:
            fields["clock_skew"] = skew
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.node(record.name), mapping=fields)
            if not record.labels:  # restarted without the labels it had
                pipe.hdel(self.keys.node(record.name), "labels")
            pipe.persist(self.keys.node(record.name))  # back within LEFT_TTL_S of leaving: keep the record
            pipe.zadd(self.keys.nodes, {record.name: now})
            if self._draining.get(record.name) != record.draining:
                pipe.incr(self.keys.membership)
            await pipe.execute()
        self._draining[record.name] = record.draining
        return now

    async def now(self) -> float:
        """The store's clock, which every node's beats and verdicts are measured on; one round trip, so
        also the cheapest proof that the store answers (StoreUnavailable if not)."""
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
        reply = await self._run("nodes")
        now = int(reply[0]) + int(reply[1]) / 1e6
        pairs = zip(reply[2::2], reply[3::2], strict=True)
        return now, [_record(dict(zip(f[::2], f[1::2], strict=True)), int(a)) for f, a in pairs if f]

    async def forget(self, name: str) -> None:
        """Remove a node that left on purpose (it handed back all its work first).

        Its record stays for LEFT_TTL_S, marked draining, so that a master still placing from an older
        list of nodes gets no room there from place.lua (a task placed on it now would wait for ever).
        """
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.node(name), "draining", 1)
            pipe.expire(self.keys.node(name), LEFT_TTL_S)
            pipe.zrem(self.keys.nodes, name)
            pipe.incr(self.keys.membership)
            await pipe.execute()

    async def prune(self, epoch: int, silent_s: float, most: int) -> list[str]:
        """Forget up to ``most`` nodes declared dead or rejected that have not beaten for ``silent_s`` and
        hold no task; return their names. Raise StaleEpoch if this master was replaced."""
        reply = await self._run("prune", epoch, repr(float(silent_s)), most)
        if reply[0] == "stale":
            raise StaleEpoch(epoch, self.saw_epoch(int(reply[1])))
        return [str(name) for name in reply[1:]]

    # -- the master's verdicts -----------------------------------------------------------------

    async def set_state(
        self, epoch: int, name: str, state: str, incarnation: int, reason: str, extra: dict[str, Any] | None = None
    ) -> bool:
        """Record the master's verdict on a node, fenced by ``epoch``; False if it was already so."""
        reply = await self._run("member", epoch, name, state, incarnation, reason, orjson.dumps(extra or {}))
        if reply[0] == "stale":
            raise StaleEpoch(epoch, self.saw_epoch(int(reply[1])))
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

    async def take_lease(self, name: str, ttl_s: float, term: int | None = None) -> LeaseState:
        """Renew the lease of ``term`` (the epoch this node is master in, 0 for none), or take it if free.

        A lease that is this node's but not in ``term`` (the store lost the term, or this node is not acting
        as master in it) is taken as a new term; ``term=None`` renews whatever term the store has. A new
        term's epoch is above both the store's and every epoch this node has seen, so the epoch never goes
        backwards (lease.lua).
        """
        floor = self.highest_epoch
        reply = await self._run("lease", name, int(ttl_s * 1000), "" if term is None else term, floor)
        if reply[0] == "held":
            return LeaseState("held", reply[1], self.saw_epoch(int(reply[2])))
        return LeaseState(reply[0], name, self.saw_epoch(int(reply[1])))

    async def release_lease(
        self, name: str, candidate: str | None = None, note_ttl_s: float = 5.0, why: str = "", epoch: int = 0
    ) -> bool:
        """Give up the lease now, naming the node that should take it (``None``: the next in line); with
        ``why``, write on the timeline, in the same step, that the master of ``epoch`` stepped down and why."""
        reply = await self._run("release", name, candidate or "", int(note_ttl_s * 1000), why, epoch)
        return bool(reply[0])

    async def break_lease(self, holder: str, rule: str) -> bool:
        """Free the lease of a master that is known to be gone, noting ``rule`` (why) on the timeline in the
        same step; False if someone else holds it now."""
        reply = await self._run("break", holder, rule)
        return bool(reply[0])

    async def master(self) -> tuple[str | None, int]:
        reply: Any = await self.redis.mget(self.keys.lease, self.keys.epoch)
        holder, epoch = reply
        return (holder.decode() if holder else None), self.saw_epoch(int(epoch or 0))

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
        prefetch=i("prefetch"),
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
        clock_skew=_number(s("clock_skew")),
        labels=orjson.loads(fields.get(b"labels") or b"{}"),
    )


def _number(text: str) -> float | None:
    """A float the registry wrote; None when absent or unreadable."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


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
