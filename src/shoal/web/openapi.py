"""The OpenAPI document as shoal really behaves, built once on first request.

FastAPI's generated document is adjusted in two ways: request bodies the handlers read themselves
(``TaskIn``, ``IdsIn``) are added to the components, and FastAPI's 422 validation responses are removed,
because shoal answers bad input with 400 and its own error body.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

_FASTAPI_ONLY = ("HTTPValidationError", "ValidationError")


def install(app: FastAPI, body_models: list[type[BaseModel]]) -> None:
    """Make ``app.openapi()`` return the adjusted document."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            _, defs = models_json_schema(
                [(m, "validation") for m in body_models], ref_template="#/components/schemas/{model}"
            )
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(defs.get("$defs", {}))
            for name in _FASTAPI_ONLY:
                schemas.pop(name, None)
            for path in doc.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
