"""Live views of tasks: the progress display of ``--wait`` and ``shoal task watch``.

``watch`` follows the event stream to know *when* to look again, and re-reads the tasks themselves (events
are hints that may be lost), with a poll every ``POLL_S`` as the fallback if the stream drops.

``follow_events`` (``shoal task watch --follow``) prints the events themselves, one line each, as the
cluster's event stream records them: the client reconnects by itself after a lost connection and resumes
after the last event it printed, so none is missed or printed twice (``--since`` resumes an earlier run).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from shoal.cli import _output as o
from shoal.cli._api import async_client
from shoal.client import AsyncClient, Client, WaitTimeout
from shoal.client._sse import Gap, Lagged, StreamItem
from shoal.errors import ShoalError, TaskNotFound
from shoal.models import Task, TaskEvent

#: Seconds between re-reads when no event arrives.
POLL_S = 2.0
#: Seconds per long poll of ``--wait``, so the display shows each state on the way.
WAIT_STEP_S = 2.0


def wait_with_progress(c: Client, task_id: str, *, show: bool) -> Task:
    """Block until the task is terminal; with ``show``, a spinner on stderr tells its state and the time spent."""
    start = time.monotonic()
    if not show:
        while True:
            try:
                return c.wait(task_id, 60.0)
            except WaitTimeout:
                continue
    with o.err.status(f"waiting for task {task_id}", spinner="dots") as status:
        while True:
            try:
                return c.wait(task_id, WAIT_STEP_S)
            except WaitTimeout as exc:
                t = exc.task
                where = f" on {t.node}" if t.node else ""
                status.update(
                    f"task {t.id}: {t.state.name}{where}, attempt {max(t.attempts, 1)}, {time.monotonic() - start:.0f}s"
                )


def watch_tasks(ids: list[str], *, limit: int, as_json: bool) -> None:
    """Run the live view until every task in ``ids`` is terminal (or, without ids, until Ctrl-C)."""
    try:
        asyncio.run(_watch(ids, limit, as_json))
    except KeyboardInterrupt:
        if ids:
            raise


class _View:
    """What the watch shows, and which changes it has already reported."""

    def __init__(self, ids: list[str], limit: int) -> None:
        self.ids = ids
        self.limit = limit
        self.tasks: dict[str, Task] = {}
        self.gone: set[str] = set()
        self._seen: dict[str, tuple[Any, ...]] = {}
        self._reported_gone: set[str] = set()

    async def refresh(self, c: AsyncClient, first: bool = False) -> None:
        if not self.ids:
            page = await c.list(None, self.limit)
            self.tasks = {t.id: t for t in page.tasks}
            return
        wanted = [i for i in self.ids if i not in self.gone]
        found = await asyncio.gather(*(c.get(i) for i in wanted), return_exceptions=True)
        for task_id, got in zip(wanted, found, strict=True):
            if isinstance(got, Task):
                self.tasks[task_id] = got
            elif isinstance(got, TaskNotFound) and not first:
                self.gone.add(task_id)
            elif isinstance(got, BaseException):
                raise got

    def done(self) -> bool:
        return bool(self.ids) and all(i in self.gone or self.tasks[i].state.terminal for i in self.ids)

    def changes(self) -> list[dict[str, Any]]:
        """Tasks whose state, node or attempts changed since the last call, as JSON lines."""
        lines = []
        for t in self.tasks.values():
            key = (t.state, t.node, t.attempts)
            if self._seen.get(t.id) != key:
                self._seen[t.id] = key
                lines.append(
                    {"id": t.id, "name": t.name, "state": t.state.name, "node": t.node, "attempts": t.attempts,
                     "error": t.error, "at": time.time()}
                )  # fmt: skip
        for task_id in sorted(self.gone - self._reported_gone):
            lines.append({"id": task_id, "state": None, "deleted": True, "at": time.time()})
        self._reported_gone |= self.gone
        return lines

    def render(self) -> RenderableType:
        tasks = [self.tasks[i] for i in self.ids if i in self.tasks] if self.ids else list(self.tasks.values())
        ended = sum(1 for t in tasks if t.state.terminal)
        what = f"{len(tasks)} task(s)" if self.ids else f"the newest {len(tasks)} task(s)"
        header = Text(f"watching {what}: {ended} ended, {len(tasks) - ended} not yet; Ctrl-C to stop", style="dim")
        parts: list[RenderableType] = [header, o.tasks_table(tasks)]
        if self.gone:
            parts.append(Text(f"deleted while watched: {', '.join(sorted(self.gone))}", style="yellow"))
        return Group(*parts)


async def _listen(c: AsyncClient, ids: list[str], wake: asyncio.Event) -> None:
    """Set ``wake`` on every relevant event; give up quietly if the stream fails (polling goes on)."""
    with contextlib.suppress(ShoalError):
        async for item in c.events():
            if not isinstance(item, TaskEvent) or not ids or item.id in ids:
                wake.set()


async def _watch(ids: list[str], limit: int, as_json: bool) -> None:
    async with async_client() as c:
        view = _View(ids, limit)
        await view.refresh(c, first=True)
        wake = asyncio.Event()
        listener = asyncio.create_task(_listen(c, ids, wake))
        live = None if as_json else Live(view.render(), console=o.out, auto_refresh=False, transient=False)
        try:
            with live or contextlib.nullcontext():
                while True:
                    if as_json:
                        for line in view.changes():
                            o.print_json_line(line)
                    elif live is not None:
                        live.update(view.render(), refresh=True)
                    if view.done():
                        return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), POLL_S)
                    wake.clear()
                    await view.refresh(c)
        finally:
            if live is not None and not o.out.is_terminal:
                o.out.print()  # a non-interactive Live prints its last frame without the final newline
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener


def follow_events(ids: list[str], *, types: list[str], states: list[str], since: str | None, as_json: bool) -> None:
    """Print task events as they come until Ctrl-C (with ``ids``: only theirs, until they have all ended)."""
    try:
        asyncio.run(_follow(ids, types, states, since, as_json))
    except KeyboardInterrupt:
        if ids:
            raise


def _print_event(item: StreamItem, as_json: bool) -> None:
    if isinstance(item, TaskEvent):
        if as_json:
            o.print_json_line(item.to_json())
            return
        at = time.strftime("%H:%M:%S", time.localtime(item.at))
        where = f" on {item.node}" if item.node else ""
        kind = f" ({item.type})" if item.type else ""
        style = o.STATE_STYLES.get(item.state, "")
        line = Text(f"{at} {item.id}{kind} ")
        line.append(item.state.name, style=style)
        line.append(f"{where}  [{item.event_id or ''}]", style="dim")
        o.out.print(line)
    elif isinstance(item, Gap):
        if as_json:
            o.print_json_line({"kind": "gap", "since": item.since, "oldest": item.oldest})
        o.err.print(f"[yellow]events after {item.since} are no longer kept; going on from {item.oldest}[/yellow]")
    elif isinstance(item, Lagged):
        if as_json:
            o.print_json_line({"kind": "lagged", "dropped": item.dropped})
        o.err.print(f"[yellow]{item.dropped} event(s) dropped: this terminal read too slowly[/yellow]")


async def _ended(c: AsyncClient, ids: set[str]) -> set[str]:
    """Those of ``ids`` that have ended or are gone."""
    found = await asyncio.gather(*(c.get(i) for i in ids), return_exceptions=True)
    ended = set()
    for task_id, got in zip(ids, found, strict=True):
        if isinstance(got, TaskNotFound) or (isinstance(got, Task) and got.state.terminal):
            ended.add(task_id)
        elif isinstance(got, BaseException):
            raise got
    return ended


async def _follow(ids: list[str], types: list[str], states: list[str], since: str | None, as_json: bool) -> None:
    left = set(ids)
    async with async_client() as c:
        items: asyncio.Queue[StreamItem] = asyncio.Queue()

        async def read() -> None:
            async for item in c.events(types=types or None, states=states or None, since=since):
                await items.put(item)

        reader = asyncio.create_task(read())
        try:
            # A task that ended before the stream was open sends no event: ask, at once unless the stream
            # replays the past first (--since), else whenever the stream is quiet.
            quiet = first = since is None
            while True:
                if left and quiet:
                    gone = await _ended(c, left)
                    if first and gone:
                        o.err.print(f"ended before the watch began: {', '.join(sorted(gone))}", style="dim")
                    left -= gone
                    first = False
                    if not left:
                        return
                try:
                    item = await asyncio.wait_for(items.get(), POLL_S)
                    quiet = False
                except TimeoutError:
                    if reader.done():
                        reader.result()  # the stream gave up: raise its error
                        return
                    quiet = True
                    continue
                if isinstance(item, TaskEvent) and ids and item.id not in ids:
                    continue
                _print_event(item, as_json)
                if isinstance(item, TaskEvent) and item.state.terminal:
                    left.discard(item.id)
                    if ids and not left:
                        return
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ShoalError):
                await reader
