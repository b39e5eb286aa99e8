"""The master's duties, started when this node wins the lease and stopped when it loses it.

One term = one epoch: ``establish(epoch)`` starts a scheduler, a failure detector, a retention sweep and
the firer of named schedules built for that epoch; ``revoke()`` stops them. A duty that stops ends the
term: one that finds its epoch stale (another master took over, or the store lost the term), one that
returns, and one that keeps failing for a whole lease; ``on_stopped(epoch, why)`` tells the election,
which steps down and says why. A duty that fails now and then (the store restarting) is started again.
``stopped()`` says why a master is not ready.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from shoal._utils import cancel_and_wait
from shoal.cluster.detector import Detector, Prober
from shoal.cluster.firing import Firer
from shoal.cluster.scheduler import Scheduler
from shoal.cluster.sweeper import Sweeper
from shoal.errors import StaleEpoch
from shoal.limits import Limits
from shoal.store.nodes import NodeRegistry
from shoal.store.schedules import ScheduleStore
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
        on_stopped: Callable[[int, str], None] = lambda epoch, why: None,
        owner_of: Callable[[str], str] | None = None,
        retention_s: float = 0.0,
        on_expired: Callable[[int], None] = lambda n: None,
        limits: Limits | None = None,
        ends_heard: Callable[[], int] = lambda: 0,
    ) -> None:
        self.limits = limits
        self.ends_heard = ends_heard
        self.store = store
        self.registry = registry
        self.prober = prober
        self.me = me
        self.interval = interval
        self.dead_after = dead_after
        self.may_write = may_write
        self.on_stopped = on_stopped
        self.owner_of = owner_of
        self.retention_s = retention_s
        self.on_expired = on_expired
        self.scheduler: Scheduler | None = None
        self.detector: Detector | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = ""  # why a duty of the current term stopped, until the term ends

    def __repr__(self) -> str:
        return f"<LeaderRole {self.me} scheduler={self.scheduler!r} detector={self.detector!r}>"

    async def establish(self, epoch: int) -> None:
        await self.revoke()
        self._stopped = ""
        self.scheduler = Scheduler(
            store=self.store,
            registry=self.registry,
            node=self.me,
            epoch=epoch,
            alive_within=self.interval * self.dead_after,
            may_write=self.may_write,
            owner_of=self.owner_of,
            limits=self.limits,
            ends_heard=self.ends_heard,
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
        sweeper = Sweeper(
            store=self.store,
            epoch=epoch,
            retention_s=self.retention_s,
            registry=self.registry,
            on_expired=self.on_expired,
        )
        firer = Firer(schedules=ScheduleStore(self.store), epoch=epoch)
        self._tasks = [
            asyncio.create_task(self._keep(epoch, self.detector.run, "detector"), name="detector"),
            asyncio.create_task(self._keep(epoch, self.scheduler.run, "scheduler"), name="scheduler"),
            asyncio.create_task(self._keep(epoch, sweeper.run, "retention sweep"), name="retention sweep"),
            asyncio.create_task(self._keep(epoch, firer.run, "schedule firer"), name="schedule firer"),
        ]

    async def _keep(self, epoch: int, run: Callable[[], Coroutine[Any, Any, None]], what: str) -> None:
        """Run a duty for the whole term; restart it after an unexpected error (e.g. Redis restarting),
        and end the term when it stops for good."""
        lease_s = self.interval * self.dead_after
        failing_since: float | None = None
        while True:
            started = time.monotonic()
            try:
                await run()
                why = f"the {what} stopped"
            except StaleEpoch as exc:
                why = f"the {what} stopped: {exc}"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                now = time.monotonic()
                if failing_since is None or now - started > lease_s:  # it ran a while: a new run of failures
                    failing_since = started
                if now - failing_since <= lease_s:
                    log.warning("the %s failed (%s); restarting it", what, exc)
                    await asyncio.sleep(0.5)
                    continue
                why = f"the {what} kept failing for {now - failing_since:.1f}s: {type(exc).__name__}: {exc}"
            self._stopped = why
            log.warning("%s; ending the term (epoch %d)", why, epoch)
            self.on_stopped(epoch, why)
            return

    def stopped(self) -> str:
        """Why a duty of this term is not running ("" while all run, or while this node is not master)."""
        if self._stopped:
            return self._stopped
        for task in self._tasks:
            if task.done():
                return f"the {task.get_name()} is not running"
        return ""

    async def revoke(self) -> None:
        tasks, self._tasks = self._tasks, []
        self.scheduler = self.detector = None
        self._stopped = ""
        for task in tasks:
            task.cancel()
        for task in tasks:
            await cancel_and_wait(task)

    def poke(self) -> None:
        """A slot may have freed or a node joined: let the scheduler look again."""
        if self.scheduler is not None:
            self.scheduler.poke()
