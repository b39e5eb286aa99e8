"""The watchdog: ``WATCHDOG=1`` every half period, and only while the node makes progress.

A node can heartbeat and still do nothing: its event loop stuck in a blocking call, or its worker or
scheduler wedged while work waits. The service manager restarts it only if the pings stop, so they are
withheld unless all of this holds:

- the event loop runs: a task on the loop stamps the time every ``tick_every`` seconds, and a separate
  thread sends the pings only while that stamp is fresh. The ping cannot come from the loop alone: a loop
  blocked in a sync call could not say so, while the thread can log where the loop is stuck;
- every watched loop (heartbeat; worker and scheduler while work waits for them) advanced within its
  limit. The loop checks these itself (the "work waits" questions need the store) and leaves its verdict
  for the thread.

Every change of verdict is logged once, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from shoal.systemd.notify import Notifier

log = logging.getLogger("shoal.systemd.watchdog")

#: Seconds a "does work wait?" question to the store may take; no answer counts as "nothing waits", so
#: that a slow or lost store (which a restart would not cure) never stops the pings by itself.
ASK_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Loop:
    """One loop the watchdog watches.

    ``last`` gives the monotonic time it last advanced, or None while it does not run (the scheduler on a
    node that is not master); ``waiting`` counts the work that waits for it (None: it must always
    advance, as the heartbeat must); ``limit`` is how long it may go without advancing.
    """

    name: str
    last: Callable[[], float | None]
    limit: float
    waiting: Callable[[], Awaitable[int]] | None = None


async def stalled(loops: Sequence[Loop], now: float | None = None) -> str | None:
    """Why the node makes no progress, or None if every loop advanced within its limit (or nothing waits)."""
    now = time.monotonic() if now is None else now
    for loop in loops:
        last = loop.last()
        if last is None or now - last <= loop.limit:
            continue
        idle = now - last
        if loop.waiting is None:
            return f"the {loop.name} loop has not advanced for {idle:.1f}s"
        try:
            waiting = await asyncio.wait_for(loop.waiting(), ASK_TIMEOUT_S)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("cannot tell whether work waits for the %s: %s", loop.name, exc)
            continue
        if waiting > 0:
            return f"the {loop.name} has not advanced for {idle:.1f}s while {waiting} item(s) wait for it"
    return None


class Watchdog:
    """Pings ``notifier`` every ``period / 2`` seconds while the node makes progress.

    ``run()`` is the loop's side (stamps and checks) and starts the pinging thread; ``close()`` stops both.
    Set ``stopping`` once the node shuts down: its loops stop on purpose then, and only the event loop
    itself is still watched.
    """

    def __init__(self, notifier: Notifier, period: float, loops: Sequence[Loop]) -> None:
        self.notifier = notifier
        self.period = period
        self.ping_every = period / 2
        self.tick_every = min(period / 4, 1.0)
        #: A stamp older than this means the loop is blocked (about two missed stamps at most periods).
        self.loop_limit = max(period / 2, 2 * self.tick_every)
        self.loops = list(loops)
        self.stopping = False
        self.pings = 0
        self.withheld = 0
        self._seen = time.monotonic()
        self._verdict: str | None = None
        self._shown: str | None = None  # the reason last logged, so each change is logged once
        self._since = 0.0
        self._loop_thread = threading.get_ident()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<Watchdog every {self.ping_every:g}s pings={self.pings} withheld={self.withheld}>"

    async def run(self) -> None:
        self._loop_thread = threading.get_ident()
        self._seen = time.monotonic()
        self._thread = threading.Thread(target=self._ping_forever, name="shoal-watchdog", daemon=True)
        self._thread.start()
        checker = asyncio.create_task(self._check_forever(), name="watchdog check")
        try:
            while True:
                self._seen = time.monotonic()
                await asyncio.sleep(self.tick_every)
        finally:
            checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checker

    async def _check_forever(self) -> None:
        while True:
            try:
                self._verdict = None if self.stopping else await stalled(self.loops)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken check must not take the pings down with it
                log.warning("watchdog check failed: %s", exc)
                self._verdict = None
            await asyncio.sleep(self.ping_every / 2)

    def why_not(self) -> str | None:
        """Why no ping should go now (None: ping). Thread: any."""
        lag = time.monotonic() - self._seen
        if lag > self.loop_limit:
            return f"the event loop has been blocked for {lag:.1f}s{self._where()}"
        return self._verdict

    def _where(self) -> str:
        """Where the loop's thread is now: the innermost Python line, which a blocked loop cannot report."""
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None:
            return ""
        top = traceback.extract_stack(frame, limit=1)
        return f" (at {top[-1].filename}:{top[-1].lineno} in {top[-1].name})" if top else ""

    def _ping_forever(self) -> None:
        while True:
            why = self.why_not()
            if why is None:
                if self.notifier.send("WATCHDOG=1"):
                    self.pings += 1
                if self._shown is not None:
                    log.warning("progress again after %.1fs; WATCHDOG=1 resumes", time.monotonic() - self._since)
                    self._shown = None
            else:
                self.withheld += 1
                if self._shown is None:
                    self._since = time.monotonic()
                if self._shown is None or _kind(why) != _kind(self._shown):
                    log.warning("withholding WATCHDOG=1: %s", why)
                self._shown = why
            if self._halt.wait(self.ping_every):
                return

    def close(self) -> None:
        """Stop pinging (the loop's side ends when its task is cancelled)."""
        self._halt.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * self.ping_every + 1)


def _kind(why: str) -> str:
    """A reason without its changing figures ("... for 3.2s ..."), so that each kind is logged once."""
    return why.partition(" for ")[0]
