"""This node's presence in the cluster: its record, its beats, its incarnation.

Every ``heartbeat_interval`` the node writes its record (addresses, slots, load) with the Redis clock and
announces itself on the ``public`` channel in the seed's message shape. Each beat also measures how far
this node's wall clock is from the store's (``shoal.clock``) and records it. Each start, and each return after
being declared dead, is a new incarnation: the master verifies it again before giving it work, and the
node first drops whatever it still ran, since the master has already handed those tasks to others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable

from shoal.clock import NodeClock
from shoal.config import NodeConfig
from shoal.liveness import verdict
from shoal.store.nodes import DEAD, NodeRecord, NodeRegistry

log = logging.getLogger("shoal.cluster.heartbeat")

#: The seed's message kinds on the ``public`` channel, plus shoal's membership verdicts.
HEARTBEAT, REQUEST_ELECTION, ELECTION_VOTE, MEMBERSHIP = 0, 1, 2, 3


class Heartbeat:
    """Owns this node's record. ``run()`` beats until cancelled; ``tick()`` beats once (tests call it)."""

    def __init__(
        self,
        *,
        config: NodeConfig,
        registry: NodeRegistry,
        types: list[str],
        load: Callable[[], int],
        prefetch: Callable[[], int] = lambda: 0,
        on_declared_dead: Callable[[], Awaitable[None]],
        on_beat: Callable[[], None] = lambda: None,
        cache_stats: Callable[[], dict[str, int]] | None = None,
        clock: NodeClock | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or NodeClock()
        self.registry = registry
        self.types = types
        self.load = load
        self._soon = asyncio.Event()
        self.prefetch = prefetch
        self.on_declared_dead = on_declared_dead
        self.on_beat = on_beat
        self.cache_stats = cache_stats
        self.incarnation = 0
        self.draining = False
        self.beats = 0
        self.last_ok = 0.0  # monotonic time of the last beat that reached the store
        # Monotonic time at which the last beat that reached the store (and whose verdict was read back)
        # was sent: the store's record of this node is at least this fresh (see shoal.worker.fence).
        self.reached_at = time.monotonic()
        self.last_tick = time.monotonic()  # monotonic time the loop last completed a beat, reached or not
        self._rejoining = asyncio.Lock()
        self.state = ""  # the master's last verdict on this node, as read back after a beat
        self.reason = ""

    def __repr__(self) -> str:
        return f"<Heartbeat {self.config.name}#{self.incarnation} beats={self.beats} state={self.state or '-'}>"

    async def join(self) -> None:
        """Start a new incarnation and beat once, so the cluster sees this node before it serves."""
        self.incarnation = await self.registry.new_incarnation(self.config.name)
        await self.tick()

    def record(self) -> NodeRecord:
        c = self.config
        return NodeRecord(
            name=c.name,
            host=c.host,
            http=c.advertised(c.http),
            grpc=c.advertised(c.grpc),
            proxy=c.advertised(c.proxy) if c.proxy_enabled else "",
            slots=c.slots,
            running=self.load(),
            pid=os.getpid(),
            types=tuple(self.types) if c.run_tasks else (),
            run_tasks=c.run_tasks,
            last_beat=0.0,
            incarnation=self.incarnation,
            priority=c.priority,
            master_eligible=c.master_eligible,
            draining=self.draining,
            cache=self.cache_stats() if self.cache_stats is not None else None,
            labels=c.node_labels,
            prefetch=self.prefetch(),
        )

    def beat_soon(self) -> None:
        """Beat now rather than at the next interval: what the node tells of itself changed (its prefetch)."""
        self._soon.set()

    async def run(self) -> None:
        interval = self.config.heartbeat_interval
        await asyncio.sleep(random.uniform(0, interval / 4))  # stagger nodes started together
        while True:
            started = time.monotonic()
            self._soon.clear()
            await self.tick()
            self.last_tick = time.monotonic()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, interval - (time.monotonic() - started))):
                    await self._soon.wait()

    async def tick(self, timeout: float | None = None) -> None:
        """Beat once, giving the store ``timeout`` seconds (a beat interval by default) to take it. Beats may
        overlap (the fence beats on its own, see shoal.worker.fence): only one acts on a dead verdict."""
        sent = time.monotonic()
        try:
            beat = self.registry.beat(self.record(), self.clock)
            await asyncio.wait_for(beat, timeout or self.config.heartbeat_interval)
            message = {"kind": HEARTBEAT, "who": self.config.name, "alive": True, "incarnation": self.incarnation,
                       "load": self.load()}  # fmt: skip
            await self.registry.public.publish(message)
            self.beats += 1
            self.last_ok = time.monotonic()
            mine = await self.registry.get(self.config.name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("heartbeat failed: %s", exc)
            return
        if mine is not None:
            self.state, self.reason = mine.state, mine.reason
            if mine.incarnation == self.incarnation and verdict(mine) == DEAD:
                async with self._rejoining:
                    if mine.incarnation == self.incarnation:  # no other beat has rejoined meanwhile
                        await self._come_back(mine.reason)
        self.reached_at = max(self.reached_at, sent)  # only once a dead verdict was acted on
        self.on_beat()

    async def _come_back(self, reason: str) -> None:
        log.warning("this node was declared dead (%s); dropping what it held and rejoining", reason)
        await self.on_declared_dead()
        await self.join()
