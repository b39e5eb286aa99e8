"""Named schedules without a node: the ticks of cron expressions (DST in a real zone, ``@every``, aliases,
bad expressions and zones), the checks of a schedule's body, and the store's scripts against the suite's
real Redis: a fire fenced by the epoch, a fire repeated or retried after a crash storing one task, the
compare-and-set of ``last_tick``, overlap "skip", catch_up "skip" and "run_once", pause and resume, and a
firer handing over to the next master's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis

from shoal import cron
from shoal.cluster.firing import Firer
from shoal.errors import InvalidInput, ScheduleExists, ScheduleNotFound, StaleEpoch
from shoal.keys import Keys
from shoal.models import TaskState
from shoal.schedules import ScheduleSpec, schedule_spec, task_for, tick_task_id
from shoal.store.nodes import NodeRegistry
from shoal.store.schedules import ScheduleStore
from shoal.store.tasks import TaskStore
from shoal.testing import multiplier

PARIS = ZoneInfo("Europe/Paris")


def paris(*args: int) -> float:
    return datetime(*args, tzinfo=PARIS).timestamp()  # type: ignore[misc]


def wall(t: float) -> str:
    return datetime.fromtimestamp(t, PARIS).isoformat()


# -- ticks -----------------------------------------------------------------------------------------------


def test_every_ticks_are_multiples_of_the_interval_since_the_epoch() -> None:
    every = cron.parse("@every 30s")
    assert every.every == 30
    assert every.after(1_700_000_000.5) == 1_700_000_010.0  # 1_700_000_010 = 56,666,667 x 30
    assert every.after(1_700_000_010.0) == 1_700_000_040.0  # strictly after
    assert every.at_or_before(1_700_000_010.0) == 1_700_000_010.0
    assert every.at_or_before(1_700_000_039.9) == 1_700_000_010.0
    assert cron.parse("@every 1h30m").every == 5400
    assert cron.parse("@every 2m", "Asia/Tokyo").after(0) == 120.0  # a zone changes nothing


def test_a_daily_time_skipped_by_spring_forward_fires_after_the_gap_once() -> None:
    daily = cron.parse("30 2 * * *", "Europe/Paris")
    ticks = daily.upcoming(paris(2024, 3, 30, 12, 0), 3)
    assert [wall(t) for t in ticks] == [
        "2024-03-31T03:00:00+02:00",  # 02:30 does not exist that night
        "2024-04-01T02:30:00+02:00",
        "2024-04-02T02:30:00+02:00",
    ]


def test_a_daily_time_that_comes_twice_at_fall_back_fires_once() -> None:
    daily = cron.parse("30 2 * * *", "Europe/Paris")
    ticks = daily.upcoming(paris(2024, 10, 26, 12, 0), 2)
    assert [wall(t) for t in ticks] == ["2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"]
    assert ticks[1] - ticks[0] == 25 * 3600


def test_hourly_fires_every_real_hour_across_fall_back() -> None:
    hourly = cron.parse("@hourly", "Europe/Paris")
    ticks = hourly.upcoming(paris(2024, 10, 27, 1, 30), 4)
    assert [b - a for a, b in zip(ticks, ticks[1:], strict=False)] == [3600, 3600, 3600]
    assert [wall(t)[11:] for t in ticks] == ["02:00:00+02:00", "02:00:00+01:00", "03:00:00+01:00", "04:00:00+01:00"]


def test_at_or_before_is_inclusive_and_after_is_strict() -> None:
    every5 = cron.parse("*/5 * * * *", "Europe/Paris")
    tick = every5.after(paris(2024, 5, 1, 10, 2))
    assert wall(tick) == "2024-05-01T10:05:00+02:00"
    assert every5.at_or_before(tick) == tick
    assert every5.at_or_before(tick + 0.5) == tick
    assert every5.at_or_before(tick - 0.001) == tick - 300
    assert every5.after(tick) == tick + 300


def test_aliases_are_their_cron_expressions() -> None:
    start = datetime(2024, 5, 15, 10, 30, tzinfo=ZoneInfo("UTC")).timestamp()
    assert cron.parse("@daily").after(start) == datetime(2024, 5, 16, tzinfo=ZoneInfo("UTC")).timestamp()
    assert cron.parse("@monthly").after(start) == datetime(2024, 6, 1, tzinfo=ZoneInfo("UTC")).timestamp()
    assert cron.parse("@yearly").after(start) == datetime(2025, 1, 1, tzinfo=ZoneInfo("UTC")).timestamp()
    assert cron.parse("@weekly").after(start) == datetime(2024, 5, 19, tzinfo=ZoneInfo("UTC")).timestamp()  # Sunday


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("* * * *", "5 fields"),
        ("* * * * * *", "5 fields"),
        ("61 * * * *", "invalid cron expression"),
        ("0 0 30 2 *", "invalid cron expression"),
        ("@every 0s", "at least 1s"),
        ("@every 5", "@every N with a unit"),
        ("@every 5x", "@every N with a unit"),
        ("@fortnightly", "unknown cron alias"),
        ("", "cron is required"),
        ("* " * 101, "the limit is 200"),
        ("\u000b\u001c", "cron is required"),  # blank as Python reads it, not as the document's pattern does
        ("* * * * *\u000b", "printable ASCII"),
        ("* * * * *\n", "printable ASCII"),
        ("0 0 * * \u2460", "printable ASCII"),
    ],
)
def test_invalid_expressions_are_refused_with_what_is_wrong(expr: str, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        cron.parse(expr)


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "Europe/Pariss", "../../etc/passwd", "utc+1"])
def test_a_time_zone_that_does_not_exist_is_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match="time zone"):
        cron.parse("@daily", name)


# -- a schedule's body -----------------------------------------------------------------------------------


def test_a_schedule_body_gets_its_defaults_and_its_task_is_checked_as_a_submit() -> None:
    spec, task = schedule_spec({"name": "nightly", "cron": "0 3 * * *", "task": {"type": "echo", "target": "x"}})
    assert spec == ScheduleSpec(
        name="nightly", cron="0 3 * * *", timezone="UTC", task={"type": "echo", "target": "x", "name": "nightly"}
    )
    assert (task.name, task.type, task.target) == ("nightly", "echo", "x")
    fired = task_for(spec, 1_700_000_000.0)
    assert (fired.schedule, fired.tick) == ("nightly", 1_700_000_000.0)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"cron": "@daily", "task": {"type": "echo", "target": "x"}}, "name is required"),
        ({"name": "a b", "cron": "@daily", "task": {"type": "echo", "target": "x"}}, "is not valid"),
        ({"name": "x" * 101, "cron": "@daily", "task": {"type": "echo", "target": "x"}}, "is not valid"),
        ({"name": "s", "cron": "@daily"}, "task is required"),
        ({"name": "s", "cron": "@daily", "task": {"type": "echo"}}, "task: target is required"),
        (
            {"name": "s", "cron": "@daily", "task": {"type": "echo", "target": "x", "max_retries": -1}},
            "task: max_retries",
        ),
        ({"name": "s", "cron": "@daily", "task": {"type": "echo", "target": "x", "run_at": 5}}, "task.run_at"),
        ({"name": "s", "cron": "@daily", "task": {"type": "echo", "target": "x", "schedule": "t"}}, "unknown field"),
        ({"name": "s", "cron": "@daily", "task": {"type": "echo", "target": "x"}, "catch_up": "all"}, "catch_up must"),
        ({"name": "s", "cron": "@daily", "task": {"type": "echo", "target": "x"}, "overlap": 1}, "overlap must"),
        ({"name": "s", "cron": "@daily", "task": {"type": "echo", "target": "x"}, "timezone": "No/Where"}, "time zone"),
        ({"name": "s", "cron": "@daily", "task": {"type": "echo", "target": "x"}, "every": 1}, "unknown field"),
    ],
)
def test_a_bad_schedule_body_is_refused_with_what_is_wrong(body: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        schedule_spec(body)


# -- the store ---------------------------------------------------------------------------------------------


class Stores:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.keys = Keys("test")
        self.tasks = TaskStore(redis, self.keys, result_max_bytes=4096)
        self.schedules = ScheduleStore(self.tasks, most=5)
        self.nodes = NodeRegistry(redis, self.keys)

    async def epoch(self) -> int:
        """Take the master lease anew (a new term, a new epoch)."""
        await self.redis.delete(self.keys.lease)
        return (await self.nodes.take_lease("master", 30.0)).epoch

    async def add(self, name: str = "s", cron_: str = "@every 1s", **fields: Any) -> ScheduleSpec:
        body = {"name": name, "cron": cron_, "task": {"type": "echo", "target": "x"}, **fields}
        spec, _ = schedule_spec(body)
        await self.schedules.add(spec)
        return spec

    async def fired_tasks(self, name: str) -> list[Any]:
        page = await self.tasks.list(None, 1000, None)
        return [t for t in page.tasks if t.schedule == name]


@pytest.fixture
async def stores(redis_url: str) -> AsyncIterator[Stores]:
    redis = Redis.from_url(redis_url)  # shoal's own user: a command the ACL lacks fails the test
    try:
        yield Stores(redis)
    finally:
        await redis.aclose()


async def next_tick(stores: Stores) -> float:
    """A tick of ``@every 1s`` a little ahead of the store's clock (after the schedule's start)."""
    return float(int(await stores.schedules.now()) + 2)


async def test_add_get_list_and_the_defaults(stores: Stores) -> None:
    await stores.add("b", "*/5 * * * *", timezone="Europe/Paris")
    await stores.add("a")
    listed = await stores.schedules.list()
    assert [s.name for s in listed] == ["a", "b"]
    b = await stores.schedules.get("b")
    shown = b.to_json()
    assert shown["timezone"] == "Europe/Paris" and shown["catch_up"] == "skip" and shown["overlap"] == "allow"
    assert shown["paused"] is False and shown["last_tick"] is None and shown["runs"] == []
    assert len(shown["next_fire_times"]) == 3 and shown["next_fire_at"] == shown["next_fire_times"][0]
    assert shown["next_fire_at"] > time.time() - 2 and int(shown["next_fire_at"]) % 300 == 0
    with pytest.raises(ScheduleExists):
        await stores.add("a")
    with pytest.raises(ScheduleNotFound):
        await stores.schedules.get("nope")


async def test_the_cluster_holds_at_most_its_most(stores: Stores) -> None:
    for k in range(5):
        await stores.add(f"s{k}")
    with pytest.raises(InvalidInput, match="its most"):
        await stores.add("s5")


async def test_a_fire_stores_one_task_with_its_schedule_and_tick_and_again_nothing(stores: Stores) -> None:
    spec = await stores.add(overlap="allow")
    epoch = await stores.epoch()
    tick = await next_tick(stores)
    fired = await stores.schedules.fire(epoch, spec, tick)
    assert fired.verdict == "fired" and fired.task_id == tick_task_id(stores.keys.prefix, "s", tick)
    task = await stores.tasks.get(fired.task_id)
    assert (task.name, task.schedule, task.tick, task.state) == ("s", "s", tick, TaskState.WAITING)
    again = await stores.schedules.fire(epoch, spec, tick)
    assert again.verdict == "done"
    older = await stores.schedules.fire(epoch, spec, tick - 1)  # last_tick only moves forward
    assert older.verdict == "done"
    schedule = await stores.schedules.get("s")
    assert schedule.last_tick == tick
    assert [r.to_json()["task_id"] for r in schedule.runs] == [fired.task_id]
    assert len(await stores.fired_tasks("s")) == 1


async def test_a_stale_epoch_fires_nothing(stores: Stores) -> None:
    spec = await stores.add()
    old = await stores.epoch()
    await stores.epoch()  # another master took over
    with pytest.raises(StaleEpoch):
        await stores.schedules.fire(old, spec, await next_tick(stores))
    assert await stores.fired_tasks("s") == []
    assert (await stores.schedules.get("s")).last_tick is None


async def test_a_fire_retried_after_its_task_was_stored_records_that_task(stores: Stores) -> None:
    """A master died between storing tick T's task and recording T: the next one's fire of T stores nothing
    new and records the task the first one stored."""
    spec = await stores.add()
    tick = await next_tick(stores)
    task_id = tick_task_id(stores.keys.prefix, "s", tick)
    first = await stores.tasks.create([task_for(spec, tick)], ids=[task_id])
    fired = await stores.schedules.fire(await stores.epoch(), spec, tick)
    assert fired.verdict == "fired" and fired.task_id == first[0].id
    assert [t.id for t in await stores.fired_tasks("s")] == [task_id]
    assert (await stores.schedules.get("s")).last_tick == tick


async def test_overlap_skip_passes_over_ticks_while_the_last_task_has_not_ended(stores: Stores) -> None:
    spec = await stores.add(overlap="skip")
    epoch = await stores.epoch()
    tick = await next_tick(stores)
    first = await stores.schedules.fire(epoch, spec, tick)
    assert first.verdict == "fired" and first.task_id
    skipped = await stores.schedules.fire(epoch, spec, tick + 1)  # the first task still waits
    assert (skipped.verdict, skipped.why) == ("skipped", "overlap")
    await stores.tasks.kill(first.task_id)
    third = await stores.schedules.fire(epoch, spec, tick + 2)
    assert third.verdict == "fired"
    runs = [r.to_json() for r in (await stores.schedules.get("s")).runs]
    assert [r["tick"] for r in runs] == [tick + 2, tick + 1, tick]  # newest first
    assert runs[1] == {"tick": tick + 1, "skipped": "overlap"}
    assert len(await stores.fired_tasks("s")) == 2


async def test_overlap_allow_fires_while_the_last_task_runs(stores: Stores) -> None:
    spec = await stores.add()
    epoch = await stores.epoch()
    tick = await next_tick(stores)
    assert (await stores.schedules.fire(epoch, spec, tick)).verdict == "fired"
    assert (await stores.schedules.fire(epoch, spec, tick + 1)).verdict == "fired"


async def test_catch_up_skip_records_a_missed_tick_and_run_once_fires_it(stores: Stores) -> None:
    skip = await stores.add("skip", catch_up="skip")
    once = await stores.add("once", catch_up="run_once")
    epoch = await stores.epoch()
    # ticks after the schedules' start but older than the grace: make the start earlier than them
    now = await stores.schedules.now()
    for name in ("skip", "once"):
        await stores.redis.hset(stores.keys.schedule(name), "since", repr(now - 10))
    missed = float(int(now) - 5)
    fired = await stores.schedules.fire(epoch, skip, missed)
    assert (fired.verdict, fired.why) == ("skipped", "missed")
    assert await stores.fired_tasks("skip") == []
    assert (await stores.schedules.get("skip")).last_tick == missed
    caught = await stores.schedules.fire(epoch, once, missed)
    assert caught.verdict == "fired"
    assert [t.tick for t in await stores.fired_tasks("once")] == [missed]


async def test_ticks_before_the_start_are_never_fired(stores: Stores) -> None:
    spec = await stores.add(catch_up="run_once")
    epoch = await stores.epoch()
    before = float(int((await stores.schedules.get("s")).since) - 3)
    assert (await stores.schedules.fire(epoch, spec, before)).verdict == "done"


async def test_pause_stops_firing_and_resume_fires_from_now_on(stores: Stores) -> None:
    spec = await stores.add(catch_up="run_once")
    epoch = await stores.epoch()
    version = await stores.schedules.version()
    paused = await stores.schedules.pause("s", True)
    assert paused.paused and paused.next_fire_at is None and paused.to_json()["next_fire_times"] == []
    assert await stores.schedules.version() > version
    tick = await next_tick(stores)
    assert (await stores.schedules.fire(epoch, spec, tick)).verdict == "paused"
    resumed = await stores.schedules.pause("s", False)
    assert not resumed.paused and resumed.since > paused.since
    assert resumed.next_fire_at is not None and resumed.next_fire_at > resumed.since
    during = float(int(resumed.since))  # a tick of the pause: not caught up
    assert (await stores.schedules.fire(epoch, spec, during)).verdict == "done"
    assert (await stores.schedules.fire(epoch, spec, tick)).verdict == "fired"


async def test_delete_stops_firing_and_keeps_its_tasks(stores: Stores) -> None:
    spec = await stores.add()
    epoch = await stores.epoch()
    tick = await next_tick(stores)
    fired = await stores.schedules.fire(epoch, spec, tick)
    await stores.schedules.delete("s")
    with pytest.raises(ScheduleNotFound):
        await stores.schedules.delete("s")
    with pytest.raises(ScheduleNotFound):
        await stores.schedules.pause("s", True)
    assert (await stores.schedules.fire(epoch, spec, tick + 1)).verdict == "gone"
    assert fired.task_id and (await stores.tasks.get(fired.task_id)).schedule == "s"
    assert await stores.schedules.list() == []


async def test_a_firer_fires_each_tick_once_and_its_successor_goes_on(stores: Stores) -> None:
    await stores.add("tick", "@every 1s")
    first = Firer(schedules=stores.schedules, epoch=await stores.epoch())
    running = asyncio.create_task(first.run())
    deadline = time.monotonic() + 10 * multiplier()
    while len((await stores.schedules.get("tick")).runs) < 2:
        assert time.monotonic() < deadline, "two ticks fired"
        await asyncio.sleep(0.05)
    second = Firer(schedules=stores.schedules, epoch=await stores.epoch())
    with pytest.raises(StaleEpoch):
        await asyncio.wait_for(running, 5 * multiplier())
    taking_over = asyncio.create_task(second.run())
    try:
        while len((await stores.schedules.get("tick")).runs) < 4:
            assert time.monotonic() < deadline + 10 * multiplier(), "two more ticks fired"
            await asyncio.sleep(0.05)
    finally:
        taking_over.cancel()
    tasks = await stores.fired_tasks("tick")
    ticks = sorted(t.tick for t in tasks)
    assert len(ticks) == len(set(ticks)) >= 4
    assert all(t == int(t) for t in ticks)
    for task in tasks:
        assert task.id == tick_task_id(stores.keys.prefix, "tick", task.tick)
        assert task.created_at - task.tick < 1.0 + 0.5 * multiplier()  # fired on time


@pytest.mark.parametrize("catch_up", ["skip", "run_once"])
async def test_a_firer_after_a_gap_fires_the_newest_tick_and_catches_up_one_as_told(
    stores: Stores, catch_up: str
) -> None:
    """No master was up for ten ticks: the next one fires the tick now due, and the newest of the missed ones
    with run_once (marked as a catch-up), or records it as missed with skip; the older ones of the gap never."""
    await stores.add("gap", "@every 1s", catch_up=catch_up)
    while (now := await stores.schedules.now()) % 1 > 0.5:  # well inside a second: the due tick is on time
        await asyncio.sleep(0.05)
    await stores.redis.hset(stores.keys.schedule("gap"), "since", repr(now - 10))
    firer = Firer(schedules=stores.schedules, epoch=await stores.epoch())
    running = asyncio.create_task(firer.run())
    try:
        deadline = time.monotonic() + 5 * multiplier()
        while len(runs := (await stores.schedules.get("gap")).runs) < 2:
            assert time.monotonic() < deadline, "the gap handled"
            await asyncio.sleep(0.02)
    finally:
        running.cancel()
    newest = float(int(now))
    first, second = runs[-1].to_json(), runs[-2].to_json()  # the oldest two: what the gap left
    assert first["tick"] == newest - 1 and second["tick"] == newest
    assert second["task_id"] and second["catch_up"] is False
    if catch_up == "skip":
        assert first == {"tick": newest - 1, "skipped": "missed"}
    else:
        assert first["task_id"] and first["catch_up"] is True
    fired_ticks = {t.tick for t in await stores.fired_tasks("gap")}
    assert not {newest - k for k in range(2, 11)} & fired_ticks  # the older ticks of the gap: never
