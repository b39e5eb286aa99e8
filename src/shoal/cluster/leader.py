"""The master's duties, started when this node wins the lease and stopped when it loses it.

One term = one epoch: ``establish(epoch)`` starts a scheduler and a failure detector built for that
epoch; ``revoke()`` stops them. A duty that finds its epoch stale (another master took over) stops
itself; the election notices the lost lease on its next renewal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from shoal._utils import cancel_and_wait
from shoal.cluster.detector import Detector, Prober
from shoal.cluster.scheduler import Scheduler
from shoal.errors import StaleEpoch
from shoal.store.nodes import NodeRegistry
from shoal.store.tasks import TaskStore

log = logging.getLogger("shoal.cluster.leader")


class LeaderRole:
    """Owns the tasks of one master term at a time. Called from the election loop only."""

    def __init__(
        self,
        *,
        store: TaskStore,
        registry: NodeRegistry,
        prober: Prober,
        me: str,
        interval: float,
        dead_after: int,
        may_write: Callable[[], bool],
        owner_of: Callable[[str], str] | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.prober = prober
        self.me = me
        self.interval = interval
        self.dead_after = dead_after
        self.may_write = may_write
        self.owner_of = owner_of
        self.scheduler: Scheduler | None = None
        self.detector: Detector | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        return f"<LeaderRole {self.me} scheduler={self.scheduler!r} detector={self.detector!r}>"

    async def establish(self, epoch: int) -> None:
        await self.revoke()
        self.scheduler = Scheduler(
            store=self.store,
            registry=self.registry,
            node=self.me,
            epoch=epoch,
            alive_within=self.interval * self.dead_after,
            may_write=self.may_write,
            owner_of=self.owner_of,
        )
        self.detector = Detector(
            registry=self.registry,
            store=self.store,
            prober=self.prober,
            me=self.me,
            epoch=epoch,
            interval=self.interval,
            dead_after=self.dead_after,
        )
        self._tasks = [
            asyncio.create_task(self._keep(self.detector.run, "detector"), name="detector"),
            asyncio.create_task(self._keep(self.scheduler.run, "scheduler"), name="scheduler"),
        ]

    async def _keep(self, run: Callable[[], Coroutine[Any, Any, None]], what: str) -> None:
        """Run a duty until the term ends; restart it after an unexpected error (e.g. Redis restarting)."""
        while True:
            try:
                await run()
            except StaleEpoch as exc:
                log.warning("deposed: %s; the %s stops", exc, what)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("the %s failed (%s); restarting it", what, exc)
                await asyncio.sleep(0.5)

    async def revoke(self) -> None:
        tasks, self._tasks = self._tasks, []
        self.scheduler = self.detector = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            await cancel_and_wait(task)

    def poke(self) -> None:
        """A slot may have freed or a node joined: let the scheduler look again."""
        if self.scheduler is not None:
            self.scheduler.poke()
