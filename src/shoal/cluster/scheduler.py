"""The master's scheduler: places pending tasks on the nodes with the most free slots, in batches.

A node's slots here are its capacity (``NodeRecord.capacity``): the tasks it runs at once and those it takes
beyond them while its tasks are short (its prefetch, shoal.worker.prefetch), so that a slot freed on a node
is filled at once from its own queue.

Waiting tasks are queued in one pending stream per task type. The scheduler reads only the streams of
types that some live node runs, and holds at most about TYPE_BACKLOG unplaced tasks of each type in
memory: tasks of a type no live node runs stay in their stream, however many there are, and never keep a
runnable task from being placed. Each batch offers every runnable type its share (up to the slots of the
nodes that run it), oldest first, so a type whose nodes are full does not hold up the others either.

A ``fetch`` goes first to the node that owns its URL in the cache ring (``owner_of``), if that node runs
fetches and has a free slot: its fill of the cache is then local, and one URL's fetches meet at one node.
Those tasks are offered to place.lua with their owner as the only node; what finds no room there joins
the rest of the batch, placed by free slots.

Priorities, labels and limits. Within a type, a task of higher ``priority`` goes first, and among equals
the older; a waiting task gains a level every PRIORITY_AGING_S, so that a steady stream of higher ones
cannot starve it. A task that requires labels is offered only the nodes that carry them (none live: it
waits in memory, and the others of its type go on). The limits that hold a task (``shoal.limits``) are
checked by place.lua in the same step that places it; a limit found without room is remembered, so that
its other tasks are not offered again until it may have room (one of them is, to find out), and do not
hold up the tasks behind them. Tasks that have none of these are placed as before, in stream order.

It runs only while this node holds the master lease, and every placement carries the lease's epoch:
place.lua refuses it once another master has taken over, and the scheduler stops (``StaleEpoch``).
Tasks are read from the pending streams with a blocking XREADGROUP and acknowledged only once placed
(or found gone), so a master that dies mid-batch leaves them for the next one, which claims them. It reads
as a consumer named after its node and term, so that what an earlier term read and did not place is
another consumer's, claimed as room allows, and everything this term holds unacknowledged is in memory.
It goes on claiming: a deposed master's blocking read can still be served by Redis after the new master
took over (its connection outlives its term by a moment, or it was paused), and what it got there would
otherwise wait in its name for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from shoal.cache.keys import http_key
from shoal.limits import Limits
from shoal.liveness import liveness
from shoal.models import DEFAULT_PRIORITY
from shoal.store.nodes import NodeRecord, NodeRegistry
from shoal.store.redis import BLOCK_MS
from shoal.store.tasks import GroupMissing, Offer, Queued, TaskStore

log = logging.getLogger("shoal.cluster.scheduler")

#: Most tasks read from one pending stream at once.
READ_BATCH = 1000
#: A type's stream is read while fewer than this many of its tasks wait unplaced in memory (so at most
#: TYPE_BACKLOG + READ_BATCH - 1 are held per type; the rest wait in the stream).
TYPE_BACKLOG = 2000
#: Entries another consumer has held unacknowledged this long are taken over (a live master acknowledges
#: each one within milliseconds of reading it, unless no node has room, and then it is the only consumer).
STRAY_IDLE_MS = 2 * BLOCK_MS
#: Seconds between two looks for such entries (and for entries of an older version's single stream).
STRAY_EVERY_S = 1.0
#: Seconds between two looks for delayed tasks (run_at, delay_s, retries) that fell due: a task delayed
#: by more than this is queued at its due time, one delayed by less up to this late.
PROMOTE_EVERY_S = 0.25
#: Most tasks offered to place.lua in one call.
PLACE_BATCH = 500
#: Fewest tasks of a type offered once a placement found no room for it (then about as many as the ends heard
#: since may have freed, see ``Scheduler._offer_size``): room also comes without an end (a node joins, its
#: prefetch grows, tasks are handed back), and these find it; a call that places all it offers lifts the cap.
MIN_OFFER = 16
#: Seconds the list of schedulable nodes is trusted (place.lua counts their free slots fresh each time,
#: and refuses nodes declared dead or rejected since).
NODES_TTL = 0.5
#: The roster (the nodes a submit may place on at once, see ``TaskStore.publish_roster``) lasts this long
#: unless renewed, so that a master that died stops vouching for its nodes soon, and is renewed this often.
ROSTER_TTL_S = 1.0
ROSTER_RENEW_S = 0.3
#: The task type placed on the owner of its target's cache key.
FETCH = "fetch"
#: A node's task types: this one means every type.
ANY_TYPE = "*"
#: place.lua's verdict for a task no node running its type had room for.
NO_ROOM = -1
#: A waiting task gains a priority level for every this many seconds it has waited: a priority 0 task
#: queued 90 s ago goes before a priority 9 task queued now.
PRIORITY_AGING_S = 10.0
#: Seconds between two offers of the tasks a rate limit held back, at least (the next start it allows is
#: about 1/rate away).
RATE_RETRY_MIN_S = 0.02


@dataclass(slots=True)
class _Pending:
    task_id: str
    type: str
    entry: str  # its entry in the type's pending stream
    target: str | None = None  # read only for fetches, when they are first placed
    priority: int = DEFAULT_PRIORITY
    requires: tuple[tuple[str, str], ...] = ()
    limits: str = ""  # the limits it is held to, as place.lua reads them
    held_by: tuple[str, ...] = ()  # their names as place.lua answers ("c:fetch:example.org")

    @property
    def plain(self) -> bool:
        """Placed in stream order on any node, with no limit: what nearly every task is."""
        return self.priority == DEFAULT_PRIORITY and not self.requires and not self.limits


def _entry_order(p: _Pending) -> tuple[int, int]:
    """Stream entry ids are "ms-counter": across streams, the order they were queued in (to the ms)."""
    ms, _, counter = p.entry.partition("-")
    return int(ms), int(counter or 0)


def _rank(p: _Pending) -> tuple[float, int, int]:
    """Placing order: the highest priority first, aged (a level per PRIORITY_AGING_S waited, counted from
    when it was queued, so that the order does not change as time passes), then the oldest."""
    ms, counter = _entry_order(p)
    return ms / 1000 / PRIORITY_AGING_S - p.priority, ms, counter


class Scheduler:
    """Owns placement for one master term. Built per term with its epoch; ``run()`` until deposed."""

    def __init__(
        self,
        *,
        store: TaskStore,
        registry: NodeRegistry,
        node: str,
        epoch: int,
        alive_within: float,
        may_write: Callable[[], bool] = lambda: True,
        owner_of: Callable[[str], str] | None = None,
        limits: Limits | None = None,
        ends_heard: Callable[[], int] = lambda: 0,
    ) -> None:
        self.may_write = may_write
        #: How many task ends this node has heard so far (``EventHub.ends_heard``): each may have freed a slot.
        self.ends_heard = ends_heard
        self._full_at: dict[str, int] = {}  # type -> ends_heard when a placement last found no room for it
        self.limits = limits or Limits()
        self.owner_of = owner_of
        self.store = store
        self.registry = registry
        self.node = node
        self.epoch = epoch
        self.consumer = f"{node}#{epoch}"  # this term's name in the pending streams' consumer group
        self.alive_within = alive_within
        self.backlogs: dict[str, OrderedDict[str, _Pending]] = {}  # type -> stream entry id -> task
        self.placed = 0
        self.last_tick = time.monotonic()  # when the loop last looked at the backlog (the watchdog reads it)
        self._wake = asyncio.Event()
        self._readable_changed = asyncio.Event()
        self._next_promote = 0.0
        self._next_due = math.inf  # when the next delayed task the store holds is due (monotonic)
        self._next_strays = 0.0
        self._nodes: list[NodeRecord] = []
        self._nodes_read = -math.inf
        self._types: set[str] = set()  # types with a pending stream
        self._types_read = -math.inf
        self._grouped: set[str] = set()  # types whose stream has the scheduler group, made sure this term
        self._reading: set[str] = set()  # types the blocked reader waits on
        self._roster: list[tuple[str, int, tuple[str, ...]]] | None = None  # as last published
        self._roster_at = 0.0
        self._special: dict[str, int] = {}  # type -> how many of its backlog are not plain
        #: Limits found without room (place.lua's names) -> until when their tasks are not offered: a rate
        #: limit's, until its next token; math.inf for the others (one task is offered, to find out).
        self._held: dict[str, float] = {}
        self._rates: dict[str, float] = {}  # a rate limit's name (as place.lua answers) -> its starts per second

    def __repr__(self) -> str:
        return f"<Scheduler epoch={self.epoch} backlog={self.backlog_size} placed={self.placed}>"

    @property
    def backlog_size(self) -> int:
        """Tasks read from the pending streams and not yet placed."""
        return sum(len(b) for b in self.backlogs.values())

    def poke(self) -> None:
        """Something changed (a slot freed, a node joined, a retry fell due): look again. Thread: loop only."""
        self._wake.set()

    async def run(self) -> None:
        await self.store.migrate_pending()
        await self._refresh_types(force=True)
        await self._candidates()
        await self._claim_orphans()
        # A flag per run, not per scheduler: the leader runs this again after a store error, and the
        # reader of the new run must not see the flag that stopped the old one.
        stopped = asyncio.Event()
        reader = asyncio.create_task(self._read(stopped), name="scheduler reader")
        try:
            while True:
                with contextlib.suppress(TimeoutError):  # the roster is renewed while nothing happens, too
                    await asyncio.wait_for(self._wake.wait(), ROSTER_RENEW_S)
                self._wake.clear()
                await self.tick()
                self.last_tick = time.monotonic()
                if reader.done():
                    reader.result()  # re-raise what stopped it
        finally:
            # The flag as well as the cancel: on Python 3.11 a cancel can be lost in a Redis call (see
            # leader.cancel_and_wait), and the reader must not go on taking entries for a term that is over.
            stopped.set()
            reader.cancel()

    async def tick(self) -> None:
        """Place what is read first (the latency of a submit runs through here), then the upkeep."""
        nodes = await self._candidates()
        if nodes and any(self.backlogs.values()):
            await self._place(nodes)
        await self._publish_roster(nodes)
        now = time.monotonic()
        queued = 0
        if now >= min(self._next_promote, self._next_due):
            queued, due = await self.store.promote()
            self._next_promote, self._next_due = now + PROMOTE_EVERY_S, math.inf
            if due is not None:  # the next delayed task is queued when it is due, not at the next look
                delay = max(0.0, due - await self.registry.now())
                self._next_due = now + delay
                asyncio.get_running_loop().call_later(delay + 0.01, self.poke)
        await self._refresh_types(force=queued > 0)  # what fell due may be the first of its type: a new stream
        if now >= self._next_strays:
            self._next_strays = now + STRAY_EVERY_S
            if await self.store.migrate_pending():  # an older version's node queued work in the old stream
                await self._refresh_types(force=True)
            await self._claim_strays()
        await self._read_new_types()

    # -- which streams are read ------------------------------------------------------------------

    async def _refresh_types(self, *, force: bool = False) -> None:
        """The set of types with a pending stream; read at most every NODES_TTL seconds."""
        if force or time.monotonic() - self._types_read >= NODES_TTL:
            self._types = await self.store.pending_types()
            self._types_read = time.monotonic()

    def _runnable(self) -> set[str]:
        """Types some schedulable node runs, among those with a pending stream."""
        runs: set[str] = set()
        for n in self._nodes:
            runs.update(n.types)
        return set(self._types) if ANY_TYPE in runs else runs & self._types

    def _readable(self) -> list[str]:
        """Runnable types with room in memory for more of their tasks."""
        return sorted(t for t in self._runnable() if len(self.backlogs.get(t, ())) < TYPE_BACKLOG)

    async def _ensure_groups(self, types: Iterable[str]) -> None:
        new = [t for t in types if t not in self._grouped]
        if new:
            await self.store.ensure_groups(types=new)
            self._grouped.update(new)

    async def _read_new_types(self) -> None:
        """Read at once, without blocking, the readable streams the blocked reader is not waiting on (a type
        first queued, or whose node just joined, or that has room again); the reader takes them in its
        next round."""
        fresh = [t for t in self._readable() if t not in self._reading]
        if not fresh:
            return
        self._readable_changed.set()
        if not self._reading:  # the reader is between two reads or idle: it will read them itself
            return
        await self._ensure_groups(fresh)
        try:
            found = await self.store.read_pending(self.consumer, fresh, count=READ_BATCH)
        except GroupMissing as exc:  # the stream went away since; the groups are made again
            log.info("pending streams changed while read (%s)", exc)
            self._grouped.difference_update(fresh)
            return
        self._add_found(found)

    async def _read(self, stopped: asyncio.Event) -> None:
        while not stopped.is_set():
            types = self._readable()
            if not types:
                self._readable_changed.clear()
                try:
                    await asyncio.wait_for(self._readable_changed.wait(), BLOCK_MS / 1000)
                except TimeoutError:
                    pass
                continue
            await self._ensure_groups(types)
            self._reading = set(types)
            try:
                found = await self.store.read_pending(self.consumer, types, count=READ_BATCH, block_ms=BLOCK_MS)
            finally:
                self._reading = set()
            if self._add_found(found):
                self.poke()

    def _add_found(self, found: dict[str, list[Queued]]) -> bool:
        """Add what a read of the pending streams returned; whether there was anything."""
        for task_type, entries in found.items():
            self._add(task_type, entries)
        return any(found.values())

    def _add(self, task_type: str, entries: list[Queued]) -> None:
        backlog = self.backlogs.setdefault(task_type, OrderedDict())
        limited = task_type in self.limits.types
        for q in entries:
            p = _Pending(q.task_id, task_type, q.entry, priority=q.priority, requires=q.requires)
            if limited or q.concurrency_key is not None or q.host is not None:
                p.limits, p.held_by = self._limits_of(task_type, q.concurrency_key, q.host)
            if not p.plain and q.entry not in backlog:
                self._special[task_type] = self._special.get(task_type, 0) + 1
            backlog[q.entry] = p

    def _limits_of(self, task_type: str, key: str | None, host: str | None) -> tuple[str, tuple[str, ...]]:
        """A task's limits as place.lua reads them, and the names it answers with when one holds it."""
        lines: list[str] = []
        for name, limit in self.limits.applying(task_type, key, host):
            if limit.concurrency:
                lines.append(f"c\t{name}\t{limit.concurrency}")
            if limit.rate_per_s:
                lines.append(f"r\t{name}\t{limit.rate_per_s!r}")
                self._rates[f"r:{name}"] = limit.rate_per_s
        if host is not None:
            lines.append(f"h\t{host}\t0")
        return "\n".join(lines), tuple(line.split("\t")[0] + ":" + line.split("\t")[1] for line in lines)

    def _room(self, task_type: str) -> int:
        return max(0, min(READ_BATCH, TYPE_BACKLOG - len(self.backlogs.get(task_type, ()))))

    # -- taking over what other consumers left ---------------------------------------------------

    async def _claim_orphans(self) -> None:
        """Take the entries read but not acknowledged by earlier masters (or earlier terms of this one), as
        far as there is room for them; forget the consumers of earlier terms that hold nothing."""
        for task_type in self._readable():
            await self._ensure_groups([task_type])
            start = "0-0"
            while room := self._room(task_type):
                start, entries = await self.store.claim_pending(task_type, self.consumer, start, room)
                self._add(task_type, entries)
                if start == "0-0" or not entries:
                    break
        await self._forget_idle_consumers()
        if self.backlog_size:
            log.info("took over %d unplaced task(s) from the previous master", self.backlog_size)
            self.poke()

    async def _forget_idle_consumers(self) -> None:
        """Each term reads under a name of its own: drop the names of earlier ones once they hold nothing."""
        for task_type in sorted(self._types & self._grouped):
            await self.store.forget_consumers(task_type, keep=self.consumer)

    async def _claim_strays(self) -> None:
        """Take the entries other consumers (earlier masters) read and have left unacknowledged for long."""
        types = self._readable()
        if not types:
            return
        await self._ensure_groups(types)
        for task_type, holders in (await self.store.pending_holders(types)).items():
            if holders is None:  # the group is gone: made again before the next read
                self._grouped.discard(task_type)
                continue
            for name, held in holders.items():
                room = self._room(task_type)
                if name == self.consumer or not held or not room:
                    continue
                claimed = await self.store.claim_idle(task_type, self.consumer, name, STRAY_IDLE_MS, room)
                self._add(task_type, claimed)
                if claimed:
                    log.warning("took over %d unplaced task(s) left unacknowledged by %s", len(claimed), name)
                    self.poke()

    # -- placing ---------------------------------------------------------------------------------

    async def _publish_roster(self, nodes: list[NodeRecord]) -> None:
        """Let submits place on ``nodes`` themselves while they have room and nothing of the type waits (a
        task then starts without a hop through this scheduler); fetches stay with the cache-owner rule."""
        roster = [(n.name, n.capacity, tuple(n.types)) for n in nodes]
        if roster == self._roster and time.monotonic() - self._roster_at < ROSTER_RENEW_S:
            return
        skip = ({FETCH} if self.owner_of is not None else set()) | self.limits.limited_types()
        await self.store.publish_roster(self.epoch, roster, sorted(skip), ROSTER_TTL_S)
        self._roster, self._roster_at = roster, time.monotonic()

    def _batch(self, nodes: list[NodeRecord]) -> list[_Pending]:
        """Each type's first tasks in placing order, up to the capacity of the nodes that run it; then in that
        order across types (which, for plain tasks, is the order they were queued in)."""
        per_type: list[list[_Pending]] = []
        for task_type, backlog in self.backlogs.items():
            capacity = sum(n.capacity for n in nodes if task_type in n.types or ANY_TYPE in n.types)
            if backlog and capacity:
                take = min(capacity, PLACE_BATCH)
                if self._special.get(task_type):
                    per_type.append(self._choose(backlog, take, nodes))
                else:
                    take = min(take, self._offer_size(task_type))
                    per_type.append([p for _, p in zip(range(take), backlog.values(), strict=False)])
        merged = heapq.merge(*per_type, key=_rank)
        return [p for _, p in zip(range(PLACE_BATCH), merged, strict=False)]

    def _offer_size(self, task_type: str) -> int:
        """How many tasks of a type with only plain ones to offer: all that fit, or, once a placement found no
        room for them (no node that runs the type had a free slot), about as many as the ends heard since may
        have freed (at least MIN_OFFER). Offering the nodes' whole capacity each time one slot freed made the
        master build, send and answer for several tasks per one placed. (A type with labelled or limited tasks
        is offered in full: one of them finding no room says nothing of the others.)"""
        full_at = self._full_at.get(task_type)
        if full_at is None:
            return PLACE_BATCH
        return max(MIN_OFFER, self.ends_heard() - full_at)

    def _choose(self, backlog: OrderedDict[str, _Pending], take: int, nodes: list[NodeRecord]) -> list[_Pending]:
        """Up to ``take`` tasks of a type that has prioritised, labelled or limited ones, in placing order:
        none that no candidate node carries the labels of, and, of the tasks a limit without room holds,
        only the first (a rate limit's: none until its next token)."""
        now = time.monotonic()
        chosen: list[_Pending] = []
        probed: set[str] = set()
        for p in sorted(backlog.values(), key=_rank):
            waiting = [name for name in p.held_by if self._held.get(name, 0.0) > now]
            if any(name in probed or not math.isinf(self._held[name]) for name in waiting):
                continue
            if p.requires and not self._allowed(p, nodes):
                continue
            probed.update(waiting)
            chosen.append(p)
            if len(chosen) == take:
                break
        return chosen

    @staticmethod
    def _allowed(p: _Pending, nodes: list[NodeRecord]) -> str:
        """The 1-based indexes of ``nodes`` carrying every label ``p`` requires, as place.lua reads them ('' for
        a task that requires none)."""
        if not p.requires:
            return ""
        return ",".join(
            str(k) for k, n in enumerate(nodes, 1) if all(n.labels.get(label) == v for label, v in p.requires)
        )

    def _done(self, p: _Pending, verdict: int | str) -> bool:
        """Forget a task place.lua placed or found gone (it acknowledged its entry); whether it did. Remember
        the limit that held it back, or that its limits had room."""
        if isinstance(verdict, str):
            rate = self._rates.get(verdict)
            if rate:
                wait = max(RATE_RETRY_MIN_S, 1 / rate)
                self._held[verdict] = time.monotonic() + wait
                asyncio.get_running_loop().call_later(wait, self.poke)
            else:
                self._held[verdict] = math.inf
            return False
        if verdict < 0:
            return False
        if self.backlogs[p.type].pop(p.entry, None) is not None and not p.plain:
            self._special[p.type] -= 1
            if not any(self._special.values()):  # nothing is held back: forget the limits that held
                self._held.clear()
        if verdict > 0:
            self.placed += 1
            for name in p.held_by:
                self._held.pop(name, None)
        return True

    def _offer(self, p: _Pending, nodes: list[NodeRecord]) -> Offer:
        return Offer(p.task_id, p.entry, p.type, self._allowed(p, nodes), p.limits)

    async def _place(self, nodes: list[NodeRecord]) -> None:
        batch = self._batch(nodes)
        if not batch:
            return
        placed, full, heard = self.placed, False, self.ends_heard()  # ends heard from now on may free slots
        if self.owner_of is not None:
            batch = await self._place_on_owners(nodes, batch)
        if batch:
            outcome = await self.store.place_many(
                self.epoch, [(n.name, n.capacity, n.types) for n in nodes], [self._offer(p, nodes) for p in batch]
            )
            for p, verdict in zip(batch, outcome, strict=True):
                self._done(p, verdict)
            no_room = {p.type for p, verdict in zip(batch, outcome, strict=True) if verdict == NO_ROOM}
            full = bool(no_room)
            for task_type in {p.type for p in batch}:
                if task_type in no_room:
                    self._full_at[task_type] = heard
                else:
                    self._full_at.pop(task_type, None)
        if self.placed > placed and not full and any(self.backlogs.values()):
            # more may fit (no event of a placement wakes this node: they are for watchers only); once some
            # task found no room, the next end does
            self.poke()
        self._readable_changed.set()

    async def _place_on_owners(self, nodes: list[NodeRecord], batch: list[_Pending]) -> list[_Pending]:
        """Offer each fetch in ``batch`` to the owner of its URL's cache key; return what is left to place."""
        assert self.owner_of is not None
        fetches = [p for p in batch if p.type == FETCH]
        if not fetches:
            return batch
        await self._learn_targets(fetches)
        runs_fetch = {n.name: n for n in nodes if FETCH in n.types or ANY_TYPE in n.types}
        groups: dict[str, list[_Pending]] = {}
        for p in fetches:
            if p.target:
                try:
                    owner = self.owner_of(http_key(p.target))
                except ValueError:  # not a URL the cache can key: placed as any other task
                    continue
                if owner in runs_fetch and (not p.requires or self._allowed(p, [runs_fetch[owner]])):
                    groups.setdefault(owner, []).append(p)
        settled: set[str] = set()
        for owner, group in groups.items():
            node = runs_fetch[owner]
            outcome = await self.store.place_many(
                self.epoch, [(node.name, node.capacity, node.types)], [self._offer(p, [node]) for p in group]
            )
            for p, verdict in zip(group, outcome, strict=True):
                # placed on its owner, gone, or held by a limit (which a moment later may have room: offered
                # to every node then, it would land elsewhere); only a full owner lets it go to another node
                if self._done(p, verdict) or isinstance(verdict, str):
                    settled.add(p.entry)
        return [p for p in batch if not (p.type == FETCH and p.entry in settled)]

    async def _learn_targets(self, fetches: list[_Pending]) -> None:
        unknown = [p for p in fetches if p.target is None]
        if not unknown:
            return
        for p, t in zip(unknown, await self.store.field_of([p.task_id for p in unknown], "target"), strict=True):
            p.target = t

    async def _candidates(self) -> list[NodeRecord]:
        """Nodes that may get work; the list is read at most every NODES_TTL seconds."""
        if not self.may_write():  # the lease may have run out by this master's own clock: place nothing
            return []
        if time.monotonic() - self._nodes_read >= NODES_TTL:
            now, records = await self.registry.all_with_time()
            self._nodes = [n for n in records if n.run_tasks and liveness(n, now, self.alive_within).healthy]
            self._nodes_read = time.monotonic()
        return self._nodes
