"""Talk to a node over gRPC: an authenticated channel, the raw stub, and a small typed client.

Imports no server code, so the CLI, benchmarks and tests can use it alone. Calls fail with
``grpc.aio.AioRpcError``; its ``code()`` and ``details()`` say what the node refused and why.

    async with TasksClient("127.0.0.1:6666", token) as client:
        task = await client.create(TaskSpec(name="page", type="fetch", target="http://127.0.0.1:8000/"))
        done = await client.get(task.id, wait_s=30)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

import grpc
import grpc.aio

from shoal.models import Task, TaskEvent, TaskPage, TaskResult, TaskSpec, TaskState
from shoal.rpc import convert
from shoal.rpc.convert import pb, pb_grpc

__all__ = ["CHANNEL_OPTIONS", "TasksClient", "metadata_interceptors", "open_channel", "pb", "tasks_stub"]

#: Room for the largest answer a node sends (a 10 MiB fetch result and its metadata), and keepalive
#: pings no more often than the server allows.
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)


#: Makes the metadata to add to one call, given its method path (bytes in grpc.aio's client interceptors)
#: and its request message (None for a streamed request).
MetadataFor = Callable[[str | bytes, Any], Sequence[tuple[str, str]]]


class _AddMetadata:
    """Adds the entries ``extra`` makes for each call, except keys the call already carries."""

    def __init__(self, extra: MetadataFor) -> None:
        self._extra = extra

    def _details(self, details: grpc.aio.ClientCallDetails, request: Any = None) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        for key, value in self._extra(details.method, request):
            if key not in metadata:
                metadata.add(key, value)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


# grpc.aio files each interceptor under the first call kind it implements, so one class per kind.
class _UnaryUnary(_AddMetadata, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details, request), request)


class _UnaryStream(_AddMetadata, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details, request), request)


class _StreamUnary(_AddMetadata, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(details), request_iterator)


class _StreamStream(_AddMetadata, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(details), request_iterator)


def metadata_interceptors(extra: MetadataFor) -> list[Any]:
    """Client interceptors adding ``extra(method, request)`` to every call, of every kind (for ``interceptors=``)."""
    return [kind(extra) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]


def open_channel(
    address: str,
    token: str | None,
    *,
    options: Sequence[tuple[str, Any]] = CHANNEL_OPTIONS,
) -> grpc.aio.Channel:
    """An insecure channel to ``address`` (``host:port``) that sends ``token`` on every call.

    With ``token=None`` calls go out anonymous (only the health service answers those).
    """
    interceptors = None
    if token is not None:
        entry = (("authorization", f"Bearer {token}"),)
        interceptors = metadata_interceptors(lambda method, request: entry)
    return grpc.aio.insecure_channel(address, options=list(options), interceptors=interceptors)


def tasks_stub(channel: grpc.aio.Channel) -> pb_grpc.TasksAsyncStub:
    """The generated ``shoal.v1.Tasks`` stub on ``channel``; messages are in ``pb``."""
    return pb_grpc.TasksStub(channel)


class TasksClient:
    """``shoal.v1.Tasks`` in terms of shoal's models. One channel, safe for concurrent calls."""

    def __init__(self, address: str, token: str | None, *, timeout_s: float | None = 30.0) -> None:
        self.channel = open_channel(address, token)
        self.stub = tasks_stub(self.channel)
        self.timeout_s = timeout_s

    def _deadline(self, wait_s: float | None) -> float | None:
        if self.timeout_s is None:
            return None
        return self.timeout_s + (wait_s or 0.0)

    async def create(self, spec: TaskSpec) -> Task:
        msg = await self.stub.CreateTask(convert.spec_to_proto(spec), timeout=self._deadline(None))
        return convert.task_from_proto(msg)

    async def get(self, task_id: str, *, wait_s: float | None = None) -> Task:
        msg = await self.stub.GetTask(pb.ID(id=[task_id], wait_s=wait_s), timeout=self._deadline(wait_s))
        return convert.task_from_proto(msg)

    async def list(
        self, state: TaskState | None = None, limit: int | None = None, cursor: str | None = None
    ) -> TaskPage:
        states = [pb.Task.State.ValueType(state)] if state is not None else []
        query = pb.Query(state=states, limit=limit, cursor=cursor or "")
        msg = await self.stub.ListTask(query, timeout=self._deadline(None))
        return convert.page_from_proto(msg)

    async def kill(self, task_ids: Iterable[str]) -> dict[str, bool]:
        msg = await self.stub.KillTask(pb.ID(id=list(task_ids)), timeout=self._deadline(None))
        return dict(msg.succeed)

    async def delete(self, task_ids: Iterable[str]) -> dict[str, bool]:
        msg = await self.stub.DelTask(pb.ID(id=list(task_ids)), timeout=self._deadline(None))
        return dict(msg.succeed)

    async def result(self, task_id: str, *, wait_s: float | None = None) -> TaskResult:
        msg = await self.stub.GetTaskResult(pb.ID(id=[task_id], wait_s=wait_s), timeout=self._deadline(wait_s))
        return convert.result_from_proto(msg)

    async def watch(self, task_ids: Iterable[str] = (), since: str | None = None) -> AsyncIterator[TaskEvent]:
        """Task events until the caller stops iterating (or the node shuts down); with ``since`` (an event's
        ``event_id``), first those after it that the store still holds."""
        call = self.stub.WatchTasks(pb.WatchRequest(id=list(task_ids), since=since))
        try:
            async for msg in call:
                yield convert.event_from_proto(msg)
        finally:
            call.cancel()

    async def close(self) -> None:
        await self.channel.close(None)

    async def __aenter__(self) -> TasksClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
