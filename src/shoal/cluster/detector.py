"""The master's view of the other nodes: who is admitted, who is suspect, who is dead, and why.

Runs only on the master, for one term (its epoch fences every verdict it writes):
- a node seen in a new incarnation is verified (challenge–response over gRPC, proving it holds the
  cluster token without sending it) and becomes ``alive``, or ``rejected`` with the reason; a node whose
  clock is too far from the store's (as its own beats measure it) is rejected without a call. A rejected
  node is verified again: each beat while its clock is the reason, after ``REVERIFY_AFTER`` if it could
  not be reached, after ``REVERIFY_REFUSED`` otherwise;
- an admitted node silent for ``dead_after`` beats becomes ``suspect``; it is probed directly and, if that
  fails, through up to ``indirect_probes`` other nodes (SWIM); if none reaches it, it is ``dead`` and its
  INQUEUE and RUNNING tasks go back to WAITING to be placed elsewhere;
- a suspect that answers probes but never beats again is declared dead after three times as long, since
  it cannot report the tasks it runs.
Every verdict goes on the membership timeline with the rule that fired.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from shoal.clock import CLOCK_REFUSAL, skew_refusal
from shoal.errors import StaleEpoch
from shoal.liveness import liveness
from shoal.liveness import verdict as verdict_on
from shoal.store.nodes import ALIVE, DEAD, REJECTED, SUSPECT, NodeRecord, NodeRegistry
from shoal.store.tasks import TaskStore

log = logging.getLogger("shoal.cluster.detector")

#: Seconds before a node that could not be reached for verification is tried again.
REVERIFY_AFTER = 5.0
#: Seconds before a node refused for another reason (a wrong proof) is verified again; each new master
#: also verifies every refused node once. A node refused for its clock is looked at every beat instead:
#: its record says when its clock is right again, and that look costs no call.
REVERIFY_REFUSED = 60.0


class Prober(Protocol):
    """The calls the detector makes to other nodes (shoal.rpc.peers.PeerClient)."""

    async def is_alive(self, name: str, addr: str, timeout_s: float) -> tuple[str, int] | None: ...

    async def ask_alive(
        self, via_name: str, via_addr: str, target_name: str, target_addr: str, timeout_s: float
    ) -> bool: ...

    async def verify(self, addr: str, expected_name: str, timeout_s: float) -> object: ...


class Detector:
    """Owns failure detection and admission for one master term. ``run()`` until deposed."""

    def __init__(
        self,
        *,
        registry: NodeRegistry,
        store: TaskStore,
        prober: Prober,
        me: str,
        epoch: int,
        interval: float,
        dead_after: int,
        indirect_probes: int = 2,
    ) -> None:
        self.registry = registry
        self.store = store
        self.prober = prober
        self.me = me
        self.epoch = epoch
        self.interval = interval
        self.dead_after = dead_after
        self.silence_limit = interval * dead_after
        self.indirect_probes = indirect_probes
        self.busy: dict[str, asyncio.Task[None]] = {}  # node -> its admission or probe in flight
        self._retry_at: dict[tuple[str, int], float] = {}
        self.deaths = 0
        self.stale: StaleEpoch | None = None  # set when a verdict found this term over: the detector stops

    def __repr__(self) -> str:
        return f"<Detector epoch={self.epoch} busy={sorted(self.busy)} deaths={self.deaths}>"

    async def run(self) -> None:
        try:
            while True:
                await self.tick()
                if self.stale is not None:
                    raise self.stale
                await asyncio.sleep(self.interval / 2)
        finally:
            for task in self.busy.values():
                task.cancel()

    async def tick(self) -> None:
        now, records = await self.registry.all_with_time()
        others = [r for r in records if r.name != self.me]
        self._forget_retries_of_gone(records)
        for record in records:
            if record.name in self.busy:
                continue
            if record.name == self.me:
                if verdict_on(record) != ALIVE:
                    await self.registry.set_state(self.epoch, self.me, ALIVE, record.incarnation, "the master itself")
                continue
            job = self._job(record, now, others)
            if job is not None:
                task = asyncio.create_task(job, name=f"detector {record.name}")
                self.busy[record.name] = task
                task.add_done_callback(functools.partial(self._done, record.name))

    def _job(self, r: NodeRecord, now: float, others: list[NodeRecord]) -> Coroutine[Any, Any, None] | None:
        seen = liveness(r, now, self.silence_limit)
        if seen.verdict in ("", REJECTED):  # new, back as a new incarnation, or refused: verified when due
            due = time.monotonic() >= self._retry_at.get((r.name, r.incarnation), 0)  # _admit says when again
            return self._admit(r) if seen.beating and due else None
        if seen.verdict == DEAD:
            return self._requeue(r, "left over from an earlier verdict") if r.assigned else None
        if not seen.beating:
            return self._suspect(r, now - r.last_beat, others)
        if seen.verdict == SUSPECT:
            return self._set(r, ALIVE, "beats resumed")
        return None

    def _forget_retries_of_gone(self, records: list[NodeRecord]) -> None:
        """Drop the verification retries of node incarnations no longer in the registry (the node left, or
        came back as a new incarnation), so that nodes coming and going do not pile them up."""
        current = {(r.name, r.incarnation) for r in records}
        for gone in [key for key in self._retry_at if key not in current]:
            del self._retry_at[gone]

    def _done(self, name: str, task: asyncio.Task[None]) -> None:
        self.busy.pop(name, None)
        if not task.cancelled() and task.exception() is not None:
            if isinstance(task.exception(), StaleEpoch):
                self.stale = task.exception()  # type: ignore[assignment]
            log.warning("checking node %s failed: %s", name, task.exception())

    async def _set(self, r: NodeRecord, state: str, reason: str, extra: dict[str, object] | None = None) -> None:
        if await self.registry.set_state(self.epoch, r.name, state, r.incarnation, reason, extra):
            log.info("node %s is %s: %s", r.name, state, reason)

    async def _admit(self, r: NodeRecord) -> None:
        off = skew_refusal(r.clock_skew)  # its clock against the store's, never against this master's own
        if off is not None:
            self._retry_at[(r.name, r.incarnation)] = time.monotonic() + self.interval
            if not (verdict_on(r) == REJECTED and r.reason.startswith(CLOCK_REFUSAL)):  # said once, not every beat
                await self._set(r, REJECTED, off)
            return
        verdict = await self.prober.verify(r.grpc, r.name, timeout_s=max(1.0, self.interval))
        if verdict:
            self._retry_at.pop((r.name, r.incarnation), None)
            await self._set(r, ALIVE, f"joined (incarnation {r.incarnation}): proved it holds the cluster token")
            return
        reason = str(getattr(verdict, "reason", "") or "verification failed")
        later = REVERIFY_AFTER if getattr(verdict, "unreachable", False) else REVERIFY_REFUSED
        self._retry_at[(r.name, r.incarnation)] = time.monotonic() + later
        await self._set(r, REJECTED, f"verification failed: {reason}")

    async def _suspect(self, r: NodeRecord, silent: float, others: list[NodeRecord]) -> None:
        missed = int(silent / self.interval)
        if r.state != SUSPECT:
            await self._set(r, SUSPECT, f"{missed} beats missed")
        timeout = min(1.0, max(0.2, self.interval / 2))
        if await self.prober.is_alive(r.name, r.grpc, timeout):
            if silent > 3 * self.silence_limit:
                await self._declare_dead(r, f"no beat for {silent:.0f}s though it answers probes: it cannot report")
            return
        helpers = [o for o in others if verdict_on(o) == ALIVE and self.registry_fresh(o, r)]
        helpers = random.sample(helpers, min(self.indirect_probes, len(helpers)))
        answers = await asyncio.gather(
            *(self.prober.ask_alive(h.name, h.grpc, r.name, r.grpc, timeout * 2) for h in helpers),
            return_exceptions=True,
        )
        reached = [h.name for h, ok in zip(helpers, answers, strict=True) if ok is True]
        if reached:
            log.info("node %s missed %d beats but %s reached it; it stays suspect", r.name, missed, ", ".join(reached))
            return
        rule = f"{missed} beats missed, direct probe and {len(helpers)} indirect probe(s) failed"
        await self._declare_dead(r, rule)

    def registry_fresh(self, helper: NodeRecord, target: NodeRecord) -> bool:
        return helper.name != target.name and helper.last_beat >= target.last_beat

    async def _declare_dead(self, r: NodeRecord, rule: str) -> None:
        await self._set(r, DEAD, rule)
        self.deaths += 1
        await self._requeue(r, rule)

    async def _requeue(self, r: NodeRecord, rule: str) -> None:
        ids = await self.store.requeue(r.name, f"node lost: {rule}", self.epoch)
        quarantined = list(ids.quarantined)
        if not ids and not quarantined:
            return
        also = f", {len(quarantined)} quarantined (max_lost_attempts reached)" if quarantined else ""
        log.warning("re-placing %d task(s) of dead node %s%s", len(ids), r.name, also)
        await self.registry.note(
            "re-placed", r.name, f"{len(ids)} task(s) back to WAITING{also}: {rule}", self.epoch,
            {"tasks": ids[:200], "count": len(ids), "quarantined": quarantined[:200]},
        )  # fmt: skip
