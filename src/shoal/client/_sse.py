"""Reading ``/api/v1/events``: Server-Sent Events lines into task events, lag and gap notices and errors,
and what a following reader keeps between connections (``Follow``) to resume where it was."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from shoal.client import _decode
from shoal.client.errors import KINDS, ApiError, build
from shoal.errors import InvalidInput
from shoal.models import TaskEvent, TaskState

#: Seconds before the first reconnection after a lost stream; doubled per failure up to RECONNECT_MAX_S.
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class Lagged:
    """The server dropped ``dropped`` events because this client read too slowly; re-list to catch up."""

    dropped: int


@dataclass(frozen=True, slots=True)
class Gap:
    """The stream resumed after ``since``, older than the events the cluster keeps: it goes on from ``oldest``
    (None: none is kept) and the events between are lost; re-list to catch up."""

    since: str
    oldest: str | None


StreamItem = TaskEvent | Lagged | Gap


class Parser:
    """Feed it lines (without the newline); it returns an item when a frame ends, raises on an error frame."""

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []
        self._id: str | None = None

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
        elif field == "id":
            self._id = value
        return None

    def _dispatch(self) -> StreamItem | None:
        event, data, frame_id = self._event, "\n".join(self._data), self._id
        self._event, self._data, self._id = "message", [], None
        if not data:
            return None
        body: Any = orjson.loads(data)
        if event == "task":
            if isinstance(body, dict) and frame_id and not body.get("event_id"):
                body["event_id"] = frame_id
            return _decode.event(body)
        if event == "lagged":
            return Lagged(int(body.get("dropped", 0)))
        if event == "gap":
            oldest = body.get("oldest")
            return Gap(str(body.get("since", "")), str(oldest) if oldest is not None else None)
        if event == "error":
            kind, message = str(body.get("error", "")), str(body.get("message", "event stream failed"))
            cls = KINDS.get(kind)
            raise build(cls, message, 200, kind) if cls else ApiError(200, kind or "stream_error", message)
        return None


class Follow:
    """A following reader's filters and place: the id of the last task event it received (filtered out or
    not), which the next connection sends as ``Last-Event-ID``, and its reconnection backoff.

    ``give_up_after_s``: how long connections may fail in a row before the reader gives up (raises)."""

    def __init__(
        self,
        types: Iterable[str] | None,
        states: Iterable[TaskState | str] | None,
        since: str | None,
        give_up_after_s: float,
    ) -> None:
        self.types = frozenset(types) if types is not None else None
        self.states = frozenset(_state(s) for s in states) if states is not None else None
        self.last = since
        self.give_up_after_s = give_up_after_s
        self._delay = 0.0
        self._failing_since: float | None = None

    def headers(self) -> dict[str, str]:
        return {"Last-Event-ID": self.last} if self.last else {}

    def connected(self) -> None:
        """A connection was made: the next failure starts the backoff over."""
        self._delay, self._failing_since = 0.0, None

    def wanted(self, item: StreamItem) -> bool:
        """Whether the reader is given ``item``; a task event, wanted or not, moves its place on."""
        if not isinstance(item, TaskEvent):
            return True
        if item.event_id:
            self.last = item.event_id
        if self.states is not None and item.state not in self.states:
            return False
        return self.types is None or item.type in self.types

    def backoff(self) -> float | None:
        """Seconds to wait before connecting again, or None when connections have failed for too long."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since > self.give_up_after_s:
            return None
        self._delay = min(RECONNECT_MAX_S, max(RECONNECT_FIRST_S, self._delay * 2))
        return self._delay


def _state(value: TaskState | str) -> TaskState:
    if isinstance(value, TaskState):
        return value
    try:
        return TaskState.parse(str(value))
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
