"""Self-fencing: a node cut off from the store stops its tasks before the master may place them elsewhere.

The master declares a node dead once the store has heard no beat from it for ``heartbeat_interval ×
dead_after`` seconds (and probes fail too), then places its tasks on other nodes. A node cut off from the
store (a network partition) cannot learn that verdict: left alone it would go on running those tasks while
they run elsewhere, and the same task would run twice at once. So the node counts from the moment it sent
its last beat that reached the store (the store's record of it is at least that fresh), and one beat
before the master could decide, it beats once more on its own, with half a beat's time for it. A node
merely slow (its event loop held up, a busy machine) gets through then and goes on; one that does not
stops every attempt it is executing, without a report, still before the master's limit (which a probe's
time follows). Attempts that already ended keep retrying their report, which the store sorts out (a late
one is kept as a late result).

When a beat gets through again and the node was not declared dead meanwhile, the stopped attempts are
still placed on it: it hands them back at once (not held against the task), instead of leaving them to
the reconciler's next checks. If it was declared dead, the heartbeat has already dropped everything and
rejoined, and the master has placed them elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from shoal.models import AttemptOutcome
from shoal.store.redis import STORE_DOWN
from shoal.store.tasks import TaskStore

log = logging.getLogger("shoal.worker.fence")

#: What the history of a task stopped by the fence says, once the node hands it back.
HANDED_BACK = "stopped on {node}: it could not reach the store for {silent:.1f}s, longer than the master waits"


class Fenced(Protocol):
    """The part of the executor the fence sees."""

    executing: set[str]

    def fence(self) -> list[str]:
        """Stop every attempt still executing, without a report; return their task ids."""


class StoreFence:
    """Checks four times a beat; ``check()`` is one look, ``run()`` the loop."""

    def __init__(
        self,
        *,
        store: TaskStore,
        node: str,
        worker: Fenced,
        reached_at: Callable[[], float],
        beat: Callable[[float], Awaitable[None]],
        incarnation: Callable[[], int],
        interval: float,
        dead_after: int,
    ) -> None:
        self.store = store
        self.node = node
        self.worker = worker
        self.reached_at = reached_at
        self.beat = beat
        self.incarnation = incarnation
        self.interval = interval
        #: Silence after which the tasks stop: one beat short of the master's limit.
        self.limit_s = interval * (dead_after - 1)
        self.stopped: set[str] = set()  # stopped by the fence, not yet handed back
        self._fenced_in = 0  # the incarnation they were stopped in
        self._longest = 0.0
        self.fenced = 0  # attempts stopped, in all

    def __repr__(self) -> str:
        return f"<StoreFence {self.node} limit={self.limit_s:g}s stopped={len(self.stopped)} fenced={self.fenced}>"

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval / 4)
            await self.check()

    async def check(self) -> None:
        silent = time.monotonic() - self.reached_at()
        if silent > self.limit_s and self.worker.executing:
            await self.beat(self.interval / 2)  # a last try, which a stalled but connected node passes
            silent = time.monotonic() - self.reached_at()
        if silent > self.limit_s:
            stopped = self.worker.fence()
            if stopped:
                log.warning(
                    "no beat reached the store for %.1fs (the master may place this node's tasks elsewhere "
                    "after %gs): stopped %d running task(s)",
                    silent,
                    self.limit_s + self.interval,
                    len(stopped),
                )
                self.fenced += len(stopped)
                self.stopped.update(stopped)
                self._fenced_in = self.incarnation()
            self._longest = max(self._longest, silent)
        elif self.stopped:
            await self._hand_back()

    async def _hand_back(self) -> None:
        """The store is reachable again: hand back what was stopped, unless the node was declared dead and
        rejoined since (then the master has placed those tasks elsewhere already)."""
        if self.incarnation() == self._fenced_in:
            reason = HANDED_BACK.format(node=self.node, silent=self._longest)
            try:
                back = await self.store.hand_back(
                    self.node, sorted(self.stopped), reason, outcome=AttemptOutcome.HANDED_BACK
                )
            except STORE_DOWN as exc:
                log.info("handing back the tasks stopped while the store was out of reach failed: %s", exc)
                return  # tried again at the next check
            if back:
                log.warning("handed back %d task(s) stopped while the store was out of reach", len(back))
        self.stopped.clear()
        self._longest = 0.0
