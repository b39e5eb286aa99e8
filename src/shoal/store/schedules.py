"""Named schedules in Redis: add, read, pause, delete, and the master's fenced firing of a tick.

Each write is one Lua script (``scripts/schedule_*.lua``); the keys are in ``shoal.keys``. Firing a tick is
three calls (``fire``): the schedule's verdict on the tick (``schedule_tick.lua``), the store of its task
under the id derived from the schedule and the tick (``TaskStore.create`` with ``ids``: a task of that id
stored already is answered instead), and the compare-and-set of ``last_tick`` with the run recorded
(``schedule_fired.lua``). The first and last carry the master's epoch; a master that dies anywhere
between them leaves the tick to the next, which stores no second task.
"""

from __future__ import annotations

import builtins
import logging
from dataclasses import dataclass
from typing import Any

import orjson

from shoal.errors import InvalidInput, ScheduleExists, ScheduleNotFound, StaleEpoch
from shoal.schedules import (
    KEEP_RUNS,
    MAX_SCHEDULES,
    MISFIRE_GRACE_S,
    Run,
    Schedule,
    ScheduleSpec,
    task_for,
    tick_task_id,
    upcoming,
)
from shoal.store.tasks import TaskStore

log = logging.getLogger("shoal.store.schedules")


@dataclass(frozen=True, slots=True)
class Fired:
    """What a fire of one tick did: ``verdict`` "fired" (``task_id``: its task; ``catch_up``: the tick was
    missed and fired as catch_up "run_once" does), "skipped" (``why``), "done" (handled before: nothing done),
    "paused" or "gone"."""

    verdict: str
    task_id: str | None = None
    why: str | None = None
    catch_up: bool = False  # fired though missed, as catch_up "run_once" does


