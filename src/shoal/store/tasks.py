"""Tasks in Redis: create, read, list, and every state change through one Lua script each.

Safe to share between all coroutines of a node: it holds only the connection pool and key names.
"""

from __future__ import annotations

import builtins
import time
import uuid
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shoal.errors import IllegalTransition, ResultNotFound, StaleEpoch, TaskNotFound, WorkflowNotFound
from shoal.keys import SCHEDULER_GROUP, WORKER_GROUP, Keys
from shoal.limits import FETCH, host_of
from shoal.models import (
    DEFAULT_MAX_LOST_ATTEMPTS,
    DEFAULT_PRIORITY,
    Attempt,
    AttemptOutcome,
    Footprint,
    LateResult,
    Task,
    TaskPage,
    TaskResult,
    TaskSpec,
    TaskState,
    record_dict,
    value_code,
)
from shoal.store.scripts import Scripts
from shoal.store.task_events import EVENT_RETENTION
from shoal.workflows import UnknownParent, forms_workflow, with_ids

#: Late results (reports of superseded attempts) kept per task, the latest ones; each is at most
#: result_max_bytes.
KEEP_LATE_RESULTS = 10
#: How long a submit's idempotency_key keeps answering with the task it made, by default.
DEFAULT_IDEMPOTENCY_WINDOW_S = 86400.0


@dataclass(frozen=True, slots=True)
class Finish:
    """What finish.lua decided: ``done`` (terminal), ``retry``, ``duplicate`` (a late report) or ``gone``;
    ``ended``: the ended task and its result, for a report whose task was asked back (``finish_many``)."""

    verdict: str
    state: str | None = None
    ended: tuple[Task, TaskResult | None] | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """How one attempt ended, as a node reports it (see ``TaskStore.finish``)."""

    task_id: str
    attempt: int
    outcome: str
    error: str = ""
    result: TaskResult | None = None
    footprint: Footprint | None = None


class GroupMissing(Exception):
    """A pending stream has lost the scheduler's consumer group (the stream was removed since)."""


@dataclass(frozen=True, slots=True)
class Queued:
    """An entry of a pending stream: the WAITING task it queues, and what placing it needs (enqueue in
    _lib.lua): its priority, the labels it requires, its concurrency key and a fetch's host."""

    entry: str
    task_id: str
    priority: int = DEFAULT_PRIORITY
    requires: tuple[tuple[str, str], ...] = ()
    concurrency_key: str | None = None
    host: str | None = None


@dataclass(frozen=True, slots=True)
class Offer:
    """A task offered to place.lua: ``nodes`` the 1-based indexes of the nodes it may go to as a comma list
    ('' = any), ``limits`` the limits it is held to, one per line (kind TAB name TAB number; see place.lua)."""

    task_id: str
    entry: str
    type: str
    nodes: str = ""
    limits: str = ""


