"""The task event stream in the store (shoal.store.task_events): what each script call adds, its cap, its
database, and event ids as clients send them back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from shoal._utils import cancel_and_wait
from shoal.errors import InvalidInput
from shoal.event_ids import EventId, parse_event_id
from shoal.events import EventHub
from shoal.keys import Keys
from shoal.models import TaskEvent, TaskSpec, TaskState
from shoal.store.nodes import NodeRegistry
from shoal.store.tasks import Report, TaskStore
from shoal.testing import multiplier
from shoal.web.app import create_app

TOKEN = "t" * 32


def spec(name: str = "t") -> TaskSpec:
    return TaskSpec(name=name, type="echo", target="x")


@pytest.fixture
async def redis(redis_admin_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_admin_url)
    try:
        yield client
    finally:
        await client.aclose()


async def entries(redis: Redis, keys: Keys) -> list[list[dict[str, Any]]]:
    """Every entry's events, oldest first."""
    found: Any = await redis.xrange(keys.task_events)
    return [orjson.loads(fields[b"e"]) for _, fields in found]


async def test_each_script_call_adds_one_entry_with_its_events(redis: Redis) -> None:
    keys = Keys("events")
    tasks, nodes = TaskStore(redis, keys, result_max_bytes=4096), NodeRegistry(redis, keys)
    a, b = await tasks.create([spec("a"), spec("b")])
    epoch = (await nodes.take_lease("master", 30)).epoch
    assert await tasks.place(epoch, "n1", 4, [a.id]) == [1]
    attempt = await tasks.start(a.id, "n1")
    assert attempt is not None
    await tasks.finish_many("n1", [Report(a.id, attempt, "succeeded", result=None)])
    await tasks.delete(b.id)
    got = await entries(redis, keys)
    assert [[(e["id"], e["state"], e["node"], e["type"]) for e in entry] for entry in got] == [
        [(a.id, "WAITING", None, "echo"), (b.id, "WAITING", None, "echo")],  # one create: one entry
        [(a.id, "INQUEUE", "n1", "echo")],
        [(a.id, "RUNNING", "n1", "echo")],
        [(a.id, "SUCCEED", "n1", "echo")],
        [(b.id, "KILLED", None, "echo"), (b.id, "DELETED", None, "echo")],  # killed, then deleted
    ]
    assert all(set(e) == {"id", "state", "node", "at", "type"} for entry in got for e in entry)
    assert all(abs(e["at"] - time.time()) < 60 for entry in got for e in entry)  # the store's clock


@contextlib.asynccontextmanager
async def listening(redis_admin_url: str, keys: Keys) -> AsyncIterator[PubSub]:
    """A subscriber to the cluster's events and progress channels, on a connection of its own."""
    listener = Redis.from_url(redis_admin_url)
    pubsub = listener.pubsub()
    try:
        await pubsub.subscribe(keys.task_events_channel, keys.task_progress_channel)
        yield pubsub
    finally:
        await pubsub.aclose()
        await listener.aclose()


async def published(pubsub: PubSub, count: int) -> list[tuple[str, list[str]]]:
    """The next ``count`` entries published on the channels ``pubsub`` listens to: (channel, their states)."""
    heard: list[tuple[str, list[str]]] = []
    async with asyncio.timeout(10 * multiplier()):
        while len(heard) < count:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                _entry, _, body = message["data"].partition(b" ")
                heard.append((message["channel"].decode(), [e["state"] for e in orjson.loads(body)]))
    return heard


async def test_entries_that_end_no_task_go_to_the_progress_channel_the_others_to_the_events_channel(
    redis: Redis, redis_admin_url: str
) -> None:
    keys = Keys("channels")
    tasks, nodes = TaskStore(redis, keys, result_max_bytes=4096), NodeRegistry(redis, keys)
    async with listening(redis_admin_url, keys) as pubsub:
        a, b, c = await tasks.create([spec("a"), spec("b"), spec("c")])
        epoch = (await nodes.take_lease("master", 30)).epoch
        assert await tasks.place(epoch, "n1", 4, [a.id, b.id]) == [1, 1]
        attempt = await tasks.start(a.id, "n1")
        assert attempt is not None
        await tasks.finish_many("n1", [Report(a.id, attempt, "succeeded", result=None)])
        await tasks.kill(b.id)
        await tasks.delete(c.id)
        heard = await published(pubsub, 6)
        progress, ends = keys.task_progress_channel, keys.task_events_channel
        assert heard == [
            (progress, ["WAITING", "WAITING", "WAITING"]),  # stored
            (progress, ["INQUEUE", "INQUEUE"]),  # placed
            (progress, ["RUNNING"]),  # started
            (ends, ["SUCCEED"]),  # finished
            (ends, ["KILLED"]),
            (ends, ["KILLED", "DELETED"]),  # a task deleted before it ended: killed first
        ]


