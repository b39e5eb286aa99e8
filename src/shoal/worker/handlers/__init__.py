"""Task types as plug-ins: a name mapped to a function (sync or async) that runs one task.

A function becomes a task type by being marked with ``@shoal.task_type("name")`` in a module that a
node loads (config ``task_modules``), or by being named in a package's ``shoal.task_types`` entry point.
Marking stores nothing globally: the loader finds marked functions when it imports the module.

A handler gets a ``TaskContext`` and returns the result's ``code`` as a string, or an ``Output`` with
``meta`` beside it. An exception fails the attempt (retried if the task allows); its text is kept. A plain
function made a task with ``@shoal.task`` (``shoal.functions``) is found the same way; it takes the task's
``args``/``kwargs`` instead of a context (``current_task()`` gives it that) and its return value, any JSON
value, is the result's ``value``.

Where it runs is the type's ``isolation``: ``"process"`` (the default for plain functions) runs each attempt
in a worker process of the node's pool, which a kill or timeout really stops and whose crash takes only
the attempt down; ``"inline"`` (the default for ``async def``, right for I/O-bound types such as ``fetch``)
runs it on the node's event loop. ``memory_mb`` and ``cpu_s_limit`` bound a process-isolated attempt.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Literal, TypeVar

import orjson

from shoal.errors import InvalidInput
from shoal.signatures import Signature, describe

log = logging.getLogger("shoal.worker.handlers")

ENTRY_POINT_GROUP = "shoal.task_types"
#: Characters of an attempt's error text that are kept.
MAX_ERROR_CHARS = 4000
_MARK = "__shoal_task_type__"
#: On a ``shoal.task`` function (``shoal.functions.TaskFunction``): the plain function it runs.
FUNCTION_MARK = "__shoal_function__"


@dataclass(frozen=True, slots=True)
class Output:
    """A handler's result: ``code`` (the seed's TaskResult.code) and anything worth showing beside it; a
    function task's also its return ``value`` (``has_value``), of which ``code`` is the text."""

    code: str
    meta: dict[str, Any] = field(default_factory=dict)
    value: Any = None
    has_value: bool = False


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a handler knows about the task it runs. ``cancelled.is_set()`` turns true when the attempt is
    stopped (killed, timed out, its node leaving), so that a handler may stop early and cleanly; in a worker
    process the handler is also interrupted (shoal.TaskCancelled) and, after kill_grace, killed."""

    task_id: str
    name: str
    type: str
    target: str
    params: dict[str, Any]
    attempt: int
    node: str
    cancelled: asyncio.Event | Any = None
    args: list[Any] = field(default_factory=list)  # a function task's arguments (JSON values)
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: Its parents' results (parent id -> a function's return value, else the result's code; None for a parent
    #: that ended without one, for a task with on_parent_failure "run"). Empty for a task with no parents.
    parents: dict[str, Any] = field(default_factory=dict)


_CURRENT: contextvars.ContextVar[TaskContext] = contextvars.ContextVar("shoal_current_task")


def current_task() -> TaskContext:
    """The context of the function task running now (its id, attempt, ``cancelled``...), in a function
    made a task with ``@shoal.task``, on the node's loop or in a worker process. Raises LookupError
    elsewhere."""
    try:
        return _CURRENT.get()
    except LookupError:
        raise LookupError("shoal.current_task() is only known inside a running @shoal.task function") from None


def call_function(fn: Callable[..., Any], ctx: TaskContext) -> Any:
    """``fn(*ctx.args, **ctx.kwargs)`` with ``current_task()`` answering ``ctx``, in the calling thread (a
    worker process's): an ``async def`` function runs to its end in an event loop of its own."""
    token = _CURRENT.set(ctx)
    try:
        value = fn(*ctx.args, **ctx.kwargs)
        if inspect.isawaitable(value):
            value = asyncio.run(_awaited(value))
        return value
    finally:
        _CURRENT.reset(token)


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def function_output(value: Any) -> Output:
    """A function's return value as an attempt's output: the value as JSON would give it back, and its text
    as ``code``. TypeError when it is not a JSON value: the attempt fails saying so."""
    try:
        text = orjson.dumps(value)
    except TypeError as exc:
        raise TypeError(f"return value is not JSON: {exc}") from None
    value = orjson.loads(text)
    return Output(value if isinstance(value, str) else text.decode(), value=value, has_value=True)


Handler = Callable[[TaskContext], "Output | str | Awaitable[Output | str]"]
Validator = Callable[[str, dict[str, Any]], None]
F = TypeVar("F", bound=Callable[..., Any])
Isolation = Literal["process", "inline"]
ISOLATIONS: tuple[Isolation, ...] = ("process", "inline")


@dataclass(frozen=True, slots=True)
class TypeOptions:
    """What ``@task_type`` says about a type beyond its handler."""

    validate: Validator | None = None
    isolation: Isolation | None = None  # None: "inline" for async def, "process" for a plain function
    memory_mb: int | None = None
    cpu_s_limit: float | None = None
    #: A function task's submit defaults (timeout_s, max_retries, ...), published with its signature.
    defaults: dict[str, Any] | None = None


def task_type(
    name: str,
    *,
    validate: Validator | None = None,
    isolation: Isolation | None = None,
    memory_mb: int | None = None,
    cpu_s_limit: float | None = None,
) -> Callable[[F], F]:
    """Mark a function as the handler of task type ``name``. ``validate`` checks target and params at submit;
    ``isolation`` says where attempts run ("process" or "inline", see above); ``memory_mb`` and
    ``cpu_s_limit`` bound each process-isolated attempt (a task may ask for less, never more)."""
    options = TypeOptions(validate, isolation, memory_mb, cpu_s_limit)
    _check_options(name, options)

    def mark(fn: F) -> F:
        setattr(fn, _MARK, (name, options))
        return fn

    return mark


def _check_options(name: str, options: TypeOptions) -> None:
    if options.isolation is not None and options.isolation not in ISOLATIONS:
        raise InvalidInput(f"task type {name!r}: isolation must be 'process' or 'inline'")
    if options.memory_mb is not None and not 64 <= options.memory_mb <= 1024 * 1024:
        raise InvalidInput(f"task type {name!r}: memory_mb must be between 64 and 1048576")
    if options.cpu_s_limit is not None and not 0 < options.cpu_s_limit <= 86_400:
        raise InvalidInput(f"task type {name!r}: cpu_s_limit must be above 0 and at most 86400 seconds")


@dataclass(frozen=True, slots=True)
class TaskType:
    name: str
    handler: Handler
    validate: Validator | None = None
    isolation: Isolation = "inline"
    memory_mb: int | None = None
    cpu_s_limit: float | None = None
    #: A ``@shoal.task`` function's plain function and its signature (None: a handler taking a TaskContext).
    function: Callable[..., Any] | None = None
    signature: Signature | None = None

    async def run(self, ctx: TaskContext) -> Output:
        """Call the handler on the node (an inline type): awaited if async, in a thread if sync. Types with
        isolation "process" are run by the worker pool instead (shoal.worker.pool)."""
        if self.function is not None:
            return await self._call(self.function, ctx)
        if inspect.iscoroutinefunction(self.handler):
            value = await self.handler(ctx)
        else:
            value = await asyncio.to_thread(self.handler, ctx)
            if inspect.isawaitable(value):
                value = await value
        return as_output(value)

    @staticmethod
    async def _call(fn: Callable[..., Any], ctx: TaskContext) -> Output:
        """A function task's attempt on the node: its arguments from ``ctx``, ``current_task()`` set for it
        (a thread of ``to_thread`` takes the context it was started from)."""
        token = _CURRENT.set(ctx)
        try:
            if inspect.iscoroutinefunction(fn):
                value = await fn(*ctx.args, **ctx.kwargs)
            else:
                value = await asyncio.to_thread(fn, *ctx.args, **ctx.kwargs)
            if inspect.isawaitable(value):
                value = await value
        finally:
            _CURRENT.reset(token)
        return function_output(value)


def as_output(value: Any) -> Output:
    """A handler's return value as an ``Output``: itself, bytes decoded as UTF-8, else text (None: empty)."""
    if isinstance(value, Output):
        return value
    if isinstance(value, bytes):
        return Output(value.decode("utf-8", "replace"))
    return Output("" if value is None else str(value))


class TaskTypes:
    """The task types one node runs, by name. Filled at start, read-only afterwards."""

    def __init__(self) -> None:
        self._types: dict[str, TaskType] = {}

    def add(self, name: str, handler: Handler, options: TypeOptions | Validator | None = None) -> None:
        """Register ``handler`` as type ``name``; ``options`` may be just a validator (the built-in types)."""
        if name in self._types:
            raise InvalidInput(f"task type {name!r} is registered twice")
        if not isinstance(options, TypeOptions):
            options = TypeOptions(validate=options)
        _check_options(name, options)
        function = getattr(handler, FUNCTION_MARK, None)
        isolation = options.isolation or ("inline" if _is_async(function or handler) else "process")
        if isolation == "process":
            _check_importable(name, handler)
        signature = describe(function, name, options.defaults) if function is not None else None
        self._types[name] = TaskType(
            name, handler, options.validate, isolation, options.memory_mb, options.cpu_s_limit, function, signature
        )

    def get(self, name: str) -> TaskType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)

    def signatures(self) -> dict[str, Signature | None]:
        """Every type's signature by name: a function task's, None for a handler's (to publish, so that a
        submit taken by any node is checked against it: shoal.store.signatures)."""
        return {name: t.signature for name, t in sorted(self._types.items())}

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
                known = self._types.get(mark[0])
                if known is None or known.handler is not value:  # the same one imported by two modules: once
                    self.add(mark[0], value, mark[1])
                found += 1
        if not found:
            raise InvalidInput(
                f"task module {module_name!r} has no function marked with @shoal.task or @shoal.task_type"
            )
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
            try:
                self.add(ep.name, fn, mark[1] if mark else None)
            except InvalidInput as exc:
                log.error("cannot load task type %r from %s: %s", ep.name, ep.value, exc.message)


def build(builtins: Iterable[tuple[str, Handler, Validator | None]], modules: Iterable[str]) -> TaskTypes:
    types = TaskTypes()
    for name, handler, validate in builtins:
        types.add(name, handler, validate)
    for module in modules:
        types.load_module(module)
    types.load_entry_points()
    return types


def _check_importable(name: str, handler: Handler) -> None:
    """A worker process finds the handler by module and name: it must live at the top of an importable module."""
    module, qualname = getattr(handler, "__module__", None), getattr(handler, "__qualname__", "")
    found = getattr(importlib.import_module(module), qualname, None) if module and "<" not in qualname else None
    if found is not handler:
        raise InvalidInput(f"task type {name!r}: a worker process cannot import {qualname or handler!r} from "
                           f"{module!r}; define it at the top of a module, or mark it isolation='inline'")  # fmt: skip


def _is_async(handler: Handler) -> bool:
    """An ``async def`` function, or an object whose ``__call__`` is one (the built-in ``fetch``)."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(type(handler).__call__)
