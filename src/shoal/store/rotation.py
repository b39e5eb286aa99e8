"""The cluster-wide lease that serializes token rotations.

A rotation hands a new token to every live node, sealed under the token each holds. Two rotations at once,
started on two nodes, would each seal under the old token and leave the cluster split between two new
ones. So a rotation first takes this lease (``SET NX`` with an expiry, so a node that dies mid-rotation
does not block the next one for ever); a second rotation started meanwhile is refused at once and may be
tried again when the first has ended. Only the holder's own release removes the lease.

    lease = RotationLease(redis, keys)
    held = await lease.acquire("node-1", ttl_s=60)   # a holder id, or None while another rotation runs
    ...
    await lease.release(held)
"""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

from shoal.errors import StoreUnavailable
from shoal.keys import Keys
from shoal.store.redis import STORE_DOWN, STORE_DOWN_MESSAGE

#: Delete the lease only if it is still ours (it may have expired and been taken by another rotation).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RotationLease:
    """The rotation lease of one cluster. Safe for concurrent use."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.key = keys.rotation
        self._release = redis.register_script(_RELEASE)

    async def acquire(self, node: str, *, ttl_s: float) -> str | None:
        """Take the lease for ``ttl_s`` seconds in ``node``'s name: the holder id to release it with, or None
        when another rotation holds it."""
        holder = f"{node} {secrets.token_urlsafe(12)}"
        try:
            taken = await self.redis.set(self.key, holder, nx=True, px=max(1, int(ttl_s * 1000)))
        except STORE_DOWN:
            raise StoreUnavailable(STORE_DOWN_MESSAGE) from None
        return holder if taken else None

    async def holder(self) -> str | None:
        """The node whose rotation holds the lease now, if any."""
        try:
            value = await self.redis.get(self.key)
        except STORE_DOWN:
            raise StoreUnavailable(STORE_DOWN_MESSAGE) from None
        if not value:
            return None
        return (value.decode() if isinstance(value, bytes) else value).partition(" ")[0]

    async def release(self, holder: str) -> None:
        """Give the lease back, if it is still ``holder``'s."""
        try:
            await self._release(keys=[self.key], args=[holder])
        except STORE_DOWN:
            raise StoreUnavailable(STORE_DOWN_MESSAGE) from None

    def __repr__(self) -> str:
        return f"RotationLease({self.key!r})"
