"""protobuf messages <-> shoal.models, and the checks on what a gRPC caller sends.

This module is the only code that imports the generated ``_gen`` modules; everything else reaches them
through the names here: ``pb``/``pb_grpc`` (Tasks), ``hb_pb``/``hb_grpc`` (HeartBeats),
``el_pb``/``el_grpc`` (Elections), ``cache_pb``/``cache_grpc`` (Cache, CacheShards, whose messages
``shoal.rpc.cache_convert`` converts) and ``sched_pb``/``sched_grpc`` (Schedules, converted by
``shoal.rpc.schedule_convert``). Requests are validated with ``shoal.validation``, so a gRPC
caller is refused exactly what a REST caller is, with the same message; the only rules added here are
about the protobuf shape (one id where one is meant, JSON text fields).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Literal

import orjson

from shoal import validation
from shoal.errors import InvalidInput
from shoal.event_ids import parse_event_id
from shoal.models import (
    DEFAULT_MAX_LOST_ATTEMPTS,
    DEFAULT_PRIORITY,
    Attempt,
    Task,
    TaskEvent,
    TaskPage,
    TaskResult,
    TaskSpec,
    TaskState,
    submitted_fields,
)
from shoal.rpc._gen.shoal.v1 import cache_pb2 as cache_pb
from shoal.rpc._gen.shoal.v1 import cache_pb2_grpc as cache_grpc
from shoal.rpc._gen.shoal.v1 import elections_pb2 as el_pb
from shoal.rpc._gen.shoal.v1 import elections_pb2_grpc as el_grpc
from shoal.rpc._gen.shoal.v1 import heartbeats_pb2 as hb_pb
from shoal.rpc._gen.shoal.v1 import heartbeats_pb2_grpc as hb_grpc
from shoal.rpc._gen.shoal.v1 import schedules_pb2 as sched_pb
from shoal.rpc._gen.shoal.v1 import schedules_pb2_grpc as sched_grpc
from shoal.rpc._gen.shoal.v1 import tasks_pb2 as pb
from shoal.rpc._gen.shoal.v1 import tasks_pb2_grpc as pb_grpc

__all__ = [
    "MAX_WAIT_S",
    "batch_spec_from_proto",
    "cache_grpc",
    "cache_pb",
    "el_grpc",
    "el_pb",
    "event_from_proto",
    "event_to_proto",
    "hb_grpc",
    "hb_pb",
    "one_id",
    "page_from_proto",
    "page_to_proto",
    "pb",
    "pb_grpc",
    "query_from_proto",
    "result_from_proto",
    "result_to_proto",
    "sched_grpc",
    "sched_pb",
    "spec_from_proto",
    "spec_to_proto",
    "spec_wait",
    "specs_from_proto",
    "task_from_proto",
    "task_to_proto",
    "wait_from_proto",
    "watch_ids",
    "watch_since",
]

#: Longest wait a GetTask or GetTaskResult may ask for, as REST's ``?wait=``.
MAX_WAIT_S = validation.MAX_WAIT_S


# --- models -> messages (what the server sends) ---------------------------------------------------


def task_to_proto(task: Task, result: TaskResult | None = None) -> pb.Task:
    """The task as a Task message; unset optional fields stay unset rather than becoming 0 or ''. ``result``
    is set only in the answer to a call that waited."""
    optional: dict[str, Any] = {
        "node": task.node,
        "timeout_s": task.timeout_s,
        "started_at": task.started_at,
        "finished_at": task.finished_at,
        "error": None if task.error is None else _utf8(task.error),
        "memory_mb": task.memory_mb,
        "cpu_s_limit": task.cpu_s_limit,
        "result_ttl_s": task.result_ttl_s,
        "run_at": task.run_at,
        "delay_s": task.delay_s,
        "waiting_for": task.waiting_for,
        "idempotency_key": task.idempotency_key,
        "concurrency_key": task.concurrency_key,
        "schedule": task.schedule,
        "tick": task.tick,
        "on_parent_failure": None if task.on_parent_failure == "kill" else task.on_parent_failure,
        "workflow": task.workflow,
        "args_json": None if task.args is None else orjson.dumps(task.args).decode(),
        "kwargs_json": None if task.kwargs is None else orjson.dumps(task.kwargs).decode(),
    }
    msg = pb.Task(
        id=task.id,
        name=task.name,
        target=task.target,
        type=task.type,
        state=pb.Task.State.ValueType(task.state),
        params_json=_json_text(task.params),
        attempts=task.attempts,
        max_retries=task.max_retries,
        created_at=task.created_at,
        history=[_attempt_to_proto(a) for a in task.history],
        max_lost_attempts=task.max_lost_attempts,
        lost_attempts=task.lost_attempts,
        attempts_dropped=task.attempts_dropped,
        priority=task.priority,
        requires=task.requires,
        depends_on=task.depends_on,
        children=task.children,
        **{name: value for name, value in optional.items() if value is not None},
    )
    if result is not None:
        msg.result.CopyFrom(result_to_proto(result))
    return msg


_Optional = Literal[
    "finished_at", "outcome", "error", "wall_s", "cpu_s", "max_rss_bytes", "exit_code", "signal", "loop_blocked_s",
    "epoch",
]  # fmt: skip
#: Attempt fields that are optional in both the dataclass and the message, copied as they are.
_ATTEMPT_OPTIONAL: tuple[_Optional, ...] = (
    *("finished_at", "outcome", "wall_s", "cpu_s"),
    *("max_rss_bytes", "exit_code", "signal", "loop_blocked_s", "epoch"),
)  # fmt: skip


def _attempt_to_proto(attempt: Attempt) -> pb.Attempt:
    msg = pb.Attempt(number=attempt.number, node=attempt.node, started_at=attempt.started_at)
    for name in _ATTEMPT_OPTIONAL:
        value = getattr(attempt, name)
        if value is not None:
            setattr(msg, name, value)
    if attempt.error is not None:
        msg.error = _utf8(attempt.error)
    return msg


def _attempt_from_proto(msg: pb.Attempt) -> Attempt:
    optional = {name: getattr(msg, name) for name in (*_ATTEMPT_OPTIONAL, "error") if msg.HasField(name)}
    return Attempt(number=msg.number, node=msg.node, started_at=msg.started_at, **optional)


def result_to_proto(result: TaskResult) -> pb.TaskResult:
    msg = pb.TaskResult(
        code=_utf8(result.code),
        task_id=result.task_id,
        node=result.node,
        attempt=result.attempt,
        finished_at=result.finished_at,
        meta_json=_json_text(result.meta),
        duplicates=result.duplicates,
    )
    if result.has_value:
        msg.value_json = orjson.dumps(result.value).decode()
    return msg


def page_to_proto(page: TaskPage) -> pb.TaskPage:
    return pb.TaskPage(
        tasks=[task_to_proto(t) for t in page.tasks],
        total=page.total,
        next_cursor=page.next_cursor or "",
    )


def event_to_proto(event: TaskEvent) -> pb.TaskEvent:
    msg = pb.TaskEvent(id=event.id, state=pb.Task.State.ValueType(event.state), at=event.at)
    if event.node is not None:
        msg.node = event.node
    if event.event_id is not None:
        msg.event_id = event.event_id
    return msg


# --- messages -> models (what the server reads, and what clients decode) --------------------------


def spec_from_proto(msg: pb.TaskSpec) -> TaskSpec:
    """Validate a CreateTask request as REST validates its JSON body."""
    data: dict[str, Any] = {"name": msg.name, "type": msg.type, "target": msg.target}
    if msg.params_json.strip():
        data["params"] = _json_object(msg.params_json, "params_json")
    if msg.HasField("timeout_s"):
        data["timeout_s"] = msg.timeout_s
    for name in (
        *("max_retries", "max_lost_attempts", "memory_mb", "cpu_s_limit", "result_ttl_s", "delay_s"),
        *("idempotency_key", "priority", "concurrency_key"),
    ):
        if msg.HasField(name):
            data[name] = getattr(msg, name)
    if msg.requires:
        data["requires"] = dict(msg.requires)
    if msg.HasField("run_at"):  # epoch seconds come as text: read them as the number REST takes
        data["run_at"] = float(msg.run_at) if _EPOCH_TEXT.fullmatch(msg.run_at) else msg.run_at
    if msg.depends_on:
        data["depends_on"] = list(msg.depends_on)
    if msg.HasField("on_parent_failure"):
        data["on_parent_failure"] = msg.on_parent_failure
    if msg.HasField("ref"):
        data["ref"] = msg.ref
    if msg.args_json.strip():
        data["args"] = _json_of(msg.args_json, "args_json")
    if msg.kwargs_json.strip():
        data["kwargs"] = _json_object(msg.kwargs_json, "kwargs_json")
    return validation.task_spec(data)


def spec_wait(msg: pb.TaskSpec) -> float | None:
    """CreateTask's ``wait_s`` if the caller set it: 0 < wait_s <= MAX_WAIT_S, as REST's ``?wait=``."""
    if not msg.HasField("wait_s"):
        return None
    return validation.wait_seconds(msg.wait_s, "wait_s")


def batch_spec_from_proto(msg: pb.TaskSpec) -> TaskSpec:
    """One spec of CreateTasks or SubmitTasks: as CreateTask's, without a wait (a batch answers at once)."""
    if msg.HasField("wait_s"):
        raise InvalidInput("wait_s applies to CreateTask only")
    return spec_from_proto(msg)


