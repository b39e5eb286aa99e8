"""The nouns shoal moves around: tasks, their attempts and results, nodes, events.

These are plain dataclasses with no I/O; the store turns them into Redis hashes, the web layer into JSON
and the rpc layer into protobuf messages. Times are Unix seconds (float), taken from the Redis clock so
that every node agrees on them.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import orjson

from shoal._utils import is_digits


class TaskState(enum.IntEnum):
    """The seed's task states; the numbers are the protobuf enum values."""

    WAITING = 0
    INQUEUE = 1
    RUNNING = 2
    RUNTIME_ERROR = 3
    SUCCEED = 4
    KILLED = 5

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    @classmethod
    def parse(cls, text: str) -> TaskState:
        """Read a state from its name (any case) or its number; raise ValueError otherwise."""
        key = text.strip().upper()
        if is_digits(key) and int(key) in cls._value2member_map_:
            return cls(int(key))
        try:
            return cls[key]
        except KeyError:
            names = ", ".join(s.name for s in cls)
            raise ValueError(f"unknown state {text!r}; states are {names}") from None


TERMINAL_STATES = frozenset({TaskState.RUNTIME_ERROR, TaskState.SUCCEED, TaskState.KILLED})

#: Lost attempts (``AttemptOutcome.lost``) a task may have before it is quarantined, unless it says otherwise.
DEFAULT_MAX_LOST_ATTEMPTS = 3
#: A task's priority unless it asks for another (0 lowest, 9 highest).
DEFAULT_PRIORITY = 5


