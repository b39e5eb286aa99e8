"""``GET /api/v1/events``: task state changes and node events as Server-Sent Events.

Each client gets its own ``TaskAPI.watch()`` and ``ClusterAPI.watch()`` iterators and a bounded queue
between them and the socket, so a slow reader never holds up the watchers: when the queue is full the
oldest event is dropped and the client is told with a ``lagged`` event (events are hints; a client that
lagged should re-list). The stream sends:

- ``event: task`` with ``data: TaskEvent.to_json()`` for every change;
- ``event: node`` with ``data: {"kind": "beat" | "member" | "handover", "node", ...}`` (see
  ``shoal.events.node_event``) for heartbeats, membership verdicts and master hand-overs;
- ``event: lagged`` with ``data: {"kind": "lagged", "dropped": N}`` after events were dropped;
- ``event: error`` with ``data: {"error", "message"}`` if the watch fails, then the stream ends;
- a ``: keep-alive`` comment every ``keepalive_s`` so proxies keep the connection and dead peers are found.

The stream ends when the client goes away (Starlette cancels the generator, whose ``finally`` stops the
watcher) or when ``EventStreams.close()`` is called at shutdown, so the HTTP server need not wait on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Depends
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.responses import StreamingResponse

from shoal.errors import ShoalError
from shoal.models import TaskEvent
from shoal.types import ClusterAPI, TaskAPI
from shoal.web.errors import error_kind
from shoal.web.schemas import errors
from shoal.web.security import TokenCheck, require_token

log = logging.getLogger("shoal.web.events")

#: Events held for one slow client before the oldest are dropped.
QUEUE_SIZE = 256


def frame(event: str, data: dict[str, Any]) -> bytes:
    """One SSE frame; orjson never emits a raw newline, so the data fits on one ``data:`` line."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class _Closed:
    """Marker put on a queue to end its stream."""


_Item = TaskEvent | dict[str, Any] | ShoalError | _Closed


class _Subscription:
    """One client's watchers and the bounded queue they fill; full means the oldest event is dropped."""

    def __init__(self, tasks: TaskAPI, cluster: ClusterAPI | None, size: int) -> None:
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(size)
        self.dropped = 0
        # watch() is called here, before the stream says it is connected: TaskAPI.watch subscribes at call time
        self._source = tasks.watch()
        self._task = asyncio.create_task(self._pump(), name="sse-pump")
        self._nodes = cluster.watch() if cluster is not None else None
        self._node_task = asyncio.create_task(self._pump_nodes(), name="sse-pump-nodes") if self._nodes else None

    def offer(self, item: _Item) -> None:
        while True:
            try:
                self.queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()
                self.dropped += 1

    async def _pump(self) -> None:
        try:
            async for event in self._source:
                self.offer(event)
        except ShoalError as exc:
            self.offer(exc)
        except Exception:
            log.exception("event watch failed")
            self.offer(ShoalError("the event watch failed; see the node's log"))
        else:
            self.offer(_Closed())

    async def _pump_nodes(self) -> None:
        """Node events ride along; their end (a node built without them) does not end the stream."""
        assert self._nodes is not None
        try:
            async for event in self._nodes:
                self.offer(event)
        except Exception:
            log.exception("node event watch failed; the stream goes on with task events only")

    async def close(self) -> None:
        for task, source in ((self._task, self._source), (self._node_task, self._nodes)):
            if task is None:
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()


class EventStreams:
    """The open event streams of one app; ``close()`` ends them all (call it before the server stops)."""

    def __init__(
        self,
        tasks: TaskAPI,
        *,
        cluster: ClusterAPI | None = None,
        keepalive_s: float,
        registry: CollectorRegistry | None = None,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.tasks = tasks
        self.cluster = cluster
        self.keepalive_s = keepalive_s
        self.queue_size = queue_size
        self._closing = asyncio.Event()
        self.open = 0
        self._open = Gauge("shoal_event_streams", "Clients connected to /api/v1/events.", registry=registry)
        self._dropped = Counter(
            "shoal_event_stream_dropped", "Events dropped for /api/v1/events clients that read too slowly.",
            registry=registry,
        )  # fmt: skip

    def close(self) -> None:
        self._closing.set()

    async def _next(self, sub: _Subscription, closing: asyncio.Future[Any]) -> _Item | None:
        """The next item, None after ``keepalive_s`` of quiet, ``_Closed`` when the app closes."""
        getter = asyncio.ensure_future(sub.queue.get())
        waiters: set[asyncio.Future[Any]] = {getter, closing}
        done, _ = await asyncio.wait(waiters, timeout=self.keepalive_s, return_when="FIRST_COMPLETED")
        if getter in done:
            return getter.result()
        getter.cancel()
        return _Closed() if closing in done else None

    async def stream(self) -> AsyncIterator[bytes]:
        """The body of one client's response."""
        sub = _Subscription(self.tasks, self.cluster, self.queue_size)
        closing: asyncio.Future[Any] = asyncio.ensure_future(self._closing.wait())
        self.open += 1
        self._open.set(self.open)
        try:
            yield b"retry: 2000\n: connected\n\n"
            while True:
                item = await self._next(sub, closing)
                if item is None:
                    yield b": keep-alive\n\n"
                    continue
                if sub.dropped:
                    self._dropped.inc(sub.dropped)
                    yield frame("lagged", {"kind": "lagged", "dropped": sub.dropped})
                    sub.dropped = 0
                if isinstance(item, _Closed):
                    break
                if isinstance(item, ShoalError):
                    yield frame("error", {"error": error_kind(item), "message": item.message})
                    break
                if isinstance(item, TaskEvent):
                    yield frame("task", item.to_json())
                else:
                    yield frame("node", item)
        finally:
            self.open -= 1
            self._open.set(self.open)
            closing.cancel()
            await sub.close()


def build_router(streams: EventStreams, *, token: str | TokenCheck) -> APIRouter:
    api = APIRouter(prefix="/api/v1", dependencies=[Depends(require_token(token))], responses=errors(401))

    @api.get(
        "/events",
        summary="Task state changes and node events as Server-Sent Events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
    )
    async def events() -> StreamingResponse:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(streams.stream(), media_type="text/event-stream", headers=headers)

    return api
