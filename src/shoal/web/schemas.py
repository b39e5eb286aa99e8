"""Pydantic models that describe the REST API's bodies in the OpenAPI document.

They are documentation only: requests are checked by ``shoal.validation`` (so REST and gRPC refuse the
same things with the same words) and responses are the models' own ``to_json()``. Keep these in step
with ``shoal.models`` and ``shoal.validation``: ``tests/test_api.py`` compares them, and
``tests/test_openapi.py`` fuzzes a node with the document, which fails on any request the document allows
and the node refuses (or the other way round).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, WithJsonSchema
from pydantic.config import JsonDict

from shoal import validation, workflows
from shoal.addresses import METADATA_NAMES
from shoal.models import AttemptOutcome, TaskState
from shoal.worker.handlers.echo import MAX_DELAY_S

STATES = [s.name for s in TaskState]

#: What ``str.strip()`` removes (every character whose ``isspace()`` is true), as a regex class body that
#: Python, ECMAScript and Rust regexes read alike.
SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
CONTROL = r"\x00-\x1f"


def stripped_text(max_chars: int, *, refused: str = CONTROL, required: bool = True) -> str:
    """The pattern of text the server strips and then checks: 1..``max_chars`` characters left (0 too when not
    ``required``), none of them in the class ``refused``. Whitespace around it is allowed, as it is removed."""
    inside, edge = f"[^{refused}]", f"[^{refused}{SPACE}]"
    text = f"{edge}(?:{inside}{{0,{max_chars - 2}}}{edge})?"
    return f"^[{SPACE}]*{text if required else f'(?:{text})?'}[{SPACE}]*$"


#: A task id: the canonical UUID form (the server also reads the other forms ``uuid.UUID`` takes).
UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_LABEL = "[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PORT = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
_NOT_METADATA = "(?!(?:" + "|".join(n.replace(".", r"\.") for n in sorted(METADATA_NAMES)) + r")\.?(?:[:/]|$))"
#: A ``fetch`` target: an http(s) URL with a host name (not a cloud metadata name). The server takes any URL
#: that httpx parses, IP literals included (link-local and metadata addresses refused).
FETCH_URL_PATTERN = (
    rf"^https?://{_NOT_METADATA}{_LABEL}(?:\.{_LABEL})*(?::{_PORT})?(?:/[A-Za-z0-9._~!$&'()*+,;=:@/-]*)?$"
)


#: Node labels (a task's ``requires``): names and values as ``shoal.validation`` checks them, no other key.
Labels = Annotated[
    dict[str, str],
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": validation.MAX_LABELS,
            "propertyNames": {"pattern": validation.LABEL_NAME_PATTERN},
            "additionalProperties": {"type": "string", "pattern": validation.LABEL_VALUE_PATTERN},
        }
    ),
]


class TaskId(RootModel[str]):
    """A task id: a UUID (the server also reads the other forms Python's ``uuid.UUID`` takes)."""

    root: str = Field(json_schema_extra={"format": "uuid", "pattern": UUID_PATTERN})


def _pattern(pattern: str, **extra: Any) -> Any:
    """A string field with a JSON Schema ``pattern`` that pydantic does not compile (these are for clients:
    lookahead and long repetitions are beyond pydantic's regex engine, and the server checks by hand)."""
    return Field(json_schema_extra={"pattern": pattern}, **extra)


_PARAMS_DOC = f"at most {validation.MAX_PARAMS_BYTES} bytes as JSON"


class _TaskFields(BaseModel):
    """What every task type takes."""

    model_config = ConfigDict(extra="forbid")

    name: str = _pattern(stripped_text(validation.MAX_NAME_CHARS), examples=["front page"])
    target: str = _pattern(
        stripped_text(validation.MAX_TARGET_CHARS, refused=r"\x00"),
        description="text (no NUL), stripped of the whitespace around it; what the type does with it",
    )
    timeout_s: float | None = Field(None, gt=0, le=validation.MAX_TIMEOUT_S)
    max_retries: int | None = Field(None, ge=0, le=validation.MAX_RETRIES, description="default 0")
    max_lost_attempts: int | None = Field(
        None,
        ge=1,
        le=validation.MAX_LOST_ATTEMPTS,
        description="attempts lost with their node or worker process before the task is quarantined "
        "(ends RUNTIME_ERROR); default: the cluster's max_lost_attempts",
    )
    memory_mb: int | None = Field(
        None,
        ge=validation.MIN_MEMORY_MB,
        le=validation.MAX_MEMORY_MB,
        description="memory (address space) each attempt may add in its worker process, in MiB; default: the "
        "type's memory_mb, else the node's. Never above the type's (or, for a type with none, the node's): a "
        "larger value is held to that bound when the attempt runs, and the attempt's error says so",
    )
    cpu_s_limit: float | None = Field(
        None,
        gt=0,
        le=validation.MAX_CPU_S_LIMIT,
        description="CPU seconds each attempt may use in its worker process; default and bound as for memory_mb",
    )
    result_ttl_s: (
        Annotated[float, Field(gt=0, le=validation.MAX_RESULT_TTL_S)]
        | Annotated[str, Field(pattern=validation.DURATION_PATTERN)]
        | None
    ) = Field(
        None,
        description="how long the task (with its result) is kept once it has ended, if less than the cluster's "
        "retention: seconds (above 0, at most a year) or a duration such as 90s, 15m, 12h or 7d; default: the "
        "retention",
        examples=[3600, "15m"],
    )
    run_at: Annotated[float, Field(ge=0)] | Annotated[str, Field(pattern=validation.RFC3339_PATTERN)] | None = Field(
        None,
        description="when the task is due: Unix seconds or an RFC 3339 date-time with its offset, at most a year "
        'ahead; it waits (WAITING, waiting_for "due at ...") until then. A time past: at once. With delay_s: '
        "the later of the two",
        examples=["2026-12-06T10:00:00Z", 1796551200],
    )
    delay_s: (
        Annotated[float, Field(ge=0, le=validation.MAX_DELAY_S)]
        | Annotated[str, Field(pattern=validation.DURATION_PATTERN)]
        | None
    ) = Field(
        None,
        description="due this long after the submit (the store's clock): seconds or a duration such as 90s or 15m, "
        "at most a year. With run_at: the later of the two",
        examples=[30, "5m"],
    )
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=validation.MAX_IDEMPOTENCY_KEY_CHARS,
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="a second submit with the same key within the idempotency window (a day by default) stores "
        "nothing and answers 200 with the first task, while it exists",
        examples=["order-1234-confirmation"],
    )
    priority: int | None = Field(
        None,
        ge=0,
        le=9,
        description="0 (lowest) to 9 (highest), default 5: the master places higher first, oldest first within "
        "a level; a waiting task gains a level every 10 s it waits, so a steady stream of high ones cannot starve "
        "it",
        examples=[9],
    )
    requires: Labels | None = Field(
        None,
        description='node labels the task may only run on, e.g. {"gpu": "1"} (values: letters, digits, _ . : -); '
        'it waits (waiting_for "no live node has gpu=1") until a live node has them all',
        examples=[{"gpu": "1"}],
    )
    concurrency_key: str | None = Field(
        None,
        min_length=1,
        max_length=validation.MAX_CONCURRENCY_KEY_CHARS,
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="the key its type's per-key limits (config limits.TYPE.key_concurrency, key_rate_per_s) count "
        "it under, such as a customer id",
        examples=["customer-7"],
    )
    depends_on: list[Annotated[str, Field(pattern=workflows.REF_PATTERN)]] | None = Field(
        None,
        max_length=workflows.MAX_PARENTS,
        json_schema_extra={"uniqueItems": True},
        description="the tasks that must SUCCEED before this one runs: task ids, or in a batch the ref of another "
        'task of the batch. It waits (WAITING, waiting_for "waiting for 2 of 3 parents") until they have; a '
        'parent that ends otherwise kills it (error "parent ID ended STATE: ...") unless on_parent_failure is '
        "run. A parent that does not exist: 400 naming it",
        examples=[["3f2b0c1e-8a4d-4c5e-9f10-2a3b4c5d6e7f"]],
    )
    on_parent_failure: Literal["kill", "run"] | None = Field(
        None, description='"kill" (default): a parent ending otherwise than SUCCEED kills the task; "run": it runs'
    )
    ref: str | None = Field(
        None,
        pattern=workflows.REF_PATTERN,
        description="a name for the task within its batch, that other tasks of the batch name in depends_on",
        examples=["fetch"],
    )


