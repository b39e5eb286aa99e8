"""The ``/api/v1/cluster`` routes: the membership, its timeline, and operator actions on the cluster."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import WithJsonSchema
from starlette.responses import Response

from shoal import validation
from shoal.errors import InvalidInput
from shoal.types import ClusterAPI
from shoal.web import schemas
from shoal.web.api import body_schema, json_body
from shoal.web.responses import JSONResponse
from shoal.web.schemas import errors
from shoal.web.security import TokenCheck, require_token


def build_cluster_router(*, cluster: ClusterAPI, token: str | TokenCheck) -> APIRouter:
    """The cluster routes, behind the bearer token."""
    router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_token(token))], responses=errors(401))

    @router.get("/cluster", response_model=schemas.ClusterOut, responses=errors(503), summary="Nodes and master")
    async def cluster_view() -> Response:
        view = await cluster.view()
        return JSONResponse(view.to_json())

    @router.post("/cluster/master", response_model=schemas.MasterOut, responses=errors(400, 404, 503),
              summary="Hand the master role to a node", openapi_extra=body_schema(schemas.MasterIn))  # fmt: skip
    async def hand_over(request: Request) -> Response:
        data = await json_body(request)
        if not isinstance(data, dict) or not isinstance(data.get("node"), str) or set(data) != {"node"}:
            raise InvalidInput('the body must be a JSON object {"node": "<node name>"}')
        master, epoch = await cluster.hand_over(data["node"][:64])
        return JSONResponse({"master": master, "epoch": epoch})

    @router.post("/cluster/token", response_model=schemas.TokenOut, responses=errors(409, 503),
              summary="Rotate the cluster token on every live node (409 while another rotation runs)")  # fmt: skip
    async def rotate_token() -> Response:
        token, succeed = await cluster.rotate_token()
        return JSONResponse({"token": token, "succeed": succeed})

    @router.get("/cluster/timeline", response_model=schemas.TimelineOut, responses=errors(400),
             summary="Membership events, newest first")  # fmt: skip
    async def timeline(
        limit: Annotated[int | None, WithJsonSchema(schemas.PAGE_SIZE_SCHEMA), Query(description="default 200")] = None,
    ) -> Response:
        return JSONResponse({"events": await cluster.timeline(validation.page_limit(limit, 200))})

    return router
