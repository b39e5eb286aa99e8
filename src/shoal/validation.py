"""Checks on what strangers send, shared by the REST and gRPC adapters so both refuse the same things.

Everything here is pure: it raises ``InvalidInput`` with a message a user can act on, or returns a clean
value. Limits are module constants so that docs and tests can name them.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

import orjson

from shoal import workflows
from shoal._utils import is_digits
from shoal.errors import InvalidInput, ShoalError
from shoal.models import DEFAULT_PRIORITY, TaskSpec, TaskState

#: Largest request body the REST API reads, in bytes.
MAX_BODY_BYTES = 1024 * 1024
#: Largest ``params`` object, as JSON, in bytes.
MAX_PARAMS_BYTES = 64 * 1024
#: Largest ``args`` and ``kwargs`` of a function task together, as JSON, in bytes.
MAX_ARGS_BYTES = 256 * 1024
MAX_NAME_CHARS = 200
MAX_TARGET_CHARS = 8192
MAX_TIMEOUT_S = 7 * 24 * 3600.0
MAX_RETRIES = 100
MAX_LOST_ATTEMPTS = 100
#: Bounds of a task's (and a type's) ``memory_mb``, in MiB, and ``cpu_s_limit``, in seconds.
MIN_MEMORY_MB = 64
MAX_MEMORY_MB = 1024 * 1024
MAX_CPU_S_LIMIT = 86_400.0
#: Most ids one bulk kill or delete may name.
MAX_BULK_IDS = 1000
MAX_PAGE = 1000
#: Longest long poll (``?wait=`` in REST, ``wait_s`` in gRPC), in seconds.
MAX_WAIT_S = 60.0
#: Most tasks one batch submit (REST ``/tasks/batch``, gRPC ``CreateTasks``) may hold; also the most
#: ``SubmitTasks`` stores per store call.
MAX_BATCH = 1000
#: Longest ``result_ttl_s``: a task may ask to be kept for less than the retention, at most a year.
MAX_RESULT_TTL_S = 365 * 86400.0

T = TypeVar("T")

_TYPE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_SPEC_FIELDS = {"name", "type", "target", "params", "timeout_s", "max_retries", "max_lost_attempts"}
_SPEC_FIELDS |= {"memory_mb", "cpu_s_limit", "result_ttl_s", "run_at", "delay_s", "idempotency_key"}
_SPEC_FIELDS |= {"priority", "requires", "concurrency_key"}
_SPEC_FIELDS |= {"args", "kwargs"}
_SPEC_FIELDS |= {"depends_on", "on_parent_failure", "ref"}
#: Longest ``concurrency_key``.
MAX_CONCURRENCY_KEY_CHARS = 200
#: Most labels a node carries, or a task requires.
MAX_LABELS = 32
#: A label's name and its value (``gpu=1``, ``zone=eu-west-1a``, ``arch=x86_64``).
LABEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
LABEL_VALUE_PATTERN = r"^[A-Za-z0-9_.:-]{0,63}$"
_LABEL_NAME_RE = re.compile(LABEL_NAME_PATTERN)
_LABEL_VALUE_RE = re.compile(LABEL_VALUE_PATTERN)
#: Longest ``idempotency_key``.
MAX_IDEMPOTENCY_KEY_CHARS = 200
#: Furthest ahead a task may be delayed (``run_at``, ``delay_s``): a year.
MAX_DELAY_S = 365 * 86400.0
#: An RFC 3339 date-time: date, ``T`` (or a space, or ``t``), time with optional fraction, and an offset.
RFC3339_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
_RFC3339_RE = re.compile(RFC3339_PATTERN)
#: A duration string: a number of units (``90s``, ``15m``, ``12h``, ``7d``, ``2w``; none: seconds). ASCII
#: digits only, as the REST document's pattern (JSON Schema) reads it.
DURATION_PATTERN = r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)?$"
_DURATION_RE = re.compile(DURATION_PATTERN)
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def task_spec(data: Any) -> TaskSpec:
    """Build a TaskSpec from a decoded JSON object, refusing anything malformed.

    ``name`` defaults to nothing: a task needs a name and a target, as the seed's form said. A call of a
    function task (``args`` or ``kwargs`` given) needs neither: its name defaults to its type, its target
    to "".
    """
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object with name, type and target")
    unknown = sorted(set(data) - _SPEC_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}")
    call_args, call_kwargs = call_arguments(data.get("args"), data.get("kwargs"))
    call = call_args is not None or call_kwargs is not None
    if call:
        data = {**data, "target": data.get("target") or ""}
        if not _present(data.get("name")):
            data["name"] = data.get("type")
    missing = [f for f in ("name", "target") if not _present(data.get(f)) and not (call and f == "target")]
    if missing:
        raise InvalidInput(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
    if not _present(data.get("type")):
        raise InvalidInput("type is required")
    name = _text(data["name"], "name", MAX_NAME_CHARS)
    task_type = _text(data["type"], "type", 64)
    if not _TYPE_RE.match(task_type):
        raise InvalidInput("type may hold only letters, digits and _ . : - (at most 64)")
    target = _target(data["target"])
    return TaskSpec(
        name=name,
        type=task_type,
        target=target,
        params=params(data.get("params")),
        timeout_s=timeout(data.get("timeout_s")),
        max_retries=retries(data.get("max_retries")),
        max_lost_attempts=lost_attempts(data.get("max_lost_attempts")),
        memory_mb=memory_mb(data.get("memory_mb")),
        cpu_s_limit=cpu_s_limit(data.get("cpu_s_limit")),
        result_ttl_s=result_ttl(data.get("result_ttl_s")),
        run_at=run_at(data.get("run_at")),
        delay_s=delay_s(data.get("delay_s")),
        idempotency_key=idempotency_key(data.get("idempotency_key")),
        priority=priority(data.get("priority")),
        requires=labels(data.get("requires"), "requires"),
        concurrency_key=concurrency_key(data.get("concurrency_key")),
        args=call_args,
        kwargs=call_kwargs,
        depends_on=workflows.depends_on(data.get("depends_on")),
        on_parent_failure=workflows.on_parent_failure(data.get("on_parent_failure")),
        ref=workflows.ref(data.get("ref")),
        given=frozenset(k for k, v in data.items() if v is not None),
    )


def call_arguments(args: Any, kwargs: Any) -> tuple[list[Any] | None, dict[str, Any] | None]:
    """A function task's ``args`` (a JSON array) and ``kwargs`` (an object of argument name to value), each
    None when not given, together at most MAX_ARGS_BYTES as JSON. Whether they fit the function's signature
    is checked against the signature its nodes publish (``shoal.signatures``)."""
    if args is not None and not isinstance(args, list | tuple):
        raise InvalidInput("args must be a JSON array of the function's positional arguments")
    if kwargs is not None:
        if not isinstance(kwargs, dict):
            raise InvalidInput("kwargs must be a JSON object of the function's keyword arguments")
        for key in kwargs:
            if not isinstance(key, str) or not key.isidentifier():
                raise InvalidInput(f"kwargs: {str(key)[:70]!r} is not an argument name")
    if args is None and kwargs is None:
        return None, None
    try:
        size = len(orjson.dumps([args, kwargs]))
    except TypeError as exc:
        raise InvalidInput(f"args and kwargs cannot be stored as JSON: {exc}") from None
    if size > MAX_ARGS_BYTES:
        raise InvalidInput(f"args and kwargs are {size} bytes as JSON; the limit is {MAX_ARGS_BYTES}")
    return (None if args is None else list(args)), (None if kwargs is None else dict(kwargs))


class RefusedTask(InvalidInput):
    """Raised when one task of a batch is refused, which refuses the whole batch: ``index`` (0-based) says
    which task, ``error`` why (an ``InvalidInput`` such as ``UnknownTaskType``, whose kind the REST body
    keeps). The status is the cause's, so a batch answers as a single submit of that task would."""

    def __init__(self, index: int, error: ShoalError) -> None:
        super().__init__(f"tasks[{index}]: {error.message}")
        self.index = index
        self.error = error
        self.http_status = error.http_status
        self.grpc_code = error.grpc_code

    def moved(self, offset: int) -> RefusedTask:
        """The same refusal for a batch that began ``offset`` tasks earlier (a chunk of a longer stream)."""
        return RefusedTask(self.index + offset, self.error)


