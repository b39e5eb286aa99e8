"""``GET /api/v1/events``: task state changes and node events as Server-Sent Events.

Each client gets its own ``TaskAPI.watch()`` and ``ClusterAPI.watch()`` iterators and a bounded queue
between them and the socket, so a slow reader never holds up the node: task events wait for room (the
watch reads what it could not hold from the store's event stream, so a slow reader misses none while the
store keeps them); node events that find the queue full are dropped and the client is told with a
``lagged`` event. The stream sends:

- ``event: task`` with ``data: TaskEvent.to_json()`` for every change, and ``id:`` its event id;
- ``event: gap`` with ``data: {"kind": "gap", "since", "oldest"}`` first, when the stream resumed after an event
  older than the store keeps (shoal.store.task_events: it is capped), so that some events between are lost;
- ``event: node`` with ``data: {"kind": "beat" | "member" | "handover", "node", ...}`` (see
  ``shoal.events.node_event``) for heartbeats, membership verdicts and master hand-overs;
- ``event: lagged`` with ``data: {"kind": "lagged", "dropped": N}`` after events were dropped;
- ``event: error`` with ``data: {"error", "message"}`` if the watch fails, then the stream ends;
- a ``: keep-alive`` comment every ``keepalive_s`` so proxies keep the connection and dead peers are found.

A request with a ``Last-Event-ID`` header (what a browser's EventSource sends when it reconnects) or
``?since=<event id>`` (the header wins) first gets the task events after that one from the store's event
stream, then the live ones, none twice and none missed. A malformed id is refused (400) before the stream
starts.

The stream ends when the client goes away or when ``EventStreams.close()`` is called at shutdown, so the
HTTP server need not wait on it. Either way its ``finally`` cancels the helper tasks of the subscription
and waits for them: a task left pending when the stream's objects are collected would be logged by
asyncio as "Task was destroyed but it is pending!".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any

import anyio
import orjson
from fastapi import APIRouter, Depends, Header, Query
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import WithJsonSchema
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from shoal._utils import cancel_and_wait
from shoal.errors import ShoalError
from shoal.event_ids import EVENT_ID_PATTERN, MAX_EVENT_ID, parse_event_id
from shoal.models import EventGap, TaskEvent
from shoal.types import ClusterAPI, TaskAPI
from shoal.web.errors import error_kind
from shoal.web.schemas import errors
from shoal.web.security import TokenCheck, require_token

log = logging.getLogger("shoal.web.events")

#: Events held for one slow client before the oldest are dropped.
QUEUE_SIZE = 256


def frame(event: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    """One SSE frame; orjson never emits a raw newline, so the data fits on one ``data:`` line."""
    head = b"id: " + event_id.encode() + b"\n" if event_id else b""
    return head + b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class _Closed:
    """Marker put on a queue to end its stream."""


_Item = TaskEvent | EventGap | dict[str, Any] | ShoalError | _Closed


class _Subscription:
    """One client's watchers and the bounded queue they fill; full means the oldest event is dropped."""

    def __init__(self, tasks: TaskAPI, cluster: ClusterAPI | None, size: int, since: str | None = None) -> None:
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(size)
        self.dropped = 0
        # watch() is called here, before the stream says it is connected: TaskAPI.watch subscribes at call time
        self._sources: list[AsyncIterator[Any]] = [tasks.watch(since)]
        self._pumps = [asyncio.create_task(self._pump(self._sources[0]), name="sse-pump")]
        if cluster is not None:
            self._sources.append(cluster.watch())
            self._pumps.append(asyncio.create_task(self._pump_nodes(self._sources[1]), name="sse-pump-nodes"))

    def offer(self, item: _Item) -> None:
        while True:
            try:
                self.queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()
                self.dropped += 1

    def end(self) -> None:
        """End the stream at its next read, before the events it has not sent yet (the node is stopping)."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(_Closed())

    async def _pump(self, source: AsyncIterator[TaskEvent | EventGap]) -> None:
        """Task events wait for room in the queue: the watch holds a slow client's place and reads what it
        could not keep from the store (shoal.events.TaskWatch), so nothing is dropped while the store has it."""
        try:
            async for event in source:
                await self.queue.put(event)
        except ShoalError as exc:
            self.offer(exc)
        except Exception:
            log.exception("event watch failed")
            self.offer(ShoalError("the event watch failed; see the node's log"))
        else:
            self.offer(_Closed())

    async def _pump_nodes(self, source: AsyncIterator[dict[str, Any]]) -> None:
        """Node events ride along; their end (a node built without them) does not end the stream. One that
        finds the queue full is dropped (and counted), not the task events ahead of it."""
        try:
            async for event in source:
                if self.queue.full():
                    self.dropped += 1
                else:
                    self.queue.put_nowait(event)
        except Exception:
            log.exception("node event watch failed; the stream goes on with task events only")

    async def close(self) -> None:
        """Cancel the pumps and wait until they have ended, then unsubscribe the watchers."""
        await asyncio.gather(*(cancel_and_wait(pump) for pump in self._pumps))
        for source in self._sources:
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
        self._closed = False
        self._subscriptions: set[_Subscription] = set()
        self.open = 0
        self._open = Gauge("shoal_event_streams", "Clients connected to /api/v1/events.", registry=registry)
        self._dropped = Counter(
            "shoal_event_stream_dropped", "Events dropped for /api/v1/events clients that read too slowly.",
            registry=registry,
        )  # fmt: skip

    def close(self) -> None:
        self._closed = True
        for sub in self._subscriptions:
            sub.end()

    async def _next(self, sub: _Subscription) -> _Item | None:
        """The next item, None after ``keepalive_s`` of quiet."""
        try:
            async with asyncio.timeout(self.keepalive_s):
                return await sub.queue.get()
        except TimeoutError:
            return None

    async def stream(self, since: str | None = None) -> AsyncGenerator[bytes, None]:
        """The body of one client's response; ``since``: the event id to resume after (checked by the caller)."""
        sub = _Subscription(self.tasks, self.cluster, self.queue_size, since)
        self._subscriptions.add(sub)
        if self._closed:
            sub.end()
        self.open += 1
        self._open.set(self.open)
        try:
            yield b"retry: 2000\n: connected\n\n"
            while True:
                item = await self._next(sub)
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
                    yield frame("task", item.to_json(), item.event_id)
                elif isinstance(item, EventGap):
                    yield frame("gap", item.to_json())
                else:
                    yield frame("node", item)
        finally:
            self.open -= 1
            self._open.set(self.open)
            self._subscriptions.discard(sub)
            # A client that went away cancels this stream's whole cancel scope, which would cancel every
            # await here again: shield the clean-up so that the pumps are awaited, not abandoned.
            with anyio.CancelScope(shield=True):
                await sub.close()