class ScheduleStore:
    """Reads and atomic writes of one cluster's schedules; shares the TaskStore's connection and scripts."""

    def __init__(self, tasks: TaskStore, *, most: int = MAX_SCHEDULES) -> None:
        self.tasks = tasks
        self.redis = tasks.redis
        self.keys = tasks.keys
        self.most = most

    async def _run(self, script: str, *args: Any) -> builtins.list[Any]:
        reply: builtins.list[Any] = await self.tasks.scripts.run(script, self.keys.prefix, *args)
        return [v.decode() if isinstance(v, bytes) else v for v in reply]

    # -- users' writes ---------------------------------------------------------------------------

    async def add(self, spec: ScheduleSpec) -> Schedule:
        """Store a new schedule, firing from now on; ScheduleExists if the name is taken, InvalidInput if
        the cluster holds its most."""
        reply = await self._run(
            "schedule_add",
            spec.name,
            self.most,
            spec.cron,
            spec.timezone,
            orjson.dumps(spec.task).decode(),
            spec.catch_up,
            spec.overlap,
        )
        if reply[0] == "exists":
            raise ScheduleExists(spec.name)
        if reply[0] == "full":
            raise InvalidInput(f"the cluster holds {reply[1]} schedules, its most ({self.most}); delete some first")
        return await self.get(spec.name)

    async def pause(self, name: str, paused: bool) -> Schedule:
        """Pause (True) or resume (False) a schedule; a resumed one fires the ticks after now only."""
        if (await self._run("schedule_pause", name, "1" if paused else ""))[0] == "gone":
            raise ScheduleNotFound(name)
        return await self.get(name)

    async def delete(self, name: str) -> None:
        """Remove the schedule and its runs; the tasks it fired stay."""
        if (await self._run("schedule_delete", name))[0] == "gone":
            raise ScheduleNotFound(name)

    # -- reads -----------------------------------------------------------------------------------

    async def get(self, name: str) -> Schedule:
        found = await self._read([name])
        if not found:
            raise ScheduleNotFound(name)
        return found[0]

    async def list(self, *, full: bool = True) -> builtins.list[Schedule]:
        """Every schedule, by name; without its runs and next ticks unless ``full`` (the firer reads every
        schedule again whenever one changes, and plans its ticks itself)."""
        members: Any = await self.redis.zrange(self.keys.schedules, 0, -1)
        names = [n.decode() for n in members]
        return await self._read(names, full=full)

    async def version(self) -> int:
        """The counter every add, delete, pause and resume raises."""
        return int(await self.redis.get(self.keys.schedules_version) or 0)

    async def now(self) -> float:
        """The store's clock, the one clock every master reads ticks against."""
        seconds, micros = await self.redis.time()
        return int(seconds) + int(micros) / 1e6

    async def _read(self, names: builtins.list[str], *, full: bool = True) -> builtins.list[Schedule]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.time()
            for name in names:
                pipe.hgetall(self.keys.schedule(name))
                if full:
                    pipe.lrange(self.keys.schedule_runs(name), 0, -1)
            replies = await pipe.execute()
        seconds, micros = replies[0]
        now = int(seconds) + int(micros) / 1e6 if full else None
        found = replies[1::2] if full else replies[1:]
        runs = replies[2::2] if full else [[] for _ in names]
        rows = zip(names, found, runs, strict=True)
        return [_schedule(name, fields, ran, now) for name, fields, ran in rows if fields]

    # -- the master's firing (fenced by its epoch) ---------------------------------------------------

    async def fire(
        self,
        epoch: int,
        spec: ScheduleSpec,
        tick: float,
        *,
        grace_s: float = MISFIRE_GRACE_S,
        looked_at: float | None = None,
    ) -> Fired:
        """Fire ``tick`` of the schedule, exactly once however often it is called, by however many masters
        in turn: store its task and record the run, or record the tick as skipped (missed with catch_up
        "skip", or overlapping with overlap "skip"). The tick was missed if it was more than ``grace_s`` old
        at ``looked_at`` (the store's time the master looked for due ticks; None: now). Raise StaleEpoch if
        this master was replaced."""
        task_id = tick_task_id(self.keys.prefix, spec.name, tick)
        at = f"{tick:.0f}"
        looked = "" if looked_at is None else repr(float(looked_at))
        grace = repr(float(grace_s))
        reply = await self._run("schedule_tick", epoch, spec.name, at, task_id, grace, KEEP_RUNS, looked)
        if reply[0] == "stale":
            raise StaleEpoch(epoch, int(reply[1]))
        if reply[0] == "skipped":
            return Fired("skipped", why=reply[1])
        if reply[0] != "fire":
            return Fired(reply[0])
        catch_up = len(reply) > 1 and reply[1] == "1"
        await self.tasks.create([task_for(spec, float(at))], ids=[task_id])
        reply = await self._run("schedule_fired", epoch, spec.name, at, task_id, KEEP_RUNS, "1" if catch_up else "")
        if reply[0] == "stale":
            raise StaleEpoch(epoch, int(reply[1]))
        return Fired("fired" if reply[0] == "ok" else reply[0], task_id=task_id, catch_up=catch_up)


def _f(value: bytes | None) -> float | None:
    return float(value) if value else None


def _run(raw: bytes) -> Run:
    data = orjson.loads(raw)
    if data.get("skipped"):
        return Run(tick=float(data["tick"]), skipped=data["skipped"])
    return Run(
        tick=float(data["tick"]),
        task_id=data["task_id"],
        fired_at=float(data["fired_at"]),
        catch_up=bool(data.get("catch_up")),
    )


def _schedule(name: str, fields: dict[bytes, bytes], runs: builtins.list[bytes], now: float | None) -> Schedule:
    """A stored schedule; its next ticks after ``now`` (None: not worked out)."""
    spec = ScheduleSpec(
        name=name,
        cron=fields[b"cron"].decode(),
        timezone=fields.get(b"timezone", b"UTC").decode(),
        task=orjson.loads(fields[b"task"]),
        catch_up=fields.get(b"catch_up", b"skip").decode(),
        overlap=fields.get(b"overlap", b"allow").decode(),
    )
    paused = fields.get(b"paused") == b"1"
    since = float(fields[b"since"])
    last_tick = _f(fields.get(b"last_tick"))
    return Schedule(
        spec=spec,
        paused=paused,
        created_at=float(fields[b"created_at"]),
        since=since,
        last_tick=last_tick,
        runs=tuple(_run(r) for r in reversed(runs)),
        next_fire_times=() if now is None else upcoming(spec, paused=paused, since=since, last_tick=last_tick, now=now),
    )
