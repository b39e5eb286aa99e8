"""``GET /api/v1/tasks`` and its companions: the listing (with ``state``, ``q`` search and cursor pages),
the counts per state, and the tasks finished per second. They serve the CLI and the web task center alike.

A search (``q=``) matches the text, in any case, against each task's name and target. It is a bounded scan
of the listing's index, newest first (``shoal.store.search``): it looks at no more than ``SEARCH_SCAN``
tasks, and its answer carries ``complete`` to say whether that was all of them. A search by the start of
the name (``name=``) reads the name index instead, however many tasks the store holds, and its ``total``
is exact (``complete``: true) unless a state is asked for of a prefix that very many tasks share.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import WithJsonSchema
from starlette.responses import Response

from shoal import validation
from shoal.errors import InvalidInput
from shoal.store.search import SEARCH_SCAN
from shoal.throughput import WINDOW_S
from shoal.types import TaskAPI
from shoal.web import schemas
from shoal.web.responses import JSONResponse
from shoal.web.schemas import errors

#: Longest search text accepted by ``GET /api/v1/tasks?q=``.
MAX_QUERY_CHARS = 200
_Q_DOC = (
    "search: tasks whose name or target contains this text (any case). A search looks at the newest "
    f"{SEARCH_SCAN} tasks of the listing at most; `complete` says whether that was all of them"
)

_NAME_DOC = (
    "search: tasks whose name starts with this text (ASCII letters in any case), from the name index; with q, "
    "the tasks that match both, from q's bounded scan"
)
_Q_SCHEMA = {"type": "string", "pattern": schemas.stripped_text(MAX_QUERY_CHARS, required=False)}


def search_query(value: str | None, param: str = "q") -> str:
    """The search text of ``?q=`` (or ``?name=``), stripped; empty means no search."""
    if value is None:
        return ""
    value = value.strip()
    if len(value) > MAX_QUERY_CHARS:
        raise InvalidInput(f"{param} is {len(value)} characters; the limit is {MAX_QUERY_CHARS}")
    if any(ord(c) < 32 for c in value):
        raise InvalidInput(f"{param} must not contain control characters")
    return value


def add_routes(router: APIRouter, tasks: TaskAPI) -> None:
    """Add the listing routes to ``router`` (before any ``/tasks/{task_id}`` route, which would match them)."""

    @router.get("/tasks", response_model=schemas.TaskPageOut, responses=errors(400), summary="List tasks, newest first")
    async def list_tasks(
        state: Annotated[
            str | None,
            WithJsonSchema(schemas.STATE_SCHEMA),
            Query(description="only tasks in this state (the name in any case, or its number)"),
        ] = None,
        limit: Annotated[
            int | None, WithJsonSchema(schemas.PAGE_SIZE_SCHEMA), Query(description="page size (default 50)")
        ] = None,
        cursor: Annotated[
            str | None, WithJsonSchema(schemas.CURSOR_SCHEMA), Query(description="next_cursor of the page before")
        ] = None,
        q: Annotated[str | None, WithJsonSchema(_Q_SCHEMA), Query(description=_Q_DOC)] = None,
        name: Annotated[str | None, WithJsonSchema(_Q_SCHEMA), Query(description=_NAME_DOC)] = None,
    ) -> Response:
        wanted, size, after = validation.state_filter(state), validation.page_limit(limit), validation.cursor(cursor)
        query, prefix = search_query(q), search_query(name, "name")
        complete: bool | None = None
        if query:  # with name= too: the scan, matching both
            page, complete = await tasks.search(wanted, query, size, after, prefix)
        elif prefix:
            page, complete = await tasks.search_names(wanted, prefix, size, after)
        else:
            page = await tasks.list(wanted, size, after)
        body: dict[str, Any] = {
            "tasks": [t.to_json() for t in page.tasks],
            "total": page.total,
            "next_cursor": page.next_cursor,
        }
        if complete is not None:
            body["complete"] = complete
        return JSONResponse(body)

    @router.get("/tasks/counts", response_model=schemas.CountsOut, summary="How many tasks are in each state")
    async def counts() -> Response:
        return JSONResponse(await tasks.counts())

    @router.get(
        "/tasks/throughput",
        response_model=schemas.ThroughputOut,
        responses=errors(400),
        summary="Tasks that ended per second, as this node saw them",
    )
    async def throughput(
        seconds: Annotated[
            int | None,
            WithJsonSchema({"type": "integer", "minimum": 1, "maximum": WINDOW_S}),
            Query(description="how far back (default 300)"),
        ] = None,
    ) -> Response:
        if seconds is not None and not 1 <= seconds <= WINDOW_S:
            raise InvalidInput(f"seconds must be between 1 and {WINDOW_S}")
        return JSONResponse(tasks.throughput(seconds or 300))
