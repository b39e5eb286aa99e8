"""Tasks finished per second over the last minutes, counted from the task events one node hears.

Every node hears every task event (shoal.events), so each node can draw the same cluster-wide chart without
asking the others. The counts start when the node starts; the store stays the truth for task states.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shoal.models import TaskState

#: Seconds of history kept (ten minutes).
WINDOW_S = 600


class Throughput:
    """A ring of per-second counters of tasks that ended, by outcome. Not thread-safe: one event loop only."""

    def __init__(self, window_s: int = WINDOW_S, clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self._clock = clock
        self._succeeded = [0] * window_s
        self._failed = [0] * window_s
        self._last = int(clock())  # the second the newest bucket holds

    def _advance(self, now: int) -> None:
        """Empty the buckets of the seconds that passed since the last event or read."""
        if now <= self._last:
            return
        for second in range(self._last + 1, min(now, self._last + self.window_s) + 1):
            slot = second % self.window_s
            self._succeeded[slot] = 0
            self._failed[slot] = 0
        self._last = now

    def add(self, state: TaskState, at: float) -> None:
        """Count an event that ends a task at ``at`` (SUCCEED counts as done, RUNTIME_ERROR as failed)."""
        if state is not TaskState.SUCCEED and state is not TaskState.RUNTIME_ERROR:
            return
        now = int(self._clock())
        self._advance(now)
        second = int(at)
        if not now - self.window_s < second <= now:  # another node's clock or a late event: count it now
            second = now
        slot = second % self.window_s
        if state is TaskState.SUCCEED:
            self._succeeded[slot] += 1
        else:
            self._failed[slot] += 1

    def series(self, seconds: int) -> dict[str, Any]:
        """The last ``seconds`` whole seconds, oldest first, ending with the current (partial) second."""
        seconds = max(1, min(seconds, self.window_s))
        now = int(self._clock())
        self._advance(now)
        slots = [s % self.window_s for s in range(now - seconds + 1, now + 1)]
        return {
            "interval_s": 1,
            "end": now,
            "succeeded": [self._succeeded[s] for s in slots],
            "failed": [self._failed[s] for s in slots],
        }
