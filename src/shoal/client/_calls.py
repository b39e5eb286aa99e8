"""Each API call as data: method, path, query, body and how to read the answer.

``Client`` and ``AsyncClient`` only send these, so the two cannot drift apart in what they ask or how they
read the answer. Task ids are checked here with ``shoal.validation.task_id`` before they go into a path,
cache keys with ``shoal.validation.cache_key`` (and then percent-encoded whole, ``/`` included).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import orjson

from shoal import validation
from shoal.client import _decode
from shoal.client.errors import TaskFailed, build, from_response
from shoal.errors import InvalidInput, ResultNotFound, ShoalError
from shoal.models import ClusterView, Task, TaskPage, TaskResult, TaskSpec, TaskState, submitted_fields
from shoal.schedules import Schedule, schedule_from_json, schedule_name
from shoal.workflows import WorkflowGraph

T = TypeVar("T")

#: Longest long-poll the server grants per request, in seconds.
MAX_WAIT_S = 60.0


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    body: Any = None
    #: Seconds the server may hold the request (long poll); added to the read timeout.
    hold_s: float = 0.0
    #: Statuses handed to ``read`` instead of raised as errors.
    accept: tuple[int, ...] = ()
    #: A body sent as is (``application/octet-stream``) instead of ``body`` as JSON.
    raw: bytes | None = None

    def content(self) -> bytes | None:
        if self.raw is not None:
            return self.raw
        return None if self.body is None else orjson.dumps(self.body)

    def headers(self) -> dict[str, str] | None:
        if self.raw is not None:
            return {"Content-Type": "application/octet-stream"}
        return {"Content-Type": "application/json"} if self.body is not None else None


def json_of(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise _decode.MalformedResponse(
            f"the answer from {response.request.url} is not JSON (is this a shoal API?)"
        ) from None


def _wait_param(wait: float | None) -> tuple[dict[str, Any], float]:
    if wait is None or wait <= 0:
        return {}, 0.0
    held = min(float(wait), MAX_WAIT_S)
    return {"wait": f"{held:g}"}, held


def submit(
    type: str,
    target: str,
    *,
    name: str | None,
    params: dict[str, Any] | None,
    timeout_s: float | None,
    max_retries: int | None,
    max_lost_attempts: int | None,
    memory_mb: int | None,
    cpu_s_limit: float | None,
    result_ttl_s: float | str | None,
    wait: float | None,
    run_at: float | str | None = None,
    delay_s: float | str | None = None,
    idempotency_key: str | None = None,
    priority: int | None = None,
    requires: dict[str, str] | None = None,
    concurrency_key: str | None = None,
    args: Iterable[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    depends_on: Iterable[str] | None = None,
    on_parent_failure: str | None = None,
) -> Call[Task]:
    body: dict[str, Any] = {"name": name if name is not None else type, "type": type, "target": target}
    if depends_on:
        body["depends_on"] = list(depends_on)
    if on_parent_failure is not None:
        body["on_parent_failure"] = on_parent_failure
    if args is not None:
        body["args"] = list(args)
    if kwargs is not None:
        body["kwargs"] = dict(kwargs)
    if params:
        body["params"] = params
    if timeout_s is not None:
        body["timeout_s"] = timeout_s
    if max_retries is not None:
        body["max_retries"] = max_retries
    if max_lost_attempts is not None:
        body["max_lost_attempts"] = max_lost_attempts
    if memory_mb is not None:
        body["memory_mb"] = memory_mb
    if cpu_s_limit is not None:
        body["cpu_s_limit"] = cpu_s_limit
    if result_ttl_s is not None:
        body["result_ttl_s"] = result_ttl_s  # as given: the server reads "15m" as it reads 900
    when = {"run_at": run_at, "delay_s": delay_s}
    order = {"priority": priority, "requires": requires or None, "concurrency_key": concurrency_key}
    body.update((k, v) for k, v in {**when, "idempotency_key": idempotency_key, **order}.items() if v is not None)
    query, held = _wait_param(wait)
    return Call("POST", "/api/v1/tasks", lambda r: _decode.task(json_of(r)), query, body, held)


def _task_and_result(data: Any) -> tuple[Task, TaskResult | None]:
    found = data.get("result") if isinstance(data, dict) else None
    return _decode.task(data), None if found is None else _decode.result(found)


def submit_and_wait(body: dict[str, Any], wait: float) -> Call[tuple[Task, TaskResult | None]]:
    """Submit, wait up to ``wait`` s (at most MAX_WAIT_S) and answer with the task and its result if it has one."""
    query, held = _wait_param(wait)
    return Call("POST", "/api/v1/tasks", lambda r: _task_and_result(json_of(r)), {**query, "result": "true"}, body,
                held)  # fmt: skip


def get_with_result(task_id: str, wait: float) -> Call[tuple[Task, TaskResult | None]]:
    query, held = _wait_param(wait)
    path = f"/api/v1/tasks/{validation.task_id(task_id)}"
    return Call("GET", path, lambda r: _task_and_result(json_of(r)), {**query, "result": "true"}, hold_s=held)


def outcome(task: Task, found: TaskResult | None) -> TaskResult:
    """What ``run`` returns for a task that ended: its result, or the error of a task that did not succeed."""
    if task.state is not TaskState.SUCCEED:
        raise TaskFailed(task)
    if found is None:
        raise build(ResultNotFound, f"task {task.id!r} has no result (state {task.state.name})", 404,
                    "result_not_found")  # fmt: skip
    return found


# --- batches ------------------------------------------------------------------------------------------

#: Most tasks per batch request.
MAX_BATCH = validation.MAX_BATCH
#: Largest batch body the client sends: the server's limit, less room for the ``{"tasks": []}`` around it.
MAX_BATCH_BYTES = validation.MAX_BODY_BYTES - 64
_INDEX = re.compile(r"^tasks\[\d+\]: ")


def spec_body(spec: TaskSpec | Mapping[str, Any]) -> dict[str, Any]:
    """A task's JSON body from a ``TaskSpec`` or a mapping of the REST fields (``name`` defaults to ``type``),
    checked as the server checks it, so a malformed one is refused before anything is sent."""
    if isinstance(spec, TaskSpec):
        body = submitted_fields(spec)
    elif isinstance(spec, Mapping):
        body = {k: v for k, v in spec.items() if v is not None}
        if "name" not in body and isinstance(body.get("type"), str):
            body["name"] = body["type"]
    else:
        raise InvalidInput(f"a task is a TaskSpec or a mapping of its fields, not {type(spec).__name__}")
    validation.task_spec(body)
    return body


def batch_bodies(specs: Iterable[TaskSpec | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every spec's body; the first malformed one raises ``RefusedTask`` naming its index."""
    return [validation.each(i, spec_body, spec) for i, spec in enumerate(specs)]


