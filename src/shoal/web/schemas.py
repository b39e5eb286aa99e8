"""Pydantic models that describe the REST API's bodies in the OpenAPI document.

They are documentation only: requests are checked by ``shoal.validation`` (so REST and gRPC refuse the
same things with the same words) and responses are the models' own ``to_json()``. Keep these in step
with ``shoal.models``; ``tests/test_api.py`` compares the two.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from shoal import validation
from shoal.models import AttemptOutcome, TaskState

STATES = [s.name for s in TaskState]


class TaskIn(BaseModel):
    """A task to run: ``name`` and ``target`` are required, ``type`` names a registered task type."""

    name: str = Field(max_length=validation.MAX_NAME_CHARS, examples=["front page"])
    type: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$", examples=["fetch"])
    target: str = Field(max_length=validation.MAX_TARGET_CHARS, examples=["http://127.0.0.1:8000/"])
    params: dict[str, Any] | None = Field(None, description=f"at most {validation.MAX_PARAMS_BYTES} bytes as JSON")
    timeout_s: float | None = Field(None, gt=0, le=validation.MAX_TIMEOUT_S)
    max_retries: int = Field(0, ge=0, le=validation.MAX_RETRIES)
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


class LateResultOut(BaseModel):
    node: str
    attempt: int = Field(description="the number of the superseded attempt")
    outcome: str = Field(description="how it ended, as an attempt's outcome")
    error: str | None
    finished_at: float = Field(description="Unix seconds")
    code: str | None = Field(None, description="its result's code, in full, when it succeeded")
    meta: dict[str, Any] = Field(default_factory=dict, description="what its type reported beside the code")


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
    late_results: list[LateResultOut] = Field(
        description="the latest reports of attempts the task had moved on from (their node was lost or handed "
        "them back) that finished after all, oldest first; the first final result stays the task's"
    )


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


class ResultOut(BaseModel):
    task_id: str
    code: str = Field(description="what the task produced; for a fetch, the fetched source")
    node: str
    attempt: int
    finished_at: float
    meta: dict[str, Any]
    duplicates: int = Field(description="later attempts that also finished and were not kept")


class IdsIn(BaseModel):
    ids: list[str] = Field(min_length=1, max_length=validation.MAX_BULK_IDS)


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


class ClusterOut(BaseModel):
    master: str | None
    epoch: int
    nodes: list[NodeOut]


class MasterIn(BaseModel):
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


class TypesOut(BaseModel):
    types: list[str]


class ErrorOut(BaseModel):
    error: str = Field(description="snake_case kind, e.g. invalid_input, task_not_found, unauthorized")
    message: str


class StatusOut(BaseModel):
    status: str
    reason: str | None = None
    node: str | None = None  # which node answered: a launcher tells its own nodes from others on a port
    pid: int | None = None


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry that documents shoal's error body for each status."""
    return {s: {"model": ErrorOut} for s in statuses}
