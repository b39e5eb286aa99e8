"""Task state changes from the store's ``events`` channel, fanned out inside one node.

One pub/sub connection per node feeds three kinds of listeners: waiters on one task (``wait``),
watchers of every change (``watch``, for SSE and gRPC streams) and hooks (the scheduler's wake-up).
Pub/sub may drop messages, so every listener treats an event as a hint and the store as the truth.

Given the ``public`` channel too, the same connection carries node events for ``watch_nodes`` (the
web task center's live nodes page): heartbeats, membership verdicts and master hand-overs, turned
from the seed's numbered message kinds into named ones (see ``node_event``). It subscribes to ``public``
only while such a watch is open: every node beats there, and a node that heard them all for nothing would
make the cluster's pub/sub traffic grow with the square of its size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import orjson

from shoal.models import TaskEvent, TaskState
from shoal.store.subscription import Store, Subscription, subscribe

log = logging.getLogger("shoal.events")

#: Events a slow watcher may fall behind by before the oldest are dropped.
WATCH_QUEUE = 1000
#: A subscription quiet this long is pinged; one that has heard nothing for LOST_AFTER_S is made again.
PING_AFTER_S = 1.0
LOST_AFTER_S = 5.0

#: The seed's message kinds on the ``public`` channel (shoal.cluster.heartbeat), plus shoal's verdicts.
_BEAT, _REQUEST_ELECTION, _VOTE, _MEMBERSHIP = 0, 1, 2, 3

NodeEvent = dict[str, Any]
T = TypeVar("T")


def node_event(raw: bytes, now: float) -> NodeEvent | None:
    """A message of the ``public`` channel as the event stream shows it; None for one it does not show.

    - heartbeat: ``{"kind": "beat", "node", "incarnation", "running", "at"}``;
    - membership verdict: ``{"kind": "member", "node", "state", "reason", "at"}``;
    - a master giving up its role: ``{"kind": "handover", "node", "candidate", "at"}``.
    """
    try:
        data = orjson.loads(raw)
        kind, who = data["kind"], str(data["who"])
    except (ValueError, KeyError, TypeError):
        return None
    if kind == _BEAT:
        running = data.get("load")
        return {"kind": "beat", "node": who, "incarnation": data.get("incarnation"),
                "running": running if isinstance(running, int) else None, "at": now}  # fmt: skip
    if kind == _MEMBERSHIP:
        return {"kind": "member", "node": who, "state": str(data.get("state", "")),
                "reason": str(data.get("reason", "")), "at": now}  # fmt: skip
    if kind == _REQUEST_ELECTION:
        return {"kind": "handover", "node": who, "candidate": data.get("candidate") or None, "at": now}
    return None


class EventHub:
    """Owns the node's subscription to task events. ``run()`` is its loop; listeners may come and go."""

    def __init__(self, redis: Store, channel: str, public: str | None = None) -> None:
        self.redis = redis
        self.channel = channel
        self.public = public
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._watchers: set[asyncio.Queue[TaskEvent | None]] = set()
        self._node_watchers: set[asyncio.Queue[NodeEvent | None]] = set()
        self._node_watchers_changed = asyncio.Event()
        self.hooks: list[Callable[[TaskEvent], None]] = []
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                async with subscribe(self.redis, [self.channel]) as subscription:
                    self.subscribed.set()
                    async with asyncio.TaskGroup() as group:
                        heard = [asyncio.get_running_loop().time()]
                        group.create_task(self._read(subscription, heard))
                        group.create_task(_keep_alive(subscription, heard))
                        if self.public:
                            group.create_task(self._public_while_watched(subscription, self.public))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                cause = exc.exceptions[0] if isinstance(exc, ExceptionGroup) else exc
                log.warning("task event subscription lost (%s); resubscribing", cause)
                self.subscribed.clear()
                self._wake_all()  # listeners re-read the store rather than miss a change
                await asyncio.sleep(0.5)

    async def _read(self, subscription: Subscription, heard: list[float]) -> None:
        """Messages as they come. A read waits without a timeout of its own, which would cost more than the
        message at a few thousand a second: ``_keep_alive`` finds a connection gone quiet."""
        loop = asyncio.get_running_loop()
        while True:
            message = await subscription.next()
            heard[0] = loop.time()
            if message is None:
                continue
            channel, data = message
            if channel == self.public:
                self._dispatch_node(data)
            else:
                self._dispatch(data)

    async def _public_while_watched(self, subscription: Subscription, public: str) -> None:
        """Subscribe to ``public`` while a node watch is open, and only then."""
        heard = False
        while True:
            self._node_watchers_changed.clear()
            wanted = bool(self._node_watchers)
            if wanted != heard:
                await (subscription.add if wanted else subscription.drop)(public)
                heard = wanted
            await self._node_watchers_changed.wait()

    def _dispatch(self, raw: bytes) -> None:
        """One message of the ``events`` channel: every task change one script made (see shoal.keys)."""
        try:
            rows = orjson.loads(raw)["events"]
            changes = [(str(r[0]), TaskState.__members__.get(r[1]), r[2] or None, float(r[3])) for r in rows]
        except (ValueError, KeyError, TypeError, IndexError):
            log.warning("ignoring a malformed task event")
            return
        for task_id, state, node, at in changes:
            if state is None or state.terminal:  # waiters wait for the end; other changes would only wake them
                for waiter in self._waiters.get(task_id, ()):
                    waiter.set()
            if state is None:  # deleted
                continue
            event = TaskEvent(id=task_id, state=state, node=node, at=at)
            _offer(self._watchers, event)
            for hook in self.hooks:
                try:
                    hook(event)
                except Exception:
                    log.exception("task event hook failed")

    def _dispatch_node(self, raw: bytes) -> None:
        if not self._node_watchers:
            return
        event = node_event(raw, time.time())
        if event is not None:
            _offer(self._node_watchers, event)

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

    def watch(self) -> Watch[TaskEvent]:
        """Every event from this call on: the subscription starts now, not at the first ``__anext__``."""
        return Watch(self._watchers)

    def watch_nodes(self) -> Watch[NodeEvent]:
        """Every node event (see ``node_event``) from once the hub has subscribed to ``public`` (at once,
        unless the store is slow); empty unless the hub was given ``public``."""
        return Watch(self._node_watchers, on_change=self._node_watchers_changed.set)

    def close(self) -> None:
        """End every watch stream (the node is stopping)."""
        for watchers in (self._watchers, self._node_watchers):
            for queue in watchers:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(None)


