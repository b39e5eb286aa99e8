"""This node's heartbeat and its part in holding the master lease.

Every ``heartbeat_interval`` the node writes its record (address, slots, load) with the Redis clock,
announces itself on the ``public`` channel in the seed's message shape, and takes or renews the master
lease if it may stand. The lease lasts ``dead_after`` intervals; a master that cannot renew steps down
by its own clock before the lease can have run out, so two masters never place under one epoch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable

import orjson

from shoal.config import NodeConfig
from shoal.store.nodes import NodeRecord, NodeRegistry

log = logging.getLogger("shoal.cluster.membership")

#: The seed's message kinds on the ``public`` channel.
HEARTBEAT, REQUEST_ELECTION, ELECTION_VOTE = 0, 1, 2


class Membership:
    """Owns the heartbeat loop and the lease. ``on_elected(epoch)``/``on_deposed()`` start and stop the
    master's duties; they are called from this loop only, one at a time."""

    def __init__(
        self,
        *,
        config: NodeConfig,
        registry: NodeRegistry,
        types: list[str],
        load: Callable[[], int],
        on_elected: Callable[[int], Awaitable[None]],
        on_deposed: Callable[[], Awaitable[None]],
        on_beat: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.types = types
        self.load = load
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.on_beat = on_beat
        self.interval = config.heartbeat_interval
        self.lease_ttl = config.heartbeat_interval * config.dead_after
        self.epoch: int | None = None  # set while this node is master
        self.master: str | None = None
        self.beats = 0
        self.last_beat_ok = 0.0
        self._lease_until = 0.0  # monotonic time by which the lease surely has not expired

    def __repr__(self) -> str:
        return f"<Membership {self.config.name} master={self.master} epoch={self.epoch} beats={self.beats}>"

    @property
    def is_master(self) -> bool:
        return self.epoch is not None

    def record(self) -> NodeRecord:
        c = self.config
        return NodeRecord(
            name=c.name,
            host=c.host,
            http=c.advertised(c.http),
            grpc=c.advertised(c.grpc),
            slots=c.slots,
            running=self.load(),
            pid=os.getpid(),
            types=tuple(self.types) if c.run_tasks else (),
            run_tasks=c.run_tasks,
            last_beat=0.0,
        )

    async def run(self) -> None:
        await asyncio.sleep(random.uniform(0, self.interval / 4))  # stagger nodes started together
        while True:
            started = time.monotonic()
            await self.tick()
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def tick(self) -> None:
        try:
            await self.registry.beat(self.record())
            await self.registry.redis.publish(
                self.registry.keys.public,
                orjson.dumps({"kind": HEARTBEAT, "who": self.config.name, "alive": True, "load": self.load()}),
            )
            self.beats += 1
            self.last_beat_ok = time.monotonic()
            await self._lease()
            self.on_beat()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("heartbeat failed: %s", exc)
            if self.is_master and time.monotonic() >= self._lease_until:
                log.warning("cannot renew the master lease; stepping down before it runs out")
                await self._step_down()

    async def _lease(self) -> None:
        if not self.config.master_eligible:
            self.master, _ = await self.registry.master()
            return
        asked = time.monotonic()
        state = await self.registry.take_lease(self.config.name, self.lease_ttl)
        self.master = state.holder
        if state.verdict in ("won", "renewed"):
            # Count the lease from before the request was sent: Redis may have started it later, never earlier.
            self._lease_until = asked + self.lease_ttl * 0.8
            if self.epoch != state.epoch:
                if self.epoch is not None:
                    await self.on_deposed()
                self.epoch = state.epoch
                log.info("this node is master (epoch %d)", state.epoch)
                await self.on_elected(state.epoch)
        elif self.is_master:
            log.warning("%s holds the master lease now (epoch %d); stepping down", state.holder, state.epoch)
            await self._step_down()

    async def _step_down(self) -> None:
        self.epoch = None
        await self.on_deposed()

    async def leave(self) -> None:
        """Give up the lease at once (shutdown), so another node takes over without waiting for it to lapse."""
        if self.is_master:
            await self._step_down()
            try:
                await self.registry.release_lease(self.config.name)
            except Exception as exc:
                log.warning("could not release the master lease: %s", exc)
