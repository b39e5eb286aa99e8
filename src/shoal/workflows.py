"""Workflows: tasks that depend on tasks, checked and resolved before the store takes them.

A task names its parents in ``depends_on``: ids of stored tasks, or in a batch the ``ref`` of another task
of the same batch. It waits (WAITING, in no queue) until every parent has SUCCEEDED; a parent that ends
otherwise kills it, unless its ``on_parent_failure`` is ``run``. The release happens in the script that
ends the parent (settle_children in store/scripts/_lib.lua), so it is atomic and happens once.

This module holds what is checked without the store: the fields' form, that refs are unique and known, and
that the batch's graph has no cycle. Whether a parent that is no ref exists is the store's to say
(``UnknownParent``), in the same step that stores the tasks.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from shoal.errors import InvalidInput
from shoal.models import Task, TaskSpec

#: Most parents one task may name.
MAX_PARENTS = 100
#: What a task may do when a parent ends otherwise than SUCCEED.
ON_PARENT_FAILURE = ("kill", "run")
#: A ref: a name local to a batch.
REF_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
_REF_RE = re.compile(REF_PATTERN)
#: The key of a parent placeholder in a function task's arguments: ``{"$parent": "<ref or task id>"}``.
PARENT_KEY = "$parent"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WorkflowGraph:
    """A workflow as ``GET /api/v1/workflows/{id}`` shows it: its tasks (oldest first) and its edges
    (parent id, child id)."""

    id: str
    tasks: tuple[Task, ...]
    edges: tuple[tuple[str, str], ...]

    def parents(self, task_id: str) -> list[str]:
        return [p for p, c in self.edges if c == task_id]

    def children(self, task_id: str) -> list[str]:
        return [c for p, c in self.edges if p == task_id]

    def roots(self) -> list[Task]:
        """Its tasks that have no parent within it."""
        inside = {c for _, c in self.edges}
        return [t for t in self.tasks if t.id not in inside]


class UnknownParent(InvalidInput):
    """A task names a parent that is neither a stored task nor a ref of its batch; nothing was stored.
    ``index``: the task's place in its call (0-based)."""

    def __init__(self, index: int, parent: str) -> None:
        super().__init__(f"depends_on names {parent!r}, which is no stored task and no ref of this batch")
        self.index = index
        self.parent = parent


def depends_on(value: Any) -> tuple[str, ...]:
    """``depends_on``: a list of at most MAX_PARENTS task ids or refs, each named once."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise InvalidInput("depends_on must be a list of task ids (or refs of tasks of the same batch)")
    if len(value) > MAX_PARENTS:
        raise InvalidInput(f"depends_on names at most {MAX_PARENTS} parents, got {len(value)}")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item:
            raise InvalidInput("depends_on must be a list of task ids (or refs of tasks of the same batch)")
        name = _canonical(item)
        if name is None:
            raise InvalidInput(f"depends_on names {item[:64]!r}, which is neither a task id nor a ref")
        if name in out:
            raise InvalidInput(f"depends_on names {name!r} twice")
        out.append(name)
    return tuple(out)


def on_parent_failure(value: Any) -> str:
    """``on_parent_failure``: "kill" (the default) or "run"."""
    if value is None:
        return "kill"
    if value not in ON_PARENT_FAILURE:
        shown = repr(value)[:64]
        raise InvalidInput(f'on_parent_failure must be "kill" or "run", got {shown}')
    return str(value)


def ref(value: Any) -> str | None:
    """``ref``: a name for the task within its batch (letters, digits and _ . : -, at most 64)."""
    if value is None:
        return None
    if not isinstance(value, str) or not _REF_RE.match(value):
        raise InvalidInput("ref may hold only letters, digits and _ . : - (1 to 64 of them)")
    return value


def _canonical(item: str) -> str | None:
    """A task id in canonical form, or a ref as it is; None if it is neither."""
    if len(item) <= 64:
        try:
            return str(uuid.UUID(item))
        except ValueError:
            pass
    return item if _REF_RE.match(item) else None


def is_task_id(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False


def check_batch(specs: Sequence[TaskSpec]) -> None:
    """Refuse a batch whose refs are not unique, whose ``depends_on`` names a ref no task of it has (and is no
    task id), a task itself, or makes a cycle: ``RefusedTask`` naming the task's index."""
    from shoal.validation import RefusedTask  # validation reads this module's field checks

    refs: dict[str, int] = {}
    for index, spec in enumerate(specs):
        if spec.ref is not None:
            if spec.ref in refs:
                raise RefusedTask(index, InvalidInput(f"ref {spec.ref!r} is taken by tasks[{refs[spec.ref]}]"))
            refs[spec.ref] = index
    edges: list[list[int]] = []
    for index, spec in enumerate(specs):
        here = []
        for name in spec.depends_on:
            if name in refs:
                if refs[name] == index:
                    raise RefusedTask(index, InvalidInput(f"depends_on names the task itself ({name!r})"))
                here.append(refs[name])
            elif not is_task_id(name):
                raise RefusedTask(index, InvalidInput(f"depends_on names {name!r}, which is no ref of this batch"))
        edges.append(here)
    for index, spec in enumerate(specs):
        for name in placeholders([spec.args, spec.kwargs]):
            if _canonical(name) not in spec.depends_on:
                refusal = InvalidInput(f"an argument takes the value of {name!r}, which depends_on does not name")
                raise RefusedTask(index, refusal)
    cycle = _cycle(edges)
    if cycle:
        names = [specs[k].ref or f"tasks[{k}]" for k in cycle]
        raise RefusedTask(cycle[0], InvalidInput(f"depends_on makes a cycle: {' -> '.join(names)}"))