async def _keep_alive(subscription: Subscription, heard: list[float]) -> None:
    """Ping a subscription that has been quiet for PING_AFTER_S (the answer comes to the reader), and give it
    up when nothing at all came for LOST_AFTER_S: a connection cut without a word never ends a blocked read."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(PING_AFTER_S)
        quiet = loop.time() - heard[0]
        if quiet > LOST_AFTER_S:
            raise ConnectionError(f"no word on the subscription for {quiet:.0f}s")
        if quiet >= PING_AFTER_S:
            await subscription.ping()


def _offer(watchers: set[asyncio.Queue[T | None]], event: T) -> None:
    """Give ``event`` to every watcher; a full queue loses its oldest event instead of blocking the hub."""
    for queue in watchers:
        if queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
        queue.put_nowait(event)


class Watch(Generic[T]):
    """One subscriber's stream of events; ``aclose()`` (or the end of the hub) unsubscribes it,
    whether or not it was ever iterated."""

    def __init__(self, watchers: set[asyncio.Queue[T | None]], on_change: Callable[[], None] = lambda: None) -> None:
        self._watchers = watchers
        self._on_change = on_change
        self._queue: asyncio.Queue[T | None] = asyncio.Queue(WATCH_QUEUE)
        watchers.add(self._queue)
        on_change()

    def __aiter__(self) -> Watch[T]:
        return self

    async def __anext__(self) -> T:
        event = await self._queue.get()
        if event is None:
            await self.aclose()
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        if self._queue in self._watchers:
            self._watchers.discard(self._queue)
            self._on_change()