class EchoParams(BaseModel):
    """``echo``'s own parameter; any other key is kept and ignored."""

    model_config = ConfigDict(extra="allow")

    delay_s: float = Field(0, ge=0, le=MAX_DELAY_S, description="seconds to wait before answering")


class EchoTaskIn(_TaskFields):
    """An ``echo`` task: its result is its target, after ``params.delay_s`` seconds."""

    type: Literal["echo"]
    params: EchoParams | None = Field(None, description=_PARAMS_DOC)


class FetchTaskIn(_TaskFields):
    """A ``fetch`` task: GET the target and keep its source as the result."""

    type: Literal["fetch"]
    params: dict[str, Any] | None = Field(None, description=_PARAMS_DOC)
    target: str = _pattern(FETCH_URL_PATTERN, examples=["http://127.0.0.1:8000/"])


class PluginTaskIn(_TaskFields):
    """A task of a type that a plug-in registered; the type's own checks apply to its target and params."""

    params: dict[str, Any] | None = Field(None, description=_PARAMS_DOC)
    type: str = _pattern(rf"^[{SPACE}]*[A-Za-z0-9_.:-]{{1,64}}[{SPACE}]*$", description="a type that live nodes run")


class FunctionTaskIn(_TaskFields):
    """A call of a Python function made a task type with ``@shoal.task``: its arguments in ``args`` and
    ``kwargs`` (JSON values), checked against the function's signature (400 naming a wrong count, an unknown
    or a missing argument). ``name`` defaults to the type, ``target`` to ""."""

    type: str = _pattern(rf"^[{SPACE}]*[A-Za-z0-9_.:-]{{1,64}}[{SPACE}]*$", description="a function task type")
    name: str | None = _pattern(  # type: ignore[assignment]
        stripped_text(validation.MAX_NAME_CHARS), default=None, description="default: the type"
    )
    target: str | None = _pattern(  # type: ignore[assignment]
        stripped_text(validation.MAX_TARGET_CHARS, refused=r"\x00", required=False),
        default=None,
        description='default ""',
    )
    params: dict[str, Any] | None = Field(None, description=_PARAMS_DOC)
    args: list[Any] | None = Field(None, description="the positional arguments (default none)", examples=[[2, 3]])
    kwargs: dict[str, Any] | None = Field(
        None,
        description=f"the keyword arguments (default none); args and kwargs at most {validation.MAX_ARGS_BYTES} "
        "bytes as JSON",
        examples=[{"b": 3}],
    )


