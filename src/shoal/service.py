"""What users may do, as the REST and gRPC adapters call it: ``TaskService``, ``ClusterService`` and
``StoreService``.

Both are thin over the store; the rules that belong to no single Redis call live here: which task types
exist in the cluster, batching of concurrent submits into one Lua call, and waiting for a task to end.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from shoal import validation, workflows
from shoal.batching import Coalescer
from shoal.cluster.admin import ClusterAdmin
from shoal.errors import IllegalTransition, InvalidInput, NoLiveNode, NotFound, StoreUnavailable, UnknownTaskType
from shoal.events import EventHub
from shoal.limits import FETCH, Limits, host_of
from shoal.liveness import liveness
from shoal.models import (
    DEFAULT_PRIORITY,
    AttemptOutcome,
    ClusterView,
    EventGap,
    NodeInfo,
    NodeRecord,
    Task,
    TaskEvent,
    TaskPage,
    TaskResult,
    TaskSpec,
    TaskState,
)
from shoal.signatures import Signature, check_call
from shoal.store import search
from shoal.store.limits import LimitState
from shoal.store.nodes import NodeRegistry
from shoal.store.signatures import SignatureStore
from shoal.store.stats import StoreStats, read_stats
from shoal.store.tasks import Created, NotRunnableHere, TaskStore
from shoal.throughput import Throughput
from shoal.validation import RefusedTask
from shoal.workflows import UnknownParent

if TYPE_CHECKING:
    from shoal.worker.executor import Ahead

#: Most tasks of a workflow one read shows.
MAX_WORKFLOW_READ = 2000

#: Most submits folded into one store call.
SUBMIT_BATCH = 500
#: How long the list of the cluster's task types is trusted before it is read again, in seconds.
TYPES_TTL = 1.0
#: How long a waited submit's task may run on the node that takes it before it is stored: one that ends
#: within this is stored with its end in one store call (``TaskService.submit_and_wait``).
RUN_AHEAD_S = 0.02
#: How long the store call of a task that ran ahead is made again while the store is unavailable.
STORE_RETRY_S = 30.0
T = TypeVar("T")


class TypeChecks(Protocol):
    """The submit-time checks of the task types a submitter knows (``shoal.worker.handlers.TaskTypes``)."""

    def validate(self, name: str, target: str, params: dict[str, Any]) -> None: ...


class LocalWorker(Protocol):
    """The worker of the node a ``TaskService`` serves (``shoal.worker.executor.Executor``)."""

    node: str
    retry_backoff: float

    def run_started(self, task: Task) -> None:
        """Run a task its submit started on this node."""

    def run_ahead(self, task: Task) -> Ahead | None:
        """Run a task not stored yet, now, if a slot is free (None: not run)."""

    def stop(self, task_id: str) -> None:
        """Cancel a running task without a report."""

    def runs(self, task_id: str) -> bool:
        """Whether the task is running here or reporting its end: a wait registered now hears of its end,
        from the report (read back for it) or from the end's event."""


