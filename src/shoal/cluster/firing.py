"""The master's firer: fires every schedule's ticks as they come, for one master term.

It keeps each live schedule's next tick in memory, sleeps until the earliest (at most POLL_S, so that a
change of the schedules, which raises their version counter, is seen within that), and fires what is due
by the store's clock. A schedule whose newest due tick is on time (within the grace when the firer looked)
fires it. The newest of the ticks missed before it (older than the grace: no master was up, or this one
was held up) is fired too if the schedule's catch_up is "run_once", and recorded as missed otherwise; the
older ticks of a gap are passed over, so a gap yields one catch-up task at most. Due schedules are fired
FIRE_AT_ONCE side by side, and whether a tick was missed is judged at the look, so a master firing many
schedules of one tick does not count its own work against the last of them.

Every write carries the term's epoch (``ScheduleStore.fire``): a deposed master fires nothing and stops
(``StaleEpoch``), and its successor, reading ``last_tick`` from the store, fires each tick the first left
once, and those it fired not again.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass

from shoal import cron
from shoal.errors import InvalidInput
from shoal.schedules import MISFIRE_GRACE_S, ScheduleSpec
from shoal.store.schedules import ScheduleStore

log = logging.getLogger("shoal.cluster.firing")

#: Longest sleep between two looks at the schedules' version counter, in seconds.
POLL_S = 0.5
#: The schedules are read again this often even when their version stays (a belt to the counter's braces).
RELOAD_EVERY_S = 60.0
#: Schedules fired at once (their store calls in flight together, a quarter of a node's connections at most):
#: thousands of schedules of one minute are fired within the grace, not one after the other.
FIRE_AT_ONCE = 32


@dataclass(slots=True)
class _Plan:
    spec: ScheduleSpec
    cron: cron.Cron
    next: float  # the next tick to look at (store's clock)


class Firer:
    """Fires the schedules' ticks under one epoch; ``run`` returns never, raises StaleEpoch when deposed."""

    def __init__(self, *, schedules: ScheduleStore, epoch: int, grace_s: float = MISFIRE_GRACE_S) -> None:
        self.schedules = schedules
        self.epoch = epoch
        self.grace_s = grace_s
        self._plans: dict[str, _Plan] = {}
        self._version: int | None = None
        self._loaded_at = -math.inf
        self.fired = 0  # tasks stored by this term's fires

    def __repr__(self) -> str:
        return f"<Firer epoch={self.epoch} schedules={len(self._plans)} fired={self.fired}>"

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            version = await self.schedules.version()
            if version != self._version or loop.time() - self._loaded_at > RELOAD_EVERY_S:
                await self._load()
                self._version, self._loaded_at = version, loop.time()
            now = await self.schedules.now()
            due = sorted((p for p in self._plans.values() if p.next <= now), key=lambda p: p.next)
            for k in range(0, len(due), FIRE_AT_ONCE):  # many schedules of one tick: fired side by side
                await asyncio.gather(*(self._fire(plan, now) for plan in due[k : k + FIRE_AT_ONCE]))
            earliest = min((p.next for p in self._plans.values()), default=math.inf)
            await asyncio.sleep(min(POLL_S, max(0.0, earliest - now)))

    async def _load(self) -> None:
        """Read every schedule; plan the next tick of each that is not paused."""
        plans: dict[str, _Plan] = {}
        for schedule in await self.schedules.list(full=False):
            if schedule.paused:
                continue
            spec = schedule.spec
            try:
                checked = cron.parse(spec.cron, spec.timezone)
                after = max(schedule.since, schedule.last_tick or schedule.since)
                plans[spec.name] = _Plan(spec, checked, checked.after(after))
            except (InvalidInput, StopIteration) as exc:
                log.warning("schedule %s does not fire: %s", spec.name, exc)
        self._plans = plans

    async def _fire(self, plan: _Plan, now: float) -> None:
        """Fire what is due of the plan's schedule: the newest tick missed (older than the grace), if any, and
        the newest tick if it is on time; the older ticks of a gap are passed over."""
        newest = plan.cron.at_or_before(now)
        if newest is None or newest < plan.next:
            newest = plan.next
        due = [newest]  # missed itself, it stands for its gap; on time, the newest missed before it goes first
        if newest >= now - self.grace_s and newest > plan.next:
            missed = plan.cron.at_or_before(newest - 1)
            if missed is not None and missed >= plan.next:
                due.insert(0, missed)
        for tick in due:
            if not await self._fire_tick(plan, tick, now):
                return
        plan.next = plan.cron.after(newest)

    async def _fire_tick(self, plan: _Plan, tick: float, looked_at: float) -> bool:
        """Fire one tick, missed or not as it was when the firer looked; False if the schedule no longer fires
        (paused or deleted since it was read)."""
        try:
            fired = await self.schedules.fire(self.epoch, plan.spec, tick, grace_s=self.grace_s, looked_at=looked_at)
        except InvalidInput as exc:  # its template no longer passes a submit's checks
            log.warning("schedule %s: tick %.0f not fired: %s", plan.spec.name, tick, exc)
            return True
        if fired.verdict in ("paused", "gone"):
            self._plans.pop(plan.spec.name, None)
            return False
        if fired.verdict == "fired":
            self.fired += 1
            log.debug("schedule %s: tick %.0f fired task %s", plan.spec.name, tick, fired.task_id)
        elif fired.verdict == "skipped":
            log.info("schedule %s: tick %.0f skipped (%s)", plan.spec.name, tick, fired.why)
        return True
