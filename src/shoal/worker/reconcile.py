"""Reconciliation: what the store says is placed on this node against what its worker really runs.

A task placed on a node is recorded twice: in the store (INQUEUE or RUNNING with ``node`` = the node, its
id in ``assigned:{node}``) and as a run order in the node's inbox stream, which the worker turns into a
running coroutine. When the order or a later state change is lost while the node lives (a Redis failover
with asynchronous replication drops the last writes), the task would stay INQUEUE or RUNNING for ever:
only a restart of the node or its death hands such tasks back. So every few heartbeats the worker compares
the two records. A task placed here that is neither running nor waiting in the inbox is handed back to
WAITING (requeue.lua, as on a restart: attempt closed, fenced by the task's node and state), and the master
places it again. A task running here that the store no longer places here (killed, re-placed elsewhere,
handed back) is stopped without a report, like a kill: its report could only be a late duplicate.

Race-free with the normal flow: place.lua writes the assigned set and the run order in one step, and the
worker adds an order's task to its running set before it acknowledges the order. The inbox (unread and
pending entries) and the task records are read in one MULTI and the running set after it, so a task placed
here is then either running, or ordered in the inbox, or lost. On top of that a task is acted on only when
two checks in a row find it so, in the same state and attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from shoal.errors import StoreUnavailable
from shoal.models import AttemptOutcome
from shoal.store.inbox import NodeInbox, Order, Record
from shoal.store.tasks import TaskStore

log = logging.getLogger("shoal.worker.reconcile")

#: Heartbeat intervals between two checks.
RECONCILE_BEATS = 5
#: Inbox entries looked at per check; a longer inbox (a worker far behind) postpones hand-backs.
INBOX_SCAN = 1000
PLACED = ("INQUEUE", "RUNNING")
#: What the task's history says about an attempt handed back while RUNNING.
RUNNING_LOST = "no longer running on {node}: its run order or its last report was lost"
INQUEUE_LOST = "its run order was lost"


class Worker(Protocol):
    """The part of the executor the reconciler sees."""

    @property
    def running(self) -> Mapping[str, Any]: ...

    def stop(self, task_id: str) -> None:
        """Cancel a running task without a report, as a kill order does."""

    def reread(self) -> None:
        """Read the inbox's unacknowledged orders again on the next read."""


class Reconciler:
    """Checks every ``interval`` seconds; ``check()`` is one comparison, ``run()`` the loop."""

    def __init__(self, *, store: TaskStore, node: str, worker: Worker, interval: float) -> None:
        self.store = store
        self.inbox = NodeInbox.of(store, node)
        self.node = node
        self.worker = worker
        self.interval = interval
        self._lost: dict[str, Record] = {}  # placed here, not running, not ordered: at the last check
        self._gone: dict[str, Record] = {}  # running here, not placed here: at the last check
        self.handed_back = 0
        self.stopped = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # two checks in a row means two that worked
                self._lost.clear()
                self._gone.clear()
                quiet = isinstance(exc, StoreUnavailable)
                log.log(logging.DEBUG if quiet else logging.WARNING, "checking this node's tasks failed: %s", exc)

    async def check(self) -> None:
        """Compare once; act on what the previous check found the same way."""
        members = await self.inbox.assigned()
        running = set(self.worker.running)
        if members == running:  # the usual case: one SMEMBERS and done
            self._lost.clear()
            self._gone.clear()
            return
        ids = sorted((members - running) | (running - members))
        snapshot = await self.inbox.snapshot(ids, INBOX_SCAN)
        running = set(self.worker.running)  # after the snapshot: an order read before it is running by now
        records, complete = snapshot.records, snapshot.complete
        ordered = self._ordered(snapshot.orders, running=running)
        lost = {
            task_id: record
            for task_id, record in records.items()
            if task_id in members and task_id not in running and task_id not in ordered
        }
        gone = {
            task_id: record
            for task_id, record in records.items()
            if task_id in running and task_id not in members and not self._placed_here(record)
        }
        twice_lost = {i: r for i, r in lost.items() if self._lost.get(i) == r} if complete else {}
        twice_gone = {i: r for i, r in gone.items() if self._gone.get(i) == r and i in self.worker.running}
        # What is acted on now starts afresh: placed here again, it must be found lost twice again.
        self._lost = {i: r for i, r in lost.items() if i not in twice_lost} if complete else {}
        self._gone = {i: r for i, r in gone.items() if i not in twice_gone}
        await self._hand_back(twice_lost)
        self._stop(twice_gone)

    def _placed_here(self, record: Record) -> bool:
        return record[0] in PLACED and record[1] == self.node

    def _ordered(self, orders: list[Order], *, running: set[str]) -> set[str]:
        """Ids with a run order the worker will still read: one after the group's last delivered entry, or
        delivered but not acknowledged (the worker reads those again after a failed read or acknowledgement).
        """
        ordered: set[str] = set()
        for order in orders:
            if order.op != "run" or order.acked:
                continue  # a kill order, or one acknowledged already (its deletion failed)
            if order.unacked and order.task_id not in running:
                self.worker.reread()  # delivered but never seen here (a lost reply): read it again
            ordered.add(order.task_id)
        return ordered

    async def _hand_back(self, lost: dict[str, Record]) -> None:
        """Lost tasks go back to WAITING; ids of tasks no longer placed here leave the assigned set."""
        if not lost:
            return
        inqueue = [i for i, r in lost.items() if r[0] != "RUNNING"]
        running = [i for i, r in lost.items() if r[0] == "RUNNING"]
        for ids, reason in ((inqueue, INQUEUE_LOST), (running, RUNNING_LOST.format(node=self.node))):
            if not ids:
                continue
            # The store lost the order or the report (e.g. a Redis failover), not the task: never held against
            # it, so a store that loses writes cannot quarantine healthy tasks.
            back = await self.store.hand_back(self.node, ids, reason, outcome=AttemptOutcome.HANDED_BACK)
            handed = set(back)
            for task_id in ids:
                state = lost[task_id][0]
                if task_id in handed:
                    self.handed_back += 1
                    log.warning("task %s: handed back for re-placement: %s here, but %s", task_id, state, reason)
                elif not self._placed_here(lost[task_id]):
                    log.warning("task %s: dropped from this node's assigned set: it is %s", task_id, state or "gone")

    def _stop(self, gone: dict[str, Record]) -> None:
        for task_id, (state, node, _) in gone.items():
            where = (state or "deleted") + (f" on {node}" if node and node != self.node else "")
            log.warning("task %s: stopped here: the store no longer places it on this node (%s)", task_id, where)
            self.stopped += 1
            self.worker.stop(task_id)