class TaskService:
    """The TaskAPI of one node. Safe for any number of concurrent requests."""

    def __init__(
        self,
        *,
        store: TaskStore,
        registry: NodeRegistry,
        hub: EventHub,
        local_types: TypeChecks,
        alive_within: float,
        limits: Limits | None = None,
        limit_state: LimitState | None = None,
        type_requires: Mapping[str, dict[str, str]] | None = None,
        signatures: SignatureStore | None = None,
        worker: LocalWorker | None = None,
    ) -> None:
        self.store = store
        #: This node's worker, when it runs tasks: a submit that waits here has its task placed and started here
        #: when there is room, and run by it at once; its end comes back with the report (``Executor.waits``).
        self.worker = worker
        self.signatures = signatures or SignatureStore(store.redis, store.keys)
        self._signatures: dict[str, Signature] = {}
        self.limits = limits or Limits()
        self.limit_state = limit_state or LimitState(store.redis, store.keys)
        self.type_requires = type_requires or {}
        self.registry = registry
        self.hub = hub
        self.local_types = local_types
        self.alive_within = alive_within
        # Concurrent single submits go to the store together, many per Lua call (see shoal.batching).
        self._create: Coalescer[tuple[TaskSpec, str | None], tuple[Task, bool]] = Coalescer(
            self._create_each, most=SUBMIT_BATCH
        )
        self._settling: set[asyncio.Task[Any]] = set()  # tasks run ahead, being stored (``_run_ahead``)
        self._types: set[str] = set()
        self._types_here: set[str] = set()  # what this node runs, while it is a healthy member that runs tasks
        self._runners: builtins.list[NodeRecord] = []  # the live nodes that run tasks
        self._live = False  # whether a live node runs tasks
        self._beating = 0  # live nodes, task runners or not
        self._types_read = -math.inf
        self._types_lock = asyncio.Lock()
        self._throughput = Throughput()
        hub.on_ended.append(self._throughput.add)

    async def task_types(self) -> builtins.list[str]:
        async with self._types_lock:  # one read for a burst of submits, not one each
            if time.monotonic() - self._types_read > TYPES_TTL:
                await self._read_types()
        return sorted(self._types)

    async def function_types(self) -> builtins.list[str]:
        """The task types of ``task_types`` that run a Python function (``@shoal.task``)."""
        known = await self.task_types()
        return [t for t in known if t in self._signatures]

    async def _read_types(self) -> None:
        """The types of the live nodes that run tasks: a node started with ``--no-run-tasks`` beats with none,
        and one alone must not make a submit look like a request for an unknown type."""
        now, nodes = await self.registry.all_with_time()
        # read after the nodes: a node publishes its functions' signatures before it beats with their types
        self._signatures = await self.signatures.read()
        live = [n for n in nodes if liveness(n, now, self.alive_within).present]
        runners = [n for n in live if n.types]
        self._runners = runners
        self._types = {t for node in runners for t in node.types}
        here = next((n for n in nodes if self.worker is not None and n.name == self.worker.node), None)
        healthy = here is not None and here.run_tasks and liveness(here, now, self.alive_within).healthy
        self._types_here = set(here.types) if here is not None and healthy and not here.draining else set()
        self._beating = len(live)
        self._live = bool(runners)
        self._types_read = time.monotonic()

    async def _check_types(self, specs: Sequence[TaskSpec], *, batch: bool) -> None:
        """Refuse the first spec whose type no live node runs (as ``RefusedTask`` naming its index in a
        ``batch``), or the whole call when no live node runs tasks at all: then the cluster is unwell, not
        the request, and trying again later may work."""
        known = set(await self.task_types())
        if self._live and all(spec.type in known for spec in specs):
            return
        self._types_read = -math.inf  # a node may have just joined with it: look again before refusing
        known = set(await self.task_types())
        if not self._live:
            raise _no_runner(self._beating)
        for index, spec in enumerate(specs):
            if spec.type not in known:
                refusal = UnknownTaskType(spec.type, sorted(known))
                raise RefusedTask(index, refusal) if batch else refusal

    async def submit(self, spec: TaskSpec) -> tuple[Task, bool]:
        return await self._submit(spec)

    async def _submit(self, spec: TaskSpec, near: str | None = None) -> tuple[Task, bool]:
        """``submit``; ``near``: this node's name, to have the task placed and started here when there is room
        (``TaskStore.create``; this node's worker then runs it)."""
        await self._check_types([spec], batch=False)
        self._validate_locally(spec)
        return await self._store_one(spec, near)

    async def _store_one(self, spec: TaskSpec, near: str | None) -> tuple[Task, bool]:
        if spec.depends_on or spec.ref is not None:
            # a task with parents is stored alone: a parent that does not exist refuses the whole store call
            try:
                workflows.check_batch([spec])
                created = await self.store.create([self.with_defaults(spec)])
            except RefusedTask as exc:
                raise exc.error from None
            return created[0], 0 not in created.reused
        return await self._create((self.with_defaults(spec), near))

    def with_defaults(self, spec: TaskSpec) -> TaskSpec:
        """The spec with what its type's function asks of its submits (``@shoal.task(timeout_s=...)``) in the
        fields the submit did not name (``function_defaults``), then its type's required labels (config
        ``type_requires``) when it names none itself."""
        signature = self._signatures.get(spec.type)
        if signature is not None and signature.defaults:
            spec = function_defaults(spec, signature.defaults)
        if spec.requires or spec.type not in self.type_requires:
            return spec
        return replace(spec, requires=self.type_requires[spec.type])

    async def check(self, spec: TaskSpec) -> None:
        """Refuse a spec a submit would refuse (its type, its target and params as the type takes them),
        storing nothing: a schedule's task template is checked so when the schedule is added."""
        await self._check_types([spec], batch=False)
        self._validate_locally(spec)

    async def _create_each(
        self, submits: builtins.list[tuple[TaskSpec, str | None]]
    ) -> builtins.list[tuple[Task, bool]]:
        """The single submits gathered from one loop turn, stored in one call: each task, and whether it was
        stored now (not the earlier task of its idempotency key)."""
        created = await self.store.create([spec for spec, _ in submits], near=[near for _, near in submits])
        for k, task in enumerate(created):
            if self.worker is not None and task.state is TaskState.RUNNING and k not in created.reused:
                self.worker.run_started(task)  # started here by its submit (``_submit``'s ``near``)
        return [(task, k not in created.reused) for k, task in enumerate(created)]

    async def submit_many(self, specs: Sequence[TaskSpec]) -> Created:
        """Store every spec in one store call, in order, or none: the first spec refused (an unknown type, a
        target or params its type refuses) refuses the batch with ``RefusedTask`` naming its index."""
        validation.batch_size(len(specs))
        await self._check_types(specs, batch=True)
        for index, spec in enumerate(specs):
            validation.each(index, self._validate_locally, spec)
        workflows.check_batch(specs)
        try:
            return await self.store.create([self.with_defaults(s) for s in specs])
        except UnknownParent as exc:
            raise RefusedTask(exc.index, exc) from None

    async def workflow(self, workflow_id: str) -> builtins.list[Task]:
        """The tasks of a workflow (at most MAX_WORKFLOW_READ), oldest first, each WAITING one saying why."""
        return await self._explained(await self.store.workflow(workflow_id, MAX_WORKFLOW_READ))

    async def kill_workflow(self, workflow_id: str) -> dict[str, str]:
        """Kill every unfinished task of a workflow: the killed ones' ids, with the state each was in."""
        return await self.store.kill_workflow(workflow_id)

    def _validate_locally(self, spec: TaskSpec) -> None:
        """The checks of a spec whose type is known to run: the type's own, and a call's arguments against
        its function's signature (as published when the types were last read)."""
        self.local_types.validate(spec.type, spec.target, spec.params)
        self.check_call(spec)

    def check_call(self, spec: TaskSpec) -> None:
        """Refuse ``args``/``kwargs`` that the type's function would not take (a wrong count, an unknown or a
        missing argument), or that a type run by a handler, which takes none, is given."""
        signature = self._signatures.get(spec.type)
        if signature is not None:
            check_call(signature, spec.args, spec.kwargs)
        elif spec.args is not None or spec.kwargs is not None:
            raise InvalidInput(
                f"task type {spec.type!r} takes no args or kwargs: it is not a Python function made a task with "
                "@shoal.task (give it a target and params)"
            )

    async def get(self, task_id: str) -> Task:
        return (await self._explained([await self.store.get(task_id)]))[0]

    async def list(self, state: TaskState | None, limit: int, cursor: str | None) -> TaskPage:
        return await self._explained_page(await self.store.list(state, limit, cursor))

    async def search(
        self, state: TaskState | None, query: str, limit: int, cursor: str | None, prefix: str = ""
    ) -> tuple[TaskPage, bool]:
        page, complete = await search.search(self.store, state, query, limit, cursor, prefix=prefix)
        return await self._explained_page(page), complete

    async def search_names(
        self, state: TaskState | None, prefix: str, limit: int, cursor: str | None
    ) -> tuple[TaskPage, bool]:
        page, complete = await search.search_names(self.store, state, prefix, limit, cursor)
        return await self._explained_page(page), complete

    async def _explained(self, tasks: Sequence[Task]) -> builtins.list[Task]:
        """The tasks, each WAITING one held back by more than a free slot saying why in ``waiting_for`` (the
        store says only what it holds: a due time): no live node runs its type, or has the labels it
        requires, or a limit it is held to has no room."""
        if not any(t.state is TaskState.WAITING and t.waiting_for is None for t in tasks):
            return builtins.list(tasks)
        await self.task_types()
        reasons = await asyncio.gather(
            *(self._why_waiting(t) for t in tasks if t.state is TaskState.WAITING and t.waiting_for is None)
        )
        found = iter(reasons)
        return [
            replace(t, waiting_for=next(found)) if t.state is TaskState.WAITING and t.waiting_for is None else t
            for t in tasks
        ]

    async def _why_waiting(self, task: Task) -> str | None:
        runners = [n for n in self._runners if task.type in n.types or "*" in n.types]
        if not runners:
            return f"no live node runs type {task.type}"
        if task.requires and not any(all(n.labels.get(k) == v for k, v in task.requires.items()) for n in runners):
            return "no live node has " + ", ".join(f"{k}={v}" for k, v in task.requires.items())
        host = host_of(task.target) if task.type == FETCH else None
        limits = self.limits.applying(task.type, task.concurrency_key, host)
        if not limits and host is None:
            return None
        usage = await self.limit_state.usage(limits, host)
        if host is not None and usage[-1].hold_until is not None:
            return f"host {host} asked to wait until {_iso(usage[-1].hold_until)} (Retry-After)"
        for (name, limit), used in zip(limits, usage, strict=False):
            if limit.concurrency and used.running >= limit.concurrency:
                return f"concurrency limit {name} ({limit.concurrency} at once)"
            if limit.rate_per_s and used.tokens < 1:
                return f"rate limit {name} {limit.rate_per_s:g}/s"
        return None

    async def _explained_page(self, page: TaskPage) -> TaskPage:
        return replace(page, tasks=await self._explained(page.tasks))

    async def counts(self) -> dict[str, int]:
        return await self.store.counts()

    def throughput(self, seconds: int) -> dict[str, Any]:
        return self._throughput.series(seconds)

    async def kill(self, task_id: str) -> Task:
        await self.store.kill(task_id)
        return await self.store.get(task_id)

    async def kill_many(self, task_ids: builtins.list[str]) -> dict[str, bool]:
        return await self._each(task_ids, self.store.kill)

    async def delete(self, task_id: str) -> None:
        await self.store.delete(task_id)

    async def delete_many(self, task_ids: builtins.list[str]) -> dict[str, bool]:
        return await self._each(task_ids, self.store.delete)

    async def _each(self, task_ids: builtins.list[str], action: Callable[[str], object]) -> dict[str, bool]:
        outcome: dict[str, bool] = {}
        for task_id in task_ids:
            try:
                await action(task_id)  # type: ignore[misc]
                outcome[task_id] = True
            except (NotFound, IllegalTransition):
                outcome[task_id] = False
        return outcome

    async def result(self, task_id: str) -> TaskResult:
        return await self.store.result(task_id)

    async def wait(self, task_id: str, timeout_s: float) -> Task:
        return (await self.wait_result(task_id, timeout_s, result=False))[0]

    async def submit_and_wait(
        self, spec: TaskSpec, timeout_s: float, *, result: bool = True
    ) -> tuple[Task, bool, TaskResult | None]:
        """``submit``, then the task once it has ended or ``timeout_s`` has passed, with its result if asked.
        The read a wait starts with is left out while this node's worker runs the task, or while this node has
        heard of no task's end since before the submit: the task has not ended yet (a round trip to the store
        less, on the latency path).
        The task goes to this node when it runs tasks and has room, started as it is stored, and its end comes
        back with the worker's report: one round trip to the store at each end."""
        heard, began = self.hub.ends_heard, time.monotonic()
        await self._check_types([spec], batch=False)
        self._validate_locally(spec)
        ran = await self._run_ahead(spec, timeout_s)
        if ran is not None and ran[0].state.terminal:
            return ran[0], True, ran[1] if result else None
        task, stored = (ran[0], True) if ran else await self._store_one(spec, self.worker.node if self.worker else None)
        unended = None if task.state.terminal else heard  # an earlier task of its idempotency key may have ended
        left = max(0.0, timeout_s - (time.monotonic() - began)) if ran else timeout_s
        task, found = await self._wait_result(task.id, left, result=result, ends_heard=unended)
        return task, stored, found

    def _may_run_ahead(self, spec: TaskSpec) -> bool:
        """Whether this node may run ``spec`` before storing it: it is a healthy member that runs its type, and
        the spec is one a submit would start here (no parents, idempotency key, delay, required labels,
        limit or fetch host), so storing it started here is what the store would have done."""
        plain = not (
            spec.depends_on
            or spec.ref is not None
            or spec.idempotency_key
            or spec.run_at is not None
            or spec.delay_s is not None
            or spec.requires
            or spec.concurrency_key
            or spec.schedule
            or spec.tick is not None
        )
        here = self._types_here
        return (
            plain
            and spec.type != FETCH
            and spec.type not in self.limits.limited_types()
            and (spec.type in here or "*" in here)
        )

    async def _run_ahead(self, spec: TaskSpec, timeout_s: float) -> tuple[Task, TaskResult | None] | None:
        """Run a waited submit's task here at once, before it is stored, when this node may and has a free
        slot: one that ends within RUN_AHEAD_S (or ``timeout_s``) and succeeds is stored with its end in one
        store call, ended (a round trip is then one store call); any other is stored started here and its
        end reported as any task's. The task as stored then, with its result if it ended; None when it did not
        run here (the caller stores it as any submit). Storing goes on if the caller gives up."""
        spec = self.with_defaults(spec)
        if self.worker is None or not self._may_run_ahead(spec):
            return None
        task = self.store.unstored(spec, str(uuid.uuid4()), self.worker.node)
        ahead = self.worker.run_ahead(task)
        if ahead is None:
            return None
        settling = asyncio.create_task(self._settle_ahead(self.worker, spec, task, ahead, min(RUN_AHEAD_S, timeout_s)))
        self._settling.add(settling)  # held until done: it goes on if the caller gives up
        settling.add_done_callback(self._settling.discard)
        return await asyncio.shield(settling)

    async def _settle_ahead(
        self, worker: LocalWorker, spec: TaskSpec, task: Task, ahead: Ahead, window: float
    ) -> tuple[Task, TaskResult | None] | None:
        """Store a task run ahead as it stands after ``window`` (see ``_run_ahead``)."""
        began = time.monotonic()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(window):
                await asyncio.shield(ahead.ended)
        report = ahead.ended.result() if ahead.ended.done() else None  # it may have ended as the window closed
        ran_s = time.monotonic() - began
        try:
            if ahead.ended.done() and report is None:
                if ahead.began:  # stopped under way (the node stops, or lost the store): it is not run again
                    raise StoreUnavailable("this node stopped the task before it was stored; submit it again")
                return None  # it never began: stored as any submit
            if report is not None and report.outcome is AttemptOutcome.SUCCEEDED:
                ahead.taken()  # whatever the call says: the worker must not report it as well
                ended = await self._until_stored(
                    lambda: self.store.create_ended(
                        spec, task.id, worker.node, ran_s, report, backoff=worker.retry_backoff
                    )
                )
                return ended or await self.store.get_with_result(task.id)  # a result too big (failed), or a retry
            created = await self._until_stored(
                lambda: self.store.create([spec], ids=[task.id], near=[worker.node], ran=[ran_s])
            )
            ahead.stored()
            return created[0], None
        except NotRunnableHere:  # the master declared this node dead: nothing stored; stored as any submit
            worker.stop(task.id)
            ahead.taken()
            return None
        except BaseException:
            if not ahead.ended.done():
                worker.stop(task.id)  # running, and not in the store
            ahead.taken()
            raise

    @staticmethod
    async def _until_stored(call: Callable[[], Awaitable[T]]) -> T:
        """A store call for a task that ran already, made again while the store is unavailable (it is
        idempotent: a call whose reply was lost is answered by what it stored), for STORE_RETRY_S at most."""
        deadline, delay = time.monotonic() + STORE_RETRY_S, 0.05
        while True:
            try:
                return await call()
            except StoreUnavailable:
                if time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(2 * delay, 1.0)

    async def wait_result(
        self, task_id: str, timeout_s: float, *, result: bool = True
    ) -> tuple[Task, TaskResult | None]:
        """The task once it has ended or ``timeout_s`` has passed, with its result (read with it) if asked."""
        return await self._wait_result(task_id, timeout_s, result=result)

    async def _wait_result(
        self, task_id: str, timeout_s: float, *, result: bool, ends_heard: int | None = None
    ) -> tuple[Task, TaskResult | None]:
        deadline = time.monotonic() + timeout_s
        with self.hub.waiter(task_id) as changed:
            unread = ends_heard is not None and (  # see submit_and_wait
                ends_heard == self.hub.ends_heard or (self.worker is not None and self.worker.runs(task_id))
            )
            while True:
                changed.clear()
                if not unread:
                    task, found = await self.store.get_with_result(task_id, result=result)
                    if task.state.terminal or deadline - time.monotonic() <= 0:
                        return task, found
                unread = False
                remaining = deadline - time.monotonic()
                try:  # events may be lost: look at the store again at least every second
                    async with asyncio.timeout(min(remaining, 1.0)):
                        await changed.wait()
                except TimeoutError:
                    pass
                if changed.ended is not None:  # this node ran it and read it back as it ended
                    task, found = changed.ended
                    return task, found if result else None

    def watch(self, since: str | None = None) -> AsyncIterator[TaskEvent | EventGap]:
        return self.hub.watch(since)

    def close(self) -> None:
        self.hub.close()