def chunked(bodies: list[dict[str, Any]], chunk: int) -> list[list[dict[str, Any]]]:
    """``bodies`` cut into batches of at most ``chunk`` tasks and at most MAX_BATCH_BYTES of JSON each."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= validation.MAX_BATCH:
        raise InvalidInput(f"chunk must be a whole number from 1 to {validation.MAX_BATCH}")
    out: list[list[dict[str, Any]]] = []
    size = 0
    for body in bodies:
        length = len(orjson.dumps(body)) + 1
        if not out or len(out[-1]) >= chunk or size + length > MAX_BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(body)
        size += length
    return out


def submit_batch(bodies: list[dict[str, Any]]) -> Call[list[Task]]:
    return Call("POST", "/api/v1/tasks/batch", lambda r: _decode.tasks(json_of(r)), body={"tasks": bodies})


def refused_chunk(exc: ShoalError, offset: int, stored: list[Task]) -> ShoalError:
    """The error of a chunk that began at ``offset`` of the caller's list, said of that whole list: the index
    of the refused task counted from its start (``index``), why (``reason``) and the tasks earlier chunks stored
    (``stored``)."""
    index = getattr(exc, "index", None)
    if not isinstance(index, int):
        if stored:  # e.g. the API went away between two chunks: the error as it is, saying what was stored
            exc.message += f"; {len(stored)} task(s) of earlier chunks were stored (the error's .stored lists them)"
            exc.args = (exc.message,)
        exc.stored = list(stored)  # type: ignore[attr-defined]
        return exc
    reason = _INDEX.sub("", exc.message)
    message = f"tasks[{index + offset}]: {reason}"
    if stored:
        message += (
            f"; the {len(stored)} task(s) before it, sent in earlier chunks, were stored (the error's .stored "
            "lists them), none from it on"
        )
    else:
        message += "; nothing was stored"
    refused = build(type(exc), message, int(getattr(exc, "status", exc.http_status)), str(getattr(exc, "kind", "")))
    refused.index = index + offset  # type: ignore[attr-defined]
    refused.reason = reason  # type: ignore[attr-defined]
    refused.stored = list(stored)  # type: ignore[attr-defined]
    return refused


def get(task_id: str, wait: float | None = None) -> Call[Task]:
    query, held = _wait_param(wait)
    path = f"/api/v1/tasks/{validation.task_id(task_id)}"
    return Call("GET", path, lambda r: _decode.task(json_of(r)), query, hold_s=held)


def list_tasks(
    state: TaskState | str | None, limit: int | None, cursor: str | None, name: str | None = None
) -> Call[TaskPage]:
    query: dict[str, Any] = {}
    if name:
        query["name"] = name
    if state is not None:
        query["state"] = state.name if isinstance(state, TaskState) else state
    if limit is not None:
        query["limit"] = limit
    if cursor:
        query["cursor"] = cursor
    return Call("GET", "/api/v1/tasks", lambda r: _decode.page(json_of(r)), query)


def workflow(workflow_id: str) -> Call[WorkflowGraph]:
    path = f"/api/v1/workflows/{validation.task_id(workflow_id)}"
    return Call("GET", path, lambda r: _decode.workflow(json_of(r)))


def kill_workflow(workflow_id: str) -> Call[dict[str, str]]:
    path = f"/api/v1/workflows/{validation.task_id(workflow_id)}/kill"
    return Call("POST", path, lambda r: _decode.killed(json_of(r)))


def kill(task_id: str) -> Call[Task]:
    path = f"/api/v1/tasks/{validation.task_id(task_id)}/kill"
    return Call("POST", path, lambda r: _decode.task(json_of(r)))


def delete(task_id: str) -> Call[None]:
    return Call("DELETE", f"/api/v1/tasks/{validation.task_id(task_id)}", lambda r: None)


def kill_many(task_ids: list[str]) -> Call[dict[str, bool]]:
    return Call("POST", "/api/v1/tasks/kill", lambda r: _decode.ok_map(json_of(r)), body={"ids": list(task_ids)})


def delete_many(task_ids: list[str]) -> Call[dict[str, bool]]:
    return Call("POST", "/api/v1/tasks/delete", lambda r: _decode.ok_map(json_of(r)), body={"ids": list(task_ids)})


def result(task_id: str, wait: float | None = None) -> Call[TaskResult]:
    query, held = _wait_param(wait)
    path = f"/api/v1/tasks/{validation.task_id(task_id)}/result"
    return Call("GET", path, lambda r: _decode.result(json_of(r)), query, hold_s=held)


def cluster() -> Call[ClusterView]:
    return Call("GET", "/api/v1/cluster", lambda r: _decode.cluster(json_of(r)))


def hand_over(node: str) -> Call[tuple[str, int]]:
    return Call("POST", "/api/v1/cluster/master", lambda r: (json_of(r)["master"], int(json_of(r)["epoch"])),
                body={"node": node})  # fmt: skip


def rotate_token() -> Call[tuple[str, dict[str, bool]]]:
    return Call("POST", "/api/v1/cluster/token", lambda r: (json_of(r)["token"], dict(json_of(r)["succeed"])))


def timeline(limit: int = 200) -> Call[list[dict[str, Any]]]:
    return Call("GET", "/api/v1/cluster/timeline", lambda r: list(json_of(r)["events"]), params={"limit": limit})


def types() -> Call[list[str]]:
    return Call("GET", "/api/v1/types", lambda r: _decode.types(json_of(r)))


def health() -> Call[dict[str, Any]]:
    return Call("GET", "/healthz", lambda r: dict(json_of(r)))


def _read_ready(response: httpx.Response) -> tuple[bool, str]:
    body = json_of(response)
    reason = str(body.get("message") or body.get("reason") or "") if isinstance(body, dict) else ""
    return response.status_code == 200, reason


def ready() -> Call[tuple[bool, str]]:
    return Call("GET", "/readyz", _read_ready, accept=(503,))


def cache_path(key: str) -> str:
    """The route of a key: every reserved character encoded, and a key of only dots too, so that no client
    or proxy on the way folds ``.``/``..`` segments or splits the key."""
    encoded = quote(validation.cache_key(key), safe="")
    if encoded in (".", ".."):
        encoded = encoded.replace(".", "%2E")
    return f"/api/v1/cache/{encoded}"


def _miss_or_raise(response: httpx.Response) -> bool:
    """False for the cache's own 404 (``cache_miss``); any other error (no such route...) is raised."""
    if response.status_code == 404:
        body = json_of(response)
        if isinstance(body, dict) and body.get("error") == "cache_miss":
            return False
        raise from_response(response)
    return True


