"""The seams between shoal's layers, as Protocols.

The web and rpc adapters talk to the node only through ``TaskAPI`` and ``ClusterAPI``; that keeps them
thin and lets the same calls be served over REST and gRPC with one set of rules.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from shoal.models import (
    CacheGrant,
    CacheItem,
    ClusterView,
    EventGap,
    Fill,
    Task,
    TaskEvent,
    TaskPage,
    TaskResult,
    TaskSpec,
    TaskState,
)

if TYPE_CHECKING:
    from shoal.store.stats import StoreStats
    from shoal.store.tasks import Created


class TaskAPI(Protocol):
    """What users may do with tasks. Safe to call concurrently from any number of requests."""

    async def submit(self, spec: TaskSpec) -> tuple[Task, bool]:
        """Store a new task as WAITING, and say True; or, for an idempotency key that made a task within the
        window, that task and False. Raise UnknownTaskType if no live node runs its type, NoLiveNode if no
        node is alive at all."""
        ...

    async def submit_many(self, specs: Sequence[TaskSpec]) -> Created:
        """Store every spec as WAITING in one store call, in order, or none: the first spec refused (an unknown
        type, a target or params its type refuses) refuses the batch with ``RefusedTask`` naming its index;
        NoLiveNode as ``submit``."""
        ...

    async def get(self, task_id: str) -> Task:
        """Return the task or raise TaskNotFound."""
        ...

    async def list(self, state: TaskState | None, limit: int, cursor: str | None) -> TaskPage:
        """Newest first; ``cursor`` is the ``next_cursor`` of the page before."""
        ...

    async def kill(self, task_id: str) -> Task:
        """Kill in any non-terminal state; raise IllegalTransition on a terminal one."""
        ...

    async def kill_many(self, task_ids: builtins.list[str]) -> dict[str, bool]:
        """Kill each task; the map says which ones were killed (the seed's ``OptResult``)."""
        ...

    async def workflow(self, workflow_id: str) -> builtins.list[Task]:
        """The tasks of a workflow, oldest first; raise WorkflowNotFound when none is kept."""
        ...

    async def kill_workflow(self, workflow_id: str) -> dict[str, str]:
        """Kill every unfinished task of a workflow: the killed ones' ids, with the state each was in."""
        ...

    async def delete(self, task_id: str) -> None:
        """Kill the task if it is not terminal, then remove it and its result."""
        ...

    async def delete_many(self, task_ids: builtins.list[str]) -> dict[str, bool]:
        """Delete each task; the map says which ones were deleted."""
        ...

    async def result(self, task_id: str) -> TaskResult:
        """Return the result, or raise ResultNotFound while there is none."""
        ...

    async def wait(self, task_id: str, timeout_s: float) -> Task:
        """Return the task once it is terminal, or as it is when ``timeout_s`` runs out."""
        ...

    async def wait_result(
        self, task_id: str, timeout_s: float, *, result: bool = True
    ) -> tuple[Task, TaskResult | None]:
        """As ``wait``, with the task's result read in the same step (None while it has none)."""
        ...

    async def submit_and_wait(
        self, spec: TaskSpec, timeout_s: float, *, result: bool = True
    ) -> tuple[Task, bool, TaskResult | None]:
        """As ``submit``, then ``wait_result``: the task (and whether it was stored now), once it has ended
        or as it is when ``timeout_s`` runs out, with its result if asked."""
        ...

    def watch(self, since: str | None = None) -> AsyncIterator[TaskEvent | EventGap]:
        """Every task state change from now on, until the caller stops iterating; with ``since`` (an event's
        ``event_id``), first those after it the store still holds, an ``EventGap`` first if some are gone. A
        malformed ``since`` raises InvalidInput at the call."""
        ...

    async def task_types(self) -> builtins.list[str]:
        """The task types that live nodes have registered."""
        ...

    async def function_types(self) -> builtins.list[str]:
        """Those of ``task_types`` that run a Python function (``@shoal.task``): they take ``args``/``kwargs``."""
        ...

    async def counts(self) -> dict[str, int]:
        """How many tasks are in each state (by name), and ``total``."""
        ...

    async def search(
        self, state: TaskState | None, query: str, limit: int, cursor: str | None, prefix: str = ""
    ) -> tuple[TaskPage, bool]:
        """Tasks whose name or target contains ``query`` (any case), and whose name starts with ``prefix``,
        newest first, from a bounded scan of the index; the flag says whether the scan covered every task
        (else ``total`` counts the newest only)."""
        ...

    async def search_names(
        self, state: TaskState | None, prefix: str, limit: int, cursor: str | None
    ) -> tuple[TaskPage, bool]:
        """Tasks whose name starts with ``prefix`` (ASCII case-insensitive), newest first, from the name index;
        the flag says whether ``total`` is exact."""
        ...

    def throughput(self, seconds: int) -> dict[str, Any]:
        """Tasks that ended per second over the last ``seconds``, as this node saw them (see shoal.throughput)."""
        ...


class ClusterAPI(Protocol):
    """What users may see of the cluster."""

    async def view(self) -> ClusterView:
        """Every known node, the master and the epoch."""
        ...

    async def ready(self) -> tuple[bool, str]:
        """Whether this node can take work now, and why not."""
        ...

    async def hand_over(self, candidate: str) -> tuple[str, int]:
        """Make ``candidate`` the master (forwarded to the current master); the new (master, epoch)."""
        ...

    async def rotate_token(self) -> tuple[str, dict[str, bool]]:
        """Give every live node a new cluster token; the token and which nodes took it."""
        ...

    async def timeline(self, limit: int) -> list[dict[str, Any]]:
        """The latest membership events (joins, suspicions, deaths, rejections, elections), newest first."""
        ...

    def watch(self) -> AsyncIterator[dict[str, Any]]:
        """Node events (beats, membership verdicts, hand-overs; see shoal.events.node_event) from now on."""
        ...


class StoreAPI(Protocol):
    """What operators may see of the store: what it runs, what it holds and what it keeps."""

    async def stats(self) -> StoreStats:
        """The server, its memory and keys, tasks by state, the oldest finished task and the retention."""
        ...


class CacheAPI(Protocol):
    """The cluster cache as one node offers it: keys spread over the live nodes by rendezvous hashing.

    Keys are validated by ``shoal.validation.cache_key``; values are bytes up to ``cache_max_value``.
    """

    async def get(self, key: str) -> CacheItem | None:
        """The item from its owner (or a replica), fresh or stale; None when no live owner has it."""
        ...

    async def set(self, key: str, value: bytes, ttl_s: float | None = None, keep_s: float = 0.0) -> None:
        """Store on every owner: fresh for ``ttl_s`` (None = until evicted), then stale for ``keep_s`` more."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove from every owner; True if any had it."""
        ...

    async def get_or_fill(self, key: str, fill: Callable[[CacheItem | None], Awaitable[Fill]]) -> tuple[bytes, bool]:
        """A fresh value (hit = True), or exactly one ``fill`` across the cluster for concurrent misses.

        ``fill`` gets the stale item, if any, so it can revalidate instead of loading again. Callers that
        wait on another node's fill get its value when it is stored; when it is not (``Fill.store`` False,
        or the filler failed), each waiter runs its own ``fill``. Returns (value, hit).
        """
        ...

    def stats(self) -> dict[str, int]:
        """This node's shard: items, bytes, capacity, hits, misses, evictions, expired, fills."""
        ...

    async def cluster_stats(self) -> dict[str, dict[str, int]]:
        """Every live node's shard stats, by node name."""
        ...


class CacheOwnerAPI(Protocol):
    """One node's shard as the key owners' peers reach it (``shoal.v1.CacheShards``): no routing."""

    def load(self, key: str) -> CacheItem | None:
        """The item this node holds, fresh or stale; None if none."""
        ...

    def store(self, key: str, value: bytes, ttl_s: float | None, keep_s: float) -> None:
        """Keep the item here; a fill lease waiting on ``key`` is answered with it."""
        ...

    def drop(self, key: str) -> bool:
        """Remove the item here; True if it was here."""
        ...

    async def lease(self, key: str, wait_s: float) -> CacheGrant:
        """A fresh item, the fill lease, or (after waiting up to ``wait_s`` for another filler) neither."""
        ...

    def release(self, key: str, lease: str) -> None:
        """Give the fill lease back without storing: its waiters fill on their own."""
        ...


JSONDict = dict[str, Any]


class PeerAPI(Protocol):
    """What other nodes may ask of this one over the HeartBeats and Elections services.

    Only called after the caller passed node-to-node authentication (per-call HMAC of the cluster token).
    """

    def identity(self) -> tuple[str, int]:
        """This node's name and incarnation (a number that grows each time the node starts)."""
        ...

    async def probe(self, name: str, grpc_addr: str, timeout_s: float) -> bool:
        """Probe another node directly on the caller's behalf (SWIM indirect probe); True if it answered."""
        ...

    def prove(self, challenge: bytes, verifier: str) -> bytes:
        """The answer to an admission challenge: HMAC of the challenge, proving this node holds the token."""
        ...

    async def hand_over(self, candidate: str | None) -> bool:
        """Give up the master role to ``candidate`` (or the next in line); False if this node is not master."""
        ...

    async def update_secret(self, sealed: bytes, key_id: str) -> bool:
        """Adopt a new cluster token sent sealed under the current one; keep accepting the old for a while."""
        ...
