"""REST routes of named schedules under ``/api/v1/schedules``, and their shapes in the OpenAPI document.

Bodies are read by hand and checked by ``shoal.schedules`` (as ``api.py`` does for tasks), so a bad cron
expression, time zone or task template gets shoal's 400 with the words the gRPC adapter uses too. The
task template's schema is ``TaskIn``'s, per task type, with ``name`` optional (the schedule's name) and
without ``run_at`` and ``idempotency_key``, which every tick's task would repeat, and the workflow fields.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field, WithJsonSchema
from starlette.responses import Response

from shoal import cron
from shoal.errors import ShoalError
from shoal.schedules import CATCH_UP, KEEP_RUNS, NAME_PATTERN, OVERLAP, SHOW_NEXT, Schedule, ScheduleService
from shoal.web import schemas
from shoal.web.api import body_schema, json_body
from shoal.web.responses import JSONResponse
from shoal.web.schemas import errors
from shoal.web.security import TokenCheck, require_token

_NAME_SCHEMA = {"type": "string", "pattern": NAME_PATTERN}
NamePath = Annotated[
    str, WithJsonSchema(_NAME_SCHEMA), Path(description="the schedule's name: 1 to 100 of A-Z a-z 0-9 . _ -")
]
#: Task fields a schedule's template may not hold.
_NOT_IN_TEMPLATE = ("run_at", "idempotency_key", "depends_on", "on_parent_failure", "ref")


class ScheduleRunOut(BaseModel):
    """A tick the schedule handled: fired (``task_id``, ``fired_at``, ``catch_up``), or skipped (``skipped``:
    "overlap" while the task before had not ended, with overlap "skip"; "missed" for the newest tick missed
    while no master was up, with catch_up "skip")."""

    tick: float = Field(description="the tick, Unix seconds")
    task_id: str | None = Field(None, description="the task it fired (GET /api/v1/tasks/{id})")
    fired_at: float | None = Field(None, description="when the master recorded it, Unix seconds")
    skipped: Literal["overlap", "missed"] | None = None
    catch_up: bool | None = Field(None, description="the tick had been missed, and was fired late (catch_up run_once)")


class ScheduleOut(BaseModel):
    name: str
    cron: str = Field(description="five cron fields, @every N(s|m|h|d), or @hourly/@daily/@weekly/@monthly/@yearly")
    timezone: str = Field(description="the IANA time zone the cron fields are read in")
    task: dict[str, Any] = Field(description="the task template each tick submits")
    catch_up: Literal["skip", "run_once"]
    overlap: Literal["allow", "skip"]
    paused: bool
    created_at: float
    next_fire_at: float | None = Field(description="the next tick, Unix seconds; null while paused")
    next_fire_times: list[float] = Field(description=f"the next {SHOW_NEXT} ticks; none while paused")
    last_tick: float | None = Field(description="the newest tick handled (fired or skipped)")
    runs: list[ScheduleRunOut] = Field(description=f"the latest {KEEP_RUNS} runs, newest first")


class SchedulesOut(BaseModel):
    schedules: list[ScheduleOut]


def components(types: list[str] | None) -> dict[str, Any]:
    """``ScheduleIn`` and the task templates it takes, for the task types live nodes run (as ``TaskIn``)."""
    found: dict[str, Any] = {}
    task = schemas.task_in_schema(types)
    models: list[type[BaseModel]] = [*schemas.BUILT_IN_TASKS.values(), schemas.PluginTaskIn]
    for model in models:
        found[f"Schedule{model.__name__}"] = _template(model)
    branches = []
    for branch in task["oneOf"]:
        branch = dict(branch)
        if "$ref" in branch:
            branch["$ref"] = branch["$ref"].replace("/schemas/", "/schemas/Schedule")
        else:
            branch["allOf"] = [{"$ref": "#/components/schemas/SchedulePluginTaskIn"}]
        branches.append(branch)
    found["ScheduleTaskIn"] = {
        "title": "ScheduleTaskIn",
        "description": "The task each tick submits, as `POST /api/v1/tasks` takes it; `name` defaults to the "
        "schedule's; no `run_at` or `idempotency_key`.",
        "oneOf": branches,
    }
    found["ScheduleIn"] = {
        "title": "ScheduleIn",
        "type": "object",
        "properties": {
            "name": {**_NAME_SCHEMA, "description": "1 to 100 of A-Z a-z 0-9 . _ -"},
            "cron": {
                "type": "string",
                "minLength": 1,
                "maxLength": cron.MAX_CRON_CHARS,
                "pattern": cron.CRON_PATTERN,
                "description": "five cron fields (minute hour day-of-month month day-of-week), `@every N` with a "
                "unit s, m, h or d (ticks are multiples of it since the Unix epoch; at least 1s), or one of "
                + ", ".join(f"`{a}`" for a in cron.ALIASES),
                "examples": ["*/5 * * * *", "@every 30s", "@daily"],
            },
            "timezone": _nullable(
                {"type": "string", "pattern": r"^[A-Za-z0-9_+./-]{0,64}$", "examples": ["Europe/Paris"]},
                "an IANA time zone the cron fields are read in; default (null or empty) UTC",
            ),
            "task": {"$ref": "#/components/schemas/ScheduleTaskIn"},
            "catch_up": _nullable(
                {"type": "string", "enum": list(CATCH_UP)},
                "ticks missed while no master was up: `skip` (default) fires none, `run_once` fires one task for "
                "the newest of them",
            ),
            "overlap": _nullable(
                {"type": "string", "enum": list(OVERLAP)},
                "`allow` (default) fires whatever the task before is doing; `skip` records a tick as skipped while "
                "the task of the run before is WAITING, INQUEUE or RUNNING",
            ),
        },
        "required": ["name", "cron", "task"],
        "additionalProperties": False,
    }
    return found


def _nullable(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}], "description": description}


def _template(model: type[BaseModel]) -> dict[str, Any]:
    """A task model's schema as a template: ``name`` optional, none of ``_NOT_IN_TEMPLATE``."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    schema["title"] = f"Schedule{model.__name__}"
    for name in _NOT_IN_TEMPLATE:
        schema["properties"].pop(name, None)
    schema["required"] = [r for r in schema.get("required", []) if r != "name"]
    return schema


