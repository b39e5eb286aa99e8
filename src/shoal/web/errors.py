"""The one table from errors to HTTP responses, and the handlers that apply it.

Every 4xx/5xx the REST API sends has the body ``{"error": "<snake_case kind>", "message": "<for a human>"}``
(and ``index`` when one task refused a batch submit).
The kind of a ``ShoalError`` is its class name in snake case (``TaskNotFound`` -> ``task_not_found``), so a
client can map it back to the class (see ``shoal.client``); errors that are not ``ShoalError``s (unknown
route, wrong method, unexpected crash) get a fixed kind from ``STATUS_KINDS``. Tracebacks go to the
server log only, never to the client.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shoal.errors import InvalidInput, ShoalError, StoreFault, Unauthorized
from shoal.validation import RefusedTask
from shoal.web.responses import JSONResponse

log = logging.getLogger("shoal.web")


class BodyTooLarge(InvalidInput):
    """Raised when a request body passes ``validation.MAX_BODY_BYTES``."""

    http_status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is over the limit of {limit} bytes")
        self.limit = limit


#: Kinds for errors that are not ShoalErrors, by HTTP status.
STATUS_KINDS = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "body_too_large",
    415: "unsupported_media_type",
    500: "internal",
    503: "unavailable",
}

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def error_kind(exc: ShoalError) -> str:
    """``TaskNotFound`` -> ``task_not_found``: the ``error`` field of the body."""
    return _CAMEL.sub("_", type(exc).__name__).lower()


def http_status(exc: ShoalError) -> int:
    """The HTTP status of an error: the ``http_status`` its class carries (see ``shoal.errors``)."""
    return int(exc.http_status)


def error_response(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": kind, "message": message}, status_code=status, headers=headers)


def shoal_error_response(exc: ShoalError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    if isinstance(exc, RefusedTask):  # one task refused a batch: its own kind, and which task it was
        body = {"error": error_kind(exc.error), "message": exc.message, "index": exc.index}
        return JSONResponse(body, status_code=http_status(exc))
    return error_response(http_status(exc), error_kind(exc), exc.message, headers)


async def _on_shoal_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ShoalError)
    status = http_status(exc)
    if isinstance(exc, StoreFault):  # a fault to look into: where it came from, in the log only
        log.error("%s %s -> %d: %s", request.method, request.url.path, status, exc, exc_info=exc)
    elif status >= 500:  # str(): the message and, for a store error, what the store said
        log.warning("%s %s -> %d: %s", request.method, request.url.path, status, exc)
    return shoal_error_response(exc)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    kind = STATUS_KINDS.get(status, "http_error")
    if status == 404:
        message = f"no such route: {request.url.path}"
    elif status == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    headers = dict(exc.headers) if exc.headers else None
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    if status == 405:
        headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
    return error_response(status, kind, message, headers)


#: Methods that ``Allow`` may name.
_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes on this path. Starlette's own ``Allow`` names only the first route that
    matched the path, though ``GET`` and ``DELETE /api/v1/tasks/{id}`` are two routes."""
    routes = request.app.router.routes
    return [m for m in _METHODS if any(r.matches({**request.scope, "method": m})[0] is Match.FULL for r in routes)]


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's own query/path checks (wrong types) answer 400 like shoal.validation does, not 422."""
    assert isinstance(exc, RequestValidationError)
    return error_response(400, "invalid_input", describe_validation(exc.errors()))


def describe_validation(errors: Any) -> str:
    """One line per problem, ``limit: Input should be a valid integer``, joined by ``; ``."""
    parts = []
    for err in list(errors)[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body", "header")]
        where = ".".join(loc) or "request"
        parts.append(f"{where}: {err.get('msg', 'is invalid')}")
    return "; ".join(parts) or "the request is invalid"


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``; ``CatchAll`` must be added as a middleware as well."""
    app.add_exception_handler(ShoalError, _on_shoal_error)  # the store's errors too (shoal.store.client)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)


class CatchAll:
    """Turns any unexpected exception into a generic 500 and logs the traceback on the server.

    Starlette's own last-resort handler re-raises after answering; this one does not, so in-process
    callers see the same 500 that a remote client would. If the response had already started (a
    stream), the connection is simply ended.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                response = error_response(500, "internal", "internal server error; see the node's log")
                await response(scope, receive, send)
