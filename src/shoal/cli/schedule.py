"""``shoal schedule ...``: add, list, show, pause, resume and rm named schedules, over the REST client.

A bad expression, time zone or task is refused before anything is sent where the CLI can tell (exit 2,
as a bad option is), and otherwise by the server with the same words.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import click
import orjson
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from shoal import cron, validation
from shoal.cli import _output as o
from shoal.cli._api import BadInput, api_options, client, handle_errors, json_option
from shoal.cli.task import parse_params
from shoal.errors import InvalidInput
from shoal.schedules import CATCH_UP, OVERLAP, Schedule, schedule_spec


@click.group("schedule")
@api_options
def schedule_group() -> None:
    """Named schedules: a task submitted at each tick of a cron expression, by the master."""


@schedule_group.command("add")
@click.argument("name")
@click.option(
    "--cron",
    "expr",
    required=True,
    metavar="EXPR",
    help="Five cron fields ('*/5 * * * *'), '@every 30s' (s, m, h, d; ticks are multiples of it since the "
    "Unix epoch), or @hourly, @daily, @weekly, @monthly, @yearly.",
)
@click.option("--tz", "timezone", metavar="ZONE", help="IANA time zone the cron fields are read in [default: UTC].")
@click.option("--type", "task_type", required=True, metavar="TYPE", help="The task type, e.g. fetch.")
@click.option("--target", required=True, help="The task's target, e.g. a URL.")
@click.option("--task-name", metavar="NAME", help="The tasks' name [default: the schedule's].")
@click.option("--params", "params_json", metavar="JSON", help="The task's params, as a JSON object.")
@click.option("--param", "params", multiple=True, metavar="K=V", help="A parameter; repeat for more. V may be JSON.")
@click.option("--timeout", "timeout_s", type=float, metavar="S", help="Seconds each task may run in all.")
@click.option("--retries", type=int, help="Times each task is retried after a failure [default: 0].")
@click.option("--priority", type=click.IntRange(0, 9), metavar="0-9", help="The tasks' priority [default: 5].")
@click.option("--require", "requires", multiple=True, metavar="LABEL=VALUE", help="Run only on nodes with it.")
@click.option(
    "--catch-up",
    type=click.Choice(CATCH_UP),
    help="Ticks missed while no master was up: skip them, or run_once for the newest [default: skip].",
)
@click.option(
    "--overlap",
    type=click.Choice(OVERLAP),
    help="While the task of the run before has not ended: allow another, or skip the tick [default: allow].",
)
@api_options
@json_option
@handle_errors
def add(
    name: str,
    expr: str,
    timezone: str | None,
    task_type: str,
    target: str,
    task_name: str | None,
    params_json: str | None,
    params: tuple[str, ...],
    timeout_s: float | None,
    retries: int | None,
    priority: int | None,
    requires: tuple[str, ...],
    catch_up: str | None,
    overlap: str | None,
    as_json: bool,
) -> None:
    """Add schedule NAME: a task of --type on --target at each tick of --cron."""
    task: dict[str, Any] = {"type": task_type, "target": target, "name": task_name}
    merged = _params(params_json) | parse_params(params)
    if merged:
        task["params"] = merged
    for key, value in (("timeout_s", timeout_s), ("max_retries", retries), ("priority", priority)):
        if value is not None:
            task[key] = value
    if requires:
        task["requires"] = validation.label_pairs(requires, "--require")
    task = {k: v for k, v in task.items() if v is not None}
    body = {"name": name, "cron": expr, "timezone": timezone, "task": task, "catch_up": catch_up, "overlap": overlap}
    try:
        schedule_spec({k: v for k, v in body.items() if v is not None})  # refused here: exit 2, nothing sent
    except InvalidInput as exc:
        raise BadInput(exc.message) from None
    with client() as c:
        added = c.add_schedule(name, expr, task, timezone=timezone, catch_up=catch_up, overlap=overlap)
    _print(added, as_json)


def _params(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"--params is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadInput("--params must be a JSON object")
    return value


@schedule_group.command("list")
@api_options
@json_option
@handle_errors
def list_schedules(as_json: bool) -> None:
    """List every schedule, by name."""
    with client() as c:
        found = c.schedules()
    if as_json:
        o.print_json({"schedules": [s.to_json() for s in found]})
        return
    o.out.print(schedules_table(found))
    click.echo(f"{len(found)} schedule(s)", err=True)


@schedule_group.command("show")
@click.argument("name")
@api_options
@json_option
@handle_errors
def show(name: str, as_json: bool) -> None:
    """Show one schedule: its task, next ticks and latest runs."""
    with client() as c:
        _print(c.schedule(name), as_json)


@schedule_group.command("pause")
@click.argument("name")
@api_options
@json_option
@handle_errors
def pause(name: str, as_json: bool) -> None:
    """Pause a schedule: no tick fires until it is resumed."""
    with client() as c:
        _print(c.pause_schedule(name), as_json)


@schedule_group.command("resume")
@click.argument("name")
@api_options
@json_option
@handle_errors
def resume(name: str, as_json: bool) -> None:
    """Resume a schedule from the next tick after now (none missed while paused)."""
    with client() as c:
        _print(c.resume_schedule(name), as_json)


@schedule_group.command("rm")
@click.argument("name")
@api_options
@handle_errors
def rm(name: str) -> None:
    """Delete a schedule; the tasks it fired stay."""
    with client() as c:
        c.delete_schedule(name)
    click.echo(f"deleted schedule {name}")


def _print(schedule: Schedule, as_json: bool) -> None:
    if as_json:
        o.print_json(schedule.to_json())
    else:
        o.out.print(schedule_detail(schedule), crop=False)


def _zoned(at: float | None, zone: str) -> str:
    """A tick in the schedule's own time zone, and how far it is from now."""
    if at is None:
        return "-"
    local = datetime.fromtimestamp(at, cron.zone(zone)).strftime("%Y-%m-%d %H:%M:%S")
    delta = at - time.time()
    return f"{local} {zone} ({'in ' + _span(delta) if delta > 0 else o.ago(at)})"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:.0f}s"


