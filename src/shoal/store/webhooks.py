"""Webhook subscriptions, their deliveries and the delivery queue in Redis.

Every write is one Lua script (``scripts/webhook_*.lua``); the keys are in ``shoal.keys``. The queue has two
sorted sets: ``webhook-due`` (deliveries to send, by when) and ``webhook-leases`` (deliveries a node is
sending, by when its lease lapses). A delivery moves from the first to the second when a node leases it
(``claim``), and leaves the second when its outcome is recorded (``done``): delivered, due again after a
backoff, or failed. A node that dies holding a lease loses nothing: the next ``claim`` after the lease lapsed
makes the delivery due again.

Deliveries come from the task-events stream (``keys.task_events``), which every node reads through the
consumer group ``webhooks`` (``read_events``); entries a node read and never acknowledged are taken over by
another after ``webhook_claim_idle`` (``claim_events``). ``ingest`` acknowledges entries and makes their
deliveries in one atomic step.
"""

from __future__ import annotations

import builtins
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
from redis.exceptions import ResponseError

from shoal.errors import DeliveryNotFound, InvalidInput, WebhookNotFound
from shoal.keys import WEBHOOKS_GROUP
from shoal.store import task_events
from shoal.store.tasks import TaskStore
from shoal.webhooks.model import (
    KEEP_ATTEMPTS,
    KEEP_DELIVERIES,
    MAX_DELIVERIES,
    MAX_WEBHOOKS,
    PENDING,
    Attempt,
    Delivery,
    Webhook,
    WebhookSpec,
)

log = logging.getLogger("shoal.store.webhooks")