#: The task models of the built-in types, by type; other types are ``PluginTaskIn``.
BUILT_IN_TASKS: dict[str, type[_TaskFields]] = {"echo": EchoTaskIn, "fetch": FetchTaskIn}


def task_in_schema(types: list[str] | None, functions: list[str] | None = None) -> dict[str, Any]:
    """``TaskIn``: one of the task models, chosen by ``type``, for the types live nodes run (``GET
    /api/v1/types``; the server refuses any other), ``functions`` among them calls of Python functions. None
    or none (not known now, or no node is live): every built-in type and any well-formed plug-in type."""
    calls = [t for t in functions or () if types and t in types and t not in BUILT_IN_TASKS]
    built_in = [t for t in types if t in BUILT_IN_TASKS] if types else list(BUILT_IN_TASKS)
    plugins = [t for t in types if t not in BUILT_IN_TASKS and t not in calls] if types else None
    branches = [_ref(BUILT_IN_TASKS[t]) for t in built_in]
    if calls:
        branches.append({"allOf": [_ref(FunctionTaskIn)], "properties": {"type": {"enum": calls}}})
    if plugins is None:
        branches.append({"allOf": [_ref(PluginTaskIn)], "properties": {"type": {"not": {"enum": built_in}}}})
    elif plugins:
        branches.append({"allOf": [_ref(PluginTaskIn)], "properties": {"type": {"enum": plugins}}})
    return {
        "title": "TaskIn",
        "description": "A task to run: `name` and `target` are required, `type` names a task type live nodes run.",
        "oneOf": branches,
    }


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


