"""The master's retention sweep: finished tasks leave the store once they are older than ``retention`` (or
their own ``result_ttl_s``), so that a cluster that runs for months keeps a bounded store.

Each call of ``expire.lua`` removes at most SWEEP_BATCH tasks, so that it holds Redis for a few
milliseconds; while more are due the sweeper calls again at once (yielding to the loop between calls), up
to SWEEP_MOST per round, then waits SWEEP_EVERY_S. Every call carries the master's epoch: a deposed master
removes nothing and stops (``StaleEpoch``).

Tasks finished by a shoal without retention (before an upgrade, or by a node not yet upgraded during a
rolling upgrade) are not in the retention index: each round looks whether the state indexes hold more
finished tasks than it, and if so indexes them (``TaskStore.backfill_ended``), BACKFILL_BATCH at a time,
so that they expire like the others.

Nodes declared dead (or rejected) and silent for FORGET_DEAD_AFTER_S are forgotten in the same rounds
(``NodeRegistry.prune``): a cluster whose nodes come and go under new names (containers) would otherwise
keep a record, an inbox and a listing of each for ever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from shoal.models import TaskState
from shoal.store.nodes import NodeRegistry
from shoal.store.tasks import FINISHED_STATES, TaskStore

log = logging.getLogger("shoal.cluster.sweeper")

#: Most tasks one script call removes (about a millisecond of Redis time per hundred).
SWEEP_BATCH = 200
#: Most tasks removed in one round, before the sweeper waits: 50,000 a second at most, far above any rate
#: at which a cluster finishes tasks, so a backlog after a change of retention is worked off soon.
SWEEP_MOST = 50_000
#: Seconds between two rounds.
SWEEP_EVERY_S = 1.0
#: A dead node's record is kept this long after its last beat (the task center shows it meanwhile).
FORGET_DEAD_AFTER_S = 86_400.0
#: Finished tasks looked at per backfill call, and most backfill calls per round.
BACKFILL_BATCH = 1000
BACKFILL_CALLS = 20


class Sweeper:
    """Removes expired tasks for one master term; ``on_expired(n)`` counts them (``/metrics``)."""

    def __init__(
        self,
        *,
        store: TaskStore,
        epoch: int,
        retention_s: float,
        registry: NodeRegistry | None = None,
        on_expired: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.epoch = epoch
        self.retention_s = retention_s
        self.on_expired = on_expired
        self._cursor: list[tuple[TaskState, int]] = []  # where the backfill pass under way goes on
        self._settled = 0  # unindexed finished tasks left when the last backfill pass ended

    async def run(self) -> None:
        while True:
            await self.backfill()
            await self.sweep()
            if self.registry is not None:
                for name in await self.registry.prune(self.epoch, FORGET_DEAD_AFTER_S, 100):
                    log.info("forgot node %s: dead and silent for %.0f s", name, FORGET_DEAD_AFTER_S)
            await asyncio.sleep(SWEEP_EVERY_S)

    async def backfill(self) -> int:
        """Go on indexing tasks finished without retention, if any: return how many were indexed."""
        if not self._cursor:
            missing = await self.store.unindexed_finished()
            if missing <= self._settled:
                self._settled = min(self._settled, max(missing, 0))
                return 0
            self._cursor = [(state, 0) for state in FINISHED_STATES]
        indexed = 0
        for _ in range(BACKFILL_CALLS):
            state, first = self._cursor[0]
            count, following = await self.store.backfill_ended(self.epoch, state, first, BACKFILL_BATCH)
            indexed += count
            if following >= 0:
                self._cursor[0] = (state, following)
            else:
                self._cursor.pop(0)
                if not self._cursor:  # a whole pass: what is still unindexed is not for a backfill to fix
                    self._settled = max(await self.store.unindexed_finished(), 0)
                    break
            await asyncio.sleep(0)
        if indexed:
            log.info("retention: indexed %d tasks finished by an earlier version", indexed)
        return indexed

    async def sweep(self) -> int:
        """One round: remove what is due, up to SWEEP_MOST tasks; return how many were removed."""
        removed = 0
        while removed < SWEEP_MOST:
            count, more = await self.store.expire(self.epoch, self.retention_s, SWEEP_BATCH)
            removed += count
            if count:
                self.on_expired(count)
            if not more:
                break
            await asyncio.sleep(0)  # let requests in between two calls
        if removed:
            log.debug("retention: %d finished tasks removed", removed)
        return removed