def task_specs(data: Any) -> list[TaskSpec]:
    """The specs of a batch body ``{"tasks": [spec, ...]}`` (1..MAX_BATCH of them), each checked as
    ``task_spec`` checks one; the first bad one refuses the batch (``RefusedTask`` naming its index)."""
    if not isinstance(data, dict) or "tasks" not in data:
        raise InvalidInput('the body must be a JSON object {"tasks": [task, ...]}')
    extra = sorted(set(data) - {"tasks"})
    if extra:
        raise InvalidInput(f"unknown field(s): {', '.join(extra)}")
    items = data["tasks"]
    if not isinstance(items, list):
        raise InvalidInput("tasks must be a list of task objects")
    batch_size(len(items))
    return [each(index, task_spec, item) for index, item in enumerate(items)]


def batch_size(count: int) -> int:
    """A batch holds 1..MAX_BATCH tasks."""
    if count == 0:
        raise InvalidInput("tasks is empty: a batch holds at least one task")
    if count > MAX_BATCH:
        raise InvalidInput(f"a batch holds at most {MAX_BATCH} tasks, got {count}")
    return count


def each(index: int, check: Callable[[Any], T], value: Any) -> T:
    """``check(value)`` for the task at ``index`` of a batch; its refusal becomes ``RefusedTask``."""
    try:
        return check(value)
    except RefusedTask:
        raise
    except InvalidInput as exc:
        raise RefusedTask(index, exc) from None


