"""The limits one attempt runs under: what its task asked for, within what its type allows.

A task may set ``memory_mb`` and ``cpu_s_limit``; its type may bound them (``@task_type(memory_mb=...,
cpu_s_limit=...)``), and a type that sets no bound is bounded by the node's defaults (config ``memory_mb``
and ``cpu_s_limit``; 0 there, None here, means no bound). Per limit:

- the task gives none: the attempt gets the bound (the type's, else the node's; none if neither has one);
- the task asks for no more than the bound, or there is no bound: it gets what it asked for;
- the task asks for more: it is held to the bound, and the attempt's error says so.

The bound is known only where the task runs (each node loads its own task types, and a node advertises
only their names), so a task that asks for too much is accepted at submit and held to the bound here,
attempt by attempt, rather than refused by whichever node took the submit.

Limits are enforced in worker processes only: an inline attempt runs in the node's own process, where
they do not apply, and its error says so when the task set any.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from shoal.models import Task
from shoal.worker.handlers import TaskType

N = TypeVar("N", int, float)


@dataclass(frozen=True, slots=True)
class Limits:
    """What one attempt may use (None: no limit) and ``note``: why that is less than the task asked for ('' when
    it is not)."""

    memory_mb: int | None
    cpu_s_limit: float | None
    note: str = ""


def attempt_limits(
    task: Task, task_type: TaskType, *, node: str, node_memory_mb: int | None, node_cpu_s_limit: float | None
) -> Limits:
    """The limits an attempt at ``task`` gets in a worker process of ``node``, whose defaults are
    ``node_memory_mb`` and ``node_cpu_s_limit`` (None: no default)."""
    held: list[str] = []

    def within(name: str, asked: N | None, type_bound: N | None, node_bound: N | None, unit: str) -> N | None:
        bound = type_bound if type_bound is not None else node_bound
        if asked is None:
            return bound
        if bound is None or asked <= bound:
            return asked
        whose = (
            f"the most type {task_type.name!r} allows"
            if type_bound is not None
            else f"node {node}'s default, as type {task_type.name!r} sets no bound"
        )
        held.append(f"{name} held to {_amount(bound, unit)}, {whose} (the task asked for {_amount(asked, unit)})")
        return bound

    memory = within("memory_mb", task.memory_mb, task_type.memory_mb, node_memory_mb, " MiB")
    cpu = within("cpu_s_limit", task.cpu_s_limit, task_type.cpu_s_limit, node_cpu_s_limit, "s")
    return Limits(memory, cpu, "; ".join(held))


def not_applied(task: Task, type_name: str) -> str:
    """What an inline attempt's error says when its task set limits: that they do not apply ('' if none)."""
    asked = [name for name in ("memory_mb", "cpu_s_limit") if getattr(task, name) is not None]
    if not asked:
        return ""
    return f"{' and '.join(asked)} not applied: type {type_name!r} runs inline, in the node's own process"


def _amount(value: float, unit: str) -> str:
    return f"{value}{unit}" if isinstance(value, int) else f"{value:g}{unit}"
