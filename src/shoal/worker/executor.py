"""The worker: runs the tasks placed on this node, at most ``slots`` at once, and obeys kill orders. Tasks
placed beyond the slots (its prefetch, see shoal.worker.prefetch) wait here for one, in the order placed.

It reads its inbox stream (run and kill orders) with a blocking XREADGROUP, so it wakes the moment the
master places something. The durable record of what is placed here is the task's state and the node's
assigned set, not the stream: on start, whatever an earlier life of this node left INQUEUE or RUNNING
is handed back to WAITING, so nothing is lost and nothing runs twice here. While it runs, a reconciler
(shoal.worker.reconcile) hands back what the store places here but whose run order was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, cast

from shoal._utils import cancel_and_wait
from shoal.batching import Coalescer
from shoal.models import AttemptOutcome, Footprint, Task, TaskResult
from shoal.store import redis as store_redis
from shoal.store.redis import BLOCK_MS
from shoal.store.tasks import Finish, Order, Report, TaskStore
from shoal.worker import prefetch
from shoal.worker.handlers import MAX_ERROR_CHARS, Output, TaskContext, TaskType, TaskTypes
from shoal.worker.limits import attempt_limits, not_applied
from shoal.worker.loopwatch import LoopWatch
from shoal.worker.metrics import AttemptMetrics
from shoal.worker.pool import ChildResult, ProcessPool
from shoal.worker.prefetch import PER_SLOT, Prefetch
from shoal.worker.reconcile import Reconciler
from shoal.workflows import fill_parents

log = logging.getLogger("shoal.worker.executor")

#: Errors that mean the store could not be reached, as opposed to a refused or broken call.
STORE_DOWN = (*store_redis.STORE_DOWN, OSError)
T = TypeVar("T")
#: A start of an attempt for the store: the task's id, and whether it retries a start whose reply was lost.
Start = tuple[str, bool]
#: How long a stopping worker waits for the submits of tasks it ran ahead to store them (or not).
DECIDE_S = 5.0
#: Most inbox orders taken at once.
INBOX_BATCH = 256
#: How a process-isolated attempt's end reads as an attempt outcome.
PROCESS_OUTCOMES = {
    "returned": AttemptOutcome.SUCCEEDED,
    "raised": AttemptOutcome.FAILED,
    "crashed": AttemptOutcome.CRASHED,
    "over limit": AttemptOutcome.OVER_LIMIT,
    "timed out": AttemptOutcome.TIMED_OUT,
}


class LocalWaits(Protocol):
    """The waits on this node for tasks' ends (the event hub): the worker has an ended task that one of them
    is for read back with its report and hands it over, so that the wait needs neither the end's event nor
    a read of its own (a round trip one task at a time)."""

    def waited(self, task_id: str) -> bool: ...

    def ended_here(self, task: Task, result: TaskResult | None) -> None: ...


class Ahead:
    """A task run before it is stored (``Executor.run_ahead``): ``ended`` is its attempt's report once it has
    one (None if it has none: stopped before its end, or ``began`` never); ``began``: its attempt began.
    The submit that ran it says what becomes of the report: ``stored`` (the task is in the store now: the
    worker reports as for any task) or ``taken`` (the submit stored the task with its end itself, or gave it
    up); ``decided`` is done once it has."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.ended: asyncio.Future[Report | None] = loop.create_future()
        self.decided: asyncio.Future[bool] = loop.create_future()  # True: the worker reports it
        self.began = False
        self.holds_slot = True  # taken for it when it was handed over; given back once, when its run ends

    def stored(self) -> None:
        if not self.decided.done():
            self.decided.set_result(True)

    def taken(self) -> None:
        if not self.decided.done():
            self.decided.set_result(False)

    async def report(self, report: Report | None) -> bool:
        """Hand over the attempt's end; whether the worker reports it itself."""
        if not self.ended.done():
            self.ended.set_result(report)
        return report is not None and await self.decided


def _take_now(slots: asyncio.Semaphore) -> bool:
    """Take a slot now or not at all: ``acquire`` returns without suspending while the semaphore is not
    locked (no slot taken, no one waiting), so it is run to its end here, outside the event loop."""
    if slots.locked():
        return False
    acquiring = slots.acquire()
    try:
        acquiring.send(None)
    except StopIteration:
        return True
    acquiring.close()  # cannot happen: it would have had to wait
    raise RuntimeError("a slot of an unlocked semaphore was not taken at once")


