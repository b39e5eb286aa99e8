"""How many tasks a node takes beyond its slots: enough that a slot freed by a short task is filled at once,
from the node's own queue, without waiting for the master to place the next one; none while its tasks are
long, since a task queued behind long ones would wait while another node might be idle, and would pass
ahead of a task of higher priority submitted after it. One that has waited ``GIVE_BACK_S`` for a slot all
the same is handed back (the executor), and placed again where there is room.

The node estimates how long a slot stays taken (from the start of an attempt's report to the end of its
result's: what a queued task waits behind) as a running mean of the attempts it ran, or the longest attempt
running now if that is longer, and takes as many as keep that wait near ``HORIZON_S``: all of ``most`` for
tasks of a few milliseconds, a couple for tasks of a tenth of a second, none from half a second on (with 8
slots). It says so in each beat (``NodeRecord.prefetch``), and the master places up to slots + prefetch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: About how long, on average, a task taken beyond the slots may wait here for one.
HORIZON_S = 0.05
#: Weight of the newest attempt in the running mean of how long a slot stays taken.
WEIGHT = 0.05
#: The most a node takes beyond its slots unless told (``--prefetch``), per slot: a short task's slot frees
#: again before the master has seen its end and placed the next one (the end's event, a placement, the run
#: order: a few milliseconds), so with one per slot a third of the slots of a node running short tasks stood
#: empty while the next wave was on its way.
PER_SLOT = 4
#: A task taken beyond the slots that has waited this long for one is handed back for the master to place
#: again: the node's tasks turned long before its beat could say so.
GIVE_BACK_S = 1.0


class Prefetch:
    """The prefetch a node with ``slots`` slots advertises, at most ``most`` (0: never)."""

    def __init__(self, slots: int, most: int, on_change: Callable[[], None] = lambda: None) -> None:
        self.slots = slots
        self.most = most
        #: Called when the prefetch goes from none to some or back, so that the node says so at once.
        self.on_change = on_change
        self.mean_s: float | None = None  # None until an attempt has ended here
        self._held: dict[str, float] = {}  # task id -> monotonic time its slot was taken
        self._told = 0  # what ``current`` last answered

    @property
    def held(self) -> int:
        """Slots taken now."""
        return len(self._held)

    def taken(self, task_id: str) -> None:
        self._held[task_id] = time.monotonic()

    def freed(self, task_id: str, *, ended: bool = True) -> None:
        """The slot of ``task_id`` is free; ``ended``: its attempt ran to an end (a killed one says nothing of
        how long tasks take)."""
        since = self._held.pop(task_id, None)
        if since is not None and ended:
            held = time.monotonic() - since
            self.mean_s = held if self.mean_s is None else self.mean_s + WEIGHT * (held - self.mean_s)
        if (self._advise() > 0) != (self._told > 0):
            self.on_change()

    def current(self) -> int:
        """Tasks to take beyond the slots now: 0 before any attempt has ended (nothing known of the tasks)."""
        self._told = self._advise()
        return self._told

    def _advise(self) -> int:
        if not self.most or self.mean_s is None:
            return 0
        longest = time.monotonic() - min(self._held.values()) if self._held else 0.0
        slot_s = max(self.mean_s, longest)
        if slot_s <= 0:
            return self.most
        return min(self.most, int(self.slots * HORIZON_S / slot_s))
