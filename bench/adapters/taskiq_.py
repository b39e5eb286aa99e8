"""taskiq on Redis: taskiq-redis's ``RedisStreamBroker`` and its Redis result backend.

The worker is ``taskiq worker`` with two worker processes (``--workers 2``), each running tasks on its
event loop (up to taskiq's default 100 at once). The client is taskiq's own and async: ``echo.kiq`` awaited
one at a time (as a loop of ``await task.kiq(...)`` sends), and ``wait_result``, which polls the result
backend: every ``Settings.poll_interval`` (20 ms) for a batch, as shoal's batch completion is polled, and
every millisecond for a latency round trip (taskiq's default, 200 ms, would measure the poll, not taskiq).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from bench.adapters.base import Batch, Settings
from bench.adapters.peer import PROCESSES, PeerSystem

#: Seconds between two result polls of a latency round trip.
ROUNDTRIP_POLL = 0.001


class TaskiqSystem(PeerSystem):
    name = "taskiq"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.client = TaskiqClient(settings.poll_interval)

    def worker_argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "taskiq",
            "worker",
            "bench.adapters.taskiq_app:broker",
            "--workers",
            str(PROCESSES),
            "--log-level",
            "WARNING",
        ]

    def describe(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {"version": version("taskiq"), "taskiq_redis": version("taskiq-redis"), **super().describe()}


class TaskiqClient:
    """``echo.kiq`` from this process, one awaited at a time; results polled from the Redis backend."""

    path = "kiq"
    workloads = frozenset({"throughput", "drain", "latency"})
    skipped: dict[str, str] = {}
    note = "one awaited kiq at a time; results via wait_result (polls: 20 ms for a batch, 1 ms for latency)"

    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self._broker: Any = None
        self._echo: Any = None

    async def connect(self, url: str) -> None:
        from bench.adapters import taskiq_app

        self._broker, self._echo = taskiq_app.build(url)
        await self._broker.startup()  # creates the consumer group: tasks sent from now on are delivered

    async def prepare(self) -> None:
        return None

    async def submit_many(self, n: int, concurrency: int) -> Batch:
        kiq = self._echo.kiq
        handles = [await kiq("x") for _ in range(n)]
        return Batch(accepted=len(handles), handles=handles)

    async def _value(self, task: Any, timeout: float, poll: float) -> Any:
        result = await task.wait_result(check_interval=poll, timeout=timeout)
        if result.is_err:
            raise RuntimeError(f"taskiq: the task failed: {result.error!r}")
        return result.return_value

    async def wait_all(self, batch: Batch, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        bad = 0
        for task in batch.handles:
            bad += await self._value(task, max(1.0, deadline - time.monotonic()), self.poll_interval) != "x"
        if bad:
            raise RuntimeError(f"taskiq: {bad} of {len(batch.handles)} results were wrong")

    async def roundtrip(self, timeout: float) -> None:
        value = await self._value(await self._echo.kiq("x"), timeout, ROUNDTRIP_POLL)
        if value != "x":
            raise RuntimeError(f"taskiq: echo returned {value!r}")

    async def close(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
