"""Workflows from Python: ``chain``, ``group`` and a DAG built from handles, each submitted as ONE batch.

    >>> import shoal
    >>> @shoal.task
    ... def add(a: int, b: int) -> int:
    ...     return a + b
    >>> run = shoal.chain(add.s(1, 2), add.s(10), add.s(100)).submit(client)
    >>> run.result(timeout=30)                       # (1 + 2) + 10, then + 100
    113

    >>> wf = shoal.Workflow()
    >>> a = wf.add(add.s(1, 2))
    >>> b = wf.add(add.s(a, 10))                     # a handle as an argument: a's value goes there
    >>> c = wf.add(add.s(a, 20))
    >>> d = wf.add(add.s(b, c))
    >>> wf.submit(client)[d].result(timeout=30)      # (3 + 10) + (3 + 20)
    36

The tasks of a batch name each other by refs local to it (``depends_on``); the cluster stores all of them or
none, and runs each once all its parents have SUCCEEDED, with their values where its arguments name them (a
``{"$parent": ref}`` placeholder). In a chain each step's value is the next step's first argument (Celery's
rule). A parent that ends otherwise kills its children (``on_parent_failure="run"`` runs them anyway).

A member is a call of a ``@shoal.task`` function (``add.s(1, 2)``), or a task of any other type as a
mapping of its REST fields (``{"type": "fetch", "target": "https://..."}``), which sees its parents' results
in ``ctx.parents``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from shoal.client import AsyncClient, Client
from shoal.errors import InvalidInput
from shoal.functions import AsyncTaskHandle, TaskCall, TaskHandle, default_async_client, default_client
from shoal.models import TaskSpec
from shoal.validation import MAX_BATCH
from shoal.workflows import ON_PARENT_FAILURE, PARENT_KEY

Member = TaskCall | Mapping[str, Any] | TaskSpec


@dataclass(frozen=True, slots=True, eq=False)
class Node:
    """A task of a ``Workflow`` not submitted yet: pass it as an argument of a later call (its value goes
    there) or in ``after=`` (it only has to succeed first), and index the submitted run with it."""

    workflow: Workflow
    index: int

    @property
    def ref(self) -> str:
        return self.workflow._refs[self.index]


class Workflow:
    """Tasks that depend on tasks, built one ``add`` at a time and submitted together as one batch."""

    def __init__(self) -> None:
        self._bodies: list[dict[str, Any]] = []
        self._refs: list[str] = []

    def __len__(self) -> int:
        return len(self._bodies)

    def add(
        self,
        member: Member,
        *,
        after: Iterable[Node] = (),
        on_parent_failure: str = "kill",
        ref: str | None = None,
    ) -> Node:
        """Add a task; the node that stands for it. A ``Node`` among a call's arguments (at any depth) makes
        that task a parent whose value is the argument; ``after`` names parents whose values it does not take.
        ``ref``: its name in the batch (default ``t<index>``)."""
        if on_parent_failure not in ON_PARENT_FAILURE:
            raise InvalidInput(f'on_parent_failure must be "kill" or "run", got {on_parent_failure!r}')
        if len(self._bodies) >= MAX_BATCH:
            raise InvalidInput(f"a workflow holds at most {MAX_BATCH} tasks (one batch)")
        parents: list[str] = []
        body = self._body(member, parents)
        for node in after:
            parents.append(self._own(node).ref)
        name = ref if ref is not None else f"t{len(self._bodies)}"
        if name in self._refs:
            raise InvalidInput(f"ref {name!r} is taken by another task of this workflow")
        body["ref"] = name
        body["depends_on"] = list(dict.fromkeys(parents))
        if on_parent_failure != "kill":
            body["on_parent_failure"] = on_parent_failure
        self._bodies.append(body)
        self._refs.append(name)
        return Node(self, len(self._bodies) - 1)

    def bodies(self) -> list[dict[str, Any]]:
        """The batch as ``POST /api/v1/tasks/batch`` takes it (``{"tasks": bodies}``)."""
        return [dict(b) for b in self._bodies]

    def submit(self, client: Client | None = None) -> WorkflowRun:
        """Submit every task in one batch (all stored, or none); the run, to follow them with."""
        if not self._bodies:
            raise InvalidInput("the workflow has no task")
        sync = client if client is not None else default_client()
        tasks = sync.submit_many(self.bodies())
        return WorkflowRun([TaskHandle(t, sync) for t in tasks])

    apply = submit

    async def asubmit(self, client: AsyncClient | None = None) -> AsyncWorkflowRun:
        """``submit`` with an ``AsyncClient``."""
        if not self._bodies:
            raise InvalidInput("the workflow has no task")
        aio = client if client is not None else default_async_client()
        tasks = await aio.submit_many(self.bodies())
        return AsyncWorkflowRun([AsyncTaskHandle(t, aio) for t in tasks])

    apply_async = asubmit

    def _own(self, node: Any) -> Node:
        if not isinstance(node, Node) or node.workflow is not self:
            raise InvalidInput(f"{node!r} is no task of this workflow")
        return node

    def _body(self, member: Member, parents: list[str]) -> dict[str, Any]:
        """The REST body of a member, its Node arguments replaced by placeholders (their refs in ``parents``)."""
        if isinstance(member, TaskCall):
            body = member.to_spec()
            body["args"] = [self._placed(a, parents) for a in member.args]
            if member.kwargs:
                body["kwargs"] = {k: self._placed(v, parents) for k, v in member.kwargs.items()}
            return body
        if isinstance(member, TaskSpec):
            fields = {
                k: getattr(member, k)
                for k in ("name", "type", "target", "params", "timeout_s", "max_retries", "priority", "args", "kwargs")
            }
            return {k: v for k, v in fields.items() if v is not None}
        if isinstance(member, Mapping):
            body = dict(member)
            body.setdefault("name", body.get("type"))
            return body
        raise InvalidInput(f"a workflow task is a call (fn.s(...)), a TaskSpec or a mapping, not {member!r}")

    def _placed(self, value: Any, parents: list[str]) -> Any:
        if isinstance(value, Node):
            parents.append(self._own(value).ref)
            return {PARENT_KEY: value.ref}
        if isinstance(value, list | tuple):
            return [self._placed(v, parents) for v in value]
        if isinstance(value, dict):
            return {k: self._placed(v, parents) for k, v in value.items()}
        return value


def chain(*members: Member) -> Workflow:
    """Tasks run one after the other: each waits for the one before, and a call takes its value as its first
    positional argument (``chain(add.s(1, 2), add.s(10))`` runs ``add(3, 10)`` second)."""
    if not members:
        raise InvalidInput("a chain needs at least one task")
    wf = Workflow()
    before: Node | None = None
    for member in members:
        if before is not None and isinstance(member, TaskCall):
            member = TaskCall(member.type, (before, *member.args), member.kwargs, member.options)
            before = wf.add(member)
        else:
            before = wf.add(member, after=[before] if before is not None else [])
    return wf


def group(*members: Member) -> Workflow:
    """Tasks that run side by side, submitted together as one workflow (their results: ``run.results()``)."""
    if not members:
        raise InvalidInput("a group needs at least one task")
    wf = Workflow()
    for member in members:
        wf.add(member)
    return wf


class WorkflowRun:
    """A submitted workflow: a handle per task, in the order they were added (``run[node]``, ``run[0]``)."""

    def __init__(self, handles: list[TaskHandle]) -> None:
        self.handles = handles

    @property
    def id(self) -> str | None:
        """The workflow's id (``Client.workflow``, ``Client.kill_workflow``)."""
        return self.handles[0].submitted.workflow

    def __getitem__(self, key: Node | int) -> TaskHandle:
        return self.handles[key.index if isinstance(key, Node) else key]

    def __iter__(self) -> Iterator[TaskHandle]:
        return iter(self.handles)

    def __len__(self) -> int:
        return len(self.handles)

    def result(self, timeout: float | None = None) -> Any:
        """The value of the last task added (a chain's end) once it has succeeded; see ``TaskHandle.result``."""
        return self.handles[-1].result(timeout)

    def results(self, timeout: float | None = None) -> list[Any]:
        """Every task's value, in order (each waited for up to ``timeout``)."""
        return [h.result(timeout) for h in self.handles]

    def kill(self) -> dict[str, str]:
        """Kill every unfinished task of it."""
        return self.handles[0].client.kill_workflow(self.id or self.handles[0].id)


class AsyncWorkflowRun:
    """``WorkflowRun`` for an ``AsyncClient``."""

    def __init__(self, handles: list[AsyncTaskHandle]) -> None:
        self.handles = handles

    @property
    def id(self) -> str | None:
        return self.handles[0].submitted.workflow

    def __getitem__(self, key: Node | int) -> AsyncTaskHandle:
        return self.handles[key.index if isinstance(key, Node) else key]

    def __iter__(self) -> Iterator[AsyncTaskHandle]:
        return iter(self.handles)

    def __len__(self) -> int:
        return len(self.handles)

    async def result(self, timeout: float | None = None) -> Any:
        return await self.handles[-1].result(timeout)

    async def results(self, timeout: float | None = None) -> list[Any]:
        return [await h.result(timeout) for h in self.handles]

    async def kill(self) -> dict[str, str]:
        return await self.handles[0].client.kill_workflow(self.id or self.handles[0].id)