def params(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput("params must be a JSON object")
    try:
        size = len(orjson.dumps(value))
    except TypeError as exc:
        raise InvalidInput(f"params cannot be stored as JSON: {exc}") from None
    if size > MAX_PARAMS_BYTES:
        raise InvalidInput(f"params is {size} bytes as JSON; the limit is {MAX_PARAMS_BYTES}")
    return value


def timeout(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput("timeout_s must be a number of seconds")
    if not 0 < value <= MAX_TIMEOUT_S:
        raise InvalidInput(f"timeout_s must be above 0 and at most {MAX_TIMEOUT_S:g}")
    return float(value)


def retries(value: Any) -> int:
    if value is None:
        return 0
    value = _whole(value)
    if not isinstance(value, int):
        raise InvalidInput("max_retries must be a whole number")
    if not 0 <= value <= MAX_RETRIES:
        raise InvalidInput(f"max_retries must be between 0 and {MAX_RETRIES}")
    return value


def lost_attempts(value: Any) -> int | None:
    """``max_lost_attempts``: None (the cluster's default) or 1..MAX_LOST_ATTEMPTS (1: quarantined at the first)."""
    if value is None:
        return None
    value = _whole(value)
    if not isinstance(value, int):
        raise InvalidInput("max_lost_attempts must be a whole number")
    if not 1 <= value <= MAX_LOST_ATTEMPTS:
        raise InvalidInput(f"max_lost_attempts must be between 1 and {MAX_LOST_ATTEMPTS}")
    return value


def memory_mb(value: Any) -> int | None:
    """A task's ``memory_mb``: None (the type's bound, else the node's default) or MIN..MAX_MEMORY_MB MiB."""
    if value is None:
        return None
    value = _whole(value)
    if not isinstance(value, int):
        raise InvalidInput("memory_mb must be a whole number of MiB")
    if not MIN_MEMORY_MB <= value <= MAX_MEMORY_MB:
        raise InvalidInput(f"memory_mb must be between {MIN_MEMORY_MB} and {MAX_MEMORY_MB}")
    return value


def cpu_s_limit(value: Any) -> float | None:
    """A task's ``cpu_s_limit``: None (the type's bound, else the node's default) or 0 < S <= MAX_CPU_S_LIMIT."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput("cpu_s_limit must be a number of seconds")
    if not 0 < value <= MAX_CPU_S_LIMIT:
        raise InvalidInput(f"cpu_s_limit must be above 0 and at most {MAX_CPU_S_LIMIT:g} seconds")
    return float(value)


def task_id(value: Any) -> str:
    """Return the id in canonical form, or raise InvalidInput if it is not a UUID."""
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidInput("a task id must be a UUID string")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidInput(f"malformed task id {value[:64]!r}: a task id is a UUID") from None


def task_ids(value: Any) -> list[str]:
    """Validate the ``ids`` list of a bulk kill or delete."""
    if not isinstance(value, list) or not value:
        raise InvalidInput("ids must be a non-empty list of task ids")
    if len(value) > MAX_BULK_IDS:
        raise InvalidInput(f"at most {MAX_BULK_IDS} ids per call")
    return [task_id(v) for v in value]


def state_filter(value: str | None) -> TaskState | None:
    if value is None or value == "":
        return None
    try:
        return TaskState.parse(value)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def page_limit(value: int | None, default: int = 50) -> int:
    if value is None:
        return default
    if not 1 <= value <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
    return value


def cursor(value: str | None) -> str | None:
    """A cursor is the decimal sequence number ``next_cursor`` gave; anything else is refused."""
    if value is None or value == "":
        return None
    if not is_digits(value) or len(value) > 20:
        raise InvalidInput("malformed cursor: pass back the next_cursor of the page before")
    return value


def wait_seconds(value: float | None, name: str = "wait") -> float | None:
    """A long poll's wait: None (answer now) or 0 < S <= MAX_WAIT_S."""
    if value is None:
        return None
    if not math.isfinite(value) or not 0 < value <= MAX_WAIT_S:
        raise InvalidInput(f"{name} must be above 0 and at most {MAX_WAIT_S:g} seconds")
    return float(value)


def _whole(value: Any) -> Any:
    """A JSON number with no fraction as an int (``36.0`` is the integer 36 to JSON Schema and to JavaScript);
    anything else (bools included) as it is, for the caller to refuse."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None if isinstance(value, bool) else value


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _target(value: Any) -> str:
    """A target is text: any characters but NUL, as valid UTF-8 (no lone surrogates). What more a type
    needs (``fetch``: a URL, which refuses tabs and newlines) its own validator decides."""
    if not isinstance(value, str):
        raise InvalidInput("target must be a string")
    value = value.strip()
    if len(value) > MAX_TARGET_CHARS:
        raise InvalidInput(f"target is {len(value)} characters; the limit is {MAX_TARGET_CHARS}")
    if "\x00" in value:
        raise InvalidInput("target must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("target must be valid UTF-8 text (it holds a lone surrogate)") from None
    return str(value)


def _text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string")
    value = value.strip()
    if len(value) > limit:
        raise InvalidInput(f"{name} is {len(value)} characters; the limit is {limit}")
    if any(ord(c) < 32 for c in value):
        raise InvalidInput(f"{name} must not contain control characters")
    return str(value)


MAX_CACHE_KEY_BYTES = 512
MAX_CACHE_TTL_S = 365 * 24 * 3600.0


def cache_key(value: Any) -> str:
    """A cache key: 1-512 bytes of UTF-8 with no control characters (so it is safe in logs and URLs)."""
    if not isinstance(value, str) or not value:
        raise InvalidInput("cache key must be a non-empty string")
    if len(value.encode()) > MAX_CACHE_KEY_BYTES:
        raise InvalidInput(f"cache key must be at most {MAX_CACHE_KEY_BYTES} bytes")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidInput("cache key must not contain control characters")
    return value


def cache_ttl(value: float | None) -> float | None:
    """A cache TTL in seconds: None (until evicted) or 0 < S <= one year."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput("ttl must be a number of seconds")
    if not 0 < value <= MAX_CACHE_TTL_S:
        raise InvalidInput(f"ttl must be above 0 and at most {MAX_CACHE_TTL_S:g} seconds")
    return float(value)


def duration(value: Any, name: str) -> float:
    """Seconds, from a number or a duration string (``90``, ``90s``, ``15m``, ``12h``, ``7d``, ``2w``)."""
    if isinstance(value, bool):
        raise InvalidInput(f"{name} must be seconds or a duration such as 90s, 15m, 12h or 7d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION_RE.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise InvalidInput(f"{name} must be seconds or a duration such as 90s, 15m, 12h or 7d, got {value!r}")
        seconds = float(match[1]) * _UNIT_S[match[2] or "s"]
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidInput(f"{name} must be a duration of 0 seconds or more")
    return seconds


def idempotency_key(value: Any) -> str | None:
    """A submit's ``idempotency_key``: None, or 1 to MAX_IDEMPOTENCY_KEY_CHARS characters, none a control
    character, taken as given (not stripped: it is compared exactly)."""
    return _key(value, "idempotency_key", MAX_IDEMPOTENCY_KEY_CHARS)


def concurrency_key(value: Any) -> str | None:
    """A task's ``concurrency_key``: as an idempotency key, at most MAX_CONCURRENCY_KEY_CHARS characters."""
    return _key(value, "concurrency_key", MAX_CONCURRENCY_KEY_CHARS)


def _key(value: Any, name: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{name} must be a non-empty string")
    if len(value) > limit:
        raise InvalidInput(f"{name} is {len(value)} characters; the limit is {limit}")
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        raise InvalidInput(f"{name} must not contain control characters")
    return value


def priority(value: Any) -> int:
    """A task's ``priority``: a whole number 0 (lowest) to 9 (highest); none: DEFAULT_PRIORITY."""
    if value is None:
        return DEFAULT_PRIORITY
    value = _whole(value)
    if not isinstance(value, int) or not 0 <= value <= 9:
        raise InvalidInput(f"priority must be a whole number from 0 (lowest) to 9 (highest), got {value!r}")
    return value


def labels(value: Any, name: str = "labels") -> dict[str, str]:
    """Node labels, or the labels a task ``requires``: an object of label name to value (both short words:
    letters, digits and _ . - (and : in values)), at most MAX_LABELS of them."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f'{name} must be an object of label to value, such as {{"gpu": "1"}}')
    if len(value) > MAX_LABELS:
        raise InvalidInput(f"{name} holds {len(value)} labels; the limit is {MAX_LABELS}")
    for key, val in value.items():
        if not isinstance(key, str) or not _LABEL_NAME_RE.match(key):
            raise InvalidInput(f"{name}: {str(key)[:70]!r} is not a label name (letters, digits, _ . -; at most 63)")
        if not isinstance(val, str) or not _LABEL_VALUE_RE.match(val):
            raise InvalidInput(f"{name}: the value of {key} must be a string of letters, digits, _ . : - (at most 63)")
    return dict(sorted(value.items()))


def label_pairs(items: Iterable[str], name: str = "labels") -> dict[str, str]:
    """Labels given as ``K=V`` words (``--label gpu=1``, ``SHOAL_LABELS="gpu=1,zone=a"``)."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, val = item.strip().partition("=")
        if not sep:
            raise InvalidInput(f"{name}: {item[:70]!r} is not NAME=VALUE")
        pairs[key.strip()] = val.strip()
    return labels(pairs, name)


def run_at(value: Any) -> float | None:
    """When a task is due, in Unix seconds, from epoch seconds or an RFC 3339 date-time with its offset
    (``2026-12-06T10:00:00Z``, ``2026-12-06T11:00:00+01:00``); not more than a year ahead. A time past
    means at once."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInput("run_at must be epoch seconds or an RFC 3339 date-time such as 2026-12-06T10:00:00Z")
    if isinstance(value, str):
        if not _RFC3339_RE.match(value):
            raise InvalidInput(
                f"run_at must be an RFC 3339 date-time with its offset, such as 2026-12-06T10:00:00Z or "
                f"2026-12-06T11:00:00+01:00, or epoch seconds; got {value[:40]!r}"
            )
        try:
            at = datetime.fromisoformat(value.upper().replace("Z", "+00:00")).timestamp()
        except ValueError as exc:  # a day or an hour that does not exist
            raise InvalidInput(f"run_at {value[:40]!r} is not a date-time: {exc}") from None
    else:
        at = float(value)
    if not math.isfinite(at) or at < 0:
        raise InvalidInput("run_at must be a time after 1970-01-01")
    if at > time.time() + MAX_DELAY_S:
        raise InvalidInput("run_at is more than a year ahead (epoch seconds are expected, not milliseconds)")
    return at


def delay_s(value: Any) -> float | None:
    """How long after its submit a task is due: 0 <= S <= MAX_DELAY_S (a number or ``90s``, ``15m``...)."""
    if value is None:
        return None
    seconds = duration(value, "delay_s")
    if seconds > MAX_DELAY_S:
        raise InvalidInput(f"delay_s must be at most {MAX_DELAY_S / 86400:g}d (a year)")
    return seconds


def result_ttl(value: Any) -> float | None:
    """A task's ``result_ttl_s``: None (kept for the cluster's retention) or 0 < S <= MAX_RESULT_TTL_S."""
    if value is None:
        return None
    seconds = duration(value, "result_ttl_s")
    if not 0 < seconds <= MAX_RESULT_TTL_S:
        raise InvalidInput(f"result_ttl_s must be above 0 and at most {MAX_RESULT_TTL_S / 86400:g}d (a year)")
    return seconds
