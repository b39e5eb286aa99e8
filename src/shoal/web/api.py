"""REST routes under ``/api/v1``: parse, check with ``shoal.validation``, call TaskAPI/ClusterAPI, render.

No business logic lives here. Bodies are read and decoded by hand (not by FastAPI) so that malformed JSON
and wrong types get shoal's 400 with the same words the gRPC adapter uses; the pydantic models in
``schemas`` only describe the shapes in the OpenAPI document.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, WithJsonSchema
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response

from shoal import validation
from shoal.errors import InvalidInput, ResultNotFound
from shoal.models import Task, TaskResult
from shoal.types import TaskAPI
from shoal.web import listing, schemas
from shoal.web.responses import JSONResponse
from shoal.web.schemas import errors
from shoal.web.security import TokenCheck, require_token

MAX_WAIT_S = validation.MAX_WAIT_S
wait_seconds = validation.wait_seconds


def body_schema(model: type[BaseModel] | str) -> dict[str, Any]:
    """``openapi_extra`` that documents a JSON body the handler reads itself (``model`` or its name among the
    components that ``shoal.web.openapi`` adds)."""
    name = model if isinstance(model, str) else model.__name__
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        }
    }


async def json_body(request: Request) -> Any:
    """The decoded JSON body; ``BodyLimit`` has already capped its size."""
    raw = await request.body()
    if not raw.strip():
        raise InvalidInput("the request body is empty; send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None


class _TaskIdSegment(Convertor[str]):
    """A task id's path segment: anything but the names of the routes beside ``/tasks/{task_id}``, so that
    ``GET /tasks/kill`` is a method that route does not take (405 with ``Allow: POST``), not a malformed id."""

    regex = r"(?!(?:kill|delete|counts|throughput|batch)$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("task_id", _TaskIdSegment())
ONE_TASK = "/tasks/{task_id:task_id}"

_WAIT_DOC = f"long-poll: answer once the task is terminal or after this many seconds (at most {MAX_WAIT_S:g})"
WaitQuery = Annotated[float | None, WithJsonSchema(schemas.WAIT_SCHEMA), Query(description=_WAIT_DOC)]
_RESULT_DOC = (
    "true: add `result`, the task's result (as `/result` answers it), or null while there is none (the task has not "
    "ended within `wait`, or ended without one)"
)
ResultQuery = Annotated[bool | None, WithJsonSchema({"type": "boolean"}), Query(description=_RESULT_DOC)]
TaskIdPath = Annotated[str, WithJsonSchema(schemas.TaskId.model_json_schema()), Path(description="a UUID")]


#: The body of ``POST /tasks/batch``, inline: ``TaskIn`` is built per the live nodes' types.
TASKS_IN = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "title": "TasksIn",
                    "type": "object",
                    "properties": {
                        "tasks": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/TaskIn"},
                            "minItems": 1,
                            "maxItems": validation.MAX_BATCH,
                        }
                    },
                    "required": ["tasks"],
                    "additionalProperties": False,
                }
            }
        },
    }
}


async def task_answer(tasks: TaskAPI, task: Task, with_result: bool | None, status_code: int = 200) -> Response:
    """The task as JSON; with ``with_result``, its result too (null while it has none)."""
    found: TaskResult | None = None
    if with_result and task.state.terminal:
        try:
            found = await tasks.result(task.id)
        except ResultNotFound:
            found = None
    return task_json(task, with_result, found, status_code)


def task_json(task: Task, with_result: bool | None, found: TaskResult | None, status_code: int = 200) -> Response:
    body = task.to_json()
    if with_result:
        body["result"] = found.to_json() if found else None
    return JSONResponse(body, status_code=status_code)


def build_router(*, tasks: TaskAPI, token: str | TokenCheck) -> APIRouter:
    """The ``/api/v1`` task routes, all behind the bearer token."""
    api = APIRouter(prefix="/api/v1", dependencies=[Depends(require_token(token))], responses=errors(401))

    @api.post(
        "/tasks",
        status_code=201,
        response_model=schemas.WaitedTaskOut,
        responses={
            **errors(400, 413, 503),
            200: {"model": schemas.WaitedTaskOut, "description": "the earlier task of its idempotency_key"},
        },
        openapi_extra=body_schema("TaskIn"),
        summary="Submit a task",
    )
    async def submit(request: Request, wait: WaitQuery = None, result: ResultQuery = None) -> Response:
        wait_s = wait_seconds(wait)
        spec = validation.task_spec(await json_body(request))
        if wait_s is not None:
            task, stored, found = await tasks.submit_and_wait(spec, wait_s, result=bool(result))
            return task_json(task, result, found, status_code=201 if stored else 200)
        task, stored = await tasks.submit(spec)
        status = 201 if stored else 200  # 200: the earlier task of its idempotency key
        return await task_answer(tasks, task, result, status_code=status)

    @api.post(
        "/tasks/batch",
        status_code=201,
        response_model=schemas.TasksOut,
        responses={
            **errors(413, 503),
            400: {"model": schemas.BatchErrorOut},
            200: {"model": schemas.TasksOut, "description": "every task the earlier task of its idempotency_key"},
        },
        openapi_extra=TASKS_IN,
        summary=f"Submit 1 to {validation.MAX_BATCH} tasks at once: all of them, or none",
    )
    async def submit_batch(request: Request) -> Response:
        specs = validation.task_specs(await json_body(request))
        created = await tasks.submit_many(specs)
        status = 200 if len(created.reused) == len(created) else 201  # 200: every one an earlier task
        return JSONResponse({"tasks": [task.to_json() for task in created]}, status_code=status)

    listing.add_routes(api, tasks)

    @api.post(
        "/tasks/kill",
        response_model=schemas.OptResultOut,
        responses=errors(400, 413),
        openapi_extra=body_schema(schemas.IdsIn),
        summary="Kill many tasks",
    )
    async def kill_many(request: Request) -> Response:
        ids = validation.task_ids(_ids_field(await json_body(request)))
        succeed = await tasks.kill_many(ids)
        return JSONResponse({"succeed": succeed})

    @api.post(
        "/tasks/delete",
        response_model=schemas.OptResultOut,
        responses=errors(400, 413),
        openapi_extra=body_schema(schemas.IdsIn),
        summary="Delete many tasks",
    )
    async def delete_many(request: Request) -> Response:
        ids = validation.task_ids(_ids_field(await json_body(request)))
        succeed = await tasks.delete_many(ids)
        return JSONResponse({"succeed": succeed})

    @api.get(ONE_TASK, response_model=schemas.WaitedTaskOut, responses=errors(400, 404), summary="Get a task")
    async def get_task(task_id: TaskIdPath, wait: WaitQuery = None, result: ResultQuery = None) -> Response:
        tid = validation.task_id(task_id)
        wait_s = wait_seconds(wait)
        if wait_s is not None:
            task, found = await tasks.wait_result(tid, wait_s, result=bool(result))
            return task_json(task, result, found)
        return await task_answer(tasks, await tasks.get(tid), result)

    @api.get(
        f"{ONE_TASK}/result",
        response_model=schemas.ResultOut,
        responses=errors(400, 404),
        summary="Get a task's result (404 until there is one)",
    )
    async def get_result(task_id: TaskIdPath, wait: WaitQuery = None) -> Response:
        tid = validation.task_id(task_id)
        wait_s = wait_seconds(wait)
        if wait_s is not None:
            await tasks.wait(tid, wait_s)
        result = await tasks.result(tid)
        return JSONResponse(result.to_json())

    @api.post(
        f"{ONE_TASK}/kill", response_model=schemas.TaskOut, responses=errors(400, 404, 409), summary="Kill a task"
    )
    async def kill(task_id: TaskIdPath) -> Response:
        tid = validation.task_id(task_id)
        task = await tasks.kill(tid)
        return JSONResponse(task.to_json())

    @api.delete(ONE_TASK, status_code=204, responses=errors(400, 404), summary="Delete a task and its result")
    async def delete(task_id: TaskIdPath) -> Response:
        tid = validation.task_id(task_id)
        await tasks.delete(tid)
        return Response(status_code=204)

    @api.get("/types", response_model=schemas.TypesOut, summary="Task types that live nodes run")
    async def types() -> Response:
        return JSONResponse({"types": sorted(await tasks.task_types())})

    return api


def _ids_field(data: Any) -> Any:
    if not isinstance(data, dict) or "ids" not in data:
        raise InvalidInput('the body must be a JSON object {"ids": [task ids]}')
    extra = sorted(set(data) - {"ids"})
    if extra:
        raise InvalidInput(f"unknown field(s): {', '.join(extra)}")
    return data["ids"]
