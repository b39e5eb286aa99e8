"""Task state changes from the store's ``events`` channel, fanned out inside one node.

One pub/sub connection per node feeds three kinds of listeners: waiters on one task (``wait``),
watchers of every change (``watch``, for SSE and gRPC streams) and hooks (the scheduler's wake-up).
Pub/sub may drop messages, so every listener treats an event as a hint and the store as the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator

import orjson
from redis.asyncio import Redis

from shoal.models import TaskEvent, TaskState

log = logging.getLogger("shoal.events")

#: Events a slow watcher may fall behind by before the oldest are dropped.
WATCH_QUEUE = 1000


class EventHub:
    """Owns the node's subscription to task events. ``run()`` is its loop; listeners may come and go."""

    def __init__(self, redis: Redis, channel: str) -> None:
        self.redis = redis
        self.channel = channel
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._watchers: set[asyncio.Queue[TaskEvent | None]] = set()
        self.hooks: list[Callable[[TaskEvent], None]] = []
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed.set()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("task event subscription lost (%s); resubscribing", exc)
                self.subscribed.clear()
                self._wake_all()  # listeners re-read the store rather than miss a change
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _dispatch(self, raw: bytes) -> None:
        try:
            data = orjson.loads(raw)
            state = TaskState.__members__.get(data["state"])
            event = TaskEvent(
                id=data["id"],
                state=state if state is not None else TaskState.KILLED,
                node=data.get("node") or None,
                at=float(data["at"]),
            )
            deleted = state is None
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed task event")
            return
        if deleted or event.state.terminal:  # waiters wait for the end; other changes would only wake them
            for waiter in self._waiters.get(event.id, ()):
                waiter.set()
        if deleted:
            return
        for queue in self._watchers:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)
        for hook in self.hooks:
            try:
                hook(event)
            except Exception:
                log.exception("task event hook failed")

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.set()

    @contextlib.contextmanager
    def waiter(self, task_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiters[task_id].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[task_id]

    def watch(self) -> Watch:
        """Every event from this call on: the subscription starts now, not at the first ``__anext__``."""
        return Watch(self._watchers)

    def close(self) -> None:
        """End every watch stream (the node is stopping)."""
        for queue in self._watchers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)


class Watch:
    """One subscriber's stream of task events; ``aclose()`` (or the end of the hub) unsubscribes it,
    whether or not it was ever iterated."""

    def __init__(self, watchers: set[asyncio.Queue[TaskEvent | None]]) -> None:
        self._watchers = watchers
        self._queue: asyncio.Queue[TaskEvent | None] = asyncio.Queue(WATCH_QUEUE)
        watchers.add(self._queue)

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> TaskEvent:
        event = await self._queue.get()
        if event is None:
            await self.aclose()
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        self._watchers.discard(self._queue)
