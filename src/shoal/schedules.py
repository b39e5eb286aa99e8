"""Named schedules: a task template fired at the ticks of a cron expression, by the master.

This module is what a schedule is and what a user may ask for: the checked spec (``schedule_spec``), the
schedule as stored (``Schedule``, with its recent runs), the task each tick fires (``task_for``), its id
(``tick_task_id``), and ``ScheduleService``, which the REST and gRPC adapters call. The store keeps them
(``shoal.store.schedules``); the master fires them (``shoal.cluster.firing``).

Exactly once per tick: the task of tick T of schedule S has an id derived from the cluster, S and T, and
firing T stores that task (a second store of the same id answers the first task) and then moves S's
``last_tick`` to T only if it is below T, under the master's epoch. A master that dies between the two
leaves T to its successor, whose store of the same id creates nothing.
"""

from __future__ import annotations

import builtins
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from shoal import cron, validation
from shoal.errors import InvalidInput
from shoal.models import TaskSpec

#: What happens to the ticks missed while no master was up: "skip" fires none of them, "run_once" fires
#: one task for the newest of them.
CATCH_UP = ("skip", "run_once")
#: What a tick does while the task of the run before has not ended: "allow" fires anyway, "skip" records
#: the tick as skipped.
OVERLAP = ("allow", "skip")
#: A tick fired within this many seconds of its time is on time; an older one was missed (see CATCH_UP).
MISFIRE_GRACE_S = 1.0
#: Most schedules a cluster holds.
MAX_SCHEDULES = 10_000
#: Runs (fired or skipped ticks) kept per schedule, the latest.
KEEP_RUNS = 20
#: How many upcoming ticks a schedule shows.
SHOW_NEXT = 3
NAME_PATTERN = r"^[A-Za-z0-9._-]{1,100}$"
_NAME_RE = re.compile(NAME_PATTERN)
_FIELDS = {"name", "cron", "timezone", "task", "catch_up", "overlap"}
#: Task fields a template may not hold: each tick's task would repeat them, which they forbid.
_NOT_IN_TEMPLATE = {
    "run_at": "a fixed run_at would hold every tick's task to the same time; use delay_s",
    "idempotency_key": "every tick's task would share it; each tick's task already has an id of its own",
    "depends_on": "a tick's task runs at its tick, and a parent removed later would stop the schedule firing",
    "on_parent_failure": "a tick's task names no parents",
    "ref": "a tick's task is submitted alone, not in a batch",
}
#: The namespace of the ids of ticks' tasks (uuid5 of "{cluster key prefix}{schedule}@{tick}").
TICK_NAMESPACE = uuid.UUID("5c1e8a4e-6b7f-5d0a-9f3e-2a1c0b7d4e61")


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """What a user asks for; already checked (``schedule_spec``). ``task``: the template as JSON, name set."""

    name: str
    cron: str
    timezone: str = "UTC"
    task: dict[str, Any] = field(default_factory=dict)
    catch_up: str = "skip"
    overlap: str = "allow"


