"""Reading ``/api/v1/events``: Server-Sent Events lines into task events, lag notices and errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from shoal.client import _decode
from shoal.client.errors import KINDS, ApiError, build
from shoal.models import TaskEvent


@dataclass(frozen=True, slots=True)
class Lagged:
    """The server dropped ``dropped`` events because this client read too slowly; re-list to catch up."""

    dropped: int


StreamItem = TaskEvent | Lagged


class Parser:
    """Feed it lines (without the newline); it returns an item when a frame ends, raises on an error frame."""

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> StreamItem | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        return None

    def _dispatch(self) -> StreamItem | None:
        event, data = self._event, "\n".join(self._data)
        self._event, self._data = "message", []
        if not data:
            return None
        body: Any = orjson.loads(data)
        if event == "task":
            return _decode.event(body)
        if event == "lagged":
            return Lagged(int(body.get("dropped", 0)))
        if event == "error":
            kind, message = str(body.get("error", "")), str(body.get("message", "event stream failed"))
            cls = KINDS.get(kind)
            raise build(cls, message, 200, kind) if cls else ApiError(200, kind or "stream_error", message)
        return None