#: A task event as ingest takes it: (task id, state, type, at).
Event = tuple[str, str, str, float]
_DELIVERY_FIELDS = (
    "webhook", "task", "state", "type", "at", "created_at", "status", "attempts", "next_at", "first_at",
    "replays", "log",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Leased:
    """A delivery a node leased to send: what it needs to build, sign and POST it, and its lease token."""

    id: str
    webhook_id: str
    task_id: str
    state: str
    task_type: str
    at: float
    body: str  # "" until a first attempt fixed it
    attempts: int
    url: str
    secret: str
    include_result: bool
    lease: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt of a delivery came to. ``ok``: the receiver answered 2xx."""

    ok: bool
    status_code: int | None
    latency_ms: float
    response: str = ""
    error: str = ""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def events_of(entry_id: str, fields: dict[Any, Any]) -> builtins.list[Event]:
    """The task events of one entry of the task-events stream (``shoal.store.task_events``), as ingest takes
    them; a deleted task's event is left out (no subscription names that state)."""
    raw = {(k.encode() if isinstance(k, str) else k): v for k, v in fields.items()}
    return [
        (task_id, event.state.name, event.type or "", event.at)
        for task_id, event in task_events.decode(entry_id, raw)
        if event is not None
    ]


class WebhookStore:
    """Reads and atomic writes of one cluster's webhooks; shares the TaskStore's connection and scripts.
    Any number of callers may use one at once."""

    def __init__(self, tasks: TaskStore, *, most: int = MAX_WEBHOOKS) -> None:
        self.tasks = tasks
        self.redis = tasks.redis
        self.keys = tasks.keys
        self.most = most

    async def _run(self, script: str, *args: Any) -> builtins.list[Any]:
        reply: Any = await self.tasks.scripts.run(script, self.keys.prefix, *args)
        if not isinstance(reply, list):
            return [reply]
        return [v.decode() if isinstance(v, bytes) else v for v in reply]

    # -- subscriptions ---------------------------------------------------------------------------

    async def add(self, spec: WebhookSpec, secret: str) -> Webhook:
        """Store a new subscription under a new id; InvalidInput if the cluster holds its most."""
        for _ in range(3):
            webhook_id = "wh_" + secrets.token_hex(8)
            reply = await self._run(
                "webhook_add",
                webhook_id,
                self.most,
                spec.url,
                ",".join(spec.events),
                ",".join(spec.types),
                "1" if spec.include_result else "",
                secret,
                self.keys.task_events,
                WEBHOOKS_GROUP,
            )
            if reply[0] == "full":
                raise InvalidInput(f"the cluster holds {reply[1]} webhooks, its most ({self.most}); delete some first")
            if reply[0] == "ok":
                return replace(await self.get(webhook_id), secret=secret)
        raise InvalidInput("could not make a unique webhook id; try again")  # pragma: no cover - 2**64 ids

    async def get(self, webhook_id: str) -> Webhook:
        fields: Any = await self.redis.hgetall(self.keys.webhook(webhook_id))
        if not fields:
            raise WebhookNotFound(webhook_id)
        return _webhook(webhook_id, fields)

    async def list(self) -> builtins.list[Webhook]:
        """Every subscription, oldest first, without its secret."""
        members: Any = await self.redis.zrange(self.keys.webhooks, 0, -1)
        ids = [_text(m) for m in members]
        async with self.redis.pipeline(transaction=False) as pipe:
            for webhook_id in ids:
                pipe.hgetall(self.keys.webhook(webhook_id))
            replies = await pipe.execute()
        return [_webhook(i, f) for i, f in zip(ids, replies, strict=True) if f]

    async def count(self) -> int:
        return int(await self.redis.zcard(self.keys.webhooks))

    async def delete(self, webhook_id: str) -> None:
        """Remove the subscription, its log and its pending deliveries."""
        if (await self._run("webhook_delete", webhook_id))[0] == "gone":
            raise WebhookNotFound(webhook_id)

    # -- the delivery log ------------------------------------------------------------------------

    async def deliveries(
        self, webhook_id: str, *, limit: int = 50, status: str | None = None
    ) -> builtins.list[Delivery]:
        """The subscription's deliveries, newest event first: ``limit`` of them (of ``status`` when given)."""
        await self.get(webhook_id)
        log_key = self.keys.deliveries(webhook_id)
        found: builtins.list[Delivery] = []
        start = 0
        page = limit if status is None else max(limit, 200)
        while len(found) < limit:
            members: Any = await self.redis.zrevrangebyscore(log_key, "+inf", "-inf", start=start, num=page)
            if not members:
                break
            start += len(members)
            for d in await self._deliveries([_text(m) for m in members]):
                if status is None or d.status == status:
                    found.append(d)
        return found[:limit]

    async def delivery(self, webhook_id: str, delivery_id: str) -> Delivery:
        found = await self._deliveries([delivery_id])
        if not found or found[0].webhook_id != webhook_id:
            await self.get(webhook_id)  # WebhookNotFound first, when it is the subscription that is missing
            raise DeliveryNotFound(webhook_id, delivery_id)
        return found[0]

    async def _deliveries(self, ids: Sequence[str]) -> builtins.list[Delivery]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for delivery_id in ids:
                pipe.hmget(self.keys.delivery(delivery_id), *_DELIVERY_FIELDS)
            replies = await pipe.execute()
        return [_delivery(i, v) for i, v in zip(ids, replies, strict=True) if v[0] is not None]

    async def replay(self, webhook_id: str, delivery_id: str) -> Delivery:
        """Send one delivery again, now."""
        reply = await self._run("webhook_replay", webhook_id, "one", delivery_id)
        if reply[0] == "gone":
            raise WebhookNotFound(webhook_id)
        if reply[0] == "missing":
            raise DeliveryNotFound(webhook_id, delivery_id)
        return await self.delivery(webhook_id, delivery_id)

    async def replay_since(self, webhook_id: str, since: float) -> builtins.list[str]:
        """Send again every delivery of an event at or after ``since`` (Unix seconds); their ids."""
        reply = await self._run("webhook_replay", webhook_id, "since", repr(float(since)))
        if reply[0] == "gone":
            raise WebhookNotFound(webhook_id)
        return [str(d) for d in reply[1:]]

    # -- from task events to deliveries ----------------------------------------------------------

    async def ensure_group(self) -> None:
        """Make the consumer group ``webhooks`` on the task-events stream, from its end, if it is missing."""
        try:
            await self.redis.xgroup_create(self.keys.task_events, WEBHOOKS_GROUP, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_events(
        self, consumer: str, *, count: int, block_ms: int | None
    ) -> builtins.list[tuple[str, builtins.list[Event]]]:
        """New entries of the task-events stream for ``consumer``, waiting up to ``block_ms``: (entry id, its
        events). The group is made again if it went missing (a store that was emptied)."""
        streams: dict[Any, Any] = {self.keys.task_events: ">"}
        try:
            reply: Any = await self.redis.xreadgroup(WEBHOOKS_GROUP, consumer, streams, count=count, block=block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        return [entry for _, entries in reply or () for entry in _entries(entries)]

    async def claim_events(
        self, consumer: str, *, idle_ms: int, start: str = "0-0", count: int = 100
    ) -> tuple[str, builtins.list[tuple[str, builtins.list[Event]]]]:
        """Take over entries other consumers read more than ``idle_ms`` ago and never acknowledged (their node
        died before ingesting them); the entry to go on from ("0-0": the end) and those taken."""
        try:
            reply: Any = await self.redis.xautoclaim(
                self.keys.task_events, WEBHOOKS_GROUP, consumer, min_idle_time=idle_ms, start_id=start, count=count
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            return "0-0", []
        return _text(reply[0]), _entries(reply[1])

    async def ingest(self, entries: Sequence[tuple[str, Sequence[Event]]]) -> int:
        """Acknowledge the entries and make their deliveries, in one step; how many deliveries were made."""
        if not entries:
            return 0
        args: builtins.list[Any] = [self.keys.task_events, WEBHOOKS_GROUP, KEEP_DELIVERIES, MAX_DELIVERIES]
        for entry_id, events in entries:
            args += [entry_id, orjson.dumps([list(e) for e in events]).decode()]
        reply = await self._run("webhook_ingest", *args)
        return int(reply[0])

    # -- sending ---------------------------------------------------------------------------------

    async def claim(self, node: str, most: int, lease_s: float) -> tuple[float, float | None, builtins.list[Leased]]:
        """Lease up to ``most`` due deliveries to ``node`` for ``lease_s`` seconds (and make those whose lease
        lapsed due again): the store's time, when the next delivery is due (None: none is), and those leased."""
        reply = await self._run("webhook_claim", node, most, repr(float(lease_s)))
        now, nxt = float(reply[0]), float(reply[1]) if reply[1] else None
        leased = []
        for raw in reply[2:]:
            d = orjson.loads(raw)
            leased.append(
                Leased(
                    id=str(d["id"]),
                    webhook_id=d["webhook"],
                    task_id=d["task"],
                    state=d["state"],
                    task_type=d.get("type") or "",
                    at=float(d["at"]),
                    body=d.get("body") or "",
                    attempts=int(d.get("attempts") or 0),
                    url=d["url"],
                    secret=d["secret"],
                    include_result=bool(d.get("include_result")),
                    lease=d["lease"],
                )
            )
        return now, nxt, leased

    async def done(
        self, leased: Leased, outcome: Outcome, *, node: str, body: str, retry_in_s: float, retry_for_s: float
    ) -> tuple[str, float | None]:
        """Record an attempt's outcome under the lease: the delivery's status after it ("stale" when the lease
        was lost, "gone" when the delivery was) and when it is due next."""
        reply = await self._run(
            "webhook_done",
            leased.id,
            leased.lease,
            "ok" if outcome.ok else "fail",
            "" if outcome.status_code is None else outcome.status_code,
            repr(round(outcome.latency_ms, 1)),
            outcome.response,
            outcome.error,
            node,
            repr(float(retry_in_s)),
            repr(float(retry_for_s)),
            KEEP_ATTEMPTS,
            body,
        )
        return str(reply[0]), float(reply[1]) if len(reply) > 1 and reply[1] else None


def _entries(entries: Any) -> builtins.list[tuple[str, builtins.list[Event]]]:
    found = []
    for entry_id, fields in entries or ():
        text = _text(entry_id)
        found.append((text, events_of(text, fields or {})))
    return found


def _webhook(webhook_id: str, fields: dict[bytes, bytes]) -> Webhook:
    def get(name: str) -> str:
        return fields.get(name.encode(), b"").decode()

    return Webhook(
        id=webhook_id,
        url=get("url"),
        events=tuple(e for e in get("events").split(",") if e),
        types=tuple(t for t in get("types").split(",") if t),
        include_result=get("include_result") == "1",
        created_at=float(get("created_at") or 0),
        dropped=int(get("dropped") or 0),
    )


def _delivery(delivery_id: str, values: builtins.list[bytes | None]) -> Delivery:
    f = {name: (v.decode() if v is not None else "") for name, v in zip(_DELIVERY_FIELDS, values, strict=True)}

    def num(name: str) -> float | None:
        return float(f[name]) if f[name] else None

    history: tuple[Attempt, ...] = ()
    if f["log"]:
        try:
            history = tuple(Attempt.from_json(a) for a in orjson.loads(f["log"]) if isinstance(a, dict))
        except orjson.JSONDecodeError:
            history = ()
    return Delivery(
        id=delivery_id,
        webhook_id=f["webhook"],
        task_id=f["task"],
        state=f["state"],
        task_type=f["type"],
        event_at=num("at") or 0.0,
        created_at=num("created_at") or 0.0,
        status=f["status"] or PENDING,
        attempts=int(f["attempts"] or 0),
        next_attempt_at=num("next_at"),
        first_attempt_at=num("first_at"),
        replays=int(f["replays"] or 0),
        history=history,
    )