#: Query parameters.
WAIT_SCHEMA = {"type": "number", "exclusiveMinimum": 0, "maximum": validation.MAX_WAIT_S}
PAGE_SIZE_SCHEMA = {"type": "integer", "minimum": 1, "maximum": validation.MAX_PAGE}
CURSOR_SCHEMA = {"type": "string", "pattern": "^[0-9]{0,20}$"}
#: A state by its name (the server reads any case) or its number.
STATE_SCHEMA = {
    "anyOf": [{"type": "string", "enum": STATES}, {"type": "integer", "minimum": 0, "maximum": len(STATES) - 1}]
}
CACHE_KEY_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": validation.MAX_CACHE_KEY_BYTES,
    "pattern": "^[^\\x00-\\x1f\\x7f]+$",
}
CACHE_TTL_SCHEMA = {"type": "number", "exclusiveMinimum": 0, "maximum": validation.MAX_CACHE_TTL_S}


class AttemptOut(BaseModel):
    number: int
    node: str
    started_at: float
    finished_at: float | None
    outcome: str | None = Field(
        description=f"one of {', '.join(repr(str(o)) for o in AttemptOutcome)}; null while it runs"
    )
    error: str | None
    wall_s: float | None = Field(None, description="seconds it ran; null where not measured")
    cpu_s: float | None = Field(None, description="CPU seconds it used (user + system); null where not measured")
    max_rss_bytes: int | None = Field(None, description="peak resident memory; null where not measured")
    exit_code: int | None = Field(None, description="how its worker process exited, when it crashed")
    signal: str | None = Field(None, description="the signal that killed its worker process, e.g. SIGSEGV")
    loop_blocked_s: float | None = Field(
        None, description="seconds this inline attempt held its node's event loop; null when it did not"
    )
    epoch: int | None = Field(
        None, description="the master epoch of the placement that led to this attempt; null where not recorded"
    )


class LateResultOut(BaseModel):
    node: str
    attempt: int = Field(description="the number of the superseded attempt")
    outcome: str = Field(description="how it ended, as an attempt's outcome")
    error: str | None
    finished_at: float = Field(description="Unix seconds")
    code: str | None = Field(None, description="its result's code, in full, when it succeeded")
    meta: dict[str, Any] = Field(default_factory=dict, description="what its type reported beside the code")


class ResultOut(BaseModel):
    task_id: str
    code: str = Field(
        description="what the task produced; for a fetch, the fetched source; for a function task, its return "
        "value as text (itself when a string, else compact JSON)"
    )
    value: Any = Field(
        None, description="a function task's return value (any JSON value, null included); absent for other types"
    )
    node: str
    attempt: int
    finished_at: float
    meta: dict[str, Any]
    duplicates: int = Field(description="later attempts that also finished and were not kept")