def _cycle(edges: Sequence[Sequence[int]]) -> list[int]:
    """A cycle of the graph (task -> its parents), as the tasks on it with the first repeated at the end;
    [] when there is none. Iterative, so a long chain cannot exhaust the stack."""
    colour = [0] * len(edges)  # 0 unseen, 1 on the current path, 2 done
    for start in range(len(edges)):
        if colour[start]:
            continue
        path: list[int] = [start]
        todo: list[list[int]] = [list(edges[start])]
        colour[start] = 1
        while path:
            if not todo[-1]:
                colour[path.pop()] = 2
                todo.pop()
                continue
            nxt = todo[-1].pop()
            if colour[nxt] == 1:
                return [*path[path.index(nxt) :], nxt]
            if colour[nxt] == 0:
                colour[nxt] = 1
                path.append(nxt)
                todo.append(list(edges[nxt]))
    return []


def with_ids(specs: Sequence[TaskSpec], ids: Sequence[str]) -> list[TaskSpec]:
    """The specs with refs of the batch replaced by the ids their tasks are stored under, in ``depends_on``
    and in the parent placeholders of ``args`` and ``kwargs``."""
    by_ref = {spec.ref: task_id for spec, task_id in zip(specs, ids, strict=True) if spec.ref is not None}
    if not by_ref:
        return list(specs)
    ids_of = {ref: {PARENT_KEY: task_id} for ref, task_id in by_ref.items()}
    return [
        replace(
            spec,
            depends_on=tuple(by_ref.get(name, name) for name in spec.depends_on),
            args=None if spec.args is None else fill_parents(spec.args, ids_of, keep=True),
            kwargs=None if spec.kwargs is None else fill_parents(spec.kwargs, ids_of, keep=True),
        )
        for spec in specs
    ]


def is_placeholder(value: Any) -> bool:
    """``{"$parent": "<ref or task id>"}``: where a function task's argument is its parent's value."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(PARENT_KEY), str)


def placeholders(value: Any) -> list[str]:
    """The parents the placeholders in ``value`` (args, kwargs, at any depth) name."""
    found: list[str] = []
    todo = [value]
    while todo:
        item = todo.pop()
        if is_placeholder(item):
            found.append(item[PARENT_KEY])
        elif isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list | tuple):
            todo.extend(item)
    return found


def fill_parents(value: T, parents: Mapping[str, Any], *, keep: bool = False) -> T:
    """``value`` with every placeholder replaced by its parent's entry of ``parents`` (None when it has none;
    left as it is when ``keep``)."""
    if is_placeholder(value):
        name = value[PARENT_KEY]  # type: ignore[index]
        return parents.get(name, value if keep else None)  # type: ignore[no-any-return]
    if isinstance(value, dict):
        return {k: fill_parents(v, parents, keep=keep) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [fill_parents(v, parents, keep=keep) for v in value]  # type: ignore[return-value]
    return value


def forms_workflow(specs: Sequence[TaskSpec]) -> bool:
    """Whether the tasks of a call make (or join) a workflow: some names a parent or a ref."""
    return any(spec.depends_on or spec.ref is not None for spec in specs)
