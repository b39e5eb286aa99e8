"""The signatures of the cluster's function tasks (``@shoal.task``), as the nodes that run them publish them.

A submit may be taken by a node (or a producer) that never imported the function; it checks the call's
``args``/``kwargs`` against what this hash holds (``shoal.signatures``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from shoal.keys import Keys
from shoal.signatures import Signature

log = logging.getLogger("shoal.store.signatures")


class SignatureStore:
    """Reads and writes of the ``signatures`` hash of one cluster. Safe to share between coroutines."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def publish(self, types: Mapping[str, Signature | None]) -> None:
        """Record the signature of each function type this node runs, and forget one for each type it runs as
        a handler (it may have been a function before), in one step."""
        functions = {name: sig.to_json() for name, sig in types.items() if sig is not None}
        handlers = [name for name, sig in types.items() if sig is None]
        async with self.redis.pipeline(transaction=True) as pipe:
            if functions:
                pipe.hset(self.keys.signatures, mapping=functions)  # type: ignore[arg-type]
            if handlers:
                pipe.hdel(self.keys.signatures, *handlers)
            await pipe.execute()

    async def read(self) -> dict[str, Signature]:
        """Every published signature by type; one that cannot be read is left out (and logged)."""
        raw: Any = await self.redis.hgetall(self.keys.signatures)
        found: dict[str, Signature] = {}
        for name, value in raw.items():
            type_name = name.decode() if isinstance(name, bytes) else name
            try:
                found[type_name] = Signature.from_json(value)
            except ValueError as exc:
                log.warning("the signature of task type %r cannot be read: %s", type_name, exc)
        return found