class TaskOut(BaseModel):
    id: str = Field(description="a UUID")
    name: str
    type: str
    target: str
    params: dict[str, Any]
    state: str = Field(description=f"one of {', '.join(STATES)}")
    node: str | None = Field(description="name of the node the task is on")
    attempts: int
    max_retries: int
    timeout_s: float | None
    created_at: float = Field(description="Unix seconds")
    started_at: float | None
    finished_at: float | None
    error: str | None
    history: list[AttemptOut] = Field(description="the attempts, oldest first; the first and the latest are kept")
    max_lost_attempts: int = Field(description="lost attempts (node lost, crashed) that quarantine the task")
    lost_attempts: int = Field(description="attempts lost so far")
    attempts_dropped: int = Field(description="attempts left out of history between the first and the latest")
    memory_mb: int | None = Field(
        description="the memory_mb the task asked for (MiB); null: its type's bound, else the node's default"
    )
    cpu_s_limit: float | None = Field(
        description="the cpu_s_limit the task asked for (s); null: its type's bound, else the node's default"
    )
    result_ttl_s: float | None = Field(
        description="seconds the task is kept once it has ended, as it asked; null: the cluster's retention"
    )
    run_at: float | None = Field(
        None, description="Unix seconds the task was due at, if it was submitted with run_at or delay_s"
    )
    delay_s: float | None = Field(None, description="the delay_s it was submitted with")
    idempotency_key: str | None = Field(None, description="the idempotency_key it was submitted with")
    priority: int = Field(5, description="0 (lowest) to 9 (highest)")
    requires: dict[str, str] = Field(
        default_factory=dict, description="the node labels it may only run on (its type's defaults included)"
    )
    concurrency_key: str | None = Field(None, description="the concurrency_key it was submitted with")
    schedule: str | None = Field(None, description="the schedule that fired it")
    tick: float | None = Field(None, description="the tick of that schedule it was fired for (Unix seconds)")
    waiting_for: str | None = Field(
        None,
        description='why a WAITING task is not placed yet: "due at 2026-12-06T10:00:00.000Z", "retry due at ...", '
        '"no live node runs type X", "no live node has gpu=1", "concurrency limit fetch:example.org (2 at '
        'once)", "rate limit fetch:example.org 4/s", "host example.org asked to wait until ..."; null when it '
        "waits only for a free slot, or is not WAITING",
    )
    late_results: list[LateResultOut] = Field(
        description="the latest reports of attempts the task had moved on from (their node was lost or handed "
        "them back) that finished after all, oldest first; the first final result stays the task's"
    )
    args: list[Any] | None = Field(None, description="a function task's positional arguments; null: none given")
    kwargs: dict[str, Any] | None = Field(None, description="a function task's keyword arguments; null: none given")
    depends_on: list[str] = Field(default_factory=list, description="its parents (task ids)")
    on_parent_failure: str = Field("kill", description='"kill" or "run" (see the submit)')
    workflow: str | None = Field(None, description="the id of the workflow it belongs to (GET /workflows/{id})")
    children: list[str] = Field(
        default_factory=list, description="the tasks that depend on it (shown by GET /tasks/{id}; [] in listings)"
    )


class WaitedTaskOut(TaskOut):
    """A task, with its result when ``?result=true`` asked for it."""

    result: ResultOut | None = Field(
        None,
        description="only with ?result=true: the task's result, as GET /api/v1/tasks/{id}/result answers it; null "
        "while there is none (the task has not ended within ?wait=, or ended without one)",
    )


class WorkflowEdge(BaseModel):
    parent: str
    child: str


class WorkflowOut(BaseModel):
    """A workflow: its tasks (oldest first) and its edges, parent to child."""

    id: str
    tasks: list[TaskOut]
    edges: list[WorkflowEdge]
    counts: dict[str, int] = Field(description="how many of its tasks are in each state")


class WorkflowKillOut(BaseModel):
    id: str
    killed: dict[str, str] = Field(description="the tasks killed (id -> the state each was in)")


class TasksOut(BaseModel):
    tasks: list[TaskOut] = Field(description="the tasks stored, in the order of the request")


class TaskPageOut(BaseModel):
    tasks: list[TaskOut]
    total: int = Field(description="tasks matching the filter, on every page")
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last")
    complete: bool | None = Field(
        None, description="only with ?q=: whether the search looked at every task of the listing"
    )


