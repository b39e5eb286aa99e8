"""Celery 5 on Redis (broker and result backend), driven through its ordinary client, ``apply_async``.

The worker is ``celery worker`` with the prefork pool and two processes (``--celery-pool`` and
``--celery-concurrency`` change them), without gossip, mingle and heartbeats, which only matter between
several workers. The client is synchronous, as Celery's is: one ``apply_async`` at a time, and results
read through the Redis backend's pub/sub result consumer (``.get()``, ``ResultSet.join_native``).
"""

from __future__ import annotations

import sys
from typing import Any

from bench.adapters.base import Batch, Settings
from bench.adapters.peer import PROCESSES, PeerSystem


class CelerySystem(PeerSystem):
    name = "celery"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.pool = str(settings.options.get("celery_pool", "prefork"))
        self.concurrency = int(settings.options.get("celery_concurrency", PROCESSES))
        self.prefetch = int(settings.options.get("celery_prefetch", 4))
        self.client = CeleryClient()

    def worker_argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.adapters.celery_app",
            "worker",
            "--pool",
            self.pool,
            "--concurrency",
            str(self.concurrency),
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--hostname",
            "bench@%h",
        ]

    def worker_env(self) -> dict[str, str]:
        return {**super().worker_env(), "BENCH_CELERY_PREFETCH": str(self.prefetch)}

    def describe(self) -> dict[str, Any]:
        import celery
        import kombu

        return {
            "version": celery.__version__,
            "kombu": kombu.__version__,
            "prefetch_multiplier": self.prefetch,
            **super().describe(),
        }


class CeleryClient:
    """``apply_async`` from this process; synchronous, so ``concurrency`` has no meaning here."""

    path = "apply_async"
    workloads = frozenset({"throughput", "drain", "latency"})
    skipped: dict[str, str] = {}
    note = "one synchronous apply_async at a time; results via .get() / join_native() on the Redis backend"

    def __init__(self) -> None:
        self._echo: Any = None

    async def connect(self, url: str) -> None:
        from bench.adapters import celery_app

        celery_app.configure(url)
        self._echo = celery_app.echo

    async def prepare(self) -> None:
        return None

    async def submit_many(self, n: int, concurrency: int) -> Batch:
        apply = self._echo.apply_async
        handles = [apply(("x",)) for _ in range(n)]
        return Batch(accepted=len(handles), handles=handles)

    async def wait_all(self, batch: Batch, timeout: float) -> None:
        from celery.result import ResultSet

        values = ResultSet(batch.handles).join_native(timeout=timeout, propagate=True)
        bad = sum(1 for v in values if v != "x")
        if bad:
            raise RuntimeError(f"celery: {bad} of {len(values)} results were wrong")

    async def roundtrip(self, timeout: float) -> None:
        value = self._echo.apply_async(("x",)).get(timeout=timeout)
        if value != "x":
            raise RuntimeError(f"celery: echo returned {value!r}")

    async def close(self) -> None:
        return None
