"""The ``/api/v1/cache`` routes: the cluster cache over REST, values as raw bytes.

- ``PUT /api/v1/cache/{key}?ttl=S``: the body (any content type) is the value; 204. Without ``ttl`` the
  value stays until evicted.
- ``GET /api/v1/cache/{key}``: 200 ``application/octet-stream`` with the value; ``X-Shoal-TTL`` gives the
  seconds it stays fresh (absent when it has no TTL) and ``Cache-Control: private, max-age=N`` says the
  same to HTTP tools. 404 ``cache_miss`` when no live owner holds a fresh copy.
- ``DELETE /api/v1/cache/{key}``: 204, or 404 ``cache_miss`` when no owner had it.
- ``GET /api/v1/cache``: ``{"nodes": {name: shard stats}}`` for every live node.

Keys are any printable UTF-8 up to 512 bytes, ``/`` included: the route takes the rest of the path, so
``%2F`` and ``/`` are the same key (clients percent-encode the whole key). The value is read with a bound
(``cache_max_value``): a declared ``Content-Length`` over it is refused before a byte is read, a chunked
body as soon as it passes it. A stale item (kept past its TTL for the proxy to revalidate) is a miss
here: REST users see fresh values only.
"""

from __future__ import annotations

import math
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field, WithJsonSchema
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response

from shoal import validation
from shoal._utils import is_digits
from shoal.errors import InvalidInput, ShoalError, ValueTooLarge
from shoal.models import CacheItem
from shoal.types import CacheAPI
from shoal.web import schemas
from shoal.web.errors import error_response
from shoal.web.responses import JSONResponse
from shoal.web.schemas import errors
from shoal.web.security import TokenCheck, require_token

PREFIX = "/api/v1/cache"
TTL_HEADER = "X-Shoal-TTL"


class _AnyKey(Convertor[str]):
    """The rest of the path, line breaks included (``:path`` stops at them), so that a key with a control
    character reaches ``validation.cache_key`` and gets its 400 rather than "no such route"."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("cache_key", _AnyKey())


class CacheUnavailable(ShoalError):
    """Raised when this node serves no cache."""

    http_status = 503


class CacheStatsOut(BaseModel):
    """One node's cache shard."""

    items: int
    bytes: int = Field(description="bytes held (values and keys)")
    capacity: int = Field(description="bytes the shard may hold before it evicts the least recently used")
    hits: int
    misses: int
    evictions: int
    expired: int = 0
    fills: int = 0


class CacheNodesOut(BaseModel):
    nodes: dict[str, CacheStatsOut] = Field(description="every live node's shard, by node name")


_KEY_DOC = f"any text without control characters, at most {validation.MAX_CACHE_KEY_BYTES} bytes as UTF-8; may hold /"
KeyPath = Annotated[str, WithJsonSchema(schemas.CACHE_KEY_SCHEMA), Path(description=_KEY_DOC)]
_TTL_DOC = "seconds the value stays fresh; none: until evicted"
TtlQuery = Annotated[float | None, WithJsonSchema(schemas.CACHE_TTL_SCHEMA), Query(description=_TTL_DOC)]

_VALUE_BODY = {
    "requestBody": {
        "required": False,  # no body: the empty value
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


async def read_value(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to pass ``limit`` bytes (a chunked body's
    size in the message is what had arrived when it passed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not is_digits(declared.strip()):
            raise InvalidInput("malformed Content-Length header")
        if int(declared) > limit:
            raise ValueTooLarge(int(declared), limit)
    value = bytearray()
    async for chunk in request.stream():
        if len(value) + len(chunk) > limit:
            raise ValueTooLarge(len(value) + len(chunk), limit)
        value += chunk
    return bytes(value)


def value_response(item: CacheItem, now: float) -> Response:
    """The value with how long it stays fresh."""
    headers = {"Cache-Control": "private"}
    if item.stale_at is not None:
        left = max(0.0, item.stale_at - now)
        headers[TTL_HEADER] = f"{left:.3f}"
        headers["Cache-Control"] = f"private, max-age={math.floor(left)}"
    return Response(item.value, media_type="application/octet-stream", headers=headers)


def miss(key: str) -> Response:
    return error_response(404, "cache_miss", f"no value in the cache for key {key!r}")


def build_cache_router(*, cache: CacheAPI | None, token: str | TokenCheck, max_value: int) -> APIRouter:
    """The cache routes, behind the bearer token; every one answers 503 when ``cache`` is None."""
    router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_token(token))], responses=errors(401, 503))

    def served() -> CacheAPI:
        if cache is None:
            raise CacheUnavailable("this node serves no cache")
        return cache

    @router.get("/cache", response_model=CacheNodesOut, summary="Cache use of every live node", tags=["cache"])
    async def cache_stats() -> Response:
        return JSONResponse({"nodes": await served().cluster_stats()})

    @router.get(
        "/cache/{key:cache_key}",
        response_class=Response,
        responses={
            200: {
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                "headers": {TTL_HEADER: {"description": "seconds the value stays fresh; absent: until evicted",
                                         "schema": {"type": "number"}}},
            },
            **errors(400, 404),
        },
        summary="Read a value",
        tags=["cache"],
    )  # fmt: skip
    async def cache_get(key: KeyPath) -> Response:
        key = validation.cache_key(key)
        item = await served().get(key)
        now = time.time()
        if item is None or not item.fresh(now):
            return miss(key)
        return value_response(item, now)

    @router.put(
        "/cache/{key:cache_key}",
        status_code=204,
        response_class=Response,
        responses=errors(400, 413),
        openapi_extra=_VALUE_BODY,
        summary="Store a value on every owner",
        tags=["cache"],
    )
    async def cache_set(key: KeyPath, request: Request, ttl: TtlQuery = None) -> Response:
        key = validation.cache_key(key)
        ttl_s = validation.cache_ttl(ttl)
        target = served()
        value = await read_value(request, max_value)
        await target.set(key, value, ttl_s)
        return Response(status_code=204)

    @router.delete(
        "/cache/{key:cache_key}",
        status_code=204,
        response_class=Response,
        responses=errors(400, 404),
        summary="Remove a value from every owner",
        tags=["cache"],
    )
    async def cache_delete(key: KeyPath) -> Response:
        key = validation.cache_key(key)
        if not await served().delete(key):
            return miss(key)
        return Response(status_code=204)

    return router
