"""A cap on request bodies, checked before a handler reads a byte and again while the body streams in."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shoal._utils import is_digits
from shoal.web.errors import BodyTooLarge, error_response, shoal_error_response


class BodyLimit:
    """ASGI middleware: 413 for a ``Content-Length`` over ``max_bytes``, or for a chunked body that grows past it.

    The declared length is refused at once, without reading the body. A body without a length (chunked) is
    counted as the handler reads it; the read that passes the limit raises ``BodyTooLarge``, which the error
    handlers turn into the same 413.

    Paths under one of ``own`` (``/api/v1/cache/``, whose values may be larger) are passed through: their
    handlers bound the body themselves, with their own limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, own: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.own = own

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.own and str(scope.get("path", "")).startswith(self.own)):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == -1:
            await error_response(400, "invalid_input", "malformed Content-Length header")(scope, receive, send)
            return
        if declared is not None and declared > self.max_bytes:
            await shoal_error_response(BodyTooLarge(self.max_bytes))(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared body length, None when absent, -1 when it is not a number."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if is_digits(text) else -1
    return None