class AttemptOutcome(enum.StrEnum):
    """How one attempt at running a task ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed out"
    NODE_LOST = "node lost"
    KILLED = "killed"
    CRASHED = "crashed"  # the worker process running it died (exit code, signal, OOM kill)
    OVER_LIMIT = "over limit"  # it passed its memory_mb or cpu_s_limit
    HANDED_BACK = "handed back"  # its node stopped gracefully before it finished: not held against it

    @property
    def lost(self) -> bool:
        """Counts toward ``max_lost_attempts``: the attempt took its process or its node down with it."""
        return self in (AttemptOutcome.NODE_LOST, AttemptOutcome.CRASHED)


@dataclass(frozen=True, slots=True)
class Footprint:
    """What one attempt cost, as far as it can be measured honestly (None where it cannot).

    ``exit_code`` or ``signal`` (a name such as ``SIGSEGV``) say how a crashed worker process ended;
    ``loop_blocked_s`` how long an inline attempt held the node's event loop (see shoal.worker.loopwatch)."""

    wall_s: float | None = None
    cpu_s: float | None = None
    max_rss_bytes: int | None = None
    exit_code: int | None = None
    signal: str | None = None
    loop_blocked_s: float | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One run of a task on one node, with what it cost (see ``Footprint``)."""

    number: int
    node: str
    started_at: float
    finished_at: float | None = None
    outcome: str | None = None
    error: str | None = None
    wall_s: float | None = None
    cpu_s: float | None = None
    max_rss_bytes: int | None = None
    exit_code: int | None = None
    signal: str | None = None
    loop_blocked_s: float | None = None
    epoch: int | None = None  # the master epoch of the placement that led to it (None: not recorded)


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What a user asks for; already validated (see ``shoal.validation``)."""

    name: str
    type: str
    target: str
    params: dict[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None
    max_retries: int = 0
    max_lost_attempts: int | None = None  # None: the cluster's default, fixed when the task is stored
    memory_mb: int | None = None  # None: the type's bound, else the node's default
    cpu_s_limit: float | None = None  # None: the type's bound, else the node's default
    result_ttl_s: float | None = None  # None: kept for the cluster's retention once it has ended
    run_at: float | None = None  # due at this Unix time (None: at once, unless delay_s)
    delay_s: float | None = None  # due this long after the store took it (None: at once, unless run_at)
    idempotency_key: str | None = None  # a second submit with it, within the window, gets the first task
    priority: int = DEFAULT_PRIORITY  # 0-9: higher is placed first (FIFO within a level, with aging)
    requires: dict[str, str] = field(default_factory=dict)  # node labels it may only run on
    concurrency_key: str | None = None  # the key its type's per-key limits count it under (e.g. a customer)
    schedule: str | None = None  # the schedule that fired it (set by the master, never by a user)
    tick: float | None = None  # the tick of that schedule it was fired for (Unix seconds)
    #: Tasks (ids; in a batch also the ``ref`` of another of its tasks) that must SUCCEED before this one runs.
    depends_on: tuple[str, ...] = ()
    on_parent_failure: str = "kill"  # "kill": a parent ending otherwise kills it; "run": it runs anyway
    ref: str | None = None  # its name within a batch, for the batch's other tasks' depends_on
    args: list[Any] | None = None  # a function task's positional arguments (JSON values); None: none given
    kwargs: dict[str, Any] | None = None  # a function task's keyword arguments (JSON values); None: none given
    #: The fields its submit named (a REST body's keys, a gRPC spec's set fields), so that a function's
    #: defaults fill only the others; None (a spec built in code): those that differ from their defaults.
    given: frozenset[str] | None = field(default=None, compare=False, repr=False)


#: TaskSpec fields no submit sets: a schedule's (the master sets them) and the record of what was named.
_NOT_SUBMITTED = frozenset({"schedule", "tick", "given"})


def submitted_fields(spec: TaskSpec) -> dict[str, Any]:
    """``spec`` as the body of its submit (``POST /api/v1/tasks`` takes it): name, type, target and the
    fields it names (``given``; for a spec built in code, those that differ from their defaults)."""
    blank = TaskSpec(name=spec.name, type=spec.type, target=spec.target)
    body: dict[str, Any] = {}
    for key, value in asdict(spec).items():
        if key in _NOT_SUBMITTED or value is None:
            continue
        named = key in spec.given if spec.given is not None else value != getattr(blank, key)
        if named or key in ("name", "type", "target"):
            body[key] = list(value) if isinstance(value, tuple) else value
    return body


@dataclass(frozen=True, slots=True)
class LateResult:
    """The report of an attempt the task had moved on from (its node was lost or handed it back) that
    finished after all: kept beside the task, with its result in full, never written over it."""

    node: str
    attempt: int
    outcome: str
    error: str | None
    finished_at: float
    code: str | None = None  # the result's ``code`` when the attempt succeeded
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Task:
    """A task as stored, with the attempts made at it so far."""

    id: str
    name: str
    type: str
    target: str
    params: dict[str, Any]
    state: TaskState
    node: str | None
    attempts: int
    max_retries: int
    timeout_s: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    history: tuple[Attempt, ...] = ()
    max_lost_attempts: int = DEFAULT_MAX_LOST_ATTEMPTS
    lost_attempts: int = 0  # attempts that ended lost so far; at max_lost_attempts the task is quarantined
    attempts_dropped: int = 0  # attempts left out of ``history`` (it keeps the first and the latest)
    #: What the task asked for each attempt (None: the type's bound, else the node's default). An attempt
    #: never gets more than its type allows: a larger ask is held to the type's bound when it runs.
    memory_mb: int | None = None
    cpu_s_limit: float | None = None
    late_results: tuple[LateResult, ...] = ()  # the latest reports of superseded attempts, oldest first
    result_ttl_s: float | None = None  # kept this long once ended (None: the cluster's retention)
    run_at: float | None = None  # when it was due, if it was submitted with run_at or delay_s
    delay_s: float | None = None  # the delay_s it was submitted with
    idempotency_key: str | None = None  # as submitted
    priority: int = DEFAULT_PRIORITY  # as submitted
    requires: dict[str, str] = field(default_factory=dict)  # as submitted, with its type's defaults
    concurrency_key: str | None = None  # as submitted
    schedule: str | None = None  # the schedule that fired it
    tick: float | None = None  # the tick it was fired for
    #: Why a WAITING task is not placed yet (``due at ...``), None otherwise or when it only waits for room.
    waiting_for: str | None = None
    depends_on: tuple[str, ...] = ()  # its parents (ids), as submitted
    on_parent_failure: str = "kill"  # as submitted
    workflow: str | None = None  # the workflow it belongs to (the tasks submitted with it that depend on each other)
    children: tuple[str, ...] = ()  # the tasks that depend on it
    args: list[Any] | None = None  # a function task's positional arguments, as submitted (None: none given)
    kwargs: dict[str, Any] | None = None  # a function task's keyword arguments, as submitted (None: none given)

    def to_json(self) -> dict[str, Any]:
        """The task as the REST API shows it (``state`` by name). Its fields as they are, not copies (a batch
        answers a thousand of these), but for the attempts and late results, which become objects too."""
        data = record_dict(self)
        data["state"] = self.state.name
        data["history"] = [record_dict(attempt) for attempt in self.history]
        data["late_results"] = [record_dict(late) for late in self.late_results]
        return data


def record_dict(record: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict, its values as they are: ``dataclasses.asdict`` deep-copies every value,
    which costs several microseconds per record, per task, on the hot path (reports, batch answers)."""
    kind = type(record)
    names = _FIELD_NAMES.get(kind)
    if names is None:
        names = _FIELD_NAMES[kind] = tuple(f.name for f in fields(kind))
    return {name: getattr(record, name) for name in names}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


@dataclass(frozen=True, slots=True)
class TaskResult:
    """What a finished attempt produced: the seed's ``code`` plus what the type reported beside it."""

    task_id: str
    code: str
    node: str
    attempt: int
    finished_at: float
    meta: dict[str, Any] = field(default_factory=dict)
    duplicates: int = 0
    #: A function task's return value (any JSON value); ``code`` is then that value as text (itself when it is
    #: a string, else its compact JSON). None for a handler's result, which has only ``code``.
    value: Any = None
    has_value: bool = False  # whether ``value`` is a function's return value (a None returned included)

    def to_json(self) -> dict[str, Any]:
        """The result as the REST API shows it: ``value`` only for a function task's (null included)."""
        data = asdict(self)
        if not data.pop("has_value"):
            del data["value"]
        return data


def value_code(value: Any) -> str:
    """A function's return value as a result's ``code``: itself when it is a string, else its compact JSON."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


@dataclass(frozen=True, slots=True)
class TaskPage:
    """One page of a task listing; ``next_cursor`` is None on the last page."""

    tasks: list[Task]
    total: int
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """A task changed state, as the store's event stream recorded it (shoal.store.task_events).

    ``event_id`` is its place in that stream ("<entry id>/<index in the entry>"): a watch that resumes from
    it gets exactly the events after it. ``type`` is the task's type ("" when the task was gone already)."""

    id: str
    state: TaskState
    node: str | None
    at: float
    type: str | None = None
    event_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": "task", "id": self.id, "state": self.state.name, "node": self.node,
                                "at": self.at}  # fmt: skip
        if self.type is not None:
            data["type"] = self.type
        if self.event_id is not None:
            data["event_id"] = self.event_id
        return data


@dataclass(frozen=True, slots=True)
class EventGap:
    """A watch resumed after ``since`` but the store no longer holds every event after it (its stream is
    capped): it goes on from ``oldest``, the oldest event kept (None: none is kept), and some are missing."""

    since: str
    oldest: str | None

    def to_json(self) -> dict[str, Any]:
        return {"kind": "gap", "since": self.since, "oldest": self.oldest}


#: The master's verdicts on a node (``NodeRecord.state``); the rule that reads them is ``shoal.liveness``.
ALIVE, SUSPECT, DEAD, REJECTED = "alive", "suspect", "dead", "rejected"


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A node as it last described itself in the store, and what the master last decided about it.

    Whether it is alive and a member is decided in one place, ``shoal.liveness.liveness(record, ...)``.
    """

    name: str
    host: str
    http: str
    grpc: str
    slots: int
    running: int
    pid: int
    types: tuple[str, ...]
    run_tasks: bool
    last_beat: float
    incarnation: int = 0
    priority: int = 0
    master_eligible: bool = True
    draining: bool = False
    state: str = ""  # the master's verdict; "" until it has seen this node
    state_incarnation: int = 0  # the incarnation the verdict is about
    reason: str = ""
    assigned: int = 0  # tasks placed on it and not finished
    cache: dict[str, int] | None = None  # its cache shard's stats as of its last beat
    clock_skew: float | None = None  # its wall clock minus the store's, in seconds, as of its last beat
    proxy: str = ""  # its forward proxy's advertised host:port; "" when it runs none
    labels: dict[str, str] = field(default_factory=dict)  # what tasks may require of it (``gpu=1``)
    prefetch: int = 0  # tasks it takes beyond its slots, queued there to start as slots free

    @property
    def capacity(self) -> int:
        """The most tasks the master places on it at once: its slots and its prefetch."""
        return self.slots + self.prefetch


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node as the cluster sees it."""

    name: str
    host: str
    http: str
    grpc: str
    state: str
    role: str
    slots: int
    running: int
    pid: int
    last_beat: float
    types: tuple[str, ...] = ()
    reason: str = ""  # why the master decided ``state`` (e.g. why it was rejected or declared dead)
    incarnation: int = 0
    priority: int = 0
    draining: bool = False
    cache: dict[str, int] | None = None  # this node's cache shard: items, bytes, capacity, hits, misses, ...
    clock_skew: float | None = None  # its wall clock minus the store's, in seconds; None until measured
    labels: dict[str, str] = field(default_factory=dict)  # what tasks may require of it (``gpu=1``)
    prefetch: int = 0  # tasks it takes beyond its slots now (shoal.worker.prefetch)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["types"] = list(self.types)
        return data


@dataclass(frozen=True, slots=True)
class ClusterView:
    """The membership and the current master, as ``GET /api/v1/cluster`` shows it."""

    master: str | None
    epoch: int
    nodes: list[NodeInfo]

    def to_json(self) -> dict[str, Any]:
        return {"master": self.master, "epoch": self.epoch, "nodes": [n.to_json() for n in self.nodes]}


@dataclass(frozen=True, slots=True)
class CacheItem:
    """A value in the cluster cache. Fresh until ``stale_at``; kept (for revalidation) until ``expires_at``."""

    value: bytes
    stale_at: float | None = None  # Unix seconds; None = fresh until evicted
    expires_at: float | None = None  # Unix seconds; None = kept until evicted; never before stale_at

    def fresh(self, now: float) -> bool:
        return self.stale_at is None or now < self.stale_at


@dataclass(frozen=True, slots=True)
class Fill:
    """What a cache filler produced: the value for its caller, and how (whether) the cluster keeps it."""

    value: bytes
    ttl_s: float | None = None  # fresh for this long; None = until evicted
    keep_s: float = 0.0  # then kept this much longer as stale, so it can be revalidated
    store: bool = True  # False: hand the value to this caller only (e.g. a no-store response)


@dataclass(frozen=True, slots=True)
class CacheGrant:
    """A key owner's answer to get-or-fill: a fresh ``item`` (``hit``), the fill lease (``lease`` set: the
    caller fills, then stores or releases), or neither (the caller fills on its own). Without ``hit``,
    ``item`` is the stale item if the owner holds one."""

    item: CacheItem | None = None
    hit: bool = False
    lease: str = ""