def _noted(error: str, note: str) -> str:
    """An attempt's error with a note on the limits it ran under, on a line of its own ('' and '' give '')."""
    return f"{error}\n{note}" if error and note else error or note


class Executor:
    """Owns this node's running tasks. ``run()`` is its loop; ``close()`` stops it and hands back work."""

    def __init__(
        self,
        *,
        store: TaskStore,
        types: TaskTypes,
        node: str,
        slots: int,
        retry_backoff: float,
        prefetch: int | None = None,
        reconcile_every: float = 5.0,
        pool: ProcessPool | None = None,
        metrics: AttemptMetrics | None = None,
        waits: LocalWaits | None = None,
    ) -> None:
        self.store = store
        self.waits = waits
        self.pool = pool
        self.metrics = metrics
        self.types = types
        self.node = node
        self.slots = asyncio.Semaphore(slots)
        #: Tasks to take beyond the slots, as the node's beats say (``prefetch``: the most; None: per slot).
        self.prefetch = Prefetch(slots, PER_SLOT * slots if prefetch is None else prefetch)
        self.retry_backoff = retry_backoff
        self.running: dict[str, asyncio.Task[None]] = {}
        self._ahead: dict[str, Ahead] = {}  # run before they are stored (``run_ahead``)
        self._undecided: set[Ahead] = set()  # of those, the ones whose submit has not said yet what is stored
        self._flushed: set[str] = set()  # running tasks whose report has gone to the store (see ``runs``)
        self.killed: set[str] = set()
        self.executing: set[str] = set()  # ids whose attempt is between its start and its end (not its report)
        self.completed = 0
        self.failed = 0
        self.last_progress = time.monotonic()
        self._closing = False
        self._hurry = asyncio.Event()
        self._stoppers: set[asyncio.Task[None]] = set()
        self._reread = False
        # Starts and reports of attempts go to the store in batches, one call per batch (see shoal.batching),
        # reports first: a start queued after the report of the attempt whose slot it took never overtakes it.
        self._calls: Coalescer[Report | Start, Finish | Task | None] = Coalescer(self._send)
        self.reconciler = Reconciler(store=store, node=node, worker=self, interval=reconcile_every)

    @property
    def busy(self) -> int:
        """Tasks that hold a slot: starting or running (not those queued for one, nor those reporting)."""
        return self.prefetch.held

    def __repr__(self) -> str:
        return f"<Executor {self.node} running={len(self.running)} completed={self.completed} failed={self.failed}>"

    async def recover(self) -> list[str]:
        """Hand back what an earlier life of this node held, then open the inbox."""
        handed_back = await self.store.requeue(self.node, "node restarted")
        if handed_back:
            log.warning("handed back %d task(s) left by this node's previous run", len(handed_back))
        await self.store.ensure_groups(self.node)
        return handed_back

    async def run(self) -> None:
        """Take orders from the inbox until cancelled, with the reconciler checking alongside."""
        checker = asyncio.create_task(self.reconciler.run(), name=f"reconcile {self.node}")
        try:
            await self._take_orders()
        finally:
            await cancel_and_wait(checker)

    async def _take_orders(self) -> None:
        # Orders are acknowledged with the next read, in its round trip. After a failed read, and at start
        # (an earlier run may have stopped before acknowledging), orders Redis delivered to this consumer
        # may never have been seen here: read this consumer's unacknowledged entries before blocking for
        # new ones. Taking an order twice is harmless: a task no longer placed here does not start.
        again, taken = True, list[Order]()
        while not self._closing:
            again, self._reread = again or self._reread, False
            try:
                orders = await self.store.read_orders(
                    self.node, again=again, count=INBOX_BATCH, block_ms=BLOCK_MS, taken=taken
                )
                again, taken = again and len(orders) == INBOX_BATCH, []
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                again = True
                log.warning("reading the inbox failed: %s; retrying", exc)
                await asyncio.sleep(0.5)
                continue
            self.last_progress = time.monotonic()
            for order in orders:
                for task_id in order.ids:
                    self._order(order.op, task_id)
            taken = orders
        with contextlib.suppress(Exception):  # else read again at the next start
            await self.store.ack_orders(self.node, taken)

    def _order(self, op: str, task_id: str) -> None:
        if op == "run" and task_id not in self.running:
            self.running[task_id] = asyncio.create_task(self._run(task_id), name=f"task {task_id}")
        elif op == "kill":
            self.stop(task_id)

    def run_started(self, task: Task) -> None:
        """Run ``task``, which its submit placed and started on this node (a submit waiting here: submit.lua),
        as if its run order had come and its start been made."""
        if task.id not in self.running:
            self.running[task.id] = asyncio.create_task(self._run(task.id, task), name=f"task {task.id}")

    def run_ahead(self, task: Task) -> Ahead | None:
        """Run ``task``, not stored yet, at once in a free slot, as if its submit had started it here: a submit
        waiting on this node stores it with its end in one call when it ends at once (``TaskService``), and
        stores it started here otherwise, before this worker reports it. None, and nothing run, when no slot
        is free now or the worker is stopping."""
        if self._closing or task.id in self.running or not _take_now(self.slots):
            return None
        ahead = self._ahead[task.id] = Ahead()
        self._undecided.add(ahead)
        ahead.decided.add_done_callback(lambda _: self._undecided.discard(ahead))
        runner = self.running[task.id] = asyncio.create_task(self._run(task.id, task), name=f"task {task.id}")
        runner.add_done_callback(lambda done: self._ran_ahead(task.id, ahead, done))
        return ahead

    def _ran_ahead(self, task_id: str, ahead: Ahead, runner: asyncio.Task[None]) -> None:
        """What ``_run`` leaves behind of a task run ahead, even one cancelled before it began."""
        self._ahead.pop(task_id, None)
        self._release(ahead)
        if not ahead.ended.done():
            ahead.ended.set_result(None)  # it did not run, or not to its end
        if self.running.get(task_id) is runner:
            del self.running[task_id]

    def _release(self, ahead: Ahead | None) -> None:
        """Give back the slot of an attempt, once (that of a task run ahead was taken when it was handed over)."""
        if ahead is None:
            self.slots.release()
        elif ahead.holds_slot:
            ahead.holds_slot = False
            self.slots.release()

    def runs(self, task_id: str) -> bool:
        """Whether the task is running here and its report has not gone to the store yet: a wait for it
        registered now is then answered by the report's read-back (``shoal.service.LocalWorker``)."""
        return task_id in self.running and task_id not in self._flushed

    def stop(self, task_id: str) -> None:
        """Cancel a running task without reporting it: it was killed, or the cluster gave it to another node."""
        task = self.running.get(task_id)
        if task is not None:
            self.killed.add(task_id)
            # Kept until done: one cancel can be lost inside a store call (see cancel_and_wait).
            stopper = asyncio.create_task(cancel_and_wait(task))
            self._stoppers.add(stopper)
            stopper.add_done_callback(self._stoppers.discard)

    def fence(self) -> list[str]:
        """Stop, without a report, every attempt still executing (one that only waits to report its end is
        left to do so): this node lost the store long enough that the master may run them elsewhere."""
        ids = sorted(self.executing)
        for task_id in ids:
            self.stop(task_id)
        return ids

    def reread(self) -> None:
        """Read the inbox's delivered but unacknowledged orders again at the next read."""
        self._reread = True

    async def _run(self, task_id: str, started: Task | None = None) -> None:
        """Start and run the attempt in a slot, then report its end: a slot is for running work, and the next
        task may start while the report is on its way (the master places no more here than the capacity).
        The report is queued before the slot is given back, so the next start reaches the store after it
        (``_send``): the store never shows more tasks running here than the slots.
        ``started``: the task as its submit started it here already (or will store it: ``run_ahead``)."""
        ahead = self._ahead.get(task_id)  # its slot taken already
        report = None
        try:
            if ahead is None and not await self._slot_for(task_id):
                return
            reported: asyncio.Future[Finish | Task | None] | None = None
            try:
                if self._closing:
                    return  # taken beyond the slots, not started: ``close`` hands it back with the rest
                self.prefetch.taken(task_id)
                if ahead is not None:
                    ahead.began = True
                try:
                    report = await self._attempt(task_id, started)
                finally:
                    self.prefetch.freed(task_id, ended=report is not None)
                if report is not None and (ahead is None or await ahead.report(report)):
                    reported = self._calls.put(report)  # queued while the slot is held: ahead of the next start
            finally:
                self._release(ahead)
            if reported is not None and report is not None:
                await self._report(report, reported)
            elif report is not None:  # stored with its end by its submit
                self._count(report)
        except asyncio.CancelledError:
            if task_id not in self.killed and not self._closing:
                raise
        except Exception:
            log.exception("task %s: unexpected error in the worker", task_id)
        finally:
            self.running.pop(task_id, None)
            self._flushed.discard(task_id)
            self.killed.discard(task_id)
            self.last_progress = time.monotonic()

    async def _slot_for(self, task_id: str) -> bool:
        """Take a slot; or, after waiting ``prefetch.GIVE_BACK_S`` for one, hand the task back (False)."""
        try:
            async with asyncio.timeout(prefetch.GIVE_BACK_S):
                await self.slots.acquire()
            return True
        except TimeoutError:
            pass
        self.prefetch.on_change()  # its tasks run long: the node says so now, so the task is not placed here again
        reason = f"waited {prefetch.GIVE_BACK_S:g}s for a slot on {self.node}"
        back = await self._persist(
            "handing back",
            lambda: self.store.hand_back(self.node, [task_id], reason, outcome=AttemptOutcome.HANDED_BACK),
        )
        if back:
            log.info("task %s: handed back for re-placement: %s", task_id, reason)
        return False

    async def _attempt(self, task_id: str, started: Task | None = None) -> Report | None:
        """Start the task (unless it is ``started`` already) and run one attempt of it: its report, or None when
        it may not start."""
        tries = 0

        def begin() -> Awaitable[Finish | Task | None]:
            nonlocal tries
            tries += 1  # a retry may follow a start whose reply was lost: then the task is already ours
            return self._calls((task_id, tries > 1))

        task = started or cast(Task | None, await self._persist("starting", begin))
        if task is None:
            return None  # killed, deleted or re-placed before it could start
        attempt = task.attempts
        task_type = self.types.get(task.type)
        parents: dict[str, Any] = {}
        if task.depends_on:  # one read of its parents' results, which its arguments may name
            parents = await self._persist("reading the parents of", lambda: self.store.parent_values(task.depends_on))
        ctx = TaskContext(
            task_id=task.id,
            name=task.name,
            type=task.type,
            target=task.target,
            params=task.params,
            attempt=attempt,
            node=self.node,
            cancelled=asyncio.Event(),
            args=fill_parents(task.args or [], parents),
            kwargs=fill_parents(task.kwargs or {}, parents),
            parents=parents,
        )
        self.executing.add(task_id)
        try:
            outcome, error, output, footprint = await self._execute(task_type, task, ctx)
        finally:
            self.executing.discard(task_id)
        result = None
        if output is not None:
            result = TaskResult(
                task.id, output.code, self.node, attempt, time.time(), output.meta, 0, output.value, output.has_value
            )
        if self.metrics is not None:
            self.metrics.record(task.type, footprint)
        return Report(task_id, attempt, outcome, error, result, footprint)

    async def _send(self, calls: list[Report | Start]) -> list[Finish | Task | None]:
        """One batch of reports and starts, in one store call; their answers in the order of ``calls``."""
        reports = [c for c in calls if isinstance(c, Report)]
        starts = [c for c in calls if not isinstance(c, Report)]
        self._flushed.update(r.task_id for r in reports)
        waits = self.waits  # the reported tasks that a wait on this node is for: their reports read them back
        read_back = set() if waits is None else {r.task_id for r in reports if waits.waited(r.task_id)}
        ended, begun = await self.store.finish_and_begin(
            self.node, reports, starts, backoff=self.retry_backoff, read_back=read_back
        )
        answers = iter(ended), iter(begun)
        return [next(answers[0]) if isinstance(c, Report) else next(answers[1]) for c in calls]

    async def _report(self, report: Report, sent: Awaitable[Finish | Task | None]) -> None:
        """Record the attempt's end: ``sent``, its report queued already, and again until the store takes it."""
        finish = cast(Finish, await self._persist("reporting", lambda: self._calls(report), first=sent))
        if finish.ended is not None and self.waits is not None:
            self.waits.ended_here(*finish.ended)
        self._count(report)
        if finish.verdict == "duplicate":
            log.info(
                "task %s: attempt %d finished after the task moved on (%s); kept beside it as a late result",
                report.task_id,
                report.attempt,
                finish.state,
            )

    def _count(self, report: Report) -> None:
        if report.outcome is AttemptOutcome.SUCCEEDED:
            self.completed += 1
        else:
            self.failed += 1

    async def _execute(
        self, task_type: TaskType | None, task: Task, ctx: TaskContext
    ) -> tuple[AttemptOutcome, str, Output | None, Footprint]:
        """Run one attempt where its type says: in a worker process of the pool, or on this event loop.

        A process-isolated attempt runs under the task's ``memory_mb`` and ``cpu_s_limit`` held to its type's
        bounds (see shoal.worker.limits); its error says when the task asked for more. Inline attempts report
        their wall time and how long they held the event loop (a LoopWatch); their CPU and memory are the
        node's own, and a figure for them would be wrong, as would limits. A kill (CancelledError) returns
        from here only once the work has stopped.
        """
        if task_type is None:
            error = f"LookupError: task type {task.type!r} is not registered on node {self.node}"
            return AttemptOutcome.FAILED, error, None, Footprint()
        if task_type.isolation == "process" and self.pool is not None:
            limits = attempt_limits(
                task,
                task_type,
                node=self.node,
                node_memory_mb=self.pool.memory_mb,
                node_cpu_s_limit=self.pool.cpu_s_limit,
            )
            if limits.note:
                log.info("task %s: %s", task.id, limits.note)
            done: ChildResult = await self.pool.run(
                task_type.handler,
                ctx,
                memory_mb=limits.memory_mb,
                cpu_s_limit=limits.cpu_s_limit,
                timeout=task.timeout_s,
            )
            return PROCESS_OUTCOMES[done.kind], _noted(done.error, limits.note), done.value, done.footprint
        started, watch = time.monotonic(), LoopWatch(task_type.run(ctx), task_type.name)
        outcome, error = AttemptOutcome.SUCCEEDED, ""
        output: Output | None = None
        try:
            async with asyncio.timeout(task.timeout_s):
                output = await watch
        except TimeoutError:
            outcome, error = AttemptOutcome.TIMED_OUT, f"timed out after {task.timeout_s:g}s"
        except asyncio.CancelledError:
            ctx.cancelled.set()
            raise
        except Exception as exc:
            outcome, error = AttemptOutcome.FAILED, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        footprint = Footprint(wall_s=time.monotonic() - started, loop_blocked_s=watch.blocked_s or None)
        return outcome, _noted(error, not_applied(task, task_type.name)), output, footprint

    async def _persist(self, what: str, call: Callable[[], Awaitable[T]], first: Awaitable[T] | None = None) -> T:
        """Make a store call until it gets through: a task must not be stranded by a Redis restart. ``first``:
        the call made already, awaited before any other.

        Only connection errors are retried; the scripts are atomic, so a call either happened or not (a
        report whose reply was lost comes back as a duplicate of itself, which is recorded and harmless).
        """
        delay = 0.1
        while True:
            try:
                return await (call() if first is None else first)
            except STORE_DOWN as exc:
                first = None
                if self._closing:
                    raise
                log.warning("%s a task failed: %s; retrying in %.1fs", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 2.0)

    async def drop_all(self) -> None:
        """Stop every running task without reporting: the master has given them to other nodes."""
        tasks = list(self.running.items())
        for task_id, _ in tasks:
            self.killed.add(task_id)
        await asyncio.gather(*(cancel_and_wait(t) for _, t in tasks))
        if tasks:
            log.warning("dropped %d task(s) that the cluster re-placed elsewhere", len(tasks))

    def hurry(self) -> None:
        """End the grace period of ``close`` now."""
        self._hurry.set()

    async def close(self, grace: float) -> None:
        """Stop taking orders, let running tasks finish for up to ``grace`` seconds, hand back the rest."""
        self._closing = True
        pending = list(self.running.values())
        if pending:
            log.info("waiting up to %gs for %d running task(s)", grace, len(pending))
            hurry: asyncio.Future[Any] = asyncio.ensure_future(self._hurry.wait())
            everything: asyncio.Future[Any] = asyncio.gather(*pending, return_exceptions=True)
            await asyncio.wait(
                [everything, hurry],
                timeout=grace,
                return_when=asyncio.FIRST_COMPLETED,
            )
            hurry.cancel()
            await asyncio.gather(*(cancel_and_wait(t) for t in pending if not t.done()))
        if self._undecided:  # tasks run ahead whose submit may be storing them started here: then handed back too
            await asyncio.wait([a.decided for a in self._undecided], timeout=DECIDE_S)
        handed_back = await self.store.requeue(
            self.node, "node stopped before the task finished", outcome=AttemptOutcome.HANDED_BACK
        )
        if handed_back:
            log.warning("handed back %d unfinished task(s) for other nodes", len(handed_back))
