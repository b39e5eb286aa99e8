"""shoal over gRPC: the generated ``shoal.v1.Tasks`` stub on grpc.aio channels, one per node.

The token goes as per-call metadata (``authorization: Bearer <token>``) rather than through the client
interceptors of ``shoal.rpc.client``: plain gRPC, and no Python hop per call. Requests are built once and
reused. Submissions share one HTTP/2 connection per node, up to ``concurrency`` in flight, the lanes spread
over the nodes round robin. A latency round trip is one ``CreateTask`` with ``wait_s``, which answers once
the task has ended, with its ``result``; on a shoal whose ``TaskSpec`` has no ``wait_s`` yet, the latency
run is skipped with that reason.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from bench.adapters.base import Batch
from bench.adapters.shoal_ import ECHO, FAILED_STATES, Counts, wait_counts

if TYPE_CHECKING:
    from bench.adapters.shoal_ import ShoalSystem


class ShoalGrpc:
    path = "gRPC"
    note = "grpc.aio, one channel per node; CreateTask, 64 in flight; latency: CreateTask with wait_s=10"

    def __init__(self, system: ShoalSystem) -> None:
        self.system = system
        self.stub: Any = None
        self.channels: list[grpc.aio.Channel] = []
        self.stubs: list[Any] = []
        self._baseline = Counts(0, 0)
        self.workloads = frozenset({"throughput", "latency"})
        self.skipped: dict[str, str] = {}

    async def connect(self) -> None:
        from shoal.rpc.client import CHANNEL_OPTIONS, open_channel, pb, tasks_stub

        self.pb = pb
        self.channels = [open_channel(addr, None, options=CHANNEL_OPTIONS) for addr in self.system.grpc_addrs]
        self.stubs = [tasks_stub(channel) for channel in self.channels]
        self.stub = self.stubs[0]
        self.md = (("authorization", f"Bearer {self.system.token}"),)
        self.use_type(ECHO["type"])
        self.queries = {s: pb.Query(state=[pb.Task.State.Value(s)], limit=1) for s in ("SUCCEED", *FAILED_STATES)}
        for channel in self.channels:
            await asyncio.wait_for(channel.channel_ready(), 10.0)
        waits = "wait_s" in pb.TaskSpec.DESCRIPTOR.fields_by_name and "result" in pb.Task.DESCRIPTOR.fields_by_name
        if not waits:
            self.workloads = frozenset({"throughput"})
            self.skipped = {"latency": "CreateTask with TaskSpec.wait_s (task and result) is not in this shoal yet"}

    def use_type(self, task_type: str) -> None:
        """Submit tasks of ``task_type`` (one that returns its target, as ``echo`` does) from now on."""
        self.spec = self.pb.TaskSpec(name=task_type, type=task_type, target=ECHO["target"])
        self._waiting: Any = None

    async def _count(self, state: str) -> int:
        page = await self.stub.ListTask(self.queries[state], metadata=self.md, timeout=30.0)
        return int(page.total)

    async def counts(self, with_failed: bool = True) -> Counts:
        failed = sum([await self._count(s) for s in FAILED_STATES]) - self.system.killed_by_bench if with_failed else 0
        return Counts(await self._count("SUCCEED"), failed)

    async def prepare(self) -> None:
        self._baseline = await self.counts()

    async def submit_many(self, n: int, concurrency: int) -> Batch:
        spec, md = self.spec, self.md
        batch = Batch(accepted=0, baseline=self._baseline)
        left = n

        async def lane(create: Any) -> None:
            nonlocal left
            while left > 0:
                left -= 1
                try:
                    await create(spec, metadata=md, timeout=30.0)
                    batch.accepted += 1
                except grpc.aio.AioRpcError as exc:
                    batch.failed += 1
                    batch.errors.append(f"{exc.code().name} {exc.details()}")

        stubs = self.stubs
        await asyncio.gather(*(lane(stubs[i % len(stubs)].CreateTask) for i in range(min(concurrency, n))))
        return batch

    async def wait_all(self, batch: Batch, timeout: float) -> None:
        await wait_counts(self.counts, batch, self.system.settings.poll_interval, timeout, "shoal gRPC")

    async def roundtrip(self, timeout: float) -> None:
        if self._waiting is None or self._waiting.wait_s != timeout:  # built once, as the other requests are
            self._waiting = self.pb.TaskSpec()
            self._waiting.CopyFrom(self.spec)
            self._waiting.wait_s = timeout
        task = await self.stub.CreateTask(self._waiting, metadata=self.md, timeout=timeout + 30.0)
        if not task.HasField("result") or task.result.code != "x":
            raise RuntimeError(f"shoal gRPC: CreateTask(wait_s) answered state {task.state} without the result")

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close(None)
        self.channels, self.stubs, self.stub = [], [], None
