"""Master election: a lease in Redis with a fencing epoch, and the order in which nodes stand for it.

The master renews its lease on every beat. When the lease is free, eligible nodes stand in order of
priority, then name (as OSPF elects its designated router): the first takes it at once, the others only
if it is still free after their turn. Taking the lease increments the epoch, which fences every
scheduler write, so a deposed master that wakes up cannot place anything.

Three things shorten the wait for a lapsed lease without weakening it:
- a master that leaves (shutdown or ``hand_over``) releases the lease at once, naming its successor;
- a master whose gRPC port refuses connections is gone (no process listens there), so the next in line
  frees its lease (break.lua) instead of waiting for it to run out; a master that is merely slow or cut
  off does not refuse, so it keeps its lease until the lease expires;
- a master that cannot renew steps down by its own clock before its lease can have expired.

A term is one epoch, and the master's duties (scheduler, failure detector) are what it is for: a duty that
stops, for whatever reason, ends the term (``duty_stopped``): the master steps down, says why on the
timeline and frees the lease, and the next election starts a new term with its duties running. The epoch
never goes backwards: every node remembers the highest it has seen, and a new term starts above it
(``NodeRegistry.take_lease``), so a store that lost writes cannot give two terms one number.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from shoal.cluster.heartbeat import REQUEST_ELECTION, Heartbeat
from shoal.config import NodeConfig, split_addr
from shoal.liveness import liveness
from shoal.store.nodes import NodeRecord, NodeRegistry

log = logging.getLogger("shoal.cluster.election")

#: Share of the lease a master may use before it must have renewed, by its own clock.
SAFE_SHARE = 0.8


async def port_refuses(addr: str, timeout_s: float) -> bool:
    """True only if a TCP connection to ``addr`` is actively refused: nothing listens there any more."""
    try:
        host, port = split_addr(addr, "grpc")
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except ConnectionRefusedError:
        return True
    except (OSError, TimeoutError, ValueError):
        return False
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return False


def standing_order(records: list[NodeRecord], now: float, alive_within: float, handover: str | None) -> list[str]:
    """Who may stand for master, first to last: a named successor, then by priority (high first) and name."""
    eligible = [r for r in records if r.master_eligible and liveness(r, now, alive_within).may_stand]
    order = [r.name for r in sorted(eligible, key=lambda r: (-r.priority, r.name))]
    if handover in order:
        order.remove(handover)
        order.insert(0, handover)
    return order


class Election:
    """Owns this node's part in the lease. ``on_elected(epoch)`` and ``on_deposed()`` start and stop the
    master's duties; they are called from this loop only, one at a time."""

    def __init__(
        self,
        *,
        config: NodeConfig,
        registry: NodeRegistry,
        heartbeat: Heartbeat,
        on_elected: Callable[[int], Awaitable[None]],
        on_deposed: Callable[[], Awaitable[None]],
    ) -> None:
        self.config = config
        self.registry = registry
        self.heartbeat = heartbeat
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.interval = config.heartbeat_interval
        self.lease_ttl = config.heartbeat_interval * config.dead_after
        self.epoch: int | None = None  # set while this node is master
        self.master: str | None = None
        self.elections_won = 0
        self._lease_until = 0.0  # monotonic time before which the lease surely has not expired
        self._resign: tuple[int, str] | None = None  # (epoch, why) of a term whose duty stopped
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<Election {self.config.name} master={self.master} epoch={self.epoch} won={self.elections_won}>"

    @property
    def is_master(self) -> bool:
        return self.epoch is not None

    def may_write(self) -> bool:
        """Whether this master's lease surely still holds by its own clock; the scheduler checks it."""
        return self.is_master and time.monotonic() < self._lease_until

    def wake(self) -> None:
        self._wake.set()

    def duty_stopped(self, epoch: int, why: str) -> None:
        """A master duty of term ``epoch`` stopped: end that term at once (from this loop, not the duty's)."""
        self._resign = (epoch, why)
        self._wake.set()

    async def run(self) -> None:
        listening = asyncio.Event()  # cleared to stop the listener even if its cancel is lost in a store call
        listening.set()
        listener = asyncio.create_task(self._listen(listening), name="election listener")
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                self._wake.clear()
                await self.tick()
        finally:
            listening.clear()
            listener.cancel()

    async def _listen(self, listening: asyncio.Event) -> None:
        """Wake at once when a master leaves (the seed's 'request election' message on ``public``)."""
        while listening.is_set():
            try:
                async with self.registry.public.election_requests() as messages:
                    while listening.is_set():
                        message = await messages.next(timeout=1.0)
                        if message is not None and message.get("kind") == REQUEST_ELECTION:
                            self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("public channel lost (%s); resubscribing", exc)
                await asyncio.sleep(0.5)

    async def tick(self) -> None:
        async with self._lock:
            try:  # a store that does not answer must not hold this loop past the lease
                if self._resign is not None:
                    await self._end_term(*self._resign)
                if self.is_master:
                    await asyncio.wait_for(self._renew(), self.interval)
                elif self.config.master_eligible:
                    await asyncio.wait_for(self._follow(), self.lease_ttl)
                else:
                    self.master, _ = await asyncio.wait_for(self.registry.master(), self.interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("election step failed: %s", exc)
                if self.is_master and time.monotonic() >= self._lease_until:
                    log.warning("cannot renew the master lease; stepping down before it can run out")
                    await self._step_down()

    async def _renew(self) -> None:
        asked = time.monotonic()
        state = await self.registry.take_lease(self.config.name, self.lease_ttl, term=self.epoch)
        self.master = state.holder
        if state.verdict == "held":
            log.warning("%s holds the master lease now (epoch %d); stepping down", state.holder, state.epoch)
            await self._step_down()
            return
        # Count the lease from before the request was sent: Redis started it later, never earlier.
        self._lease_until = asked + self.lease_ttl * SAFE_SHARE
        if state.epoch != self.epoch:  # the lease had lapsed and this node took it again: a new term
            await self._step_down()
            await self._become(state.epoch)

    async def _follow(self) -> None:
        holder, _ = await self.registry.master()
        self.master = holder
        if holder is None:
            await self._stand()
        elif holder != self.config.name:
            await self._check_on(holder)
        else:  # this node holds the lease but is not acting as master (e.g. it just restarted)
            await self._stand()

    async def _stand(self) -> None:
        now, records = await self.registry.all_with_time()
        # Only nodes that beat lately stand: one cut off for a few beats must not hold the others back.
        order = standing_order(records, now, 2.5 * self.interval, await self.registry.handover())
        if self.config.name not in order:
            return
        rank = order.index(self.config.name)
        if rank > 0:  # let those before this node take it first
            await asyncio.sleep(rank * self.interval * 0.3)
            holder, _ = await self.registry.master()
            if holder is not None:
                self.master = holder
                return
        asked = time.monotonic()
        state = await self.registry.take_lease(self.config.name, self.lease_ttl, term=0)
        self.master = state.holder
        if state.verdict != "held":
            self._lease_until = asked + self.lease_ttl * SAFE_SHARE
            await self._become(state.epoch)

    async def _check_on(self, holder: str) -> None:
        """Free the lease of a master whose process is gone, instead of waiting for the lease to lapse."""
        master = await self.registry.get(holder)
        if master is None:
            return
        now = await self.registry.now()
        if liveness(master, now, 1.5 * self.interval).beating:
            return
        silent = now - master.last_beat
        if await port_refuses(master.grpc, timeout_s=min(0.5, self.interval)):
            rule = f"no beat for {silent:.1f}s and its gRPC port refuses connections: process gone"
            if await self.registry.break_lease(holder, rule):
                log.warning("master %s is gone (%s); standing", holder, rule)
            await self._stand()

    async def _become(self, epoch: int) -> None:
        self.epoch = epoch
        self.master = self.config.name
        self.elections_won += 1
        log.info("this node is master (epoch %d)", epoch)
        await self.on_elected(epoch)

    async def _step_down(self) -> None:
        if self.epoch is not None:
            self.epoch = None
            await self.on_deposed()

    async def _end_term(self, epoch: int, why: str) -> None:
        """Step down from term ``epoch`` because a duty stopped, say why on the timeline, free the lease."""
        self._resign = None
        if self.epoch != epoch:  # that term is over already
            return
        log.warning("stepping down from epoch %d: %s", epoch, why)
        await self._step_down()
        # The next in line other than this node: a fault of this node's own would stop its next term too.
        now, records = await self.registry.all_with_time()
        order = standing_order(records, now, 2.5 * self.interval, None)
        successor = next((name for name in order if name != self.config.name), None)
        await self.registry.release_lease(self.config.name, successor, note_ttl_s=self.lease_ttl, why=why, epoch=epoch)

    async def hand_over(self, candidate: str | None) -> bool:
        """Give the master role away now (to ``candidate``, or the next in line); False if not master."""
        async with self._lock:
            if not self.is_master:
                return False
            await self._step_down()
            released = await self.registry.release_lease(self.config.name, candidate, note_ttl_s=self.lease_ttl)
            log.info("handed the master role over to %s", candidate or "the next in line")
            return released

    async def leave(self) -> None:
        """On shutdown: hand over at once instead of letting the lease run out."""
        with contextlib.suppress(Exception):
            await self.hand_over(None)
