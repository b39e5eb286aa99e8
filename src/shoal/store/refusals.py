"""A store that answers but cannot take writes for now is, to shoal, a store that is down for a moment.

Two replies say so: READONLY (the server is a replica now: a demoted master) and NOREPLICAS (a master
configured with ``min-replicas-to-write`` that lacks them). Every state change in shoal is a Lua script,
and Redis 6 wraps an error raised inside a script in a plain ``ERR Error running script ... -READONLY
...``, which redis-py raises as a bare ResponseError: not the ReadOnlyError that makes its Sentinel
client reconnect, and not an error shoal's callers retry. This mixin turns both replies, plain or wrapped,
into a ``StoreRefused`` (a ConnectionError), and drops the connection on READONLY so that the next one
goes to the master (through the sentinels, or wherever a plain URL now points).
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

#: Reply codes that mean "not now" rather than "not this".
CODES = ("READONLY", "NOREPLICAS")


class StoreRefused(RedisConnectionError):
    """The store refused a write for now (READONLY or NOREPLICAS); retried like a lost connection."""


def refusal(exc: ResponseError) -> str | None:
    """The code of a refusal, whether Redis sent it as is or wrapped in a script's error; else None."""
    text = str(exc)
    for code in CODES:
        if text.startswith(code) or f"-{code} " in text:
            return code
    return None


class RefusalsAsDown:
    """Mixin for a redis-py asyncio connection class; put it first among the bases."""

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except ResponseError as exc:
            code = refusal(exc)
            if code is None:
                raise
            if code == "READONLY":
                await self.disconnect()  # type: ignore[attr-defined]
            raise StoreRefused(f"the store refused a write for now: {exc}") from exc
