"""The node's reading of the task event stream: a connection that goes silent (the store stops answering, the
connection still open) is noticed and made again, so that waiters and streams do not wait on it for ever; and
what was added to the stream meanwhile is not missed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from shoal import events
from shoal._utils import cancel_and_wait
from shoal.errors import InvalidInput
from shoal.events import LOST_AFTER_S, EventHub, TaskWatch
from shoal.models import EventGap, TaskEvent, TaskState
from shoal.testing import multiplier

STREAM = CHANNEL = "shoal:hubtest:task-events"
PROGRESS = "shoal:hubtest:task-progress"


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout * multiplier()
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_read_gone_silent_is_made_again_from_where_it_was(redis_admin_url: str) -> None:
    redis, admin = Redis.from_url(redis_admin_url), Redis.from_url(redis_admin_url)
    hub = EventHub(redis, STREAM, CHANNEL)
    heard: list[TaskEvent] = []
    hub.hooks.append(heard.append)
    runner = asyncio.create_task(hub.run())
    try:
        await until(hub.subscribed.is_set, 10, "the subscription")
        # the store stops answering for a while (the pause ends by itself), the connection staying open
        await admin.execute_command("CLIENT", "PAUSE", int((LOST_AFTER_S + 3) * 1000), "ALL")
        await until(lambda: not hub.subscribed.is_set(), LOST_AFTER_S + 2.5, "the silent read given up")
        # added while the hub cannot read (the write waits out the pause): it finds it once it reads again, from
        # where it was, although the entry was there before the new read began
        entry = await admin.xadd(
            STREAM, {"e": b'[{"id": "t1", "state": "SUCCEED", "node": "n1", "at": 1.5, "type": "x"}]'}
        )
        await until(hub.subscribed.is_set, 15, "the stream read again")
        await until(lambda: any(e.id == "t1" for e in heard), 10, "the event added meanwhile")
        assert [(e.id, e.state, e.type, e.event_id) for e in heard] == [
            ("t1", TaskState.SUCCEED, "x", f"{entry.decode()}/0")
        ]
    finally:
        await cancel_and_wait(runner)
        await redis.aclose()
        await admin.aclose()


def row(task_id: str, state: str = "SUCCEED") -> dict[str, Any]:
    return {"id": task_id, "state": state, "node": "n1", "at": 1.5, "type": "echo"}


async def add(admin: Redis, *rows: dict[str, Any], channel: str = CHANNEL) -> str:
    """One entry as a script's flush adds and publishes it; its id."""
    body = orjson.dumps(list(rows))
    entry: bytes = await admin.xadd(STREAM, {"e": body})
    await admin.publish(channel, entry + b" " + body)
    return entry.decode()


@contextlib.asynccontextmanager
async def running_hub(url: str, progress: str | None = None) -> AsyncIterator[tuple[EventHub, Redis]]:
    redis, admin = Redis.from_url(url), Redis.from_url(url)
    hub = EventHub(redis, STREAM, CHANNEL, progress=progress)
    runner = asyncio.create_task(hub.run())
    try:
        await until(hub.subscribed.is_set, 10, "the stream read")
        yield hub, admin
    finally:
        hub.close()
        await cancel_and_wait(runner)
        await redis.aclose()
        await admin.aclose()


async def take(watch: TaskWatch, count: int) -> list[TaskEvent | EventGap]:
    async with asyncio.timeout(10 * multiplier()):
        return [await anext(watch) for _ in range(count)]


async def test_a_watch_since_an_event_replays_what_followed_then_goes_on_live_without_duplicates(
    redis_admin_url: str,
) -> None:
    async with running_hub(redis_admin_url) as (hub, admin):
        first = await add(admin, row("a", "WAITING"), row("b", "WAITING"), row("gone", "DELETED"))
        second = await add(admin, row("a"))
        await until(lambda: hub.last == second, 10, "the hub's read of both")
        watch = hub.watch(f"{first}/0")  # in the middle of an entry: the rest of it, then what follows
        await add(admin, row("b"))  # live, while the past is still to be read
        got = await take(watch, 3)
        assert [(e.id, e.state.name) for e in got if isinstance(e, TaskEvent)] == [
            ("b", "WAITING"), ("a", "SUCCEED"), ("b", "SUCCEED")
        ]  # fmt: skip
        assert [e.event_id for e in got if isinstance(e, TaskEvent)][:2] == [f"{first}/1", f"{second}/0"]
        third = await add(admin, row("c"))
        assert [(e.id, e.event_id) for e in await take(watch, 1) if isinstance(e, TaskEvent)] == [("c", f"{third}/0")]
        await watch.aclose()
        with pytest.raises(InvalidInput, match="bad event id"):
            hub.watch("yesterday")