def specs_from_proto(msgs: Sequence[pb.TaskSpec], first: int = 0) -> list[TaskSpec]:
    """CreateTasks' specs, checked one by one; the first bad one refuses the batch (``RefusedTask`` naming its
    index, counted from ``first``)."""
    return [validation.each(first + i, batch_spec_from_proto, msg) for i, msg in enumerate(msgs)]


def spec_to_proto(spec: TaskSpec) -> pb.TaskSpec:
    msg = pb.TaskSpec(name=spec.name, type=spec.type, target=spec.target)
    named = submitted_fields(spec)
    if "max_retries" in named:
        msg.max_retries = spec.max_retries
    if spec.params:
        msg.params_json = _json_text(spec.params)
    if spec.timeout_s is not None:
        msg.timeout_s = spec.timeout_s
    if spec.max_lost_attempts is not None:
        msg.max_lost_attempts = spec.max_lost_attempts
    if spec.memory_mb is not None:
        msg.memory_mb = spec.memory_mb
    if spec.cpu_s_limit is not None:
        msg.cpu_s_limit = spec.cpu_s_limit
    if spec.result_ttl_s is not None:
        msg.result_ttl_s = _seconds_text(spec.result_ttl_s)
    if spec.run_at is not None:
        msg.run_at = _seconds_text(spec.run_at)
    if spec.delay_s is not None:
        msg.delay_s = _seconds_text(spec.delay_s)
    if spec.idempotency_key is not None:
        msg.idempotency_key = spec.idempotency_key
    if "priority" in named:
        msg.priority = spec.priority
    msg.requires.update(spec.requires)
    if spec.concurrency_key is not None:
        msg.concurrency_key = spec.concurrency_key
    _workflow_to_proto(spec, msg)
    _call_to_proto(spec, msg)
    return msg