class CountsOut(BaseModel):
    """Tasks in each state, by the state's name, and ``total``."""

    WAITING: int
    INQUEUE: int
    RUNNING: int
    RUNTIME_ERROR: int
    SUCCEED: int
    KILLED: int
    total: int


class ThroughputOut(BaseModel):
    interval_s: int = Field(description="seconds per sample")
    end: int = Field(description="Unix second of the last (current, partial) sample")
    succeeded: list[int] = Field(description="tasks that reached SUCCEED in each second, oldest first")
    failed: list[int] = Field(description="tasks that reached RUNTIME_ERROR in each second, oldest first")


class IdsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[TaskId] = Field(min_length=1, max_length=validation.MAX_BULK_IDS)


class OptResultOut(BaseModel):
    succeed: dict[str, bool] = Field(description="for each id, whether the change was made")


class NodeOut(BaseModel):
    name: str
    host: str
    http: str = Field(description="advertised host:port of the REST API")
    grpc: str = Field(description="advertised host:port of the gRPC server")
    state: str = Field(description="alive, suspect, dead or rejected")
    role: str = Field(description="master or worker")
    slots: int
    running: int
    pid: int
    last_beat: float
    types: list[str]
    reason: str = Field(description="why the master decided the state (why a node was rejected or declared dead)")
    incarnation: int = Field(description="grows each time the node starts or rejoins")
    priority: int = Field(description="higher stands first in a master election")
    draining: bool = Field(description="leaving: takes no new work")
    cache: dict[str, int] | None = Field(
        None, description="the node's cache shard: items, bytes, capacity, hits, misses, evictions, ..."
    )
    clock_skew: float | None = Field(
        None, description="seconds its clock is ahead of the store's (negative: behind), as its last beat measured"
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="its labels (shoal node --label gpu=1): what tasks may require of it"
    )
    prefetch: int = Field(
        0, description="tasks it takes beyond its slots now, to start as slots free (only while its tasks are short)"
    )


class ClusterOut(BaseModel):
    master: str | None
    epoch: int
    nodes: list[NodeOut]


class MasterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: str = Field(description="name of the node that should become master")


class MasterOut(BaseModel):
    master: str
    epoch: int


class TokenOut(BaseModel):
    token: str = Field(description="the new cluster token; the old one is accepted for a grace period")
    succeed: dict[str, bool] = Field(description="which nodes took the new token")


class TimelineEvent(BaseModel):
    id: str
    kind: str = Field(description="alive, suspect, dead, rejected, elected, master lost, re-placed")
    node: str
    rule: str = Field(
        description="the rule that fired, e.g. '5 beats missed, direct probe and 2 indirect probe(s) failed'"
    )
    epoch: int
    at: float
    extra: dict[str, Any]


class TimelineOut(BaseModel):
    events: list[TimelineEvent]


class StoreServerOut(BaseModel):
    name: Literal["redis", "valkey"] = Field(description="the server's product")
    version: str = Field(description="its version, e.g. 7.2.4")


class StoreTasksOut(BaseModel):
    """How many tasks are in each state (every state is present)."""

    WAITING: int
    INQUEUE: int
    RUNNING: int
    SUCCEED: int
    RUNTIME_ERROR: int
    KILLED: int


class StoreOut(BaseModel):
    """The store's figures (``GET /api/v1/store``)."""

    server: StoreServerOut
    used_memory_bytes: int = Field(description="memory the server uses (INFO memory: used_memory)")
    keys: int = Field(description="keys in the store's database (DBSIZE), other clusters' included")
    tasks: StoreTasksOut = Field(description="the cluster's tasks kept, by state")
    oldest_finished_at: float | None = Field(
        description="Unix seconds at which the task that ended longest ago (of those kept) ended; null: none has"
    )
    retention_s: float = Field(description="how long this node keeps finished tasks, in seconds; 0: for ever")


class TypesOut(BaseModel):
    types: list[str]


