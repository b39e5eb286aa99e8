"""One node run under a service manager: what it is told, and when.

- ``READY=1`` once the node is ready to take work: ``start()`` has returned and the readiness that
  ``/readyz`` reports holds (store reachable, a master known). Before that, ``STATUS=`` says what it waits for.
- ``STATUS=`` a one-line summary ("master, epoch 4, 3 nodes, 2/8 slots busy"), sent when it changes.
- ``WATCHDOG=1`` while the node makes progress (``watchdog``), if the manager asked for a watchdog.
- ``STOPPING=1`` as shutdown begins, with ``EXTEND_TIMEOUT_USEC`` covering the grace period, so that a
  manager whose stop timeout is shorter than the node's grace does not kill it in the middle of handing back.

Only ``run_node`` calls this; with no ``$NOTIFY_SOCKET`` there is nothing to do (``from_environ`` gives None).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from shoal._utils import cancel_and_wait
from shoal.store.inbox import NodeInbox
from shoal.store.redis import BLOCK_MS, SOCKET_TIMEOUT
from shoal.systemd.notify import WATCHDOG_PID, WATCHDOG_USEC, Notifier, watchdog_seconds
from shoal.systemd.watchdog import Loop, Watchdog

if TYPE_CHECKING:
    from shoal.node import Node

log = logging.getLogger("shoal.systemd.supervision")

#: Seconds between two looks at the node's summary (sent only when it changed) and readiness checks.
STATUS_EVERY_S = 2.0
READY_POLL_S = 0.1
#: Seconds added to the grace period in EXTEND_TIMEOUT_USEC: closing the servers and the store after it.
STOP_MARGIN_S = 15.0
#: How long a worker or scheduler may go without advancing while work waits: one blocking read, one store
#: call that times out, and a margin. The heartbeat may go longer: it makes two calls per beat.
WORK_LIMIT_S = BLOCK_MS / 1000 + SOCKET_TIMEOUT + 3.0
HEARTBEAT_LIMIT_S = 2 * SOCKET_TIMEOUT + 3.0


class Supervision:
    """Tells the service manager about one node run. Called from ``run_node`` on the event loop."""

    def __init__(self, notifier: Notifier, watchdog_s: float | None) -> None:
        self.notifier = notifier
        self.watchdog_s = watchdog_s
        self.watchdog: Watchdog | None = None
        self.ready = False
        self._status = ""
        self._tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        return f"<Supervision {self.notifier!r} ready={self.ready} watchdog={self.watchdog!r}>"

    @classmethod
    def from_environ(cls) -> Supervision | None:
        """Read (and remove) the manager's variables; None when the node runs on its own."""
        notifier = Notifier.from_environ()
        watchdog_s = watchdog_seconds(os.environ)
        for name in (WATCHDOG_USEC, WATCHDOG_PID):
            os.environ.pop(name, None)
        if notifier is None:
            return None
        return cls(notifier, watchdog_s)

    def status(self, text: str) -> None:
        if text != self._status:
            self._status = text
            self.notifier.send(f"STATUS={text}")

    def attach(self, node: Node) -> None:
        """The node has started: report readiness and status from now on, and start the watchdog."""
        self._tasks.append(asyncio.create_task(self._report(node), name="notify status"))
        if self.watchdog_s is not None:
            self.watchdog = Watchdog(self.notifier, self.watchdog_s, loops(node, self.watchdog_s))
            self._tasks.append(asyncio.create_task(self.watchdog.run(), name="watchdog"))
            log.info("systemd watchdog: WATCHDOG=1 every %gs while the node makes progress", self.watchdog_s / 2)

    async def _report(self, node: Node) -> None:
        while True:
            try:
                ok, why = await node.cluster.ready()
            except Exception as exc:  # readiness answers for the store itself; anything else is a bug to see
                log.warning("readiness check failed: %s", exc)
                ok, why = False, f"readiness check failed: {exc}"
            if ok:
                break
            self.status(f"not ready: {why}")
            await asyncio.sleep(READY_POLL_S)
        summary = await _summary(node)
        self._status = summary
        self.notifier.send("READY=1", f"STATUS={summary}")
        self.ready = True
        log.info("told the service manager: ready (%s)", summary)
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            self.status(await _summary(node))

    async def stopping(self, node: Node | None, grace: float) -> None:
        """Shutdown begins: say so at once, then keep the status current while tasks drain."""
        for task in self._tasks:
            if task.get_name() == "notify status":
                await cancel_and_wait(task)
        if self.watchdog is not None:
            self.watchdog.stopping = True
        extend_usec = int((grace + STOP_MARGIN_S) * 1_000_000)
        self._status = f"stopping: up to {grace:g}s for running tasks to finish"
        self.notifier.send("STOPPING=1", f"STATUS={self._status}", f"EXTEND_TIMEOUT_USEC={extend_usec}")
        if node is not None and hasattr(node, "executor"):
            self._tasks.append(asyncio.create_task(self._drain_status(node), name="notify drain"))

    async def _drain_status(self, node: Node) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        while True:
            await asyncio.sleep(1.0)
            running = len(node.executor.running)
            if running:
                self.status(f"stopping: {running} task(s) still running, {loop.time() - began:.0f}s into the grace")
            else:
                self.status("stopping: no task running; leaving the cluster")

    async def close(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)
        if self.watchdog is not None:
            self.watchdog.close()
        self.notifier.close()


def loops(node: Node, period: float) -> list[Loop]:
    """The node's loops the watchdog holds to progress."""
    inbox = NodeInbox.of(node.store, node.config.name)

    async def inbox_waiting() -> int:
        return await inbox.length()

    async def pending_waiting() -> int:
        scheduler = node.leader.scheduler
        backlog = scheduler.backlog_size if scheduler is not None else 0
        return backlog or await node.store.pending_count()

    def scheduler_last() -> float | None:
        scheduler = node.leader.scheduler
        return scheduler.last_tick if scheduler is not None else None

    watched = [Loop("heartbeat", lambda: node.heartbeat.last_tick, max(period, HEARTBEAT_LIMIT_S))]
    if node.config.run_tasks:
        watched.append(Loop("worker", lambda: node.executor.last_progress, max(period, WORK_LIMIT_S), inbox_waiting))
    watched.append(Loop("scheduler", scheduler_last, max(period, WORK_LIMIT_S), pending_waiting))
    return watched


async def _summary(node: Node) -> str:
    """One line for ``systemctl status``: role, epoch, live nodes, busy slots."""
    c = node.config
    try:
        view = await node.cluster.view()
    except Exception as exc:  # the store is down or slow: say so, the next look may do better
        return f"store unreachable: {exc}"[:200]
    live = sum(1 for n in view.nodes if n.state == "alive")
    nodes = f"{live} node{'s' if live != 1 else ''}"
    if node.election.is_master:
        role = f"master, epoch {view.epoch}"
    elif view.master is None:
        role = "no master yet"
    else:
        role = f"worker of {view.master} (epoch {view.epoch})"
    work = f"{node.executor.busy}/{c.slots} slots busy" if c.run_tasks else "runs no tasks"
    return f"{role}, {nodes}, {work}"
