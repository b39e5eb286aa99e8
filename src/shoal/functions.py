"""Plain Python functions as task types: ``@shoal.task``.

    >>> import shoal
    >>> @shoal.task
    ... def add(a: int, b: int) -> int:
    ...     return a + b
    >>> add(2, 3)                                   # a plain call, here (tests)
    5
    >>> handle = add.submit(2, 3)                   # a task in the cluster (client from SHOAL_API/SHOAL_TOKEN)
    >>> handle.result(timeout=30)
    5
    >>> [h.result(timeout=30) for h in add.map([(1, 2), (3, 4)])]
    [3, 7]

A function's arguments and return value are JSON values. Its task type is named after its module and
qualified name (``billing.tasks.add``), unless ``name=`` says otherwise; a node that loads the module
(``--task-modules billing.tasks``) runs it, and publishes its signature so that any node refuses a call
that does not fit it when it is submitted. The same type is callable by name from REST, gRPC and the CLI
with ``args``/``kwargs``; its result's ``value`` is the return value (``code`` its text).

Which client ``submit`` uses: ``add.options(client=c)`` binds one (``Client`` for ``submit``/``map``,
``AsyncClient`` for ``asubmit``/``amap``); without it, one made from the environment the CLI reads
(``SHOAL_API``, ``SHOAL_TOKEN``, else ``./.shoal/token``), kept for the process (the async one per event
loop). ``options`` also sets any other task field of the submits (``priority``, ``delay_s``...).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar, overload

from shoal import validation
from shoal.client import AsyncClient, Client
from shoal.errors import InvalidInput
from shoal.models import Task, TaskResult
from shoal.worker.handlers import _MARK, FUNCTION_MARK, Isolation, TypeOptions, _check_options

P = ParamSpec("P")
R = TypeVar("R")

#: Task fields a submit of a function may set (``options``); the others (type, args, kwargs) are its own.
SUBMIT_OPTIONS = frozenset(
    {"name", "target", "params", "timeout_s", "max_retries", "max_lost_attempts", "memory_mb", "cpu_s_limit"}
    | {"result_ttl_s", "run_at", "delay_s", "idempotency_key", "priority", "requires", "concurrency_key"}
)


@dataclass(frozen=True, slots=True)
class TaskCall:
    """One call of a function task, not yet submitted (a signature, as Celery says): the type's name, the
    arguments, and task fields of the submit (``options``). ``add.s(2, 3)`` makes one; workflows are built
    from them. ``to_spec()`` is the REST body of its submit."""

    type: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_spec(self) -> dict[str, Any]:
        """The task as ``POST /api/v1/tasks`` (and each task of ``/tasks/batch``) takes it."""
        spec: dict[str, Any] = {"name": self.type, **self.options, "type": self.type}
        spec["args"] = list(self.args)
        if self.kwargs:
            spec["kwargs"] = dict(self.kwargs)
        return spec

    def set(self, **options: Any) -> TaskCall:
        """The same call with these task fields (``priority=9``, ``delay_s="5m"``...)."""
        return dataclasses.replace(self, options={**self.options, **_submit_options(options)})

    def submit(self, client: Client | None = None) -> TaskHandle:
        """Submit it (with ``client``, else the environment's); its handle."""
        sync = client if client is not None else default_client()
        return TaskHandle(sync.submit(**_submit_kwargs(self)), sync)

    async def asubmit(self, client: AsyncClient | None = None) -> AsyncTaskHandle:
        """Submit it with an ``AsyncClient`` (else the environment's, for this event loop); its handle."""
        aio = client if client is not None else default_async_client()
        return AsyncTaskHandle(await aio.submit(**_submit_kwargs(self)), aio)


class TaskFunction(Generic[P, R]):
    """A function made a task type by ``@shoal.task``: calling it runs the function here; ``submit``, ``map``
    and their async twins run it in the cluster. Immutable; ``options`` returns a copy."""

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        type_options: TypeOptions,
        client: Client | AsyncClient | None = None,
        submit_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.fn = fn
        self.name = name or f"{fn.__module__}.{fn.__qualname__}"
        self.type_options = type_options
        self.client = client
        self.submit_options = dict(submit_options or {})
        # a worker process finds it by module and name, as it finds a handler: this object is what it gets
        functools.update_wrapper(self, fn)
        setattr(self, FUNCTION_MARK, fn)
        setattr(self, _MARK, (self.name, type_options))

    def __repr__(self) -> str:
        return f"<shoal task {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here, as a plain call."""
        return self.fn(*args, **kwargs)

    def s(self, *args: Any, **kwargs: Any) -> TaskCall:
        """A call of this task with these arguments, to submit later or to build a workflow from."""
        return TaskCall(self.name, args, dict(kwargs), dict(self.submit_options))

    def options(self, *, client: Client | AsyncClient | None = None, **options: Any) -> TaskFunction[P, R]:
        """A copy whose submits go through ``client`` and carry these task fields (``priority=9``,
        ``delay_s=30``, ``idempotency_key=...``, ``name=...``)."""
        return TaskFunction(
            self.fn,
            name=self.name,
            type_options=self.type_options,
            client=client if client is not None else self.client,
            submit_options={**self.submit_options, **_submit_options(options)},
        )

    # -- blocking -----------------------------------------------------------------------------------

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle:
        """Submit one call; its handle. Refused (InvalidInput) when the arguments do not fit the function."""
        return self.s(*args, **kwargs).submit(self._client())

    def map(self, calls: Iterable[Any]) -> list[TaskHandle]:
        """Submit one call per item, in batches (``Client.submit_many``): a tuple is the positional arguments
        of its call, anything else its one argument. The handles, in order."""
        client = self._client()
        specs = [self.s(*_arguments(item)).to_spec() for item in calls]
        return [TaskHandle(task, client) for task in client.submit_many(specs)] if specs else []

    # -- asyncio --------------------------------------------------------------------------------------

    async def asubmit(self, *args: P.args, **kwargs: P.kwargs) -> AsyncTaskHandle:
        """``submit`` with an ``AsyncClient``."""
        return await self.s(*args, **kwargs).asubmit(self._async_client())

    async def amap(self, calls: Iterable[Any]) -> list[AsyncTaskHandle]:
        """``map`` with an ``AsyncClient``."""
        client = self._async_client()
        specs = [self.s(*_arguments(item)).to_spec() for item in calls]
        return [AsyncTaskHandle(task, client) for task in await client.submit_many(specs)] if specs else []

    def _client(self) -> Client:
        if isinstance(self.client, AsyncClient):
            raise TypeError(f"{self.name} is bound to an AsyncClient: use asubmit / amap")
        return self.client or default_client()

    def _async_client(self) -> AsyncClient:
        if isinstance(self.client, Client):
            raise TypeError(f"{self.name} is bound to a blocking Client: use submit / map")
        return self.client or default_async_client()


@dataclass(frozen=True, slots=True)
class TaskHandle:
    """A submitted task, as its submit answered, and the client to follow it with."""

    submitted: Task
    client: Client

    @property
    def id(self) -> str:
        return self.submitted.id

    def task(self) -> Task:
        """The task as it is now."""
        return self.client.get(self.id)

    def result(self, timeout: float | None = None) -> Any:
        """The function's return value once the task has succeeded. Raises TaskFailed (carrying the task, its
        state and error) if it ended otherwise, WaitTimeout (a TimeoutError) if it has not ended within
        ``timeout`` seconds (None: as long as it takes)."""
        return _value(self.client.wait_result(self.id, timeout))


@dataclass(frozen=True, slots=True)
class AsyncTaskHandle:
    """``TaskHandle`` for an ``AsyncClient``: ``await handle.result(timeout)``, ``await handle.task()``."""

    submitted: Task
    client: AsyncClient

    @property
    def id(self) -> str:
        return self.submitted.id

    async def task(self) -> Task:
        return await self.client.get(self.id)

    async def result(self, timeout: float | None = None) -> Any:
        """As ``TaskHandle.result``."""
        return _value(await self.client.wait_result(self.id, timeout))


@overload
def task(fn: Callable[P, R], /) -> TaskFunction[P, R]: ...


@overload
def task(
    *,
    name: str | None = None,
    timeout_s: float | None = None,
    max_retries: int | None = None,
    max_lost_attempts: int | None = None,
    result_ttl_s: float | str | None = None,
    priority: int | None = None,
    requires: dict[str, str] | None = None,
    isolation: Isolation | None = None,
    memory_mb: int | None = None,
    cpu_s_limit: float | None = None,
) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...


def task(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    timeout_s: float | None = None,
    max_retries: int | None = None,
    max_lost_attempts: int | None = None,
    result_ttl_s: float | str | None = None,
    priority: int | None = None,
    requires: dict[str, str] | None = None,
    isolation: Isolation | None = None,
    memory_mb: int | None = None,
    cpu_s_limit: float | None = None,
) -> Any:
    """Make a function a task type (bare, ``@shoal.task``, or with options, ``@shoal.task(timeout_s=5)``).

    ``name``: the type's name (default ``module.qualname``). ``timeout_s``, ``max_retries``,
    ``max_lost_attempts``, ``result_ttl_s``, ``priority`` and ``requires`` are what its tasks get when a
    submit (from anywhere: Python, REST, gRPC, CLI) does not say. ``isolation``: "process" (the default for
    a plain function: a worker process, which a kill really stops) or "inline" (the default for ``async
    def``: the node's event loop); ``memory_mb`` and ``cpu_s_limit`` bound each process-isolated attempt.
    """
    given: dict[str, Any] = {"timeout_s": timeout_s, "max_retries": max_retries, "max_lost_attempts": max_lost_attempts}
    given |= {"result_ttl_s": result_ttl_s, "priority": priority, "requires": requires}
    defaults = {key: value for key, value in given.items() if value is not None}

    def make(fn: Callable[P, R]) -> TaskFunction[P, R]:
        if not callable(fn) or inspect.isclass(fn):
            raise TypeError(f"@shoal.task makes a task of a function, not of {fn!r}")
        type_name = name or f"{fn.__module__}.{fn.__qualname__}"
        try:  # checked as a submit's fields are, so that a mistake shows where the function is defined
            validation.task_spec({"name": "-", "type": type_name, "target": "-", **defaults})
        except InvalidInput as exc:
            raise InvalidInput(f"@shoal.task {type_name!r}: {exc.message} (a name: @shoal.task(name=...))") from None
        options = TypeOptions(None, isolation, memory_mb, cpu_s_limit, defaults or None)
        _check_options(type_name, options)
        return TaskFunction(fn, name=type_name, type_options=options)

    return make(fn) if fn is not None else make


def _submit_options(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - SUBMIT_OPTIONS)
    if unknown:
        raise TypeError(
            f"unknown task field(s): {', '.join(unknown)}; a submit takes {', '.join(sorted(SUBMIT_OPTIONS))}"
        )
    return {key: value for key, value in options.items() if value is not None}


def _submit_kwargs(call: TaskCall) -> dict[str, Any]:
    """``Client.submit``'s arguments for ``call``."""
    kwargs = dict(call.kwargs) or None
    return {"name": call.type, **call.options, "type": call.type, "args": list(call.args), "kwargs": kwargs}


def _arguments(item: Any) -> tuple[Any, ...]:
    return item if isinstance(item, tuple) else (item,)


def _value(result: TaskResult) -> Any:
    """A function task's return value (a handler's task: its code)."""
    return result.value if result.has_value else result.code


# -- clients from the environment -----------------------------------------------------------------------

_lock = threading.Lock()
_sync: Client | None = None
_async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = weakref.WeakKeyDictionary()


def default_client() -> Client:
    """The blocking client of ``submit`` when none is bound: made once from the environment."""
    global _sync
    with _lock:
        if _sync is None:
            _sync = Client()
        return _sync


def default_async_client() -> AsyncClient:
    """The async client of ``asubmit`` when none is bound: one per event loop, from the environment."""
    loop = asyncio.get_running_loop()
    with _lock:
        client = _async.get(loop)
        if client is None:
            client = _async[loop] = AsyncClient()
        return client
