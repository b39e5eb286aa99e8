"""JSON bodies of the REST API back into ``shoal.models`` dataclasses.

Unknown keys are ignored (a newer server may add fields) and missing optional ones take their defaults,
so a client keeps working against a node one version ahead of it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from shoal.errors import ShoalError
from shoal.models import Attempt, ClusterView, LateResult, NodeInfo, Task, TaskEvent, TaskPage, TaskResult, TaskState
from shoal.workflows import WorkflowGraph

T = TypeVar("T")


class MalformedResponse(ShoalError):
    """Raised when the server's answer is not the JSON this client expects (wrong URL, other program)."""

    http_status = 502


def _pick(cls: type[T], data: Any, **override: Any) -> T:
    if not isinstance(data, dict):
        raise MalformedResponse(f"expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {k: v for k, v in data.items() if k in names}
    kwargs.update(override)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise MalformedResponse(f"unexpected {cls.__name__} JSON: {exc}") from None


def state(name: Any) -> TaskState:
    try:
        return TaskState.parse(str(name))
    except ValueError as exc:
        raise MalformedResponse(str(exc)) from None


def task(data: Any) -> Task:
    if not isinstance(data, dict):
        raise MalformedResponse("expected a task object")
    history = tuple(_pick(Attempt, a) for a in data.get("history") or ())
    late = tuple(_pick(LateResult, r) for r in data.get("late_results") or ())
    params = data.get("params") or {}
    links = {"depends_on": tuple(data.get("depends_on") or ()), "children": tuple(data.get("children") or ())}
    return _pick(Task, data, state=state(data.get("state")), history=history, late_results=late, params=params, **links)


def workflow(data: Any) -> WorkflowGraph:
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        raise MalformedResponse("expected a workflow object")
    edges = tuple((str(e.get("parent")), str(e.get("child"))) for e in data.get("edges") or () if isinstance(e, dict))
    return WorkflowGraph(str(data.get("id")), tuple(task(t) for t in data["tasks"]), edges)


def killed(data: Any) -> dict[str, str]:
    if not isinstance(data, dict) or not isinstance(data.get("killed"), dict):
        raise MalformedResponse('expected {"id", "killed"}')
    return {str(k): str(v) for k, v in data["killed"].items()}


def result(data: Any) -> TaskResult:
    has_value = isinstance(data, dict) and "value" in data
    return _pick(TaskResult, data, has_value=has_value)


def tasks(data: Any) -> list[Task]:
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        raise MalformedResponse('expected {"tasks": [...]}')
    return [task(t) for t in data["tasks"]]


def page(data: Any) -> TaskPage:
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        raise MalformedResponse("expected {tasks, total, next_cursor}")
    return TaskPage(
        tasks=[task(t) for t in data["tasks"]], total=int(data.get("total", 0)), next_cursor=data.get("next_cursor")
    )


def node(data: Any) -> NodeInfo:
    if not isinstance(data, dict):
        raise MalformedResponse("expected a node object")
    return _pick(NodeInfo, data, types=tuple(data.get("types") or ()))


def cluster(data: Any) -> ClusterView:
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise MalformedResponse("expected {master, epoch, nodes}")
    return ClusterView(
        master=data.get("master"), epoch=int(data.get("epoch", 0)), nodes=[node(n) for n in data["nodes"]]
    )


def event(data: Any) -> TaskEvent:
    if not isinstance(data, dict):
        raise MalformedResponse("expected an event object")
    kind, event_id = data.get("type"), data.get("event_id")
    return TaskEvent(
        id=str(data.get("id")),
        state=state(data.get("state")),
        node=data.get("node"),
        at=float(data.get("at", 0)),
        type=str(kind) if kind is not None else None,
        event_id=str(event_id) if event_id is not None else None,
    )


def ok_map(data: Any) -> dict[str, bool]:
    if not isinstance(data, dict) or not isinstance(data.get("succeed"), dict):
        raise MalformedResponse('expected {"succeed": {id: bool}}')
    return {str(k): bool(v) for k, v in data["succeed"].items()}


def types(data: Any) -> list[str]:
    if not isinstance(data, dict) or not isinstance(data.get("types"), list):
        raise MalformedResponse('expected {"types": [...]}')
    return [str(t) for t in data["types"]]
