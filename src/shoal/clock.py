"""This node's wall clock, and how far it is from the store's.

Nodes never compare their own clocks with each other's: the store's clock (Redis ``TIME``) is the one
clock of the cluster. Each beat measures this node's wall clock against it (``NodeClock.observe``), which
gives two things:
- the skew, shown for every node (``GET /api/v1/cluster``, the nodes page), by which the master refuses
  a node whose clock is too far off and admits it again once it has been set right;
- ``store_time()``, this node's best reading of the store's clock, which signs and checks node-to-node
  calls, so that a master with a wrong clock is not refused by every node it calls.

For tests only: ``SHOAL_TEST_CLOCK_OFFSET_FILE`` names a file holding a number of seconds added to this
node's wall clock (read again whenever the file changes), so a test can set a node's clock wrong and
right again while it runs. It is read by ``NodeClock.from_environ`` alone, and a node that uses it says
so in its log at start.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger("shoal.clock")

#: The test switch (see the module docstring).
OFFSET_FILE_VAR = "SHOAL_TEST_CLOCK_OFFSET_FILE"
#: How far a node's clock may be from the store's before the master refuses it, either way, in seconds
#: (the same bound a signed node call's timestamp is held to).
MAX_SKEW_S = 30.0


class NodeClock:
    """This node's wall clock and its last measured skew from the store's. One event loop; cheap to call.

    Parameters:
        offset: seconds added to the system clock; only the test switch sets one.
    """

    def __init__(self, offset: Callable[[], float] | None = None) -> None:
        self._offset = offset
        self.skew: float | None = None  # wall clock minus the store's, in seconds; None until measured

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> NodeClock:
        path = environ.get(OFFSET_FILE_VAR)
        if not path:
            return cls()
        log.warning("this node's clock is offset by the seconds in %s (%s, a switch for tests)", path, OFFSET_FILE_VAR)
        return cls(_FileOffset(Path(path)))

    def __repr__(self) -> str:
        return f"NodeClock(skew={self.skew!r})"

    def wall(self) -> float:
        """This node's wall clock, Unix seconds, as wrong as the machine's is."""
        return time.time() + (self._offset() if self._offset is not None else 0.0)

    def observe(self, skew: float) -> None:
        """Take a new measure of ``wall() - store time``, in seconds."""
        self.skew = skew

    def store_time(self) -> float:
        """The store's clock as this node reads it now: its wall clock less the last measured skew."""
        return self.wall() - (self.skew or 0.0)


def skew_refusal(skew: float | None, limit_s: float = MAX_SKEW_S) -> str | None:
    """Why a node whose clock is ``skew`` seconds off the store's may not join, or None if it may."""
    if skew is None or abs(skew) <= limit_s:
        return None
    return (
        f"{CLOCK_REFUSAL} {skew:+.1f} s off the store's (limit ±{limit_s:g} s); "
        "it is verified again once its clock is set right"
    )


#: The start of every refusal for a clock (``skew_refusal``).
CLOCK_REFUSAL = "its clock is"


class _FileOffset:
    """The number in a file, read again when the file changes; 0 while it is missing or not a number."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._value = 0.0

    def __call__(self) -> float:
        try:
            st = os.stat(self.path)
        except OSError:
            return 0.0
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._seen:
            self._seen = stamp
            try:
                self._value = float(self.path.read_text().strip() or 0)
            except (OSError, ValueError):
                self._value = 0.0
        return self._value