def _call_to_proto(spec: TaskSpec, msg: pb.TaskSpec) -> None:
    """A function task's arguments."""
    if spec.args is not None:
        msg.args_json = orjson.dumps(spec.args).decode()
    if spec.kwargs is not None:
        msg.kwargs_json = orjson.dumps(spec.kwargs).decode()


def _workflow_to_proto(spec: TaskSpec, msg: pb.TaskSpec) -> None:
    """A spec's parents, its on_parent_failure and its ref."""
    msg.depends_on.extend(spec.depends_on)
    if spec.on_parent_failure != "kill":
        msg.on_parent_failure = spec.on_parent_failure
    if spec.ref is not None:
        msg.ref = spec.ref


def one_id(msg: pb.ID) -> str:
    """The single id that GetTask and GetTaskResult take, in canonical form."""
    if len(msg.id) != 1:
        raise InvalidInput(f"exactly one task id is required, got {len(msg.id)}")
    return validation.task_id(msg.id[0])


def wait_from_proto(msg: pb.ID) -> float | None:
    """``wait_s`` if the caller set it: 0 < wait_s <= MAX_WAIT_S, as REST's ``?wait=``."""
    if not msg.HasField("wait_s"):
        return None
    return validation.wait_seconds(msg.wait_s, "wait_s")


def query_from_proto(msg: pb.Query) -> tuple[TaskState | None, int, str | None]:
    """ListTask's (state, limit, cursor), refused as REST refuses ``?state=&limit=&cursor=``."""
    if len(msg.state) > 1:
        raise InvalidInput("filter by one state at a time")
    state = _state(msg.state[0]) if msg.state else None
    limit = validation.page_limit(msg.limit if msg.HasField("limit") else None)
    return state, limit, validation.cursor(msg.cursor)


def watch_since(msg: pb.WatchRequest) -> str | None:
    """The event id a WatchTasks caller resumes after, checked; None to start with live events."""
    return str(parse_event_id(msg.since)) if msg.HasField("since") and msg.since else None


def watch_ids(msg: pb.WatchRequest) -> frozenset[str]:
    """The ids a WatchTasks caller wants events of; empty means all."""
    if len(msg.id) > validation.MAX_BULK_IDS:
        raise InvalidInput(f"at most {validation.MAX_BULK_IDS} ids per call")
    return frozenset(validation.task_id(v) for v in msg.id)


