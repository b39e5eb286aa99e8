"""Host holds: a site that answered 429 or 503 with ``Retry-After`` gets no fetch placed until it said.

The fetch handler records a hold when a site asks it to wait; placement (``place.lua``) leaves a fetch to
a held host waiting until the hold ends. A hold is the key ``hold:{host}`` (``Keys.host_hold``; the host as
``shoal.limits.host_of`` makes it from a URL): its value is the Unix time, in seconds on the store's clock, at
which the hold ends, and it expires then. The end is computed in the store from its own ``TIME``, never
from a node's clock, so nodes whose clocks disagree still agree on every hold. A hold is only ever
extended: a shorter wait asked for later never shortens a longer one still running.

    holds = HostHolds(redis, keys)
    ends = await holds.hold("example.org", 2.0)    # Unix time (store's clock) the hold in effect ends
    await holds.until("example.org")               # the same, or None once the hold is over
"""

from __future__ import annotations

from redis.asyncio import Redis

from shoal.errors import StoreUnavailable
from shoal.keys import Keys
from shoal.store.redis import STORE_DOWN, STORE_DOWN_MESSAGE

#: KEYS[1]: hold:{host}; ARGV[1]: the hold in ms from now. Sets the key to the end time (Unix seconds, on the
#: store's clock) with PX = the hold, unless the hold in effect lasts at least as long. Returns the end time
#: in effect.
_HOLD = """
local ms = math.max(1, math.floor(tonumber(ARGV[1])))
if redis.call('PTTL', KEYS[1]) >= ms then return redis.call('GET', KEYS[1]) end
local t = redis.call('TIME')
local ends = string.format('%.3f', tonumber(t[1]) + (math.floor(tonumber(t[2]) / 1000) + ms) / 1000)
redis.call('SET', KEYS[1], ends, 'PX', ms)
return ends
"""


class HostHolds:
    """The host holds of one cluster. Holds no state but the connection pool: safe for concurrent use."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._hold = redis.register_script(_HOLD)

    async def hold(self, host: str, seconds: float) -> float:
        """Hold fetches to ``host`` for ``seconds`` from now (at least a millisecond), unless a longer hold
        already runs; return the Unix time (store's clock) at which the hold in effect ends."""
        try:
            ends = await self._hold(keys=[self.keys.host_hold(host)], args=[max(1, int(seconds * 1000))])
        except STORE_DOWN:
            raise StoreUnavailable(STORE_DOWN_MESSAGE) from None
        return float(ends)

    async def until(self, host: str) -> float | None:
        """The Unix time (store's clock) at which the hold on ``host`` ends, or None when there is none."""
        try:
            value = await self.redis.get(self.keys.host_hold(host))
        except STORE_DOWN:
            raise StoreUnavailable(STORE_DOWN_MESSAGE) from None
        return None if value is None else float(value)

    def __repr__(self) -> str:
        return f"HostHolds({self.keys.prefix!r})"
