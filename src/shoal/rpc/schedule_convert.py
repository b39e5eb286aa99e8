"""Schedule messages <-> what ``shoal.schedules`` takes and gives.

A spec becomes the same body REST reads (its task template is JSON text, parsed here), so a gRPC caller is
refused exactly what a REST caller is, with the same words.
"""

from __future__ import annotations

from typing import Any

import orjson

from shoal.errors import InvalidInput
from shoal.rpc.convert import sched_pb
from shoal.schedules import Run, Schedule


def spec_body(msg: sched_pb.ScheduleSpec) -> dict[str, Any]:
    """The body ``shoal.schedules.schedule_spec`` checks; empty strings are the defaults."""
    body: dict[str, Any] = {"name": msg.name, "cron": msg.cron}
    for name in ("timezone", "catch_up", "overlap"):
        if getattr(msg, name):
            body[name] = getattr(msg, name)
    if msg.task_json:
        try:
            body["task"] = orjson.loads(msg.task_json)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"task_json is not JSON: {exc}") from None
    return body


def spec_to_proto(
    name: str, cron: str, task: dict[str, Any], *, timezone: str = "", catch_up: str = "", overlap: str = ""
) -> sched_pb.ScheduleSpec:
    return sched_pb.ScheduleSpec(
        name=name,
        cron=cron,
        timezone=timezone,
        task_json=orjson.dumps(task).decode(),
        catch_up=catch_up,
        overlap=overlap,
    )


def schedule_to_proto(schedule: Schedule) -> sched_pb.Schedule:
    s = schedule.spec
    msg = sched_pb.Schedule(
        name=s.name,
        cron=s.cron,
        timezone=s.timezone,
        task_json=orjson.dumps(s.task).decode(),
        catch_up=s.catch_up,
        overlap=s.overlap,
        paused=schedule.paused,
        created_at=schedule.created_at,
        next_fire_times=list(schedule.next_fire_times),
        runs=[_run_to_proto(r) for r in schedule.runs],
    )
    if schedule.next_fire_at is not None:
        msg.next_fire_at = schedule.next_fire_at
    if schedule.last_tick is not None:
        msg.last_tick = schedule.last_tick
    return msg


def _run_to_proto(run: Run) -> sched_pb.ScheduleRun:
    msg = sched_pb.ScheduleRun(
        tick=run.tick, task_id=run.task_id or "", skipped=run.skipped or "", catch_up=run.catch_up
    )
    if run.fired_at is not None:
        msg.fired_at = run.fired_at
    return msg


def schedule_json(msg: sched_pb.Schedule) -> dict[str, Any]:
    """A Schedule message as REST's JSON shows a schedule (what the clients return)."""
    return {
        "name": msg.name,
        "cron": msg.cron,
        "timezone": msg.timezone,
        "task": orjson.loads(msg.task_json or "{}"),
        "catch_up": msg.catch_up,
        "overlap": msg.overlap,
        "paused": msg.paused,
        "created_at": msg.created_at,
        "next_fire_at": msg.next_fire_at if msg.HasField("next_fire_at") else None,
        "next_fire_times": list(msg.next_fire_times),
        "last_tick": msg.last_tick if msg.HasField("last_tick") else None,
        "runs": [
            {"tick": r.tick, "skipped": r.skipped}
            if r.skipped
            else {
                "tick": r.tick,
                "task_id": r.task_id,
                "fired_at": r.fired_at if r.HasField("fired_at") else None,
                "catch_up": r.catch_up,
            }
            for r in msg.runs
        ],
    }
