"""What a webhook subscription and a delivery are, and the checks of what a user may ask for.

A subscription (``Webhook``) names a URL, the task states whose events it wants (``events``), optionally the
task types (``types``; none: every type), and whether the task's result rides along (``include_result``). Each
matching event makes one ``Delivery``, whose latest attempts are kept in its log (``Attempt``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shoal.errors import InvalidInput
from shoal.models import TaskState
from shoal.webhooks.signing import check_secret

#: Most subscriptions a cluster holds: every event is matched against each of them.
MAX_WEBHOOKS = 100
#: Ended deliveries kept in a subscription's log (the latest); pending ones are kept besides them...
KEEP_DELIVERIES = 1000
#: ...up to this many in all: past it the oldest are dropped, pending or not (counted in ``dropped``).
MAX_DELIVERIES = 50_000
#: Attempts kept in a delivery's own log (the latest).
KEEP_ATTEMPTS = 10
#: Characters of a receiver's answer kept per attempt.
RESPONSE_SNIPPET_CHARS = 500
#: Longest webhook URL.
MAX_URL_CHARS = 2048
#: Most task types one subscription names.
MAX_TYPES = 100
#: Deliveries one page of a log shows at most.
MAX_PAGE = 1000
#: Delivery statuses: waiting for its next attempt (or being sent), answered 2xx, given up.
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
STATUSES = (PENDING, DELIVERED, FAILED)
STATES = tuple(s.name for s in TaskState)
_FIELDS = {"url", "events", "types", "include_result", "secret"}
_WEBHOOK_ID_RE = re.compile(r"wh_[0-9a-f]{16}")
_DELIVERY_ID_RE = re.compile(r"[1-9][0-9]{0,18}")
#: A task type's name, as a submit takes it (no comma: the store keeps a comma list).
_TYPE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    """What a user asks for, checked (``webhook_spec``); the URL's reachability is checked apart (``guard``)."""

    url: str
    events: tuple[str, ...]
    types: tuple[str, ...] = ()
    include_result: bool = False
    secret: str | None = None  # None: made at creation


@dataclass(frozen=True, slots=True)
class Webhook:
    """A subscription as stored. ``secret`` is set only in the answer to its creation."""

    id: str
    url: str
    events: tuple[str, ...]
    types: tuple[str, ...]
    include_result: bool
    created_at: float
    dropped: int = 0  # deliveries dropped from a full log while still pending
    secret: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "url": self.url,
            "events": list(self.events),
            "types": list(self.types),
            "include_result": self.include_result,
            "created_at": self.created_at,
            "dropped": self.dropped,
        }
        if self.secret is not None:
            data["secret"] = self.secret
        return data