class TaskEventData(BaseModel):
    kind: Literal["task"]
    id: str = Field(description="the task's id")
    state: str = Field(description=f"one of {', '.join(STATES)} (a deleted task's last event says KILLED)")
    node: str | None
    at: float = Field(description="Unix seconds")
    type: str | None = Field(None, description="the task's type")
    event_id: str | None = Field(
        None, description="the event's id, also the frame's `id:`: send it back as `Last-Event-ID` or `?since=`"
    )


class NodeBeatData(BaseModel):
    kind: Literal["beat"]
    node: str
    incarnation: int | None
    running: int | None = Field(description="the node's RUNNING tasks")
    at: float


class NodeMemberData(BaseModel):
    kind: Literal["member"]
    node: str
    state: str = Field(description="the master's verdict: alive, suspect, dead or rejected")
    reason: str
    at: float


class NodeHandoverData(BaseModel):
    kind: Literal["handover"]
    node: str = Field(description="the master that gives up its role")
    candidate: Any = Field(description="the node it hands over to; null: the next election decides")
    at: float


class LaggedData(BaseModel):
    kind: Literal["lagged"]
    dropped: int = Field(description="events this client missed: re-list to catch up")


class GapData(BaseModel):
    kind: Literal["gap"]
    since: str = Field(description="the event id the stream was asked to resume after")
    oldest: str | None = Field(description="the oldest event the store still holds, where the stream goes on")


class NodeEventData(RootModel[NodeBeatData | NodeMemberData | NodeHandoverData]):
    """A heartbeat, a membership verdict or a master's hand-over, by ``kind``."""

    root: NodeBeatData | NodeMemberData | NodeHandoverData = Field(discriminator="kind")


def _json_of(model: str) -> Any:
    """An SSE ``data`` line: the JSON text of ``model``."""
    schema: JsonDict = {"$ref": f"#/components/schemas/{model}"}
    return Field(json_schema_extra={"contentMediaType": "application/json", "contentSchema": schema})


# One model per event as clients parse it, its ``event`` name and ``data`` line: OpenAPI 3.1 reads the
# ``schema`` of ``text/event-stream`` as that of each event (3.2 names it ``itemSchema``).


class TaskFrame(BaseModel):
    """A task changed state. Its ``id`` resumes the stream right after it (``Last-Event-ID``, ``?since=``)."""

    id: str | None = Field(None, description="the event's id")
    event: Literal["task"]
    data: str = _json_of("TaskEventData")


class NodeFrame(BaseModel):
    """A node's heartbeat, membership verdict or hand-over."""

    event: Literal["node"]
    data: str = _json_of("NodeEventData")


class LaggedFrame(BaseModel):
    """This client read too slowly and events were dropped."""

    event: Literal["lagged"]
    data: str = _json_of("LaggedData")


class GapFrame(BaseModel):
    """The stream resumed after an event older than the store keeps: events between were lost (re-list)."""

    event: Literal["gap"]
    data: str = _json_of("GapData")


class ErrorFrame(BaseModel):
    """The watch failed; the stream ends after this event."""

    event: Literal["error"]
    data: str = _json_of("ErrorOut")


class EventFrame(RootModel[TaskFrame | NodeFrame | LaggedFrame | GapFrame | ErrorFrame]):
    """One event of ``GET /api/v1/events``, by its ``event`` name."""

    root: TaskFrame | NodeFrame | LaggedFrame | GapFrame | ErrorFrame = Field(discriminator="event")


class ErrorOut(BaseModel):
    error: str = Field(description="snake_case kind, e.g. invalid_input, task_not_found, unauthorized")
    message: str


class BatchErrorOut(ErrorOut):
    index: int | None = Field(
        None,
        description="0-based index of the refused task, when one task refused the batch (nothing was stored); "
        "`error` is the kind a single submit of that task gets",
    )


class StatusOut(BaseModel):
    status: str
    reason: str | None = None
    node: str | None = None  # which node answered: a launcher tells its own nodes from others on a port
    pid: int | None = None


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry that documents shoal's error body for each status."""
    return {s: {"model": ErrorOut} for s in statuses}
