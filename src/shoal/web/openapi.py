"""``/openapi.json``: the OpenAPI document as shoal really behaves, so that clients generated from it work.

FastAPI's generated document is adjusted in three ways:

- the models of bodies the handlers read themselves (task specs, id lists, hand-overs) and of the event
  stream's events are added to the components;
- FastAPI's 422 validation responses are removed, because shoal answers bad input with 400 and its own
  error body;
- ``TaskIn`` (and ``ScheduleTaskIn``, a schedule's task template) names the task types live nodes run now
  (``GET /api/v1/types``): the server refuses any other, and ``echo`` and ``fetch`` have their own rules for
  ``target`` and ``params``. It is built again when that set changes; while it cannot be read (the store is
  down), it allows every built-in type and any well-formed plug-in type.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.responses import Response

from shoal.types import TaskAPI
from shoal.web import schedules_api, schemas, webhooks_api
from shoal.web.responses import JSONResponse

log = logging.getLogger("shoal.web")

URL = "/openapi.json"
_FASTAPI_ONLY = ("HTTPValidationError", "ValidationError")
#: Models the routes do not name themselves: bodies read by hand, the event stream's events.
MODELS: list[type[BaseModel]] = [
    *schemas.BUILT_IN_TASKS.values(),
    schemas.PluginTaskIn,
    schemas.FunctionTaskIn,
    schemas.IdsIn,
    schemas.MasterIn,
    schemas.EventFrame,
    schemas.TaskEventData,
    schemas.NodeEventData,
    schemas.LaggedData,
    schemas.GapData,
    schemas.ErrorOut,
]


def install(app: FastAPI, tasks: TaskAPI) -> None:
    """Serve the document at ``URL`` (create ``app`` with ``openapi_url=None``); ``app.openapi()`` returns the
    document for types not known."""
    built: dict[tuple[tuple[str, ...] | None, tuple[str, ...]], dict[str, Any]] = {}

    def document(types: list[str] | None, functions: list[str] | None = None) -> dict[str, Any]:
        key = tuple(sorted(types)) if types is not None else None
        calls = tuple(sorted(functions or ()))
        if (key, calls) not in built:
            built.clear()  # the set of types rarely changes: keep the one document in use
            doc = _base(app)
            doc["components"] = {**doc["components"], "schemas": dict(doc["components"]["schemas"])}
            doc["components"]["schemas"]["TaskIn"] = schemas.task_in_schema(
                list(key) if key is not None else None, list(calls)
            )
            doc["components"]["schemas"].update(schedules_api.components(list(key) if key is not None else None))
            doc["components"]["schemas"].update(webhooks_api.components())
            built[key, calls] = doc
        return built[key, calls]

    app.openapi = lambda: document(None)  # type: ignore[method-assign]

    @app.get(URL, include_in_schema=False)
    async def openapi_json() -> Response:
        functions: list[str] = []
        try:
            types: list[str] | None = await tasks.task_types()
        except Exception as exc:  # the document is still useful without them
            log.warning("openapi.json: task types unknown (%s); documenting every built-in type", exc)
            types = None
        if types:
            try:
                functions = await tasks.function_types()
            except Exception as exc:  # then they are documented as plug-in types
                log.warning("openapi.json: function task types unknown (%s)", exc)
        return JSONResponse(document(types, functions))


def _base(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document with shoal's models and without FastAPI's 422s, made once."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        _, defs = models_json_schema([(m, "validation") for m in MODELS], ref_template="#/components/schemas/{model}")
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        components.update(defs.get("$defs", {}))
        for name in _FASTAPI_ONLY:
            components.pop(name, None)
        for path in doc.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        app.openapi_schema = doc
    return app.openapi_schema