async def test_a_watch_since_an_event_the_stream_no_longer_holds_starts_with_a_gap(redis_admin_url: str) -> None:
    async with running_hub(redis_admin_url) as (hub, admin):
        old = await add(admin, row("a"))
        await add(admin, row("b"))
        kept = await add(admin, row("c"))
        await admin.xtrim(STREAM, maxlen=1, approximate=False)
        watch = hub.watch(f"{old}/0")
        gap, event = await take(watch, 2)
        assert gap == EventGap(f"{old}/0", f"{kept}/0")
        assert isinstance(event, TaskEvent) and (event.id, event.event_id) == ("c", f"{kept}/0")
        await watch.aclose()
        kept_watch = hub.watch(f"{kept}/0")  # nothing after it was trimmed: no gap
        await add(admin, row("d"))
        assert [e.id for e in await take(kept_watch, 1) if isinstance(e, TaskEvent)] == ["d"]
        await kept_watch.aclose()


async def test_a_watch_that_falls_behind_reads_what_its_queue_lost_from_the_store(
    redis_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "WATCH_QUEUE", 5)
    async with running_hub(redis_admin_url) as (hub, admin):
        watch = hub.watch()
        await add(admin, row("t0"))
        assert [e.id for e in await take(watch, 1) if isinstance(e, TaskEvent)] == ["t0"]
        last = ""
        for n in range(1, 40):  # far more than the queue holds, while the watch reads nothing
            last = await add(admin, row(f"t{n}"))
        await until(lambda: hub.last == last, 10, "the hub's read of them all")
        got = await take(watch, 39)
        assert [e.id for e in got if isinstance(e, TaskEvent)] == [f"t{n}" for n in range(1, 40)]
        await watch.aclose()


async def listeners(admin: Redis, channel: str) -> int:
    counts: Any = await admin.pubsub_numsub(channel)
    return int(counts[0][1])


async def test_the_progress_channel_is_heard_while_a_watch_is_open_and_a_watch_misses_none_of_it(
    redis_admin_url: str,
) -> None:
    async with running_hub(redis_admin_url, progress=PROGRESS) as (hub, admin):
        woken: list[None] = []
        hub.on_entry.append(lambda: woken.append(None))
        assert await listeners(admin, PROGRESS) == 0
        await add(admin, row("a", "WAITING"), channel=PROGRESS)  # stored and placed: no listener wants it
        ended = await add(admin, row("a"))
        await until(lambda: hub.last == ended, 10, "the end heard")
        assert len(woken) == 1 and hub.ends_heard == 1
        # a watch opened: the hub hears the progress channel from then on; what is published while it
        # subscribes anew (at once here) reaches the watch too, in the stream's order
        watch = hub.watch()
        await add(admin, row("b", "WAITING"), channel=PROGRESS)
        await add(admin, row("b", "RUNNING"), channel=PROGRESS)
        await add(admin, row("b"))
        got = await take(watch, 3)
        assert [(e.id, e.state.name) for e in got if isinstance(e, TaskEvent)] == [
            ("b", "WAITING"), ("b", "RUNNING"), ("b", "SUCCEED")
        ]  # fmt: skip
        assert await listeners(admin, PROGRESS) == 1
        await add(admin, row("c", "WAITING"), channel=PROGRESS)
        assert [(e.id, e.state.name) for e in await take(watch, 1) if isinstance(e, TaskEvent)] == [("c", "WAITING")]
        await watch.aclose()
        deadline = time.monotonic() + 10 * multiplier()
        while await listeners(admin, PROGRESS):
            assert time.monotonic() < deadline, "the progress channel still heard with no watch open"
            await asyncio.sleep(0.05)


async def test_the_hub_stops_though_a_cancel_is_lost_while_it_catches_up(redis_admin_url: str) -> None:
    """A cancel dropped by a store call while the hub subscribes (as redis-py's ``wait_for`` can) does not leave
    it hearing the stream for ever: a stopping node waits for it."""
    redis = Redis.from_url(redis_admin_url)
    hub = EventHub(redis, STREAM, CHANNEL)
    catching_up = asyncio.Event()
    dropped = 0
    real_catch_up = hub._catch_up

    async def catch_up_dropping_a_cancel(switched: bool = False) -> None:
        nonlocal dropped
        catching_up.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            dropped += 1
        await real_catch_up(switched)

    hub._catch_up = catch_up_dropping_a_cancel  # type: ignore[method-assign]
    runner = asyncio.create_task(hub.run())
    try:
        await catching_up.wait()
        async with asyncio.timeout(5 * multiplier()):
            await cancel_and_wait(runner)
        assert dropped == 1 and runner.done()
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("events-")]
    finally:
        runner.cancel()
        await redis.aclose()
