"""The two seams every task system plugs into: a ``System`` (its processes) and its ``Client`` paths.

A ``System`` starts and stops whatever the task system needs (a redis-server and two shoal nodes; a
redis-server and a Celery, Dramatiq or taskiq worker of two processes), can hold its workers back while a
backlog is queued and release them (the drain run), and names the client paths it can be driven through
("batch", "gRPC", "apply_async", ...). A ``Client`` is one such path: it submits tasks, waits for a batch to
finish and does one submit-to-result round trip. The workloads in ``bench.workloads`` only ever talk to
these two Protocols, so adding a system is one module in ``bench/adapters`` plus a line in
``bench.adapters.SYSTEMS``.

Clients may block the event loop (Celery's and Dramatiq's clients are synchronous): the benchmark runs one
workload at a time and nothing else shares the loop, so a blocking call is timed exactly as a user's
program would see it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass
class Batch:
    """What ``submit_many`` accepted; ``handles`` and ``baseline`` mean whatever the client needs them to."""

    accepted: int
    failed: int = 0
    handles: list[Any] = field(default_factory=list)
    baseline: Any = None
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Settings:
    """What every system is asked for, so that all of them run the same work."""

    workdir: Path
    concurrency: int = 64  # tasks in flight for clients that can pipeline submissions
    poll_interval: float = 0.02  # seconds between completion checks where a system offers no push
    options: dict[str, Any] = field(default_factory=dict)  # per-system knobs, e.g. celery_pool


class Client(Protocol):
    """One way into a system. ``workloads`` names the workloads this path takes part in; ``skipped`` those
    it would take part in but cannot on the shoal being measured (an API not there yet), with the reason."""

    path: str
    workloads: frozenset[str]
    skipped: dict[str, str]
    note: str

    async def prepare(self) -> None:
        """Called before a timed phase starts: take baselines, warm connections. Not timed."""

    async def submit_many(self, n: int, concurrency: int) -> Batch:
        """Submit ``n`` echo tasks as fast as this path allows, at most ``concurrency`` in flight."""

    async def wait_all(self, batch: Batch, timeout: float) -> None:
        """Return once every task of ``batch`` has a stored result; raise on failure or timeout."""

    async def roundtrip(self, timeout: float) -> None:
        """Submit one echo task and return once its result is known to this client."""

    async def close(self) -> None:
        """Release connections."""


class System(Protocol):
    """A task system under test; ``start`` brings up its processes and ``stop`` takes all of them down."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def hold(self) -> None:
        """From now on, accept submissions but run no task: the workers are stopped (shoal: nodes that run
        no tasks take the submissions). Called on an idle system."""

    async def release(self) -> None:
        """Start the workers again and return at once: the drain run's clock starts before this call."""

    def processes(self) -> dict[str, int]:
        """The pid of each process the system runs on, by role ("redis", "nodes", "workers"): each one's
        CPU is counted with all the processes below it."""

    def clients(self) -> list[Client]:
        """Its client paths; the first one is the system's main path."""

    def describe(self) -> dict[str, Any]:
        """Versions and settings worth printing beside the figures."""

    def store_address(self) -> tuple[str, int] | None:
        """(host, port) of the Redis the system keeps its tasks in, to count the commands a task costs."""