#: The fields a function task's defaults may set, each with the value that means "not given" and its check.
_DEFAULTABLE: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "timeout_s": (None, validation.timeout),
    "max_retries": (0, validation.retries),
    "max_lost_attempts": (None, validation.lost_attempts),
    "result_ttl_s": (None, validation.result_ttl),
    "priority": (DEFAULT_PRIORITY, validation.priority),
    "requires": ({}, lambda v: validation.labels(v, "requires")),
}


def function_defaults(spec: TaskSpec, defaults: Mapping[str, Any]) -> TaskSpec:
    """``spec`` with ``defaults`` in the fields its submit did not name (for a spec built in code, those with
    their "not given" value); a default that is not valid (it comes from the store) is left out."""
    changes: dict[str, Any] = {}
    for name, (unset, read) in _DEFAULTABLE.items():
        named = name in spec.given if spec.given is not None else getattr(spec, name) != unset
        if name in defaults and not named:
            try:
                changes[name] = read(defaults[name])
            except InvalidInput:
                continue
    return replace(spec, **changes) if changes else spec


def _no_runner(beating: int) -> NoLiveNode:
    """``NoLiveNode`` (503 / UNAVAILABLE) that says why: no node beats, or only nodes that run no tasks."""
    if not beating:
        return NoLiveNode()
    return NoLiveNode(
        f"runs tasks: {beating} node(s) beat, none of them runs tasks (started with --no-run-tasks); start a "
        "node that runs tasks"
    )