class _EventStreamResponse(StreamingResponse):
    """A StreamingResponse that always closes its stream. Starlette leaves a stream that a disconnect
    caught between two events suspended at its ``yield``, its clean-up left to garbage collection."""

    body_iterator: AsyncGenerator[bytes, None]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


#: An event id parameter as the document shows it: a string (absent when not sent, never null).
_EVENT_ID_SCHEMA = {"type": "string", "pattern": EVENT_ID_PATTERN, "maxLength": MAX_EVENT_ID}


def build_router(streams: EventStreams, *, token: str | TokenCheck) -> APIRouter:
    api = APIRouter(prefix="/api/v1", dependencies=[Depends(require_token(token))], responses=errors(401))

    @api.get(
        "/events",
        summary="Task state changes and node events as Server-Sent Events",
        response_class=_EventStreamResponse,
        responses={
            200: {"content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/EventFrame"}}}},
            **errors(400),
        },
    )
    async def events(
        since: Annotated[
            str | None,
            WithJsonSchema(_EVENT_ID_SCHEMA),
            Query(
                max_length=MAX_EVENT_ID,
                pattern=EVENT_ID_PATTERN,
                description="resume after this event id (a task frame's `id:`)",
            ),
        ] = None,
        last_event_id: Annotated[
            str | None,
            WithJsonSchema(_EVENT_ID_SCHEMA),
            Header(
                alias="Last-Event-ID",
                max_length=MAX_EVENT_ID,
                pattern=EVENT_ID_PATTERN,
                description="as `since`, sent by an EventSource that reconnects; wins over `since`",
            ),
        ] = None,
    ) -> StreamingResponse:
        after = last_event_id or since or None
        if after is not None:
            after = str(parse_event_id(after))  # a malformed id: 400 before the stream starts
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return _EventStreamResponse(streams.stream(after), media_type="text/event-stream", headers=headers)

    return api