async def test_a_retry_and_a_start_in_one_call_are_one_entry_retry_first_on_the_events_channel(
    redis: Redis, redis_admin_url: str
) -> None:
    keys = Keys("ends-starts")
    tasks, nodes = TaskStore(redis, keys, result_max_bytes=4096), NodeRegistry(redis, keys)
    async with listening(redis_admin_url, keys) as pubsub:
        a, b = await tasks.create([TaskSpec(name="a", type="echo", target="x", max_retries=1), spec("b")])
        epoch = (await nodes.take_lease("master", 30)).epoch
        assert await tasks.place(epoch, "n1", 4, [a.id, b.id]) == [1, 1]
        assert await tasks.start(a.id, "n1") == 1
        report = Report(a.id, 1, "failed", "ValueError: once")
        ended, begun = await tasks.finish_and_begin("n1", [report], [(b.id, False)])
        assert [f.verdict for f in ended] == ["retry"]
        assert len(begun) == 1 and begun[0] is not None and begun[0].state is TaskState.RUNNING
        heard = await published(pubsub, 4)  # stored, placed, started, then the call of both
        # a retry's WAITING is for every node (the master places it again), as when it is reported alone:
        # the start beside it does not make the entry one for the progress channel only
        assert heard[-1] == (keys.task_events_channel, ["WAITING", "RUNNING"])
        assert (await tasks.get(a.id)).state is TaskState.WAITING


async def test_the_stream_is_capped_at_about_event_retention_entries(redis: Redis) -> None:
    keys = Keys("capped")
    tasks = TaskStore(redis, keys, result_max_bytes=4096, event_retention=1000)
    for n in range(1300):
        await tasks.create([spec(f"t{n}")])
    kept: int = await redis.xlen(keys.task_events)
    assert 1000 <= kept <= 1100, kept  # MAXLEN ~: whole blocks of entries go, never below the cap
    newest: Any = await redis.xrevrange(keys.task_events, count=1)
    assert orjson.loads(newest[0][1][b"e"])[0]["state"] == "WAITING"


async def test_clusters_of_one_name_on_two_databases_do_not_hear_each_other(redis: Redis, redis_admin_url: str) -> None:
    assert redis_admin_url.endswith("/0"), redis_admin_url
    other_db = Redis.from_url(redis_admin_url[:-2] + "/1")
    await other_db.flushdb()
    keys = Keys("same")  # the stream's key is the same name on both: the database keeps them apart
    on_db1 = Keys("same", db=1)  # a hook wants every change: the hub hears the progress channel too
    hub = EventHub(other_db, keys.task_events, on_db1.task_events_channel, progress=on_db1.task_progress_channel)
    heard: list[TaskEvent] = []
    hub.hooks.append(heard.append)
    runner = asyncio.create_task(hub.run())
    try:
        await asyncio.wait_for(hub.subscribed.wait(), 10 * multiplier())
        on_0 = (await TaskStore(redis, keys, result_max_bytes=4096).create([spec("db0")]))[0]
        on_1 = (await TaskStore(other_db, Keys("same", db=1), result_max_bytes=4096).create([spec("db1")]))[0]
        async with asyncio.timeout(10 * multiplier()):
            while not any(e.id == on_1.id for e in heard):
                await asyncio.sleep(0.02)
        assert on_0.id not in {e.id for e in heard}
        assert [e["id"] for entry in await entries(redis, keys) for e in entry] == [on_0.id]
    finally:
        await cancel_and_wait(runner)
        await other_db.flushdb()
        await other_db.aclose()


def test_event_ids_parse_and_order_as_the_stream_does() -> None:
    assert parse_event_id("1700000000000-3/12") == EventId(1700000000000, 3, 12)
    assert str(parse_event_id("1700000000000-3/12")) == "1700000000000-3/12"
    assert parse_event_id("9-0/0") < parse_event_id("10-0/0") < parse_event_id("10-1/0") < parse_event_id("10-1/1")
    for bad in ("", "1-2", "1-2/", "a-1/1", "1-1/1/1", "-1-0/0", "1" * 80):
        with pytest.raises(InvalidInput, match="bad event id"):
            parse_event_id(bad)


class Untouchable:
    """Stands where the node goes; any use of it is a failure of the test."""

    def __getattr__(self, name: str) -> Any:
        pytest.fail(f"the request reached the node ({name}) though it should have been refused")


async def test_a_malformed_event_id_is_refused_before_the_stream_starts() -> None:
    app = create_app(tasks=Untouchable(), cluster=Untouchable(), token=TOKEN, registry=CollectorRegistry())  # type: ignore[arg-type]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shoal.test") as c:
        for request in (
            {"headers": {**headers, "Last-Event-ID": "last week"}},
            {"headers": headers, "params": {"since": "1-0"}},
            {"headers": headers, "params": {"since": "1-0/" + "9" * 70}},
        ):
            refused = await c.get("/api/v1/events", **request)  # type: ignore[arg-type]
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"] == "invalid_input" and refused.json()["message"]
