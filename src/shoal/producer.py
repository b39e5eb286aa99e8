"""``Producer``: submit tasks straight to the cluster's store, as Celery's and Dramatiq's clients write to
their broker.

A submit through the API crosses an HTTP or gRPC server; a producer that holds the store's credentials may
skip it and run the very script an API node runs (``shoal.store.tasks.TaskStore.create``): one round trip
to Redis per submit, with the same checks first (the spec's fields, a type some live node runs, the
built-in types' own checks, those of ``task_modules``), the same atomic write, events and placement. Use it
for trusted producers inside the cluster's network (a web app's backend, a cron job); give everyone else
the API and its token.

    >>> async with await Producer.connect("redis://10.0.0.5:6379/0", password_file=Path("/run/secrets/redis")) as p:
    ...     task = await p.submit("fetch", "https://example.org/")
    ...     task, result = await p.run("echo", "hello", timeout_s=10)
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from shoal import validation
from shoal._utils import cancel_and_wait
from shoal.config import NodeConfig
from shoal.errors import InvalidInput
from shoal.events import EventHub
from shoal.keys import Keys
from shoal.models import DEFAULT_MAX_LOST_ATTEMPTS, Task, TaskResult, TaskSpec, submitted_fields
from shoal.service import TaskService
from shoal.store.client import StoreClient
from shoal.store.nodes import NodeRegistry
from shoal.store.redis import connect, database_of, wait_until_up
from shoal.store.tasks import TaskStore
from shoal.worker.handlers import TaskTypes, Validator, echo, fetch

#: How long ``run`` waits for its task by default, in seconds.
DEFAULT_RUN_TIMEOUT_S = 60.0
#: Redis connections a producer may open: a producer sends few commands at once.
MAX_CONNECTIONS = 16


class TypeChecks:
    """The submit-time checks of the built-in types and of the types in ``modules``, as an API node runs them."""

    def __init__(self, modules: Iterable[str] = ()) -> None:
        self._checks: dict[str, Validator | None] = {"echo": echo.validate, "fetch": fetch.validate}
        loaded = TaskTypes()
        for module in modules:
            loaded.load_module(module)
        for name in loaded.names():
            known = loaded.get(name)
            self._checks[name] = known.validate if known is not None else None

    def validate(self, name: str, target: str, params: dict[str, Any]) -> None:
        check = self._checks.get(name)
        if check is not None:
            check(target, params)


class Producer:
    """Submits to one cluster's store. Safe for any number of concurrent calls on one event loop; build it
    with ``await Producer.connect(...)`` and close it with ``aclose`` (or ``async with``)."""

    def __init__(self, redis: StoreClient, tasks: TaskService) -> None:
        self._redis = redis
        self._tasks = tasks
        self._events: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        redis: str,
        *,
        cluster: str = NodeConfig.cluster,
        password_file: Path | None = None,
        max_lost_attempts: int = DEFAULT_MAX_LOST_ATTEMPTS,
        heartbeat_interval: float = NodeConfig.heartbeat_interval,
        dead_after: int = NodeConfig.dead_after,
        idempotency_window: float = NodeConfig.idempotency_window,
        task_modules: Sequence[str] = (),
    ) -> Producer:
        """Connect to the store at ``redis`` (a ``redis://``, ``rediss://``, ``unix://`` or
        ``redis+sentinel://`` URL, as nodes take it; the password from ``password_file`` keeps it out of the
        URL). ``cluster``, ``max_lost_attempts`` (the default of tasks submitted without one),
        ``heartbeat_interval``, ``dead_after`` and ``idempotency_window`` (seconds) must match the nodes'
        settings; ``task_modules`` adds the checks of the cluster's own types. Raises InvalidInput for a bad
        URL and StoreUnavailable when the store does not answer."""
        checks = TypeChecks(task_modules)
        client = connect(redis, name="shoal-producer", max_connections=MAX_CONNECTIONS, password_file=password_file)
        try:
            await wait_until_up(client, redis)
        except BaseException:
            await client.aclose()
            raise
        keys = Keys(cluster, db=database_of(client))
        store = TaskStore(
            client,
            keys,
            result_max_bytes=0,
            max_lost_attempts=max_lost_attempts,
            idempotency_window_s=idempotency_window,
        )
        tasks = TaskService(
            store=store,
            registry=NodeRegistry(client, keys),
            hub=EventHub(client, keys.task_events, keys.task_events_channel),
            local_types=checks,
            alive_within=heartbeat_interval * dead_after,
        )
        return cls(client, tasks)

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._events is not None:
            await cancel_and_wait(self._events)
        self._tasks.close()
        await self._redis.aclose()

    async def submit(
        self,
        type: str,
        target: str = "",
        name: str | None = None,
        params: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        max_retries: int | None = None,
        max_lost_attempts: int | None = None,
        memory_mb: int | None = None,
        cpu_s_limit: float | None = None,
        result_ttl_s: float | str | None = None,
        run_at: float | str | None = None,
        delay_s: float | str | None = None,
        idempotency_key: str | None = None,
        priority: int | None = None,
        requires: dict[str, str] | None = None,
        concurrency_key: str | None = None,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> Task:
        """Store a task (``name`` defaults to ``type``), checked as the API checks it: InvalidInput for a bad
        field, UnknownTaskType if no live node runs ``type``, NoLiveNode if no node runs tasks. ``result_ttl_s``
        (seconds or a duration such as ``"15m"``) keeps the ended task for less than the cluster's retention;
        ``run_at`` or ``delay_s`` hold it back until then, as the API's fields do. ``args`` and ``kwargs``: a
        function task's arguments, checked against the signature its nodes published."""
        spec = _spec(locals())
        task, _stored = await self._tasks.submit(spec)
        return task

    async def submit_many(self, specs: Iterable[TaskSpec | Mapping[str, Any]]) -> builtins.list[Task]:
        """Store up to ``shoal.validation.MAX_BATCH`` tasks in one atomic store call, in order, or none; each
        spec a ``TaskSpec`` or a mapping of the REST fields. The first refused spec raises with its ``index``."""
        checked = [validation.each(index, _as_spec, spec) for index, spec in enumerate(specs)]
        return await self._tasks.submit_many(checked)

    async def get(self, task_id: str) -> Task:
        return await self._tasks.get(task_id)

    async def result(self, task_id: str) -> TaskResult:
        return await self._tasks.result(task_id)

    async def wait(self, task_id: str, timeout_s: float) -> tuple[Task, TaskResult | None]:
        """The task once it has ended, or as it stands after ``timeout_s``, with its result if it has one."""
        await self._listen()
        return await self._tasks.wait_result(task_id, timeout_s)

    async def run(
        self, type: str, target: str = "", *, timeout_s: float = DEFAULT_RUN_TIMEOUT_S, **options: Any
    ) -> tuple[Task, TaskResult | None]:
        """Submit a task and wait for it to end (``options`` as ``submit`` takes them): the task as it stands
        after ``timeout_s`` at most, with its result if it has one."""
        await self._listen()
        spec = _spec({"type": type, "target": target, **options})
        task, _stored, found = await self._tasks.submit_and_wait(spec, timeout_s)
        return task, found

    async def _listen(self) -> None:
        """Hear the cluster's task events from the first wait on, so that a wait ends as its task does."""
        if self._events is None:
            hub = self._tasks.hub
            self._events = asyncio.create_task(hub.run(), name="shoal-producer-events")
            await asyncio.wait_for(hub.subscribed.wait(), 10)


def _spec(fields: dict[str, Any]) -> TaskSpec:
    return _as_spec({key: value for key, value in fields.items() if key != "self" and value is not None})


def _as_spec(spec: TaskSpec | Mapping[str, Any]) -> TaskSpec:
    """A spec checked as the API checks one, a ``TaskSpec`` built by hand included."""
    if isinstance(spec, TaskSpec):  # what a schedule sets is not a submit's to set
        data = submitted_fields(spec)
    elif isinstance(spec, Mapping):
        data = dict(spec)
    else:
        raise InvalidInput("each spec must be a TaskSpec or a mapping of its fields")
    data.setdefault("name", data.get("type"))
    return validation.task_spec(data)