def cache_get(key: str) -> Call[bytes | None]:
    return Call("GET", cache_path(key), lambda r: r.content if _miss_or_raise(r) else None, accept=(404,))


def cache_set(key: str, value: bytes, ttl: float | None) -> Call[None]:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidInput(f"a cache value must be bytes, not {type(value).__name__}")
    ttl_s = validation.cache_ttl(ttl)
    query = None if ttl_s is None else {"ttl": repr(ttl_s)}
    return Call("PUT", cache_path(key), lambda r: None, query, raw=bytes(value))


def cache_delete(key: str) -> Call[bool]:
    return Call("DELETE", cache_path(key), _miss_or_raise, accept=(404,))


def _stats(data: Any) -> dict[str, dict[str, int]]:
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), dict):
        raise _decode.MalformedResponse('expected {"nodes": {name: stats}}')
    return {str(name): dict(stats) for name, stats in data["nodes"].items()}


def cache_stats() -> Call[dict[str, dict[str, int]]]:
    return Call("GET", "/api/v1/cache", lambda r: _stats(json_of(r)))


def _schedule_path(name: str, action: str = "") -> str:
    return f"/api/v1/schedules/{schedule_name(name)}{action}"


def add_schedule(
    name: str,
    cron: str,
    task: Mapping[str, Any],
    *,
    timezone: str | None,
    catch_up: str | None,
    overlap: str | None,
) -> Call[Schedule]:
    body: dict[str, Any] = {"name": name, "cron": cron, "task": dict(task)}
    for key, value in (("timezone", timezone), ("catch_up", catch_up), ("overlap", overlap)):
        if value is not None:
            body[key] = value
    return Call("POST", "/api/v1/schedules", lambda r: schedule_from_json(json_of(r)), body=body)


def schedules() -> Call[list[Schedule]]:
    return Call("GET", "/api/v1/schedules", lambda r: [schedule_from_json(s) for s in json_of(r)["schedules"]])


def schedule(name: str) -> Call[Schedule]:
    return Call("GET", _schedule_path(name), lambda r: schedule_from_json(json_of(r)))


def pause_schedule(name: str) -> Call[Schedule]:
    return Call("POST", _schedule_path(name, "/pause"), lambda r: schedule_from_json(json_of(r)))


def resume_schedule(name: str) -> Call[Schedule]:
    return Call("POST", _schedule_path(name, "/resume"), lambda r: schedule_from_json(json_of(r)))


def delete_schedule(name: str) -> Call[None]:
    return Call("DELETE", _schedule_path(name), lambda r: None)
