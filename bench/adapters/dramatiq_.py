"""Dramatiq 2 on Redis: ``RedisBroker`` and the ``Results`` middleware on the Redis result backend.

The worker is the ``dramatiq`` command with two processes of 8 worker threads each (``--threads``, or
``--dramatiq-threads``): Dramatiq's default, which its guide runs with. An echo spends its time on Redis
round trips (fetch, ack, store the result), not on the CPU, which is what the threads overlap. The client
is Dramatiq's own, synchronous: ``echo.send`` one at a time, and ``message.get_result(block=True)``, which
blocks in Redis (BRPOPLPUSH) until the worker pushes the result.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from bench.adapters.base import Batch, Settings
from bench.adapters.peer import PROCESSES, PeerSystem


class DramatiqSystem(PeerSystem):
    name = "dramatiq"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.threads = int(settings.options.get("dramatiq_threads") or 8)
        self.client = DramatiqClient()

    def worker_argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "dramatiq",
            "bench.adapters.dramatiq_app:broker",
            "--processes",
            str(PROCESSES),
            "--threads",
            str(self.threads),
        ]

    def describe(self) -> dict[str, Any]:
        import dramatiq

        return {"version": dramatiq.__version__, **super().describe()}


class DramatiqClient:
    """``echo.send`` from this process, one at a time; results through the Redis result backend."""

    path = "send"
    workloads = frozenset({"throughput", "drain", "latency"})
    skipped: dict[str, str] = {}
    note = "one synchronous send at a time; results via message.get_result(block=True)"

    def __init__(self) -> None:
        self._actor: Any = None
        self._backend: Any = None

    async def connect(self, url: str) -> None:
        from bench.adapters import dramatiq_app

        _broker, self._backend, self._actor = dramatiq_app.build(url)

    async def prepare(self) -> None:
        return None

    async def submit_many(self, n: int, concurrency: int) -> Batch:
        send = self._actor.send
        handles = [send("x") for _ in range(n)]
        return Batch(accepted=len(handles), handles=handles)

    def _result(self, message: Any, timeout: float) -> Any:
        # the Redis backend blocks for whole seconds only: under one second it would not block at all
        return message.get_result(backend=self._backend, block=True, timeout=max(1000, int(timeout * 1000)))

    async def wait_all(self, batch: Batch, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        bad = 0
        for message in batch.handles:
            bad += self._result(message, max(1.0, deadline - time.monotonic())) != "x"
        if bad:
            raise RuntimeError(f"dramatiq: {bad} of {len(batch.handles)} results were wrong")

    async def roundtrip(self, timeout: float) -> None:
        value = self._result(self._actor.send("x"), timeout)
        if value != "x":
            raise RuntimeError(f"dramatiq: echo returned {value!r}")

    async def close(self) -> None:
        return None
