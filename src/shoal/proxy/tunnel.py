"""CONNECT: a byte pump between the client and the target, for HTTPS through the proxy. Nothing is cached.

The target is checked and pinned as any upstream is (``shoal.addresses.resolve``, through the proxy's
access policy). The tunnel ends when both sides have closed, when either side fails, when no byte has
moved either way for the idle limit, or when a side has taken no byte of what it is sent for the idle
limit (a peer that stopped reading would otherwise hold the tunnel and its buffers for ever).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from shoal._utils import is_digits
from shoal.addresses import IPAddress, resolve

CHUNK = 64 * 1024


def parse_authority(target: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) of a CONNECT request; ValueError when it is anything else."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not is_digits(port) or not 0 < int(port) < 65536:
        raise ValueError(f"CONNECT needs host:port, not {target!r}")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"CONNECT needs host:port, not {target!r}")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"CONNECT needs host:port, not {target!r}")
    return host, int(port)


async def connect(
    host: str, port: int, timeout_s: float, checked: Callable[[str, int], Awaitable[IPAddress]] = resolve
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a TCP connection to the address ``checked`` gives for ``host`` within ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        address = await checked(host, port)
        return await asyncio.open_connection(str(address), port, limit=CHUNK)


class Tunnel:
    """Copies bytes both ways between two stream pairs until both ends close or it goes idle."""

    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        target: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        idle_s: float,
    ) -> None:
        self.client = client
        self.target = target
        self.idle_s = idle_s
        self.last = time.monotonic()
        self.moved = 0

    async def run(self, first: bytes = b"") -> int:
        """Pump until done; ``first`` is what the client sent after its CONNECT head. Returns bytes moved."""
        try:
            if first:
                self.target[1].write(first)
                await self._drain(self.target[1])
            up = asyncio.create_task(self._copy(self.client[0], self.target[1]))
            down = asyncio.create_task(self._copy(self.target[0], self.client[1]))
            try:
                await asyncio.wait([up, down], return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for task in (up, down):
                    task.cancel()
                await asyncio.gather(up, down, return_exceptions=True)
        finally:
            for _, writer in (self.client, self.target):
                if writer.transport.get_write_buffer_size():
                    writer.transport.abort()  # what it holds will never be read: drop it with the connection
            self.target[1].close()
            with contextlib.suppress(Exception):
                await self.target[1].wait_closed()
        return self.moved

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One direction; at the reader's end of stream, half-close the writer so the other side sees it."""
        while True:
            data = await self._read(reader)
            if not data:
                if writer.can_write_eof():
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                return
            self.last = time.monotonic()
            self.moved += len(data)
            writer.write(data)
            await self._drain(writer)

    async def _drain(self, writer: asyncio.StreamWriter) -> None:
        """Wait until ``writer`` takes what it was given, as long as its peer takes some of it within every
        ``idle_s``: a slow reader keeps the tunnel, one that stopped reading ends it."""
        transport = writer.transport
        pending = transport.get_write_buffer_size()
        while True:
            try:
                async with asyncio.timeout(self.idle_s):
                    await writer.drain()
                return
            except TimeoutError:
                left = transport.get_write_buffer_size()
                if left >= pending:
                    raise TimeoutError("tunnel peer stopped reading") from None
                pending = left

    async def _read(self, reader: asyncio.StreamReader) -> bytes:
        """Read, waiting only as long as the tunnel as a whole has been idle less than ``idle_s``."""
        while True:
            left = self.last + self.idle_s - time.monotonic()
            if left <= 0:
                raise TimeoutError("tunnel idle")
            try:
                async with asyncio.timeout(left):
                    return await reader.read(CHUNK)
            except TimeoutError:
                continue  # the other direction may have moved bytes meanwhile
