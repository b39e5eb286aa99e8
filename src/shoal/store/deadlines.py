"""How long the store may take: a send, or the reply it owes, within ``socket_timeout``; a free connection
within the pool's ``timeout``. Both kept by shoal at a fraction of what redis-py spends on them.

redis-py bounds each send with ``asyncio.wait_for`` (a task of its own per send on Python 3.11) and each
read with a timer, and its BlockingConnectionPool takes a condition, a lock and a timer per command: about
a sixth of the CPU a store call costs shoal (``bench/README.md``). Here a connection notes when its current
send or read began, and a watch on the event loop, every ``WATCH_EVERY`` seconds while any is busy, cuts
those busy for longer than their ``socket_timeout``: the call waiting on one fails with redis-py's
ConnectionError (a store that cannot be reached), as it would have on its timeout, at most ``WATCH_EVERY``
later. ``WaitingPool`` makes a burst wait for a connection with a semaphore, which costs nothing while one
is free.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import Any

from redis.asyncio import ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError

#: How often the watch looks at the busy connections, in seconds: how late past its timeout a call may fail.
WATCH_EVERY = 0.5
#: A pool makes at most this many times its bound of connections, a margin for a connection given back in
#: the background (redis-py does so when a release is cancelled) after its turn was passed on.
OPEN_MARGIN = 2

log = logging.getLogger("shoal.store.deadlines")


class _Busy:
    """One connection's calls under way: when the first began, how many (a health check's ping runs inside a
    send), the stream it had then, and whether the watch cut it."""

    __slots__ = ("since", "depth", "writer", "cut")

    def __init__(self, writer: Any) -> None:
        self.since = time.monotonic()
        self.depth = 1
        self.writer = writer
        self.cut = False


class _Watch:
    """The busy connections of one event loop; while any is busy, a look every ``WATCH_EVERY`` seconds, on that
    loop, cuts those past their timeout."""

    def __init__(self) -> None:
        self.busy: dict[TimedConnection, _Busy] = {}
        self._looking = False

    def begin(self, connection: TimedConnection) -> None:
        busy = self.busy.get(connection)
        if busy is not None:
            busy.depth += 1
            return
        self.busy[connection] = _Busy(getattr(connection, "_writer", None))
        if not self._looking:
            self._looking = True
            asyncio.get_running_loop().call_later(WATCH_EVERY, self._look)

    def end(self, connection: TimedConnection) -> bool:
        """The call is over; whether the watch cut its connection meanwhile."""
        busy = self.busy[connection]
        busy.depth -= 1
        if busy.depth == 0:
            del self.busy[connection]
        return busy.cut

    def _look(self) -> None:
        now = time.monotonic()
        for connection, busy in list(self.busy.items()):
            timeout = connection.reply_timeout
            if not busy.cut and timeout is not None and now - busy.since > timeout:
                try:
                    busy.cut = connection.cut(busy.writer)
                except Exception:  # one that cannot be cut must not spare the others, nor end the watch
                    log.exception("the watch on the store's connections failed to cut one")
        self._looking = bool(self.busy)
        if self._looking:
            asyncio.get_running_loop().call_later(WATCH_EVERY, self._look)


_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watch] = weakref.WeakKeyDictionary()


class TimedConnection:
    """Mixin for a redis-py asyncio connection class, put before it among the bases: ``socket_timeout`` is
    kept by the watch, not by redis-py. A read given a ``timeout`` of its own (a subscriber's) keeps it."""

    def __init__(self, *args: Any, socket_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, socket_timeout=None, **kwargs)  # type: ignore[call-arg]
        #: Seconds a send, or the wait for a reply, may take (None: as long as it takes).
        self.reply_timeout = socket_timeout

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        watch = self._watch()
        if watch is None:
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
            return
        watch.begin(self)
        try:
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
        finally:
            cut = watch.end(self)
        if cut:  # the bytes may not have left: a send cut short has failed (asyncio's drain does not say so)
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise RedisConnectionError(f"Timeout writing to {self._host_error()}")  # type: ignore[attr-defined]

    async def read_response(self, disable_decoding: bool = False, timeout: float | None = None, **kwargs: Any) -> Any:
        watch = self._watch() if timeout is None else None
        if watch is None:
            return await super().read_response(disable_decoding, timeout, **kwargs)  # type: ignore[misc]
        watch.begin(self)
        try:
            reply = await super().read_response(disable_decoding, timeout, **kwargs)  # type: ignore[misc]
        finally:
            cut = watch.end(self)
        if cut:  # the reply came as it was cut: it stands, and the connection is not lent again as it is
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
        return reply

    def _watch(self) -> _Watch | None:
        """The running loop's watch; None when this connection has no bound."""
        if self.reply_timeout is None:
            return None
        loop = asyncio.get_running_loop()
        watch = _watches.get(loop)
        if watch is None:
            watch = _watches[loop] = _Watch()
        return watch

    def cut(self, writer: Any) -> bool:
        """Close the connection under the call waiting on it, which then fails as if the store had closed it;
        ``writer``: its stream when the call began, for a connection that redis-py disconnected meanwhile
        (its stream gone, its socket open while unsent bytes wait). False when there is nothing to close yet
        (a connection being opened): the next look tries again."""
        writer = getattr(self, "_writer", None) or writer  # redis-py's stream writer, None while not connected
        if writer is None:
            return False
        writer.transport.abort()
        return True


class WaitingPool(ConnectionPool):
    """A pool whose callers wait, up to ``timeout`` seconds, for a connection while ``max_connections`` are
    in use (a burst waits instead of failing), as redis-py's BlockingConnectionPool does."""

    def __init__(self, *, timeout: float | None = 20.0, max_connections: int = 50, **kwargs: Any) -> None:
        super().__init__(max_connections=OPEN_MARGIN * max_connections, **kwargs)
        self.timeout = timeout
        self._turns = asyncio.Semaphore(max_connections)
        self._lent: set[Any] = set()

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._turns.locked():
            try:
                async with asyncio.timeout(self.timeout):
                    await self._turns.acquire()
            except TimeoutError:
                raise RedisConnectionError("No connection available.") from None
        else:
            await self._turns.acquire()  # returns at once
        try:
            connection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except BaseException:
            self._turns.release()
            raise
        self._lent.add(connection)
        return connection

    async def release(self, connection: Any) -> None:
        try:
            await super().release(connection)
        finally:
            if connection in self._lent:  # once per connection lent, whatever calls release
                self._lent.discard(connection)
                self._turns.release()
