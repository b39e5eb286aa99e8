"""A raw pipeline over one connection of a store's pool, for copying many keys in and out quickly.

Commands go out as one buffer and hiredis parses the replies straight off the stream. For the many small
replies of a copy this is about ten times faster than redis-py's pipeline, which matters when the copy of
a live store runs while its writes wait (shoal.store.backup).

It raises shoal's store errors, as a StoreClient does (``shoal.store.client.translated``): StoreUnavailable
when the connection cannot be had, breaks, or a reply takes longer than its timeout, or the store refuses a
write for now (READONLY, NOREPLICAS: see ``shoal.store.refusals``); StoreFault for any other error reply.
Each is also the redis-py error it replaces (a ``ResponseError`` for an error reply).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shoal.errors import ShoalError, StoreError
from shoal.store.client import translated, translating
from shoal.store.redis import SOCKET_TIMEOUT
from shoal.store.refusals import StoreRefused, refusal


class Wire:
    """One connection of the store's pool used as a raw pipeline; one user at a time.

    The connection comes from redis-py (so passwords, TLS, unix sockets and Sentinel work as for the
    node) and is closed after use, its protocol state being ours then."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.conn: Any = None

    async def __aenter__(self) -> Wire:
        self.conn = await translating(self.redis.connection_pool.get_connection())  # type: ignore[no-untyped-call]
        if getattr(self.conn, "_reader", None) is None or getattr(self.conn, "_writer", None) is None:
            await self.__aexit__()
            raise ShoalError("this version of redis-py has no stream to read replies from; install redis-py 5 to 8")
        self.parser = hiredis.Reader()
        return self

    async def __aexit__(self, *exc: object) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                await conn.disconnect()
            finally:  # its turn in the pool comes back even if the disconnect fails
                await self.redis.connection_pool.release(conn)

    async def call(self, commands: Sequence[Sequence[bytes]], timeout: float = SOCKET_TIMEOUT) -> list[Any]:
        """Send the commands at once and return their replies in order; an error reply raises StoreFault (a
        ``ResponseError`` too), the first one's, once every reply is read."""
        out = bytearray()
        for parts in commands:
            out += b"*%d\r\n" % len(parts)
            for part in parts:
                out += b"$%d\r\n%b\r\n" % (len(part), part)
        await self.write(out, timeout)
        return await self.read(len(commands), timeout)

    async def write(self, data: bytes | bytearray, timeout: float = SOCKET_TIMEOUT) -> None:
        """Send commands already in the wire format; their replies are read later, in order, with ``read``."""
        try:
            async with asyncio.timeout(timeout):
                self.conn._writer.write(data)
                await self.conn._writer.drain()
        except TimeoutError:
            raise translated(RedisTimeoutError(f"the store took over {timeout:g}s to take the commands")) from None
        except OSError as exc:
            raise translated(RedisConnectionError(f"the connection to the store broke: {exc}")) from exc

    async def read(self, replies_due: int, timeout: float = SOCKET_TIMEOUT) -> list[Any]:
        """The next ``replies_due`` replies, in order; the first error reply raises (see ``call``)."""
        replies: list[Any] = []
        failed: StoreError | None = None
        try:
            async with asyncio.timeout(timeout):
                while len(replies) < replies_due:
                    reply = self.parser.gets()
                    if reply is False:
                        data = await self.conn._reader.read(1 << 16)
                        if not data:
                            raise translated(RedisConnectionError("the store closed the connection"))
                        self.parser.feed(data)
                    else:
                        if isinstance(reply, hiredis.ReplyError) and failed is None:
                            failed = _refused(str(reply))
                        replies.append(reply)
        except TimeoutError:
            raise translated(RedisTimeoutError(f"the store took over {timeout:g}s to reply")) from None
        except OSError as exc:
            raise translated(RedisConnectionError(f"the connection to the store broke: {exc}")) from exc
        if failed is not None:
            raise failed
        return replies


def _refused(text: str) -> StoreError:
    """Shoal's error for an error reply: StoreUnavailable for a refusal for now, else StoreFault."""
    error = ResponseError(text)
    if refusal(error) is not None:
        return translated(StoreRefused(f"the store refused a write for now: {text}"))
    return translated(error)
