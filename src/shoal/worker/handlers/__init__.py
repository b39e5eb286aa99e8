"""Task types as plug-ins: a name mapped to a function (sync or async) that runs one task.

A function becomes a task type by being marked with ``@shoal.task_type("name")`` in a module that a
node loads (config ``task_modules``), or by being named in a package's ``shoal.task_types`` entry point.
Marking stores nothing globally: the loader finds marked functions when it imports the module.

A handler gets a ``TaskContext`` and returns the result's ``code`` as a string, or an ``Output`` with
``meta`` beside it. An exception fails the attempt (retried if the task allows); its text is kept.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, TypeVar

from shoal.errors import InvalidInput

log = logging.getLogger("shoal.worker.handlers")

ENTRY_POINT_GROUP = "shoal.task_types"
_MARK = "__shoal_task_type__"


@dataclass(frozen=True, slots=True)
class Output:
    """A handler's result: ``code`` (the seed's TaskResult.code) and anything worth showing beside it."""

    code: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a handler knows about the task it runs. ``cancelled`` is set when the task is killed, so
    that a sync handler (which runs in a thread and cannot be interrupted) may stop early."""

    task_id: str
    name: str
    type: str
    target: str
    params: dict[str, Any]
    attempt: int
    node: str
    cancelled: asyncio.Event | Any = None


Handler = Callable[[TaskContext], "Output | str | Awaitable[Output | str]"]
Validator = Callable[[str, dict[str, Any]], None]
F = TypeVar("F", bound=Callable[..., Any])


def task_type(name: str, *, validate: Validator | None = None) -> Callable[[F], F]:
    """Mark a function as the handler of task type ``name``; ``validate`` checks target and params at submit."""

    def mark(fn: F) -> F:
        setattr(fn, _MARK, (name, validate))
        return fn

    return mark


@dataclass(frozen=True, slots=True)
class TaskType:
    name: str
    handler: Handler
    validate: Validator | None = None

    async def run(self, ctx: TaskContext) -> Output:
        """Call the handler: awaited if async, in a worker thread if sync (so it cannot block the node)."""
        if inspect.iscoroutinefunction(self.handler):
            value = await self.handler(ctx)
        else:
            value = await asyncio.to_thread(self.handler, ctx)
            if inspect.isawaitable(value):
                value = await value
        if isinstance(value, Output):
            return value
        if isinstance(value, bytes):
            return Output(value.decode("utf-8", "replace"))
        return Output("" if value is None else str(value))


class TaskTypes:
    """The task types one node runs, by name. Filled at start, read-only afterwards."""

    def __init__(self) -> None:
        self._types: dict[str, TaskType] = {}

    def add(self, name: str, handler: Handler, validate: Validator | None = None) -> None:
        if name in self._types:
            raise InvalidInput(f"task type {name!r} is registered twice")
        self._types[name] = TaskType(name, handler, validate)

    def get(self, name: str) -> TaskType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)

    def validate(self, name: str, target: str, params: dict[str, Any]) -> None:
        """Run the type's own checks when this node knows the type."""
        known = self._types.get(name)
        if known is not None and known.validate is not None:
            known.validate(target, params)

    def load_module(self, module_name: str) -> int:
        """Import a module and add every function in it marked with ``@task_type``; return how many."""
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise InvalidInput(f"cannot import task module {module_name!r}: {exc}") from None
        except Exception as exc:  # the module itself fails as it is imported: the user's to fix, as above
            raise InvalidInput(f"task module {module_name!r} failed on import: {type(exc).__name__}: {exc}") from None
        found = 0
        for value in vars(module).values():
            mark = getattr(value, _MARK, None)
            if mark is not None:
                self.add(mark[0], value, mark[1])
                found += 1
        if not found:
            raise InvalidInput(f"task module {module_name!r} has no function marked with @shoal.task_type")
        return found

    def load_entry_points(self) -> None:
        """Add the types that installed packages declare in the ``shoal.task_types`` entry point group."""
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                fn = ep.load()
            except Exception:
                log.exception("cannot load task type %r from %s", ep.name, ep.value)
                continue
            mark = getattr(fn, _MARK, None)
            self.add(ep.name, fn, mark[1] if mark else None)


def build(builtins: Iterable[tuple[str, Handler, Validator | None]], modules: Iterable[str]) -> TaskTypes:
    types = TaskTypes()
    for name, handler, validate in builtins:
        types.add(name, handler, validate)
    for module in modules:
        types.load_module(module)
    types.load_entry_points()
    return types
