"""Errors of the client: the server's error bodies mapped back onto ``shoal.errors``, plus its own.

    ShoalError (shoal.errors)
    ├── InvalidInput, TaskNotFound, ResultNotFound, IllegalTransition, Unauthorized, ...
    │       rebuilt from the ``error`` field of the body (``task_not_found`` -> TaskNotFound)
    ├── ApiError          an error answer with a kind this client has no class for
    ├── ApiUnreachable    no answer at all: connection refused, DNS, timeout
    ├── WaitTimeout       (also a TimeoutError) a task was not terminal in time
    └── TaskFailed        ``run``'s task ended other than SUCCEED

Every error raised from an answer carries ``status`` (the HTTP status) and ``kind`` (the ``error`` field);
one that a task of a batch caused also ``index``, that task's 0-based place in the batch.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson

from shoal import errors as _errors
from shoal.errors import InvalidInput, NotFound, ShoalError, Unauthorized
from shoal.models import Task


class ApiError(ShoalError):
    """Raised for an error answer whose kind has no class here (a route missing, a server crash)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.http_status = status


class ApiUnreachable(ShoalError):
    """Raised when the API does not answer: nothing listens at the URL, the name does not resolve, or it is too slow."""

    http_status = 503

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the shoal API at {url}: {reason}")
        self.url = url
        self.reason = reason


class WaitTimeout(ShoalError, TimeoutError):
    """Raised by ``wait`` when the task is still not terminal at the deadline; ``task`` is how it was last seen."""

    http_status = 408

    def __init__(self, task: Task, timeout_s: float) -> None:
        super().__init__(f"task {task.id} is still {task.state.name} after {timeout_s:g} s")
        self.task = task
        self.timeout_s = timeout_s


class TaskFailed(ShoalError):
    """Raised by ``run`` when the task ended RUNTIME_ERROR or KILLED; ``task`` is the task as it ended."""

    http_status = 409

    def __init__(self, task: Task) -> None:
        detail = f": {task.error}" if task.error else ""
        super().__init__(f"task {task.id} ended {task.state.name}{detail}")
        self.task = task


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _subclasses(cls: type[ShoalError]) -> list[type[ShoalError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_subclasses(sub))
    return out


#: ``error`` kind -> class, for every class in shoal.errors.
KINDS: dict[str, type[ShoalError]] = {
    _snake(c.__name__): c for c in _subclasses(ShoalError) if c.__module__ == _errors.__name__
}
#: Classes for kinds this client does not know, by status.
_BY_STATUS: dict[int, type[ShoalError]] = {400: InvalidInput, 413: InvalidInput, 401: Unauthorized, 404: NotFound}


def build(cls: type[ShoalError], message: str, status: int, kind: str) -> ShoalError:
    """An instance of ``cls`` carrying the server's message (its own ``__init__`` wants other arguments)."""
    exc = cls.__new__(cls)
    ShoalError.__init__(exc, message)
    exc.status = status  # type: ignore[attr-defined]
    exc.kind = kind  # type: ignore[attr-defined]
    return exc


def from_response(response: httpx.Response) -> ShoalError:
    """The typed error for a 4xx/5xx answer."""
    status = response.status_code
    kind, message = "", ""
    try:
        body: Any = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        kind = str(body.get("error") or "")
        message = str(body.get("message") or body.get("detail") or "")
    if not message:
        text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        message = f"HTTP {status} {response.reason_phrase}" + (f": {text}" if text else "")
    cls = KINDS.get(kind) or _BY_STATUS.get(status)
    if cls is None:
        return ApiError(status, kind or "http_error", message)
    error = build(cls, message, status, kind or _snake(cls.__name__))
    index = body.get("index") if isinstance(body, dict) else None
    if isinstance(index, int) and not isinstance(index, bool):
        error.index = index  # type: ignore[attr-defined]
    return error


def _refused(exc: BaseException) -> bool:
    """Whether a connection error comes down to a refused connection (however deep httpx/anyio wrapped it)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError) or "refused" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def unreachable(url: str, exc: httpx.TransportError) -> ApiUnreachable:
    if isinstance(exc, httpx.TimeoutException):
        reason = "no answer in time"
    elif isinstance(exc, httpx.ConnectError):
        reason = str(exc) or "connection failed"
        if _refused(exc):
            reason = "connection refused (is a node running there?)"
    else:
        reason = str(exc) or type(exc).__name__
    return ApiUnreachable(url, reason)
