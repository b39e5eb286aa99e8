"""The master's retention sweep: finished tasks leave the store once they are older than ``retention`` (or
their own ``result_ttl_s``), so that a cluster that runs for months keeps a bounded store.

Each call of ``expire.lua`` removes at most SWEEP_BATCH tasks, so that it holds Redis for a few
milliseconds; while more are due the sweeper calls again at once (yielding to the loop between calls), up
to SWEEP_MOST per round, then waits SWEEP_EVERY_S. Every call carries the master's epoch: a deposed master
removes nothing and stops (``StaleEpoch``).

The sweep finds what is due in the finished states' indexes (every task is in its state's index), so tasks
finished by any earlier shoal expire like the others.

Nodes declared dead (or rejected) and silent for FORGET_DEAD_AFTER_S are forgotten in the same rounds
(``NodeRegistry.prune``): a cluster whose nodes come and go under new names (containers) would otherwise
keep a record, an inbox and a listing of each for ever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from shoal.store.nodes import NodeRegistry
from shoal.store.tasks import TaskStore

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

    async def run(self) -> None:
        while True:
            await self.sweep()
            if self.registry is not None:
                for name in await self.registry.prune(self.epoch, FORGET_DEAD_AFTER_S, 100):
                    log.info("forgot node %s: dead and silent for %.0f s", name, FORGET_DEAD_AFTER_S)
            await asyncio.sleep(SWEEP_EVERY_S)

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
