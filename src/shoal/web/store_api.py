"""The ``/api/v1/store`` route: what the store runs, what it holds and how long it keeps finished tasks.

An operator reads it to size the store (memory, keys) and to check that retention works (the oldest
finished task is no older than ``retention_s``).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import Response

from shoal.errors import ShoalError
from shoal.types import StoreAPI
from shoal.web import schemas
from shoal.web.responses import JSONResponse
from shoal.web.schemas import errors
from shoal.web.security import TokenCheck, require_token


class StoreStatsUnavailable(ShoalError):
    """Raised when this app was built without the store's figures (an app serving only part of a node)."""

    http_status = 503


def build_store_router(*, store: StoreAPI | None, token: str | TokenCheck) -> APIRouter:
    """The store route, behind the bearer token; 503 when ``store`` is None."""
    router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_token(token))], responses=errors(401))

    @router.get("/store", response_model=schemas.StoreOut, responses=errors(503),
                summary="The store: server, memory, keys, tasks by state, oldest finished task, retention")  # fmt: skip
    async def store_stats() -> Response:
        if store is None:
            raise StoreStatsUnavailable("this node does not serve the store's figures")
        return JSONResponse((await store.stats()).to_json())

    return router