@dataclass(frozen=True, slots=True)
class Attempt:
    """One POST of a delivery: the receiver's status (None: no answer), how long it took, what it said."""

    at: float
    status_code: int | None = None
    latency_ms: float | None = None
    response: str = ""
    error: str = ""
    node: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "status_code": self.status_code,
            "latency_ms": self.latency_ms,
            "response": self.response,
            "error": self.error,
            "node": self.node,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Attempt:
        code = data.get("status_code")
        latency = data.get("latency_ms")
        return cls(
            at=float(data.get("at") or 0.0),
            status_code=int(code) if isinstance(code, int | float) and code else None,
            latency_ms=float(latency) if isinstance(latency, int | float) else None,
            response=str(data.get("response") or ""),
            error=str(data.get("error") or ""),
            node=str(data.get("node") or ""),
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one subscription, and how its sending went (its latest attempts, newest last)."""

    id: str
    webhook_id: str
    task_id: str
    state: str  # the task state of the event
    task_type: str
    event_at: float
    created_at: float
    status: str
    attempts: int = 0
    next_attempt_at: float | None = None
    first_attempt_at: float | None = None
    replays: int = 0
    history: tuple[Attempt, ...] = field(default_factory=tuple)

    @property
    def message_id(self) -> str:
        """The ``webhook-id`` header: the same for every attempt and replay, so a receiver can drop repeats."""
        return message_id(self.webhook_id, self.id)

    @property
    def event_type(self) -> str:
        return event_type(self.state)

    @property
    def last(self) -> Attempt | None:
        return self.history[-1] if self.history else None

    def to_json(self) -> dict[str, Any]:
        last = self.last
        return {
            "id": self.id,
            "webhook_id": self.webhook_id,
            "message_id": self.message_id,
            "type": self.event_type,
            "task_id": self.task_id,
            "state": self.state,
            "task_type": self.task_type,
            "event_at": self.event_at,
            "created_at": self.created_at,
            "status": self.status,
            "attempts": self.attempts,
            "replays": self.replays,
            "next_attempt_at": self.next_attempt_at,
            "first_attempt_at": self.first_attempt_at,
            "last_attempt_at": last.at if last else None,
            "status_code": last.status_code if last else None,
            "latency_ms": last.latency_ms if last else None,
            "response": last.response if last else "",
            "error": last.error if last else "",
            "history": [a.to_json() for a in self.history],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Delivery:
        """A delivery as the REST API shows it (``to_json``), read back (the clients' answer)."""

        def num(key: str) -> float | None:
            value = data.get(key)
            return float(value) if isinstance(value, int | float) else None

        return cls(
            id=str(data["id"]),
            webhook_id=str(data["webhook_id"]),
            task_id=str(data.get("task_id") or ""),
            state=str(data.get("state") or ""),
            task_type=str(data.get("task_type") or ""),
            event_at=num("event_at") or 0.0,
            created_at=num("created_at") or 0.0,
            status=str(data.get("status") or PENDING),
            attempts=int(data.get("attempts") or 0),
            next_attempt_at=num("next_attempt_at"),
            first_attempt_at=num("first_attempt_at"),
            replays=int(data.get("replays") or 0),
            history=tuple(Attempt.from_json(a) for a in data.get("history") or () if isinstance(a, dict)),
        )


def webhook_from_json(data: dict[str, Any]) -> Webhook:
    """A subscription as the REST API shows it, read back."""
    return Webhook(
        id=str(data["id"]),
        url=str(data["url"]),
        events=tuple(data.get("events") or ()),
        types=tuple(data.get("types") or ()),
        include_result=bool(data.get("include_result")),
        created_at=float(data.get("created_at") or 0.0),
        dropped=int(data.get("dropped") or 0),
        secret=data.get("secret"),
    )


def message_id(webhook_id: str, delivery_id: str) -> str:
    return f"msg_{webhook_id.removeprefix('wh_')}_{delivery_id}"


def event_type(state: str) -> str:
    """The payload's ``type``: ``task.succeed``, ``task.runtime_error``, ..."""
    return f"task.{state.lower()}"


def webhook_id(value: Any) -> str:
    if not isinstance(value, str) or not _WEBHOOK_ID_RE.fullmatch(value):
        raise InvalidInput(f"{str(value)[:80]!r} is not a webhook id (wh_ and 16 hex digits)")
    return value


def delivery_id(value: Any) -> str:
    if not isinstance(value, str) or not _DELIVERY_ID_RE.fullmatch(value):
        raise InvalidInput(f"{str(value)[:80]!r} is not a delivery id (a whole number)")
    return value


def states(value: Any, name: str = "events") -> tuple[str, ...]:
    """Task states by name, as a list: at least one; a repeated one counts once."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f'{name} is required: a list of task states, e.g. ["SUCCEED", "RUNTIME_ERROR"]')
    found: list[str] = []
    for v in value:
        if v not in STATES:
            raise InvalidInput(f"{name}: {v[:40]!r} is not a task state; one of {', '.join(STATES)}")
        if v not in found:
            found.append(v)
    return tuple(found)


def task_types(value: Any) -> tuple[str, ...]:
    """Task type names, as a list; none (null, empty) means every type."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput('types must be a list of task type names, e.g. ["fetch"]')
    if len(value) > MAX_TYPES:
        raise InvalidInput(f"types names {len(value)} task types; at most {MAX_TYPES}")
    found: list[str] = []
    for v in value:
        if not _TYPE_RE.fullmatch(v):
            raise InvalidInput(f"types: {v[:40]!r} is not a task type name")
        if v not in found:
            found.append(v)
    return tuple(found)


def comma_list(text: str | None, *, upper: bool = False) -> list[str] | None:
    """A command line's comma list (``SUCCEED,RUNTIME_ERROR``) as the list the API takes."""
    if text is None:
        return None
    return [part.strip().upper() if upper else part.strip() for part in text.split(",") if part.strip()]


def webhook_spec(data: Any) -> WebhookSpec:
    """Check a body ``{url, events, types?, include_result?, secret?}``; InvalidInput says what is wrong.
    The URL's form is checked here, where it may go in ``guard.check_url``."""
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object with url and events")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}")
    url = data.get("url")
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput("url is required: the http:// or https:// URL to POST events to")
    if len(url) > MAX_URL_CHARS:
        raise InvalidInput(f"url is over {MAX_URL_CHARS} characters")
    include = data.get("include_result")
    if include is not None and not isinstance(include, bool):
        raise InvalidInput("include_result must be true or false")
    secret = data.get("secret")
    if secret is not None:
        secret = check_secret(secret)
    return WebhookSpec(
        url=url.strip(),
        events=states(data.get("events")),
        types=task_types(data.get("types")),
        include_result=bool(include),
        secret=secret,
    )


def since_time(value: Any, now: float) -> float:
    """A replay's ``since``: Unix seconds, or an ISO 8601 time (``2026-12-06T10:00:00Z``); not in the future."""
    if isinstance(value, bool) or value is None:
        raise InvalidInput("since is required: Unix seconds or an ISO 8601 time such as 2026-12-06T10:00:00Z")
    if isinstance(value, int | float):
        at = float(value)
    elif isinstance(value, str):
        text = value.strip()
        at = _iso_or_seconds(text)
    else:
        raise InvalidInput("since must be Unix seconds or an ISO 8601 time")
    if not math.isfinite(at) or at < 0:
        raise InvalidInput("since must be a time after 1970")
    if at > now + 60:
        raise InvalidInput("since is in the future: nothing was delivered after it")
    return at


def _iso_or_seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"since: {text[:60]!r} is neither Unix seconds nor an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise InvalidInput("since: an ISO 8601 time needs its offset (Z or +01:00)")
    return parsed.timestamp()