def task_from_proto(msg: pb.Task) -> Task:
    return Task(
        id=msg.id,
        name=msg.name,
        type=msg.type,
        target=msg.target,
        params=_json_object(msg.params_json, "params_json") if msg.params_json else {},
        state=TaskState(msg.state),
        node=msg.node if msg.HasField("node") else None,
        attempts=msg.attempts,
        max_retries=msg.max_retries,
        timeout_s=msg.timeout_s if msg.HasField("timeout_s") else None,
        created_at=msg.created_at,
        started_at=msg.started_at if msg.HasField("started_at") else None,
        finished_at=msg.finished_at if msg.HasField("finished_at") else None,
        error=msg.error if msg.HasField("error") else None,
        history=tuple(_attempt_from_proto(a) for a in msg.history),
        max_lost_attempts=msg.max_lost_attempts if msg.HasField("max_lost_attempts") else DEFAULT_MAX_LOST_ATTEMPTS,
        lost_attempts=msg.lost_attempts,
        attempts_dropped=msg.attempts_dropped,
        memory_mb=msg.memory_mb if msg.HasField("memory_mb") else None,
        cpu_s_limit=msg.cpu_s_limit if msg.HasField("cpu_s_limit") else None,
        result_ttl_s=msg.result_ttl_s if msg.HasField("result_ttl_s") else None,
        run_at=msg.run_at if msg.HasField("run_at") else None,
        delay_s=msg.delay_s if msg.HasField("delay_s") else None,
        waiting_for=msg.waiting_for if msg.HasField("waiting_for") else None,
        idempotency_key=msg.idempotency_key if msg.HasField("idempotency_key") else None,
        priority=msg.priority if msg.HasField("priority") else DEFAULT_PRIORITY,
        requires=dict(msg.requires),
        concurrency_key=msg.concurrency_key if msg.HasField("concurrency_key") else None,
        schedule=msg.schedule if msg.HasField("schedule") else None,
        tick=msg.tick if msg.HasField("tick") else None,
        depends_on=tuple(msg.depends_on),
        on_parent_failure=msg.on_parent_failure if msg.HasField("on_parent_failure") else "kill",
        workflow=msg.workflow if msg.HasField("workflow") else None,
        children=tuple(msg.children),
        args=_json_of(msg.args_json, "args_json") if msg.HasField("args_json") else None,
        kwargs=_json_object(msg.kwargs_json, "kwargs_json") if msg.HasField("kwargs_json") else None,
    )


def result_from_proto(msg: pb.TaskResult) -> TaskResult:
    return TaskResult(
        task_id=msg.task_id,
        code=msg.code,
        node=msg.node,
        attempt=msg.attempt,
        finished_at=msg.finished_at,
        meta=_json_object(msg.meta_json, "meta_json") if msg.meta_json else {},
        duplicates=msg.duplicates,
        value=_json_of(msg.value_json, "value_json") if msg.HasField("value_json") else None,
        has_value=msg.HasField("value_json"),
    )


def page_from_proto(msg: pb.TaskPage) -> TaskPage:
    return TaskPage(
        tasks=[task_from_proto(t) for t in msg.tasks],
        total=msg.total,
        next_cursor=msg.next_cursor or None,
    )


def event_from_proto(msg: pb.TaskEvent) -> TaskEvent:
    return TaskEvent(
        id=msg.id,
        state=TaskState(msg.state),
        node=msg.node if msg.HasField("node") else None,
        at=msg.at,
        event_id=msg.event_id if msg.HasField("event_id") else None,
    )


# --- helpers ----------------------------------------------------------------------------------------


def _state(value: int) -> TaskState:
    try:
        return TaskState(value)
    except ValueError:
        names = ", ".join(f"{s.name} ({s.value})" for s in TaskState)
        raise InvalidInput(f"unknown state {value}; states are {names}") from None


def _json_of(text: str, field: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"{field} is not valid JSON: {exc}") from None


def _json_object(text: str, field: str) -> dict[str, Any]:
    value = _json_of(text, field)
    if not isinstance(value, dict):
        raise InvalidInput(f"{field} must be a JSON object")
    return value


def _json_text(value: dict[str, Any]) -> str:
    return orjson.dumps(value).decode() if value else "{}"


#: TaskSpec.run_at text that is epoch seconds, not a date-time.
_EPOCH_TEXT = re.compile(r"[0-9]+(\.[0-9]+)?")


def _seconds_text(seconds: float) -> str:
    """Seconds as TaskSpec.result_ttl_s text that reads back to the same float: plain digits, never the
    exponent ``repr`` gives tiny values (``1e-05``), which a duration does not take."""
    return format(Decimal(repr(seconds)), "f")


def _utf8(text: str) -> str:
    """protobuf strings must be valid UTF-8; lone surrogates (left by undecodable bytes) become '?'."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text
