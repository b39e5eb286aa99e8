"""What the concurrency and rate limits hold at the moment, for telling why a task waits.

place.lua enforces the limits (``shoal.limits``) and keeps their state: ``active:{limit}`` (the tasks a
concurrency limit counts), ``bucket:{limit}`` (a rate limit's tokens), ``hold:{host}`` (a site's
Retry-After). This reads them, in one round trip, without changing them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from shoal.keys import Keys
from shoal.limits import Limit


@dataclass(frozen=True, slots=True)
class Usage:
    """One limit as the store holds it: tasks counted running (an upper bound: ended ones are dropped only
    when the limit looks full), starts it would allow now, and when a host's hold ends (None: no hold)."""

    running: int
    tokens: float
    hold_until: float | None = None


class LimitState:
    """Reads of the limits' state for one cluster."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def usage(self, limits: Sequence[tuple[str, Limit]], host: str | None = None) -> list[Usage]:
        """Each named limit's usage (``shoal.limits.Limits.applying``), then, with ``host``, that host's hold."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.time()
            for name, _ in limits:
                pipe.scard(self.keys.limit_active(name))
                pipe.hmget(self.keys.limit_bucket(name), ["tokens", "at"])
            if host is not None:
                pipe.get(self.keys.host_hold(host))
            reply: list[Any] = await pipe.execute()
        now = reply[0][0] + reply[0][1] / 1e6
        found = []
        for k, (_, limit) in enumerate(limits):
            running, (tokens, at) = reply[1 + 2 * k], reply[2 + 2 * k]
            burst = max(1.0, limit.rate_per_s)
            have = burst if tokens is None else min(burst, float(tokens) + (now - float(at)) * limit.rate_per_s)
            found.append(Usage(int(running), have))
        if host is not None:
            held = reply[-1]
            found.append(Usage(0, 0.0, float(held) if held is not None and float(held) > now else None))
        return found