@dataclass(frozen=True, slots=True)
class Run:
    """A tick the schedule handled: fired (``task_id``, ``fired_at``; ``catch_up``: the tick had been missed
    and was fired late, as catch_up "run_once" does) or skipped (``skipped``: "overlap", or "missed" for the
    newest of the ticks missed while no master was up, with catch_up "skip")."""

    tick: float
    task_id: str | None = None
    fired_at: float | None = None
    skipped: str | None = None
    catch_up: bool = False

    def to_json(self) -> dict[str, Any]:
        if self.skipped:
            return {"tick": self.tick, "skipped": self.skipped}
        return {"tick": self.tick, "task_id": self.task_id, "fired_at": self.fired_at, "catch_up": self.catch_up}


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule as stored, with its latest runs (newest first) and its next ticks (none while paused)."""

    spec: ScheduleSpec
    paused: bool
    created_at: float
    since: float  # ticks after this fire: its creation, or when it was last resumed
    last_tick: float | None
    runs: tuple[Run, ...] = ()
    next_fire_times: tuple[float, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def next_fire_at(self) -> float | None:
        return self.next_fire_times[0] if self.next_fire_times else None

    def to_json(self) -> dict[str, Any]:
        s = self.spec
        return {
            "name": s.name,
            "cron": s.cron,
            "timezone": s.timezone,
            "task": s.task,
            "catch_up": s.catch_up,
            "overlap": s.overlap,
            "paused": self.paused,
            "created_at": self.created_at,
            "next_fire_at": self.next_fire_at,
            "next_fire_times": list(self.next_fire_times),
            "last_tick": self.last_tick,
            "runs": [r.to_json() for r in self.runs],
        }


def upcoming(
    spec: ScheduleSpec, *, paused: bool, since: float, last_tick: float | None, now: float, count: int = SHOW_NEXT
) -> tuple[float, ...]:
    """The next ``count`` ticks the master will fire: after the last one handled, and not before now less the
    grace (an older one is missed); none while paused."""
    if paused:
        return ()
    after = max(since, last_tick if last_tick is not None else since, now - MISFIRE_GRACE_S)
    try:
        return tuple(cron.parse(spec.cron, spec.timezone).upcoming(after, count))
    except (InvalidInput, StopIteration):  # stored by a version that read it otherwise; it fires nothing
        return ()


def schedule_name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput("name is required: 1 to 100 of A-Z a-z 0-9 . _ -")
    if not _NAME_RE.match(value):
        raise InvalidInput(f"name {value!r} is not valid: 1 to 100 of A-Z a-z 0-9 . _ -")
    return value


def choice(value: Any, name: str, allowed: Sequence[str]) -> str:
    if value is None:
        return allowed[0]
    if value not in allowed:
        raise InvalidInput(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def schedule_spec(data: Any) -> tuple[ScheduleSpec, TaskSpec]:
    """Check a body ``{name, cron, timezone?, task, catch_up?, overlap?}``; the spec, and the task a tick
    would fire (checked as a submit checks it). InvalidInput says what is wrong."""
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object with name, cron and task")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}")
    name = schedule_name(data.get("name"))
    timezone = data.get("timezone")
    if timezone is not None and not isinstance(timezone, str):
        raise InvalidInput("timezone must be a string such as Europe/Paris")
    checked = cron.parse(data.get("cron"), timezone)
    template, task = task_template(data.get("task"), name)
    spec = ScheduleSpec(
        name=name,
        cron=checked.expr,
        timezone=checked.zone.key,
        task=template,
        catch_up=choice(data.get("catch_up"), "catch_up", CATCH_UP),
        overlap=choice(data.get("overlap"), "overlap", OVERLAP),
    )
    return spec, task


def task_template(value: Any, schedule: str) -> tuple[dict[str, Any], TaskSpec]:
    """The task template (its ``name`` defaults to the schedule's), and the spec it makes."""
    if not isinstance(value, dict):
        raise InvalidInput("task is required: a JSON object with type and target, as a submit takes")
    for key, why in _NOT_IN_TEMPLATE.items():
        if value.get(key) is not None:
            raise InvalidInput(f"task.{key} is not allowed in a schedule's task: {why}")
    template = {k: v for k, v in value.items() if v is not None}
    template.setdefault("name", schedule)
    try:
        return template, validation.task_spec(template)
    except InvalidInput as exc:
        raise InvalidInput(f"task: {exc.message}") from None


def tick_task_id(prefix: str, name: str, tick: float) -> str:
    """The id of the task of ``tick`` of schedule ``name`` in the cluster of key ``prefix``: the same for
    every master, so a tick fired twice stores one task."""
    return str(uuid.uuid5(TICK_NAMESPACE, f"{prefix}{name}@{tick:.0f}"))


def task_for(spec: ScheduleSpec, tick: float) -> TaskSpec:
    """The task ``tick`` fires: the template, marked with the schedule and the tick."""
    return replace(validation.task_spec(spec.task), schedule=spec.name, tick=tick)


class ScheduleStoreAPI(Protocol):
    """The store's side of schedules (``shoal.store.schedules.ScheduleStore``)."""

    async def add(self, spec: ScheduleSpec) -> Schedule: ...
    async def get(self, name: str) -> Schedule: ...
    async def list(self) -> builtins.list[Schedule]: ...
    async def delete(self, name: str) -> None: ...
    async def pause(self, name: str, paused: bool) -> Schedule: ...


class TaskChecks(Protocol):
    """What a submit checks of a task besides its fields (``shoal.service.TaskService.check``)."""

    async def check(self, spec: TaskSpec) -> None: ...
    def with_defaults(self, spec: TaskSpec) -> TaskSpec: ...


class ScheduleService:
    """What users may do with schedules; the REST and gRPC adapters call it with decoded bodies."""

    def __init__(self, *, store: ScheduleStoreAPI, tasks: TaskChecks | None = None) -> None:
        self.store = store
        self.tasks = tasks

    async def add(self, data: Any) -> Schedule:
        """Check the body as ``schedule_spec`` does, and the task as a submit would (a type some live node
        runs, a target and params that type takes); raise ScheduleExists if the name is taken. The template
        keeps the labels its type requires (config ``type_requires``) when it names none, as a submit would."""
        spec, task = schedule_spec(data)
        if self.tasks is not None:
            await self.tasks.check(task)
            required = self.tasks.with_defaults(task).requires
            if required != task.requires:
                spec = replace(spec, task={**spec.task, "requires": required})
        return await self.store.add(spec)

    async def list(self) -> builtins.list[Schedule]:
        return await self.store.list()

    async def get(self, name: str) -> Schedule:
        return await self.store.get(schedule_name(name))

    async def delete(self, name: str) -> None:
        await self.store.delete(schedule_name(name))

    async def pause(self, name: str) -> Schedule:
        return await self.store.pause(schedule_name(name), True)

    async def resume(self, name: str) -> Schedule:
        return await self.store.pause(schedule_name(name), False)


def schedule_from_json(data: dict[str, Any]) -> Schedule:
    """A schedule as the REST API shows it (``Schedule.to_json``), read back (the clients' answer)."""
    runs = tuple(
        Run(tick=float(r["tick"]), skipped=r["skipped"])
        if r.get("skipped")
        else Run(
            tick=float(r["tick"]),
            task_id=r.get("task_id"),
            fired_at=r.get("fired_at"),
            catch_up=bool(r.get("catch_up")),
        )
        for r in data.get("runs") or ()
    )
    next_times = tuple(float(t) for t in data.get("next_fire_times") or ())
    spec = ScheduleSpec(
        name=data["name"],
        cron=data["cron"],
        timezone=data.get("timezone") or "UTC",
        task=dict(data.get("task") or {}),
        catch_up=data.get("catch_up") or CATCH_UP[0],
        overlap=data.get("overlap") or OVERLAP[0],
    )
    last_tick = data.get("last_tick")
    return Schedule(
        spec=spec,
        paused=bool(data.get("paused")),
        created_at=float(data.get("created_at") or 0.0),
        since=float(data.get("created_at") or 0.0),
        last_tick=None if last_tick is None else float(last_tick),
        runs=runs,
        next_fire_times=next_times,
    )
