"""REST routes of workflows: ``GET /api/v1/workflows/{id}`` (its tasks and edges, what the task center's
graph draws) and ``POST /api/v1/workflows/{id}/kill`` (kill every unfinished task of it)."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import WithJsonSchema
from starlette.responses import Response

from shoal import validation
from shoal.models import Task
from shoal.types import TaskAPI
from shoal.web import schemas
from shoal.web.responses import JSONResponse
from shoal.web.schemas import errors
from shoal.web.security import TokenCheck, require_token

WorkflowIdPath = Annotated[
    str, WithJsonSchema(schemas.TaskId.model_json_schema()), Path(description="a workflow id (a UUID)")
]


def workflow_json(workflow_id: str, tasks: list[Task]) -> dict[str, Any]:
    """A workflow as the API shows it: its tasks, the edges between them (parent -> child), the state counts."""
    members = {t.id for t in tasks}
    edges = [{"parent": p, "child": t.id} for t in tasks for p in t.depends_on if p in members]
    return {
        "id": workflow_id,
        "tasks": [t.to_json() for t in tasks],
        "edges": edges,
        "counts": dict(Counter(t.state.name for t in tasks)),
    }


def build_workflows_router(*, tasks: TaskAPI, token: str | TokenCheck) -> APIRouter:
    api = APIRouter(prefix="/api/v1", dependencies=[Depends(require_token(token))], responses=errors(401))

    @api.get(
        "/workflows/{workflow_id}",
        response_model=schemas.WorkflowOut,
        responses=errors(400, 404),
        summary="Get a workflow: its tasks and which depends on which",
    )
    async def get_workflow(workflow_id: WorkflowIdPath) -> Response:
        wid = validation.task_id(workflow_id)
        return JSONResponse(workflow_json(wid, await tasks.workflow(wid)))

    @api.post(
        "/workflows/{workflow_id}/kill",
        response_model=schemas.WorkflowKillOut,
        responses=errors(400, 404),
        summary="Kill every unfinished task of a workflow",
    )
    async def kill_workflow(workflow_id: WorkflowIdPath) -> Response:
        wid = validation.task_id(workflow_id)
        return JSONResponse({"id": wid, "killed": await tasks.kill_workflow(wid)})

    return api