class ClusterService:
    """The ClusterAPI of one node: the membership as the store records it, and this node's readiness."""

    def __init__(
        self,
        *,
        registry: NodeRegistry,
        alive_within: float,
        ready: Callable[[], tuple[bool, str]],
        admin: ClusterAdmin,
        hub: EventHub | None = None,
    ) -> None:
        self.registry = registry
        self.admin = admin
        self.hub = hub
        self.alive_within = alive_within
        self._ready = ready

    async def view(self) -> ClusterView:
        now, records = await self.registry.all_with_time()
        master, epoch = await self.registry.master()
        nodes = []
        for n in records:
            seen = liveness(n, now, self.alive_within)
            nodes.append(
                NodeInfo(
                    name=n.name,
                    host=n.host,
                    http=n.http,
                    grpc=n.grpc,
                    state=seen.state,
                    reason=n.reason if seen.verdict else f"{'rejoined' if n.state else 'joined'}; not yet verified",
                    incarnation=n.incarnation,
                    priority=n.priority,
                    draining=n.draining,
                    role="master" if n.name == master else "worker",
                    slots=n.slots,
                    running=n.running,
                    pid=n.pid,
                    last_beat=n.last_beat,
                    types=n.types,
                    cache=n.cache,
                    clock_skew=n.clock_skew,
                    labels=n.labels,
                    prefetch=n.prefetch,
                )
            )
        return ClusterView(master=master, epoch=epoch, nodes=nodes)

    async def hand_over(self, candidate: str) -> tuple[str, int]:
        return await self.admin.hand_over(candidate)

    async def rotate_token(self) -> tuple[str, dict[str, bool]]:
        return await self.admin.rotate_token()

    async def timeline(self, limit: int) -> builtins.list[dict[str, Any]]:
        return await self.registry.timeline(limit)

    def watch(self) -> AsyncIterator[dict[str, Any]]:
        if self.hub is None:
            return _nothing()
        return self.hub.watch_nodes()

    async def ready(self) -> tuple[bool, str]:
        ok, why = self._ready()
        if not ok:
            return ok, why
        try:
            master, _ = await self.registry.master()
        except Exception as exc:
            return False, f"store unreachable: {exc}"
        if master is None:
            return False, "no master elected yet"
        return True, "ready"


class StoreService:
    """The StoreAPI of one node: the store's figures, with the retention this node was started with."""

    def __init__(self, *, store: TaskStore, retention_s: float) -> None:
        self.store = store
        self.retention_s = retention_s

    async def stats(self) -> StoreStats:
        return await read_stats(self.store, self.retention_s)


async def _nothing() -> AsyncIterator[dict[str, Any]]:
    """The node events of a service built without a hub: none, ending at once."""
    return
    yield {}


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
