"""The workloads, defined once and run unchanged against every system's clients.

- ``Throughput``: end to end, from the first submission of ``n`` echo tasks to the moment the last one
  has a stored result. With a ``window``, submissions are paced so that at most that many tasks are ever
  submitted and not yet done: no backlog builds up, so the work the system does per task stays the same
  whatever the pace of the tasks (what a CPU cost per task needs).
- ``Drain``: ``n`` tasks queued while the system's workers are held back (``System.hold``), untimed; then
  the workers are released (``System.release``) and the clock runs until the last one has its result:
  how fast a system works off a backlog, with no submission in the way.
- ``Latency``: ``n`` sequential submit-to-result round trips on an otherwise idle system, after
  ``warmup`` untimed ones; p50/p99 by nearest rank.

Each figure also records the CPU seconds the benchmark process itself spent, so a reader can tell when
the client, not the system, was the limit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from bench.adapters.base import Batch, Client, System


def _cpu() -> float:
    return time.process_time()


@dataclass(frozen=True)
class Throughput:
    n: int = 10_000
    concurrency: int = 64
    window: int | None = None
    name: str = "throughput"

    async def run(self, client: Client, system: System) -> dict[str, Any]:
        await client.prepare()
        cpu0, t0 = _cpu(), time.perf_counter()
        batch = await (self._paced(client) if self.window else client.submit_many(self.n, self.concurrency))
        submitted = time.perf_counter() - t0
        if not batch.accepted:
            raise RuntimeError(f"{client.path}: no submission accepted: {batch.errors[:3]}")
        await client.wait_all(batch, timeout=_timeout(self.n))
        elapsed = time.perf_counter() - t0
        return {
            "tasks": self.n,
            "concurrency": self.concurrency,
            "accepted": batch.accepted,
            "failed": batch.failed,  # refused submissions; the figure counts accepted tasks only
            "errors": batch.errors[:5],
            "submit_seconds": submitted,
            "seconds": elapsed,
            "per_s": batch.accepted / elapsed,
            "client_cpu_pct": 100.0 * (_cpu() - cpu0) / elapsed,
            **({"window": self.window} if self.window else {}),
        }

    async def _paced(self, client: Client) -> Batch:
        """Submit in steps of a quarter window, each once no more than three quarters are left undone."""
        assert self.window is not None
        step = max(1, self.window // 4)
        batch = await client.submit_many(min(step, self.n), self.concurrency)
        sent = batch.accepted + batch.failed
        while sent < self.n:
            done = Batch(accepted=max(0, batch.accepted - (self.window - step)), baseline=batch.baseline)
            await client.wait_all(done, timeout=_timeout(self.n))
            more = await client.submit_many(min(step, self.n - sent), self.concurrency)
            batch.accepted, batch.failed = batch.accepted + more.accepted, batch.failed + more.failed
            batch.errors += more.errors
            sent += more.accepted + more.failed
        return batch


@dataclass(frozen=True)
class Drain:
    n: int = 10_000
    concurrency: int = 64
    name: str = "drain"

    async def run(self, client: Client, system: System) -> dict[str, Any]:
        await system.hold()
        try:
            await client.prepare()
            t_queue = time.perf_counter()
            batch = await client.submit_many(self.n, self.concurrency)
            queued = time.perf_counter() - t_queue
        except BaseException:
            await system.release()  # leave the system as it was found
            raise
        if not batch.accepted:
            await system.release()
            raise RuntimeError(f"{client.path}: no submission accepted: {batch.errors[:3]}")
        cpu0, t0 = _cpu(), time.perf_counter()
        await system.release()
        await client.wait_all(batch, timeout=_timeout(self.n))
        elapsed = time.perf_counter() - t0
        return {
            "tasks": self.n,
            "accepted": batch.accepted,
            "failed": batch.failed,
            "errors": batch.errors[:5],
            "queue_seconds": queued,  # how long queueing the backlog took; not the figure
            "seconds": elapsed,
            "per_s": batch.accepted / elapsed,
            "client_cpu_pct": 100.0 * (_cpu() - cpu0) / elapsed,
        }


@dataclass(frozen=True)
class Latency:
    n: int = 500
    warmup: int = 20
    timeout: float = 10.0
    name: str = "latency"

    async def run(self, client: Client, system: System) -> dict[str, Any]:
        await client.prepare()
        for _ in range(self.warmup):
            await client.roundtrip(self.timeout)
        samples = []
        cpu0 = _cpu()
        for _ in range(self.n):
            t0 = time.perf_counter()
            await client.roundtrip(self.timeout)
            samples.append(time.perf_counter() - t0)
        elapsed = sum(samples)
        samples.sort()
        return {
            "tasks": self.n,
            "warmup": self.warmup,
            "p50_ms": 1000 * percentile(samples, 0.50),
            "p90_ms": 1000 * percentile(samples, 0.90),
            "p99_ms": 1000 * percentile(samples, 0.99),
            "mean_ms": 1000 * elapsed / len(samples),
            "min_ms": 1000 * samples[0],
            "max_ms": 1000 * samples[-1],
            "client_cpu_pct": 100.0 * (_cpu() - cpu0) / elapsed,
        }


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (the smallest value with at least q of the data <= it)."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _timeout(n: int) -> float:
    """Long enough for any sane system (50 tasks/s), never less than a minute."""
    return max(60.0, n / 50.0)


Workload = Throughput | Drain | Latency