def schedules_table(found: list[Schedule]) -> Table:
    table = o.plain_table()
    for column in ("NAME", "CRON", "TZ", "STATE", "NEXT", "LAST RUN", "TASK"):
        table.add_column(column, no_wrap=True, overflow="ellipsis")
    for s in found:
        last = s.runs[0] if s.runs else None
        last_text = "-" if last is None else (f"skipped ({last.skipped})" if last.skipped else o.ago(last.fired_at))
        table.add_row(
            s.name,
            s.spec.cron,
            s.spec.timezone,
            Text("paused", style="yellow") if s.paused else Text("active", style="green"),
            _zoned(s.next_fire_at, s.spec.timezone) if s.next_fire_at else "-",
            last_text,
            f"{s.spec.task.get('type')} {o.short(str(s.spec.task.get('target')), 40)}",
        )
    return table


def schedule_detail(s: Schedule) -> RenderableType:
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column()
    rows: list[tuple[str, str | Text]] = [
        ("name", s.name),
        ("cron", s.spec.cron),
        ("timezone", s.spec.timezone),
        ("state", Text("paused", style="yellow") if s.paused else Text("active", style="green")),
        ("catch up", s.spec.catch_up),
        ("overlap", s.spec.overlap),
        ("task", orjson.dumps(s.spec.task).decode()),
        ("created", o.when(s.created_at)),
        ("next ticks", ", ".join(_zoned(t, s.spec.timezone) for t in s.next_fire_times) or "-"),
        ("last tick", _zoned(s.last_tick, s.spec.timezone)),
    ]
    for key, value in rows:
        fields.add_row(key, value)
    if not s.runs:
        return fields
    runs = o.plain_table("latest runs")
    for column in ("TICK", "TASK", "FIRED"):
        runs.add_column(column, no_wrap=True)
    for r in s.runs:
        fired = Text(f"skipped ({r.skipped})", style="yellow") if r.skipped else Text(o.ago(r.fired_at))
        runs.add_row(_zoned(r.tick, s.spec.timezone), r.task_id or "-", fired)
    return Group(fields, Text(""), runs)
