"""Task state changes from the store's event stream, fanned out inside one node.

Every script that changes tasks adds one entry to the cluster's task event stream and publishes it on the
stream's channel (shoal.store.task_events), or, when it only moved tasks along (stored, placed, started) and
ended none, on the progress channel. One subscription per node hears the channel, and the progress channel
too while a watch or a hook wants every change; each time it (re)subscribes, it first reads from the stream
what was added since the last entry it heard, so that a lost connection, or a change of channels, costs it
nothing, and live entries cost no command at all. It feeds three kinds of listeners: waiters on one task
(``wait``), watchers of every change (``watch``, for SSE and gRPC streams; a watch given an event id first
reads what followed it from the stream) and hooks (the master's wake-up, once per entry heard; the
throughput chart, per task that ended). Waiters, the master and the chart need only the ends: a node nobody
watches wakes once per task, not once per change.

Node events come from the ``public`` pub/sub channel, on a subscription of their own for ``watch_nodes``
(the web task center's live nodes page): heartbeats, membership verdicts and master hand-overs, turned from
the seed's numbered message kinds into named ones (see ``node_event``). The hub subscribes to ``public`` only
while such a watch is open: every node beats there, and a node that heard them all for nothing would make the
cluster's pub/sub traffic grow with the square of its size.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import orjson

from shoal._utils import cancel_and_wait, run_together
from shoal.event_ids import EventId, after_entry, parse_event_id
from shoal.models import EventGap, Task, TaskEvent, TaskResult, TaskState
from shoal.store.subscription import Store, Subscription, subscribe
from shoal.store.task_events import PAGE, TaskEventStream, change, is_after, split_message

log = logging.getLogger("shoal.events")

#: Events a slow watcher may fall behind by before the oldest are dropped (a watch then reads them again
#: from the store: see ``TaskWatch``).
WATCH_QUEUE = 1000
#: A subscription quiet this long is pinged; one that has heard nothing for LOST_AFTER_S is made again.
PING_AFTER_S = 1.0
LOST_AFTER_S = 5.0

#: The states of an event that end a task's waits.
_ENDS = frozenset({*(s.name for s in TaskState if s.terminal), "DELETED"})
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


class Waiter(asyncio.Event):
    """A wait for one task's end: set when the task may have ended; ``ended`` holds the ended task and its
    result when this node ran it (``EventHub.ended_here``), so that the wait needs no read of its own."""

    ended: tuple[Task, TaskResult | None] | None = None


class EventHub:
    """Owns the node's reading of task events. ``run()`` is its loop; listeners may come and go."""

    def __init__(
        self, redis: Store, stream: str, channel: str, public: str | None = None, progress: str | None = None
    ) -> None:
        self.redis = redis
        self.stream = TaskEventStream(redis, stream)
        self.channel = channel
        self.public = public
        self.progress = progress
        #: The channels of the subscription in use; set when they are no longer the ones wanted (a first watch
        #: came or the last one went): the subscription is then made again.
        self._hearing: list[str] = []
        self._channels_changed = asyncio.Event()
        #: Entries heard while the channels change: passed on to the node's own listeners at once, to the
        #: watches with the catch-up that follows (in the stream's order).
        self._early: set[str] = set()
        self._waiters: dict[str, set[Waiter]] = defaultdict(set)
        self._watchers: set[asyncio.Queue[TaskEvent | None]] = set()
        self._node_watchers: set[asyncio.Queue[NodeEvent | None]] = set()
        self._node_watchers_changed = asyncio.Event()
        #: Called with every task event; ``on_ended`` with the state and time of each that ends a task, and
        #: ``on_entry`` once per entry: a node's own listeners, which cost no event made for them.
        self.hooks: list[Callable[[TaskEvent], None]] = []
        self.on_ended: list[Callable[[TaskState, float], None]] = []
        self.on_entry: list[Callable[[], None]] = []
        #: Set while the hub hears the stream's channel: waits rely on it.
        self.subscribed = asyncio.Event()
        #: The id of the last entry read; None until the hub has found the stream's end.
        self.last: str | None = None
        #: How many task ends this hub has passed on (or may have missed): a waiter that saw it unchanged
        #: since before its task was stored knows, without reading, that the task has not ended yet.
        self.ends_heard = 0
        self.closed = False

    async def run(self) -> None:
        jobs = [("events-stream", self._follow())]
        if self.public:
            jobs.append(("events-public", self._public_while_watched(self.public)))
        await run_together(*jobs)

    async def _follow(self) -> None:
        """Hear the stream's channels for ever; a lost subscription is made again, as is one whose channels
        are no longer those wanted, and what was added meanwhile read from the stream."""
        switched = False
        while True:
            self._hearing = self._wanted()
            self._channels_changed.clear()
            try:
                async with subscribe(self.redis, self._hearing) as subscription:
                    heard = [asyncio.get_running_loop().time()]
                    await self._catch_up(switched)
                    self.subscribed.set()
                    await run_together(
                        ("events-hear", self._hear(subscription, heard)),
                        ("events-keep-alive", _keep_alive(subscription, heard)),
                        ("events-channels", self._until_channels_change()),
                    )
            except asyncio.CancelledError:
                raise
            except _ChannelsChanged:
                switched = True
            except Exception as exc:
                switched = False
                log.warning("task event subscription lost (%s); subscribing again", exc or type(exc).__name__)
                self.subscribed.clear()
                self._wake_all()  # listeners re-read the store rather than wait on a change they missed
                await asyncio.sleep(0.5)

    def _wanted(self) -> list[str]:
        """The channel of the entries that end tasks, and the progress channel while some watch or hook wants
        every change."""
        if self.progress is not None and (self._watchers or self.hooks):
            return [self.channel, self.progress]
        return [self.channel]

    def _watchers_changed(self) -> None:
        if self._hearing and self._wanted() != self._hearing:
            self._channels_changed.set()

    async def _until_channels_change(self) -> None:
        await self._channels_changed.wait()
        raise _ChannelsChanged

    async def _catch_up(self, switched: bool = False) -> None:
        """Once subscribed: the entries added since the last one heard (the first time, only where the stream
        ends, since the node wants what comes next). After a change of channels, or while the hub hears only
        the ends, the newest PAGE of them at most: the last end heard may be far behind the progress entries
        since, which no listener wanted then (waiters are woken to read anyway after a lost subscription)."""
        try:
            if self.last is None:
                self.last = await self.stream.last_entry()
                return
            if switched or (self.progress is not None and self.progress not in self._hearing):
                for entry, rows in await self.stream.newest_after(self.last, count=PAGE):
                    self._caught_up(entry, rows)
                return
            while True:
                entries = await self.stream.read(self.last, count=PAGE)
                for entry, rows in entries:
                    self._caught_up(entry, rows)
                if len(entries) < PAGE:
                    return
        finally:
            self._early.clear()

    def _caught_up(self, entry: str, rows: list[Any]) -> None:
        self.last = entry
        self._dispatch(entry, rows, listeners=entry not in self._early)

    async def _hear(self, subscription: Subscription, heard: list[float]) -> None:
        """Entries as they are published; those read already while catching up are skipped."""
        loop = asyncio.get_running_loop()
        while True:
            message = await subscription.next()
            heard[0] = loop.time()
            if message is None:
                continue
            entry, rows = split_message(message[1])
            if self._channels_changed.is_set():  # the watches get it with the catch-up that follows, in order
                if entry not in self._early and (self.last is None or is_after(entry, self.last)):
                    self._early.add(entry)
                    self._dispatch(entry, rows, watchers=False)
                continue
            if self.last is None or is_after(entry, self.last):
                self.last = entry
                self._dispatch(entry, rows)

    async def _public_while_watched(self, public: str) -> None:
        """Subscribe to ``public`` while a node watch is open, and only then."""
        hearing: asyncio.Task[None] | None = None
        try:
            while True:
                self._node_watchers_changed.clear()
                wanted = bool(self._node_watchers)
                if wanted and hearing is None:
                    hearing = asyncio.create_task(self._hear_public(public), name="events-public-sub")
                elif not wanted and hearing is not None:
                    await cancel_and_wait(hearing)
                    hearing = None
                await self._node_watchers_changed.wait()
        finally:
            if hearing is not None:
                await cancel_and_wait(hearing)

    async def _hear_public(self, public: str) -> None:
        while True:
            try:
                async with subscribe(self.redis, [public]) as subscription:
                    heard = [asyncio.get_running_loop().time()]
                    await run_together(
                        ("events-public-read", self._read_public(subscription, heard)),
                        ("events-public-keep-alive", _keep_alive(subscription, heard)),
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("node event subscription lost (%s); resubscribing", exc)
                await asyncio.sleep(0.5)

    async def _read_public(self, subscription: Subscription, heard: list[float]) -> None:
        """Messages as they come. A read waits without a timeout of its own: ``_keep_alive`` finds a
        connection gone quiet."""
        loop = asyncio.get_running_loop()
        while True:
            message = await subscription.next()
            heard[0] = loop.time()
            if message is not None:
                self._dispatch_node(message[1])

    def _dispatch(self, entry: str, rows: list[Any], *, listeners: bool = True, watchers: bool = True) -> None:
        """The events of one entry of the stream: every task change one script made, to the node's own
        ``listeners`` (waiters, ``on_ended``, ``on_entry``) and to the ``watchers`` (watches and hooks). An event
        is made only when a watcher or a hook wants every one; the others need only a row's id and state."""
        every = watchers and bool(self._watchers or self.hooks)
        for index, row in enumerate(rows):
            try:
                task_id, name = row["id"], row["state"]
                ends = name in _ENDS
                if ends and listeners:  # waiters wait for the end; other changes would only wake them
                    self.ends_heard += 1
                    for waiter in self._waiters.get(task_id, ()):
                        waiter.set()
                    if name != "DELETED":
                        for ended in self.on_ended:
                            ended(TaskState[name], float(row["at"]))
            except (KeyError, TypeError, ValueError):
                continue
            made = change(entry, index, row) if every else None
            if made is None or made[1] is None:  # not wanted, malformed, or a deletion
                continue
            _offer(self._watchers, made[1])
            for hook in self.hooks:
                try:
                    hook(made[1])
                except Exception:
                    log.exception("task event hook failed")
        for entry_hook in self.on_entry if listeners else ():
            entry_hook()

    def _dispatch_node(self, raw: bytes) -> None:
        if not self._node_watchers:
            return
        event = node_event(raw, time.time())
        if event is not None:
            _offer(self._node_watchers, event)

    def _wake_all(self) -> None:
        self.ends_heard += 1
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.set()

    def waited(self, task_id: str) -> bool:
        """Whether a wait on this node is for ``task_id``."""
        return task_id in self._waiters

    def ended_here(self, task: Task, result: TaskResult | None) -> None:
        """Hand the waits for ``task`` the task as it ended, with its result: this node ran it and read them
        back with its report, ahead of the end's event."""
        for waiter in self._waiters.get(task.id, ()):
            waiter.ended = (task, result)
            waiter.set()

    @contextlib.contextmanager
    def waiter(self, task_id: str) -> Iterator[Waiter]:
        event = Waiter()
        self._waiters[task_id].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[task_id]

    def watch(self, since: str | None = None) -> TaskWatch:
        """Every event from this call on: the subscription starts now, not at the first ``__anext__``. With
        ``since`` (an event's id; a bad one raises InvalidInput at once), first the events after it that the
        store still holds, then the live ones, none twice; an ``EventGap`` first if some after it are gone."""
        return TaskWatch(self, parse_event_id(since) if since is not None else None)

    def watch_nodes(self) -> Watch[NodeEvent]:
        """Every node event (see ``node_event``) from once the hub has subscribed to ``public`` (at once,
        unless the store is slow); empty unless the hub was given ``public``."""
        return Watch(self._node_watchers, on_change=self._node_watchers_changed.set)

    def close(self) -> None:
        """End every watch stream (the node is stopping)."""
        self.closed = True
        for watchers in (self._watchers, self._node_watchers):
            for queue in watchers:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(None)


class _ChannelsChanged(Exception):
    """The hub's subscription is to be made again, on the channels now wanted."""


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


class _Queue(asyncio.Queue[T | None]):
    """A watcher's queue, which counts the events it lost to being full."""

    dropped = 0


def _offer(watchers: set[asyncio.Queue[T | None]], event: T) -> None:
    """Give ``event`` to every watcher; a full queue loses its oldest event instead of blocking the hub."""
    for queue in watchers:
        if queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
                if isinstance(queue, _Queue):
                    queue.dropped += 1
        queue.put_nowait(event)


class Watch(Generic[T]):
    """One subscriber's stream of events; ``aclose()`` (or the end of the hub) unsubscribes it,
    whether or not it was ever iterated."""

    def __init__(self, watchers: set[asyncio.Queue[T | None]], on_change: Callable[[], None] = lambda: None) -> None:
        self._watchers = watchers
        self._on_change = on_change
        self._queue: _Queue[T] = _Queue(WATCH_QUEUE)
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

    def take_dropped(self) -> int:
        """How many events the queue lost since the last call."""
        dropped, self._queue.dropped = self._queue.dropped, 0
        return dropped

    async def aclose(self) -> None:
        if self._queue in self._watchers:
            self._watchers.discard(self._queue)
            self._on_change()


class TaskWatch:
    """One subscriber's task events, in the stream's order, each once: the live ones the hub reads, after
    (with ``since``) those the stream holds after ``since``. When the live queue overflowed (a slow reader),
    the missed events are read again from the store, from the last one given out, so none is lost while the
    stream still holds it. ``aclose()`` unsubscribes."""

    def __init__(self, hub: EventHub, since: EventId | None) -> None:
        self._hub = hub
        # subscribed before the past is read: no gap; the hub hears the progress channel from now on
        self._live: Watch[TaskEvent] = Watch(hub._watchers, on_change=hub._watchers_changed)
        self._since = since
        # the last event given out; at first, the end of what the hub had read (all the queue gets is after it)
        self._last = since or (after_entry(hub.last) if hub.last else None)
        self._behind = since is not None  # reading the past from the store
        self._ready: deque[TaskEvent | EventGap] = deque()

    def __aiter__(self) -> TaskWatch:
        return self

    async def __anext__(self) -> TaskEvent | EventGap:
        while True:
            if self._ready:
                item = self._ready.popleft()
                if isinstance(item, TaskEvent) and item.event_id is not None:
                    self._last = _place(item.event_id)
                return item
            if self._hub.closed:
                await self.aclose()
                raise StopAsyncIteration
            if self._behind:
                await self._read_past()
                continue
            event = await anext(self._live)
            if self._live.take_dropped() and self._last is not None:
                self._behind = True  # this one and those the queue lost before it: read from the store, in order
                continue
            if event.event_id is not None and self._last is not None and _place(event.event_id) <= self._last:
                continue  # given out from the past already
            self._ready.append(event)

    async def _read_past(self) -> None:
        """One page of the events after the last given out; ends the reading of the past at its end."""
        last = self._last
        assert last is not None
        if self._since is not None:  # the first page: was anything after ``since`` trimmed away?
            since, self._since = self._since, None
            trimmed, oldest = await self._hub.stream.trimmed_after(since)
            if trimmed:
                self._ready.append(EventGap(str(since), oldest))
        entries = await self._hub.stream.after(last, count=PAGE)
        for _entry, changes in entries:
            for _task_id, event in changes:
                if event is not None and event.event_id is not None and _place(event.event_id) > last:
                    self._ready.append(event)
        if len(entries) < PAGE:
            self._behind = False
        elif entries and not self._ready:  # a full page of nothing new (deletions): go on after it
            self._last = after_entry(entries[-1][0])

    async def aclose(self) -> None:
        await self._live.aclose()


#: An event id's place, parsed once for every watch that compares it (ids come from the store: well formed).
_place = functools.lru_cache(maxsize=4096)(parse_event_id)