def build_schedules_router(*, schedules: ScheduleService | None, token: str | TokenCheck) -> APIRouter:
    """The schedule routes, all behind the bearer token; 503 when the app serves no schedules."""
    api = APIRouter(prefix="/api/v1/schedules", dependencies=[Depends(require_token(token))], responses=errors(401))

    def service() -> ScheduleService:
        if schedules is None:
            raise SchedulesUnavailable("this node does not serve schedules")
        return schedules

    def answer(schedule: Schedule, status_code: int = 200) -> Response:
        return JSONResponse(schedule.to_json(), status_code=status_code)

    @api.post(
        "",
        status_code=201,
        response_model=ScheduleOut,
        responses=errors(400, 409, 413, 503),
        openapi_extra=body_schema("ScheduleIn"),
        summary="Add a named schedule: a task fired at each tick of a cron expression",
    )
    async def add(request: Request) -> Response:
        return answer(await service().add(await json_body(request)), 201)

    @api.get("", response_model=SchedulesOut, responses=errors(503), summary="Every schedule, by name")
    async def list_schedules() -> Response:
        return JSONResponse({"schedules": [s.to_json() for s in await service().list()]})

    @api.get("/{name}", response_model=ScheduleOut, responses=errors(400, 404, 503), summary="Get a schedule")
    async def get(name: NamePath) -> Response:
        return answer(await service().get(name))

    @api.delete(
        "/{name}",
        status_code=204,
        responses=errors(400, 404, 503),
        summary="Delete a schedule (the tasks it fired stay)",
    )
    async def delete(name: NamePath) -> Response:
        await service().delete(name)
        return Response(status_code=204)

    @api.post("/{name}/pause", response_model=ScheduleOut, responses=errors(400, 404, 503), summary="Pause a schedule")
    async def pause(name: NamePath) -> Response:
        return answer(await service().pause(name))

    @api.post(
        "/{name}/resume",
        response_model=ScheduleOut,
        responses=errors(400, 404, 503),
        summary="Resume a schedule: it fires the ticks after now (none missed while paused)",
    )
    async def resume(name: NamePath) -> Response:
        return answer(await service().resume(name))

    return api


class SchedulesUnavailable(ShoalError):
    """Raised when this app was built without schedules (an app serving only part of a node)."""

    http_status = 503