def _queued(entries: Any) -> builtins.list[Queued]:
    """Stream entries as read; an entry deleted while unacknowledged comes back without fields (skipped)."""
    out = []
    for e, f in entries:
        if not f or b"id" not in f:
            continue
        if len(f) == 1:  # the common case: nothing but the id
            out.append(Queued(e.decode(), f[b"id"].decode()))
            continue
        req = f.get(b"r")
        out.append(
            Queued(
                e.decode(),
                f[b"id"].decode(),
                priority=int(f.get(b"p") or DEFAULT_PRIORITY),
                requires=tuple(sorted(orjson.loads(req).items())) if req else (),
                concurrency_key=_s(f.get(b"k")),
                host=_s(f.get(b"h")),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Order:
    """One entry of a node's inbox: ``op`` "run" (``ids``: the tasks placed on it) or "kill" (one id)."""

    entry: bytes
    op: str
    ids: builtins.list[str]


class NotRunnableHere(Exception):
    """A task its node ran before storing it was not stored: the master declared that node dead or rejected
    it (``state``), and hands back its work."""

    def __init__(self, node: str, state: str) -> None:
        super().__init__(f"node {node} is {state}: it may not hold tasks")
        self.node, self.state = node, state


class Created(builtins.list[Task]):
    """The tasks a submit answers with, in order; ``reused``: the positions that name the earlier task of
    their idempotency key (stored before, or earlier in the same call) instead of a task stored now."""

    reused: frozenset[int] = frozenset()


class HandedBack(builtins.list[str]):
    """The ids a requeue sent back to WAITING; ``quarantined``: those that ended RUNTIME_ERROR instead,
    their lost attempts having reached their ``max_lost_attempts``."""

    quarantined: tuple[str, ...] = ()


#: The terminal states, in a fixed order (their indexes are read together).
FINISHED_STATES = (TaskState.SUCCEED, TaskState.RUNTIME_ERROR, TaskState.KILLED)


class TaskStore:
    """Reads and atomic writes of tasks for one cluster.

    ``max_lost_attempts`` is the cluster's default for tasks submitted without one (it is stored with each
    task, so later changes of the default do not apply to tasks already stored).
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        result_max_bytes: int,
        max_lost_attempts: int = DEFAULT_MAX_LOST_ATTEMPTS,
        idempotency_window_s: float = DEFAULT_IDEMPOTENCY_WINDOW_S,
        event_retention: int = EVENT_RETENTION,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = Scripts(redis, event_retention=event_retention)
        self.result_max_bytes = result_max_bytes
        self.max_lost_attempts = max_lost_attempts
        self.idempotency_window_s = idempotency_window_s

    async def _run(self, script: str, *args: Any) -> builtins.list[Any]:
        reply: builtins.list[Any] = await self.scripts.run(script, self.keys.prefix, *args)
        return [v.decode() if isinstance(v, bytes) else v for v in reply] if isinstance(reply, list) else reply

    # -- users' writes ---------------------------------------------------------------------------

    async def create(
        self,
        specs: Sequence[TaskSpec],
        ids: Sequence[str] | None = None,
        near: Sequence[str | None] = (),
        ran: Sequence[float | None] = (),
    ) -> Created:
        """Store the tasks, in one atomic call however many there are: each is placed at once on a node of
        the master's roster that has room (INQUEUE), or queued for the master to place (WAITING). Per task,
        ``near`` may name the node that submits it and waits for it: placed there, it is started there too
        (RUNNING, its first attempt open, no run order sent; see submit.lua), for that node to run; ``ran``, how
        many seconds that node has run it already (it is then stored started there whatever room the roster
        gives; see ``create_ended``). A spec whose idempotency key made a task within the window that still
        exists gets that task instead, and so does one whose given id (``ids``: a schedule's tick) names a task
        stored already."""
        given = ids is not None
        ids = list(ids) if ids is not None else [str(uuid.uuid4()) for _ in specs]
        specs = with_ids(specs, ids)  # a batch's refs (depends_on, argument placeholders) as the ids given here
        near, ran = near or [None] * len(specs), ran or [None] * len(specs)
        reply = await self._run("submit", *self._submit_args(specs, ids, given, near, ran))
        if reply[0] == "missing":
            raise UnknownParent(int(reply[1]), str(reply[2]))
        if reply[0] == "refused":
            raise NotRunnableHere(str(near[int(reply[1])]), str(reply[2]))
        return await self._created(specs, ids, near, ran, reply)

    async def create_ended(
        self, spec: TaskSpec, task_id: str, node: str, ran_s: float, report: Report, *, backoff: float = 1.0
    ) -> tuple[Task, TaskResult | None] | None:
        """Store a task that ``node`` ran before storing it, and its attempt's end, in one atomic call: as
        ``create`` with ``ran`` (stored started on ``node``), then ``finish_many`` of ``report``. The task as it
        ended, with its result; None when the attempt's end did not end it (a result over the size limit fails
        the attempt, which may be retried), or when the task was stored by an earlier call (a retry of one
        whose reply was lost: nothing is written twice). ``spec`` is a plain one: no parents, no idempotency
        key. Raises NotRunnableHere, having stored nothing, when the master declared ``node`` dead or rejected it."""
        submit = self._submit_args([spec], [task_id], True, [node], [ran_s])
        finish = self._finish_args(node, [report], backoff, {task_id})
        created, (reply,) = await self.scripts.run_steps("submit_finish", self.keys.prefix, submit, finish)
        if created[0] == b"refused":
            raise NotRunnableHere(node, created[2].decode())
        return _finish(task_id, reply).ended

    def _submit_args(
        self,
        specs: Sequence[TaskSpec],
        ids: Sequence[str],
        given: bool,
        near: Sequence[str | None],
        ran: Sequence[float | None],
    ) -> builtins.list[Any]:
        """submit.lua's arguments (after the prefix) for ``specs``, their refs resolved to ``ids`` already."""
        args: builtins.list[Any] = [len(specs), max(1, round(self.idempotency_window_s * 1000))]
        for task_id, spec, node, ran_s in zip(ids, specs, near, ran, strict=True):
            lost = self._most_lost(spec)
            timeout = "" if spec.timeout_s is None else repr(spec.timeout_s)
            params = orjson.dumps(spec.params).decode()
            args += [task_id, spec.name, spec.type, spec.target, params, timeout, spec.max_retries, lost]
            cpu = "" if spec.cpu_s_limit is None else repr(spec.cpu_s_limit)
            args += ["" if spec.memory_mb is None else spec.memory_mb, cpu]
            args.append("" if spec.result_ttl_s is None else repr(spec.result_ttl_s))
            args += [
                "" if spec.run_at is None else repr(spec.run_at),
                "" if spec.delay_s is None else repr(spec.delay_s),
                spec.idempotency_key or "",
                "" if spec.priority == DEFAULT_PRIORITY else spec.priority,
                orjson.dumps(spec.requires).decode() if spec.requires else "",
                spec.concurrency_key or "",
                (host_of(spec.target) or "") if spec.type == FETCH else "",
                spec.schedule or "",
                "" if spec.tick is None else repr(spec.tick),
                "1" if given else "",
                "" if spec.args is None else orjson.dumps(spec.args).decode(),
                "" if spec.kwargs is None else orjson.dumps(spec.kwargs).decode(),
                node or "",
                "" if ran_s is None else repr(ran_s),
            ]
        # then: per task its parents' ids and on_parent_failure, and a flag
        for spec in specs:
            args += [",".join(spec.depends_on), "" if spec.on_parent_failure == "kill" else spec.on_parent_failure]
        args.append("1" if forms_workflow(specs) else "")
        return args

    async def _created(
        self,
        specs: Sequence[TaskSpec],
        ids: Sequence[str],
        near: Sequence[str | None],
        ran: Sequence[float | None],
        reply: builtins.list[Any],
    ) -> Created:
        """The tasks as submit.lua stored them (its ``reply``), as ``create`` answers."""
        created = float(reply[0])
        placed_on, priors = reply[2::3], reply[3::3]
        most_lost = [self._most_lost(spec) for spec in specs]
        started_here = [bool(node) and node == wanted for node, wanted in zip(placed_on, near, strict=True)]

        tasks = [
            _as_stored(task_id, spec, lost, node or None, created - (ran_s or 0.0), started)
            for task_id, spec, lost, node, started, ran_s in zip(
                ids, specs, most_lost, placed_on, started_here, ran, strict=True
            )
        ]
        if forms_workflow(specs):  # as stored: waiting for parents, or killed at once for one, and in which workflow
            stored = {t.id: t for t in await self.get_many(ids)}
            tasks = [stored.get(t.id, t) for t in tasks]
        reused = [k for k, prior in enumerate(priors) if prior]
        if reused:
            earlier = {t.id: t for t in await self.get_many([priors[k] for k in reused])}
            for k in reused:  # gone since the script ran (deleted at once): as a get of it would say
                tasks[k] = earlier.get(priors[k]) or await self.get(priors[k])
        answer = Created(tasks)
        answer.reused = frozenset(reused)
        return answer

    def unstored(self, spec: TaskSpec, task_id: str, node: str) -> Task:
        """The task ``spec`` as ``create`` would answer it stored started on ``node``, without storing it: for
        a node that runs a task before storing it (``create_ended``)."""
        return _as_stored(task_id, spec, self._most_lost(spec), node, time.time(), started=True)

    def _most_lost(self, spec: TaskSpec) -> int:
        """The task's max_lost_attempts as stored: its own, else the cluster's default."""
        return self.max_lost_attempts if spec.max_lost_attempts is None else spec.max_lost_attempts

    async def kill(self, task_id: str, reason: str = "killed by user") -> TaskState:
        """Kill a non-terminal task; return the state it was in."""
        reply = await self._run("kill", task_id, reason)
        if reply[0] == "gone":
            raise TaskNotFound(task_id)
        if reply[0] == "illegal":
            raise IllegalTransition(task_id, reply[1], "KILLED")
        return TaskState[reply[1]]

    async def delete(self, task_id: str) -> None:
        reply = await self._run("delete", task_id)
        if reply[0] == "gone":
            raise TaskNotFound(task_id)

    # -- workflows ---------------------------------------------------------------------------------

    async def workflow(self, workflow_id: str, most: int) -> builtins.list[Task]:
        """The tasks of a workflow the store still keeps (at most ``most``, in the order they were made);
        raise NotFound when it keeps none."""
        members: Any = await self.redis.smembers(self.keys.workflow(workflow_id))
        ids = [m.decode() for m in members]
        seqs = dict(zip(ids, await self.field_of(ids, "seq"), strict=True))
        ids = sorted((i for i in ids if seqs[i]), key=lambda i: int(seqs[i]))[:most]
        tasks = await self.get_many(ids)
        if not tasks:
            raise WorkflowNotFound(workflow_id)
        return tasks

    async def kill_workflow(self, workflow_id: str, reason: str = "workflow killed by user") -> dict[str, str]:
        """Kill every unfinished task of a workflow; return the killed ones' ids with the state each was in.
        Raise NotFound when the store keeps no task of it."""
        reply = await self._run("workflow_kill", workflow_id, reason)
        if reply[0] == "gone":
            raise WorkflowNotFound(workflow_id)
        return {task_id: state for state, task_id in zip(reply[1::2], reply[2::2], strict=True)}

    async def parent_values(self, task_ids: Sequence[str]) -> dict[str, Any]:
        """Each parent's result as its child sees it (``ctx.parents``): a function's value, else the code;
        None for a parent without a result (it ended otherwise, for a child that runs anyway)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hget(self.keys.task(task_id), "result")
            raws = await pipe.execute()
        values: dict[str, Any] = {}
        for task_id, raw in zip(task_ids, raws, strict=True):
            data = orjson.loads(raw) if raw else None
            values[task_id] = None if data is None else data["value"] if "value" in data else data.get("code")
        return values

    # -- reads -----------------------------------------------------------------------------------

    async def get(self, task_id: str) -> Task:
        return (await self.get_with_result(task_id, result=False))[0]

    async def get_with_result(self, task_id: str, *, result: bool = True) -> tuple[Task, TaskResult | None]:
        """The task, and its result if it has one (None otherwise, or when ``result`` is False), in one
        round trip: a caller that waited for the end answers with both."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.task(task_id))
            pipe.lrange(self.keys.attempts(task_id), 0, -1)
            pipe.lrange(self.keys.dupes(task_id), 0, -1)
            pipe.smembers(self.keys.children(task_id))
            if result:
                pipe.get(self.keys.result(task_id))
            fields, attempts, late, children, *legacy = await pipe.execute()
        if not fields:
            raise TaskNotFound(task_id)
        task, found = _with_result(task_id, fields, attempts, late, children, legacy[0] if legacy else None)
        return task, found if result else None

    async def get_many(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """The tasks that still exist, in the order asked for."""
        if not task_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hgetall(self.keys.task(task_id))
                pipe.lrange(self.keys.attempts(task_id), 0, -1)
                pipe.lrange(self.keys.dupes(task_id), 0, -1)
            replies = await pipe.execute()
        rows = zip(task_ids, replies[::3], replies[1::3], replies[2::3], strict=True)
        return [_task(task_id, f, a, late) for task_id, f, a, late in rows if f]

    async def list(self, state: TaskState | None, limit: int, cursor: str | None) -> TaskPage:
        """Newest first, from the state's index (all: the six merged); the cursor is the last sequence
        number seen."""
        total, rows = await self.newest(state, f"({cursor}" if cursor else "+inf", limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        tasks = await self.get_many([task_id for task_id, _ in rows])
        next_cursor = str(rows[-1][1]) if more and rows else None
        return TaskPage(tasks=tasks, total=total, next_cursor=next_cursor)

    async def newest(self, state: TaskState | None, top: str, count: int) -> tuple[int, builtins.list[tuple[str, int]]]:
        """How many tasks are in ``state`` (None: in all), and the newest ``count`` of them below ``top``
        (``+inf``, or ``(N``: sequence numbers below N), as (id, sequence number), newest first."""
        states = [s.name for s in TaskState] if state is None else [state.name]
        reply = await self._run("page", top, count, *states)
        ids, seqs = reply[1::2], reply[2::2]
        return int(reply[0]), [(str(i), int(s)) for i, s in zip(ids, seqs, strict=True)]

    async def counts(self) -> dict[str, int]:
        """How many tasks are in each state, and in all."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for state in TaskState:
                pipe.zcard(self.keys.state_index(state.name))
            replies = await pipe.execute()
        counts = {state.name: int(n) for state, n in zip(TaskState, replies, strict=True)}
        counts["total"] = sum(counts.values())
        return counts

    async def result(self, task_id: str) -> TaskResult:
        """The stored result: a field of the task's hash (a key of its own in earlier versions, still read)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self.keys.task(task_id), *_RESULT_FIELDS)
            pipe.get(self.keys.result(task_id))
            pipe.llen(self.keys.dupes(task_id))
            values, legacy, dupes = await pipe.execute()
        fields = {name.encode(): v for name, v in zip(_RESULT_FIELDS, values, strict=True) if v is not None}
        if b"state" not in fields:
            raise TaskNotFound(task_id)
        raw = fields.get(b"result") or legacy
        if not raw:
            raise ResultNotFound(task_id, fields[b"state"].decode())
        return _result(task_id, raw, fields, dupes)

    # -- the scheduler's writes (fenced by the master's epoch) -------------------------------------

    async def publish_roster(
        self, epoch: int, nodes: Sequence[tuple[str, int, Sequence[str]]], skip: Sequence[str], ttl_s: float
    ) -> None:
        """Name the nodes a submit may place its tasks on as it stores them (submit.lua), for ``ttl_s``:
        (name, slots, task types); ``skip``: the types the master places itself. Raise StaleEpoch if this
        master has been replaced."""
        roster = {"epoch": str(epoch), "nodes": [[n, s, ",".join(t) or "-"] for n, s, t in nodes], "skip": skip}
        await self._fenced("roster", epoch, max(1, int(ttl_s * 1000)), orjson.dumps(roster).decode())

    async def withdraw_roster(self, epoch: int) -> None:
        """Submits queue every task for the master again, until a roster is published anew."""
        await self._fenced("roster", epoch, 0, "")

    async def _fenced(self, script: str, epoch: int, *args: Any) -> None:
        reply = await self._run(script, epoch, *args)
        if reply[0] == "stale":
            raise StaleEpoch(epoch, int(reply[1]))

    async def expire(self, epoch: int, retention_s: float, most: int) -> tuple[int, bool]:
        """Remove up to ``most`` finished tasks, oldest first, that ended more than ``retention_s`` ago (0:
        none for that reason) or whose ``result_ttl_s`` has passed, with all that is kept about them. Return
        how many were removed and whether more are due now. Raise StaleEpoch if this master was replaced."""
        reply = await self._run("expire", epoch, repr(float(retention_s)), most)
        if reply[0] == "stale":
            raise StaleEpoch(epoch, int(reply[1]))
        return int(reply[1]), reply[2] == "1"

    async def drop_legacy_indexes(self) -> None:
        """Remove the indexes of all tasks and of finished tasks by end time that versions before schema 3
        kept (freed by the server in the background)."""
        await self.redis.unlink(self.keys.legacy_all, self.keys.legacy_ended)

    async def index_names(self, lowest: int, highest: int) -> int:
        """Add the tasks with sequence numbers in [lowest, highest) to the name index, whatever their state
        (the upgrade to schema 4); return how many."""
        added: Any = await self._run("index_names", lowest, highest, *(s.name for s in TaskState))
        return int(added)

    async def last_seq(self) -> int:
        """The sequence number of the task submitted last (0: none yet)."""
        return int(await self.redis.get(self.keys.seq) or 0)

    async def oldest_finished_at(self, look: int = 16) -> float | None:
        """When the task that ended longest ago (of those the store keeps) ended, as far as the ``look``
        oldest tasks of each finished state tell (an earlier-made task usually ended earlier); None if none
        has ended."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for state in FINISHED_STATES:
                pipe.zrange(self.keys.state_index(state.name), 0, look - 1)
            heads = [i.decode() for ids in await pipe.execute() for i in ids]
        ended = await self.field_of(heads, "finished_at")
        times = [float(t) for t in ended if t]
        return min(times) if times else None

    async def place(
        self, epoch: int, node: str, slots: int, task_ids: Sequence[str], entries: Sequence[str] = ()
    ) -> builtins.list[int]:
        """Place tasks on ``node`` whatever their type: per id 1 placed, 0 gone, -1 no room."""
        plan = [(task_id, entries[k] if entries else "", "") for k, task_id in enumerate(task_ids)]
        return [int(v) for v in await self.place_many(epoch, [(node, slots, ("*",))], plan)]

    async def place_many(
        self,
        epoch: int,
        nodes: Sequence[tuple[str, int, Sequence[str]]],
        tasks: Sequence[tuple[str, str, str] | Offer],
    ) -> builtins.list[int | str]:
        """Place each task on the node with the most free slots that runs its type, in one atomic step.

        ``nodes`` are (name, slots, task types); ``tasks`` are (id, pending-stream entry or '', type), or
        ``Offer``s that also name the nodes a task may go to and the limits it is held to. Per task: the
        1-based index of its node, 0 if it is gone, -1 if no node has room, or the limit that held it back
        (``"c:fetch:example.org"``: see place.lua). Raise StaleEpoch if this master has been replaced
        (nothing is placed then).
        """
        args: builtins.list[Any] = [epoch, len(nodes)]
        for name, slots, types in nodes:
            args += [name, slots, ",".join(types) or "-"]
        args.append(len(tasks))
        for task in tasks:
            if isinstance(task, Offer):
                args += [task.task_id, task.entry, task.type, task.nodes, task.limits]
            else:
                args += [*task, "", ""]
        reply = await self._run("place", *args)
        if reply[0] == "stale":
            raise StaleEpoch(epoch, int(reply[1]))
        return [v if isinstance(v, str) else int(v) for v in reply[1:]]

    async def requeue(
        self, node: str, reason: str, epoch: int | None = None, *, outcome: AttemptOutcome = AttemptOutcome.NODE_LOST
    ) -> HandedBack:
        """Send back to WAITING every task placed on ``node``; ``epoch`` fences a master doing it.

        A running task's attempt ends ``outcome``: NODE_LOST (the node died or restarted: counted toward
        the task's max_lost_attempts, and a task that reaches it is quarantined instead) or HANDED_BACK (the
        node stopped gracefully: not held against the task).
        """
        reply = await self._run(
            "requeue", "" if epoch is None else epoch, node, reason, outcome, self.max_lost_attempts
        )
        if reply[0] == "stale":
            raise StaleEpoch(epoch or 0, int(reply[1]))
        return _handed_back(reply)

    async def hand_back(
        self,
        node: str,
        task_ids: Sequence[str],
        reason: str,
        *,
        outcome: AttemptOutcome = AttemptOutcome.NODE_LOST,
    ) -> HandedBack:
        """Send back to WAITING those of ``task_ids`` still INQUEUE or RUNNING on ``node``; return them.

        The node's own call (no epoch): the script checks each task's node and state. The other ids are only
        taken out of the node's assigned set, where they would hold a slot for ever. ``outcome`` as for
        ``requeue``.
        """
        if not task_ids:
            return HandedBack()
        return _handed_back(await self._run("requeue", "", node, reason, outcome, self.max_lost_attempts, *task_ids))

    async def promote_due(self, most: int = 1000) -> float | None:
        """Queue the delayed tasks (retries waiting out their backoff, run_at, delay_s) that are due; return
        when the next one is due (Redis time), if any."""
        return (await self.promote(most))[1]

    async def promote(self, most: int = 1000) -> tuple[int, float | None]:
        """As ``promote_due``, and how many it queued."""
        reply = await self._run("promote", most)
        return int(reply[0]), float(reply[1]) if reply[1] else None

    # -- a worker's writes -------------------------------------------------------------------------

    async def start(self, task_id: str, node: str) -> int | None:
        """INQUEUE -> RUNNING on ``node``; the attempt number, or None if the task is no longer ours."""
        task = await self.begin(task_id, node)
        return None if task is None else task.attempts

    async def begin(self, task_id: str, node: str, *, resume: bool = False) -> Task | None:
        """Like ``start``, returning the task as it now is (its ``attempts`` is this attempt's number).

        ``resume`` accepts a task already RUNNING on this node: the retry of a start whose reply was lost.
        """
        return (await self.begin_many(node, [(task_id, resume)]))[0]

    async def begin_many(self, node: str, starts: Sequence[tuple[str, bool]]) -> builtins.list[Task | None]:
        """Start each (task id, resume) on ``node`` in one atomic call; per task as ``begin``."""
        return _begun(starts, await self.scripts.run("start", self.keys.prefix, *_start_args(node, starts)))

    async def finish_and_begin(
        self,
        node: str,
        reports: Sequence[Report],
        starts: Sequence[tuple[str, bool]],
        *,
        backoff: float = 1.0,
        read_back: Container[str] = (),
    ) -> tuple[builtins.list[Finish], builtins.list[Task | None]]:
        """``finish_many`` of ``reports``, then ``begin_many`` of ``starts``, in one atomic call: a node that
        frees a slot and starts the next task in it never shows more tasks running than its slots."""
        if not starts:
            return await self.finish_many(node, reports, backoff=backoff, read_back=read_back), []
        if not reports:
            return [], await self.begin_many(node, starts)
        finish = self._finish_args(node, reports, backoff, read_back)
        ended, started = await self.scripts.run_steps(
            "finish_start", self.keys.prefix, finish, _start_args(node, starts)
        )
        return [_finish(r.task_id, reply) for r, reply in zip(reports, ended, strict=True)], _begun(starts, started)

    async def finish(
        self,
        task_id: str,
        node: str,
        attempt: int,
        outcome: str,
        *,
        error: str = "",
        result: TaskResult | None = None,
        backoff: float = 1.0,
        footprint: Footprint | None = None,
    ) -> Finish:
        """Close attempt ``attempt`` with ``outcome`` and what it cost (``footprint``, where measured).

        SUCCEEDED stores ``result``; any other outcome is retried per the task's max_retries with the
        backoff. CRASHED also counts toward max_lost_attempts: at that count the task is quarantined.
        """
        report = Report(task_id, attempt, outcome, error, result, footprint)
        return (await self.finish_many(node, [report], backoff=backoff))[0]

    async def finish_many(
        self, node: str, reports: Sequence[Report], *, backoff: float = 1.0, read_back: Container[str] = ()
    ) -> builtins.list[Finish]:
        """Take reports of attempts on ``node`` in one atomic call; per report as ``finish``. A task in
        ``read_back`` that the call ends comes back with it (``Finish.ended``), as ``get_with_result`` reads it."""
        args = self._finish_args(node, reports, backoff, read_back)
        replies: Any = await self.scripts.run("finish", self.keys.prefix, *args)
        return [_finish(r.task_id, reply) for r, reply in zip(reports, replies, strict=True)]

    def _finish_args(
        self, node: str, reports: Sequence[Report], backoff: float, read_back: Container[str]
    ) -> builtins.list[Any]:
        """finish.lua's arguments (after the prefix) for ``reports``; a result over ``result_max_bytes`` is
        reported as the attempt's failure."""
        args: builtins.list[Any] = [node, backoff, self.max_lost_attempts, KEEP_LATE_RESULTS, len(reports)]
        for r in reports:
            outcome, error, payload = str(r.outcome), r.error, b""
            if r.result is not None:
                payload = _stored_result(r.result)
                if len(payload) > self.result_max_bytes:
                    outcome = "failed"
                    error = f"result is {len(payload)} bytes; the limit is {self.result_max_bytes}"
                    payload = b""
            back = "1" if r.task_id in read_back else ""
            args += [r.task_id, r.attempt, outcome, error, payload, _footprint_json(r.footprint), back]
        return args

    # -- streams ---------------------------------------------------------------------------------

    async def pending_types(self) -> set[str]:
        """The task types that have a pending stream (tasks of them may wait to be placed)."""
        members: Any = await self.redis.smembers(self.keys.pending_types)
        return {t.decode() for t in members}

    async def pending_count(self) -> int:
        """Entries in all pending streams: tasks waiting to be placed, of every type."""
        types = sorted(await self.pending_types())
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_type in types:
                pipe.xlen(self.keys.pending(task_type))
            pipe.xlen(self.keys.legacy_pending)
            return sum(await pipe.execute())

    async def migrate_pending(self, batch: int = 1000) -> int:
        """Move what the single pending stream of older versions holds into the per-type streams; return
        how many tasks were moved. Done in steps of ``batch`` entries, each one atomic."""
        moved = 0
        while True:
            done, left = await self._run("migrate", batch)
            moved += int(done)
            if not int(left):
                return moved

    # -- the scheduler's reads of the pending streams ----------------------------------------------

    async def read_pending(
        self, consumer: str, types: Sequence[str], *, count: int, block_ms: int | None = None
    ) -> dict[str, builtins.list[Queued]]:
        """New entries of the pending streams of ``types`` for the scheduler's ``consumer``, by type; waits
        up to ``block_ms`` when given. Raises GroupMissing if a stream lost its group (it is made again by
        ``ensure_groups``)."""
        streams: dict[Any, Any] = {self.keys.pending(t): ">" for t in types}
        try:
            reply: Any = await self.redis.xreadgroup(SCHEDULER_GROUP, consumer, streams, count=count, block=block_ms)
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                raise GroupMissing(str(exc)) from None
            raise
        found: dict[str, builtins.list[Queued]] = {}
        for stream, entries in reply or ():
            name = stream.decode() if isinstance(stream, bytes) else stream
            found[name.removeprefix(self.keys.pending_prefix)] = _queued(entries)
        return found

    async def claim_pending(
        self, task_type: str, consumer: str, start: str, count: int
    ) -> tuple[str, builtins.list[Queued]]:
        """Take over for ``consumer`` up to ``count`` entries of the type's stream that others read and did not
        acknowledge, from entry ``start`` on; the entry to go on from ("0-0" at the end) and those taken."""
        reply: Any = await self.redis.xautoclaim(
            self.keys.pending(task_type), SCHEDULER_GROUP, consumer, min_idle_time=0, start_id=start, count=count
        )
        nxt = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
        return nxt, _queued(reply[1])

    async def forget_consumers(self, task_type: str, keep: str) -> None:
        """Drop the scheduler consumers of the type's stream, but ``keep``, that hold no entry."""
        stream = self.keys.pending(task_type)
        consumers: Any = await self.redis.xinfo_consumers(stream, SCHEDULER_GROUP)
        for c in consumers:
            name = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
            if name != keep and not int(c["pending"]):
                await self.redis.xgroup_delconsumer(stream, SCHEDULER_GROUP, name)

    async def pending_holders(self, types: Sequence[str]) -> dict[str, dict[str, int] | None]:
        """Per type, how many entries each scheduler consumer holds unacknowledged (None: the group is gone)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_type in types:
                pipe.xpending(self.keys.pending(task_type), SCHEDULER_GROUP)
            summaries: builtins.list[Any] = await pipe.execute(raise_on_error=False)
        held: dict[str, dict[str, int] | None] = {}
        for task_type, summary in zip(types, summaries, strict=True):
            if isinstance(summary, Exception):
                held[task_type] = None
                continue
            held[task_type] = {
                (c["name"].decode() if isinstance(c["name"], bytes) else c["name"]): int(c["pending"])
                for c in summary.get("consumers") or ()
            }
        return held

    async def claim_idle(
        self, task_type: str, consumer: str, holder: str, idle_ms: int, count: int
    ) -> builtins.list[Queued]:
        """Take over for ``consumer`` up to ``count`` entries ``holder`` has kept unacknowledged ``idle_ms``."""
        stream = self.keys.pending(task_type)
        rows: Any = await self.redis.xpending_range(
            stream, SCHEDULER_GROUP, min="-", max="+", count=count, consumername=holder, idle=idle_ms
        )
        if not rows:
            return []
        claimed: Any = await self.redis.xclaim(
            stream, SCHEDULER_GROUP, consumer, idle_ms, [r["message_id"] for r in rows]
        )
        return _queued(claimed)

    async def field_of(self, task_ids: Sequence[str], field: str) -> builtins.list[str]:
        """One field of each task's hash, in one round trip; "" for a task that is gone."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hget(self.keys.task(task_id), field)
            values = await pipe.execute()
        return [v.decode() if v else "" for v in values]

    # -- a worker's inbox ----------------------------------------------------------------------------

    async def read_orders(
        self, node: str, *, again: bool, count: int, block_ms: int, taken: Sequence[Order] = ()
    ) -> builtins.list[Order]:
        """The next run and kill orders of ``node``'s inbox, waiting up to ``block_ms`` for some.

        ``taken``: orders read before and taken in hand, acknowledged and deleted in the same round trip.
        ``again``: read instead the orders delivered before and not acknowledged (after a failed read, or
        left by an earlier run of the node, they may never have been seen). A missing consumer group is
        made again, and the read answers nothing that time.
        """
        inbox = self.keys.inbox(node)
        async with self.redis.pipeline(transaction=False) as pipe:
            if taken:
                entries = [o.entry for o in taken]
                pipe.xack(inbox, WORKER_GROUP, *entries)
                pipe.xdel(inbox, *entries)
            pipe.xreadgroup(
                WORKER_GROUP, node, {inbox: "0" if again else ">"}, count=count, block=None if again else block_ms
            )
            *_, reply = await pipe.execute(raise_on_error=False)
        if isinstance(reply, ResponseError) and "NOGROUP" in str(reply):
            await self.ensure_groups(node)
            return []
        if isinstance(reply, Exception):
            raise reply
        orders = []
        for entry, fields in reply[0][1] if reply else ():
            ids = fields.get(b"ids") or fields.get(b"id") or b""  # an entry deleted unacknowledged has no fields
            orders.append(Order(entry, fields.get(b"op", b"").decode(), ids.decode().split(",") if ids else []))
        return orders

    async def ack_orders(self, node: str, orders: Sequence[Order]) -> None:
        """Acknowledge and delete inbox entries that were taken."""
        if orders:
            inbox, entries = self.keys.inbox(node), [o.entry for o in orders]
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xack(inbox, WORKER_GROUP, *entries)
                pipe.xdel(inbox, *entries)
                await pipe.execute()

    async def ensure_groups(self, node: str | None = None, types: Sequence[str] = ()) -> None:
        """Create the consumer groups (and streams) if they are missing: the worker group on ``node``'s
        inbox, the scheduler group on the pending stream of each of ``types``."""
        streams = [(self.keys.pending(t), SCHEDULER_GROUP) for t in types]
        if node is not None:
            streams.append((self.keys.inbox(node), WORKER_GROUP))
        for stream, group in streams:
            try:
                await self.redis.xgroup_create(stream, group, id="0", mkstream=True)
            except Exception as exc:  # BUSYGROUP: it exists already
                if "BUSYGROUP" not in str(exc):
                    raise


def _s(value: bytes | None) -> str | None:
    return value.decode() if value else None


def _f(value: bytes | None) -> float | None:
    return float(value) if value else None


def _i(value: bytes | None) -> int | None:
    return int(value) if value else None


def _handed_back(reply: builtins.list[Any]) -> HandedBack:
    back = int(reply[1])
    ids = HandedBack(reply[2 : 2 + back])
    ids.quarantined = tuple(reply[2 + back :])
    return ids


#: Digits kept of the seconds of a footprint: 0.1 ms is finer than any figure a person reads.
_SECONDS_DIGITS = 4


def _as_stored(task_id: str, spec: TaskSpec, lost: int, node: str | None, created: float, started: bool) -> Task:
    """A task as submit.lua stores ``spec``: placed on ``node`` (None: queued), started there when ``started``."""
    after = None if spec.delay_s is None else created + spec.delay_s
    times = [t for t in (spec.run_at, after) if t is not None]
    due = max(times) if times else None
    return Task(
        id=task_id,
        name=spec.name,
        type=spec.type,
        target=spec.target,
        params=spec.params,
        state=TaskState.RUNNING if started else TaskState.INQUEUE if node else TaskState.WAITING,
        node=node,
        attempts=1 if started else 0,
        max_retries=spec.max_retries,
        timeout_s=spec.timeout_s,
        created_at=created,
        started_at=created if started else None,
        finished_at=None,
        error=None,
        max_lost_attempts=lost,
        memory_mb=spec.memory_mb,
        cpu_s_limit=spec.cpu_s_limit,
        result_ttl_s=spec.result_ttl_s,
        run_at=due,
        delay_s=spec.delay_s,
        waiting_for=waiting_for(due, created, retry=False),
        idempotency_key=spec.idempotency_key,
        priority=spec.priority,
        requires=spec.requires,
        concurrency_key=spec.concurrency_key,
        schedule=spec.schedule,
        tick=spec.tick,
        args=spec.args,
        kwargs=spec.kwargs,
    )


def _footprint_json(footprint: Footprint | None) -> bytes:
    """The measured fields only, so an attempt record stays small; b'' when nothing was measured."""
    if footprint is None:
        return b""
    fields = {k: v for k, v in record_dict(footprint).items() if v is not None}
    for key in ("wall_s", "cpu_s", "loop_blocked_s"):
        if key in fields:
            fields[key] = round(float(fields[key]), _SECONDS_DIGITS)
    return orjson.dumps(fields) if fields else b""


#: Attempt fields the latest attempt leaves to the task's own (attempt field -> task field; see SHARED in
#: _lib.lua), with how each is read.
_SHARED: dict[str, tuple[bytes, Callable[[bytes], Any]]] = {
    "number": (b"attempts", int),
    "node": (b"node", bytes.decode),
    "started_at": (b"started_at", float),
    "finished_at": (b"finished_at", float),
    "epoch": (b"epoch", int),
}


def _attempt(raw: bytes, task: dict[bytes, bytes] | None = None) -> Attempt:
    """An attempt record; Lua's JSON writes whole floats as integers, so the types are set back here. The last
    attempt of a finished task (``task``: its fields) takes what it shed from them."""
    data = orjson.loads(raw)
    if task is not None:
        for name, (field, read) in _SHARED.items():
            if data.get(name) is None and task.get(field) and (name != "finished_at" or data.get("outcome")):
                data[name] = read(task[field])
        if data.get("outcome") and data.get("error") is None:
            data["error"] = ""  # a closed attempt always has its error: none is ''

    for key in ("wall_s", "cpu_s", "loop_blocked_s"):
        if data.get(key) is not None:
            data[key] = float(data[key])
    for key in ("max_rss_bytes", "exit_code"):
        if data.get(key) is not None:
            data[key] = int(data[key])
    return Attempt(**data)


def _late(raw: bytes) -> LateResult:
    """A late report as finish.lua keeps it; its result, when it has one, is the TaskResult's JSON."""
    data = orjson.loads(raw)
    result = orjson.loads(data["result"]) if data.get("result") else {}
    return LateResult(
        node=data["node"],
        attempt=int(data["attempt"]),
        outcome=data["outcome"],
        error=data.get("error") or None,
        finished_at=float(data["finished_at"]),
        code=_code_of(result),
        meta=result.get("meta") or {},
    )


#: What a result is read with: the task's fields it takes what the stored form leaves out from.
_RESULT_FIELDS = ("result", "state", "node", "attempts", "finished_at")


def _stored_result(result: TaskResult) -> bytes:
    """A result as the store keeps it: its code, and its meta when there is any. The task it belongs to,
    the node and attempt that made it and when that ended are the task's own fields already (a report is
    taken only from the task's current attempt, which it ends), so they are not written twice. A function's
    result keeps its ``value`` instead of its code, which is read back from it (``value_code``)."""
    data: dict[str, Any] = {"value": result.value} if result.has_value else {"code": result.code}
    if result.meta:
        data["meta"] = result.meta
    return orjson.dumps(data)


def _code_of(data: dict[str, Any]) -> str | None:
    """The code of a stored result: kept as such, or read from its value."""
    return value_code(data["value"]) if "value" in data else data.get("code")


def _start_args(node: str, starts: Sequence[tuple[str, bool]]) -> builtins.list[Any]:
    """start.lua's arguments (after the prefix) for the (task id, resume) pairs of ``starts``."""
    args: builtins.list[Any] = [node, len(starts)]
    for task_id, resume in starts:
        args += [task_id, "1" if resume else ""]
    return args


def _begun(starts: Sequence[tuple[str, bool]], replies: Any) -> builtins.list[Task | None]:
    """The tasks start.lua started, as they now are; None for each it could not (no longer this node's)."""
    tasks: builtins.list[Task | None] = []
    for (task_id, _), reply in zip(starts, replies, strict=True):
        flat = reply[2:]
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        tasks.append(_task(task_id, fields, []) if reply[0] == b"ok" else None)
    return tasks


def _finish(task_id: str, reply: Sequence[Any]) -> Finish:
    """finish.lua's reply to one report: verdict, state, then the task's hash, closed attempts, late results
    and children when it was read back."""
    state = reply[1].decode() if len(reply) > 1 else None
    if len(reply) < 6:
        return Finish(reply[0].decode(), state)
    flat, attempts, late, children = reply[2:6]
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    return Finish(reply[0].decode(), state, _with_result(task_id, fields, attempts, late, children))


def _with_result(
    task_id: str,
    fields: dict[bytes, bytes],
    attempts: Sequence[bytes],
    late: Sequence[bytes],
    children: Sequence[bytes],
    legacy_result: bytes | None = None,
) -> tuple[Task, TaskResult | None]:
    """A task read whole, and its result if it has one (in its hash; an earlier version kept it apart)."""
    raw = fields.get(b"result") or legacy_result
    found = _result(task_id, raw, fields, len(late)) if raw else None
    return _task(task_id, fields, attempts, late, children), found


def _result(task_id: str, raw: bytes, fields: dict[bytes, bytes], duplicates: int) -> TaskResult:
    """A stored result with the task's ``fields`` around it; a result stored whole by an earlier version
    keeps its own values."""
    data = orjson.loads(raw)
    return TaskResult(
        task_id=task_id,
        code=_code_of(data) or "",
        node=data.get("node") or fields[b"node"].decode(),
        attempt=int(data.get("attempt") or fields[b"attempts"]),
        finished_at=float(data.get("finished_at") or fields[b"finished_at"]),
        meta=data.get("meta") or {},
        duplicates=duplicates,
        value=data.get("value"),
        has_value="value" in data,
    )


def _waiting_for_parents(fields: dict[bytes, bytes]) -> str | None:
    """How many parents of a WAITING task have not ended yet ("waiting for 2 of 3 parents"); None: none."""
    left = int(fields.get(b"left") or 0)
    if left <= 0 or not fields.get(b"deps"):
        return None
    total = fields[b"deps"].count(b",") + 1
    return f"waiting for {left} of {total} parent{'' if total == 1 else 's'}"


def _task(
    task_id: str,
    fields: dict[bytes, bytes],
    attempts: Sequence[bytes],
    late: Sequence[bytes] = (),
    children: Sequence[bytes] = (),
) -> Task:
    """A task from its hash, its closed attempts and its late results; the open attempt is in the hash. Fields a
    task did not ask for are not stored (an earlier version wrote them empty, and its id too). ``children``:
    the tasks that depend on it, where the caller read them."""
    run = fields.get(b"run")
    history = (*(_attempt(a) for a in attempts), *([_attempt(run, fields)] if run else []))
    return Task(
        id=task_id,
        name=fields[b"name"].decode(),
        type=fields[b"type"].decode(),
        target=fields[b"target"].decode(),
        params=orjson.loads(fields.get(b"params") or b"{}"),
        state=TaskState[fields[b"state"].decode()],
        node=_s(fields.get(b"node")),
        attempts=int(fields.get(b"attempts", 0)),
        max_retries=int(fields.get(b"max_retries", 0)),
        timeout_s=_f(fields.get(b"timeout_s")),
        created_at=float(fields[b"created_at"]),
        started_at=_f(fields.get(b"started_at")),
        finished_at=_f(fields.get(b"finished_at")),
        error=_s(fields.get(b"error")),
        history=history,
        max_lost_attempts=int(fields.get(b"max_lost_attempts") or DEFAULT_MAX_LOST_ATTEMPTS),
        lost_attempts=int(fields.get(b"lost_attempts", 0)),
        attempts_dropped=int(fields.get(b"attempts_dropped", 0)),
        memory_mb=_i(fields.get(b"memory_mb")),
        cpu_s_limit=_f(fields.get(b"cpu_s_limit")),
        late_results=tuple(_late(d) for d in late),
        result_ttl_s=_f(fields.get(b"result_ttl")),
        run_at=_f(fields.get(b"run_at")),
        delay_s=_f(fields.get(b"delay_s")),
        idempotency_key=_s(fields.get(b"idem")),
        priority=int(fields.get(b"prio") or DEFAULT_PRIORITY),
        requires=orjson.loads(fields[b"req"]) if b"req" in fields else {},
        concurrency_key=_s(fields.get(b"ckey")),
        schedule=_s(fields.get(b"schedule")),
        tick=_f(fields.get(b"tick")),
        args=orjson.loads(fields[b"args"]) if b"args" in fields else None,
        kwargs=orjson.loads(fields[b"kwargs"]) if b"kwargs" in fields else None,
        waiting_for=(
            _waiting_for_parents(fields) or waiting_for(_f(fields.get(b"due")), None, retry=b"failures" in fields)
        )
        if fields[b"state"] == b"WAITING"
        else None,
        depends_on=tuple(fields[b"deps"].decode().split(",")) if fields.get(b"deps") else (),
        on_parent_failure=_s(fields.get(b"opf")) or "kill",
        workflow=_s(fields.get(b"wf")),
        children=tuple(sorted(c.decode() for c in children)),
    )


def waiting_for(due: float | None, now: float | None, *, retry: bool) -> str | None:
    """Why a WAITING task is held back: its due time (``run_at``, ``delay_s``, or a retry's backoff), if it is
    still ahead (``now``: the store's time; None: not known, the due time is shown while it is stored)."""
    if due is None or (now is not None and due <= now):
        return None
    at = datetime.fromtimestamp(due, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"{'retry ' if retry else ''}due at {at}"
