"""Celery 5 on Redis (broker and result backend), driven through its ordinary client, ``apply_async``.

The worker is a subprocess: ``celery worker`` with the prefork pool and two processes by default (the
machine has two cores; ``--celery-pool``/``--celery-concurrency`` change it), without gossip, mingle and
heartbeats, which only matter between several workers. The client is synchronous, as Celery's is: one
``apply_async`` at a time, and results read through the Redis backend's pub/sub result consumer.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.adapters.base import Batch, Settings
from bench.procs import REAPER
from bench.redis_server import RedisServer, live_settings

ROOT = Path(__file__).resolve().parents[2]


class CelerySystem:
    name = "celery"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = str(settings.options.get("celery_pool", "prefork"))
        self.concurrency = int(settings.options.get("celery_concurrency", 2))
        self.prefetch = int(settings.options.get("celery_prefetch", 4))
        self.redis = RedisServer(settings.workdir / "celery-redis")
        self.worker: Any = None
        self._client = CeleryClient()

    async def start(self) -> None:
        self.redis.start()
        env = dict(
            os.environ,
            BENCH_CELERY_REDIS_URL=self.redis.url,
            BENCH_CELERY_PREFETCH=str(self.prefetch),
            PYTHONPATH=str(ROOT),
        )
        argv = [
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
        log = self.settings.workdir / "celery-worker.log"
        self.worker = REAPER.spawn("celery worker", argv, log=log, env=env, cwd=ROOT, grace=20.0)
        self._client.connect(self.redis.url)
        self._client.wait_ready(self.worker, timeout=60.0)

    async def stop(self) -> None:
        await self._client.close()
        if self.worker is not None:
            REAPER.stop(self.worker)
            self.worker = None
        self.redis.stop()

    def clients(self) -> list[Any]:
        return [self._client]

    def describe(self) -> dict[str, Any]:
        import celery
        import kombu

        return {
            "version": celery.__version__,
            "kombu": kombu.__version__,
            "pool": self.pool,
            "concurrency": self.concurrency,
            "worker_flags": "--without-gossip --without-mingle --without-heartbeat",
            "prefetch_multiplier": self.prefetch,
            "redis_binary": str(self.redis.binary),
            **(live_settings("127.0.0.1", self.redis.port) if self.redis.proc else {}),
        }

    def store_address(self) -> tuple[str, int] | None:
        return ("127.0.0.1", self.redis.port) if self.redis.proc else None


class CeleryClient:
    """``apply_async`` from this process; synchronous, so ``concurrency`` has no meaning here."""

    path = "apply_async"
    workloads = frozenset({"accept", "throughput", "latency"})
    note = "one synchronous apply_async at a time; results via .get() on the Redis backend"

    def __init__(self) -> None:
        self._echo: Any = None

    def connect(self, url: str) -> None:
        from bench.adapters import celery_app

        celery_app.configure(url)
        self._echo = celery_app.echo

    def wait_ready(self, worker: Any, timeout: float) -> None:
        """Ready means a task went through: the worker consumes and the result backend answers."""
        from celery.exceptions import TimeoutError as CeleryTimeout

        deadline = time.monotonic() + timeout
        while True:
            if worker.poll() is not None:
                raise RuntimeError(f"celery worker exited with code {worker.returncode}")
            try:
                self._echo.apply_async(("ready",)).get(timeout=1.0)
                return
            except CeleryTimeout:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"celery worker not ready after {timeout:.0f} s") from None

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
