"""The two seams every task system plugs into: a ``System`` (its processes) and its ``Client`` paths.

A ``System`` starts and stops whatever the task system needs (a shoal node; a Redis plus a Celery worker)
and names the client paths it can be driven through ("REST", "gRPC", "apply_async"). A ``Client`` is one
such path: it submits tasks, waits for a batch to finish and does one submit-to-result round trip. The
workloads in ``bench.workloads`` only ever talk to these two Protocols, so adding arq, Dramatiq or
taskiq is one module in ``bench/adapters`` plus a line in ``bench.adapters.SYSTEMS``.

Clients may block the event loop (Celery's client is synchronous): the benchmark runs one workload at a
time and nothing else shares the loop, so a blocking call is timed exactly as a user's program would see it.
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
    """One way into a system. ``workloads`` names the workloads this path takes part in."""

    path: str
    workloads: frozenset[str]
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

    def clients(self) -> list[Client]:
        """Its client paths; the first one is the system's main path."""

    def describe(self) -> dict[str, Any]:
        """Versions and settings worth printing beside the figures."""

    def store_address(self) -> tuple[str, int] | None:
        """(host, port) of the Redis the system keeps its tasks in, to count the commands a task costs."""
