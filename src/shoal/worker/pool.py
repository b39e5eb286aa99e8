"""A supervised pool of worker processes, each running one task attempt at a time.

A sync handler in a thread of the node cannot be stopped, and a crash in it (``os._exit``, a segfault,
the OOM killer) takes the node down. In a worker process, a kill stops the work (SIGTERM, then SIGKILL
after ``kill_grace``), a crash is one attempt's result, and memory and CPU are limited and measured per
attempt. Workers start on demand, stay warm for the next attempt, and are replaced after
``max_tasks_per_child`` attempts, a limit passed, a kill or a crash.

The node talks to each worker over a socket with length-prefixed pickles (``shoal.worker.child``),
read by the event loop as it becomes readable: no thread per worker, no polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import io
import os
import pickle
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from shoal.models import Footprint
from shoal.worker.child import MB, Frames, frame
from shoal.worker.forkserver import Exit, ForkServer, Launcher, Spawner
from shoal.worker.handlers import Output, TaskContext

Kind = Literal["returned", "raised", "crashed", "over limit", "timed out"]
#: What a worker's last lines say when an allocation failed under its memory limit.
OUT_OF_MEMORY = re.compile(r"MemoryError|out of memory|cannot allocate memory|bad_alloc", re.IGNORECASE)
TAIL_LINES = 20
TAIL_BYTES = 2048
_READ_SIZE = 1 << 18
_TIMED_OUT = object()


class PoolClosed(RuntimeError):
    """The pool was closed before, or while, the attempt ran."""


@dataclass(frozen=True, slots=True)
class ChildResult:
    """How one attempt in a worker ended.

    ``returned``: ``value`` is the handler's result. ``raised``: ``error`` is "TypeName: message".
    ``crashed``: the worker died (``footprint.exit_code`` or ``footprint.signal``); ``error`` says how and
    ends with the last lines of its output. ``over limit``: ``error`` starts with the limit passed,
    ``memory_mb`` or ``cpu_s_limit``. ``timed out``: stopped after ``timeout`` seconds. A cancelled
    ``run()`` raises CancelledError instead, once the worker is gone."""

    kind: Kind
    value: Output | None
    error: str
    footprint: Footprint
    pid: int


class _Worker:
    """The node's end of one worker process."""

    __slots__ = (
        "loop",
        "pid",
        "sock",
        "fd",
        "log",
        "ended",
        "frames",
        "reply",
        "attempts",
        "cpu_base",
        "rss_base",
        "busy",
        "retiring",
        "_unsent",
    )

    def __init__(self, pid: int, sock: socket.socket, log: Path, ended: asyncio.Future[Exit]) -> None:
        self.loop = asyncio.get_running_loop()
        self.pid = pid
        self.sock = sock
        self.fd = sock.fileno()
        self.log = log
        self.ended = ended
        self.frames = Frames()
        self.reply: asyncio.Future[Any] | None = None
        self.attempts = 0
        self.cpu_base = 0.0  # its CPU seconds when its current attempt began: a crash's rusage minus this
        self.rss_base = 0  # its RSS when idle and new: what it grows past this counts against memory_mb
        self.busy = False
        self.retiring = False
        self._unsent = bytearray()
        sock.setblocking(False)
        self.loop.add_reader(self.fd, self.readable)

    def send(self, data: bytes) -> bool:
        """Queue ``data`` for the worker without blocking; False when its socket is closed."""
        if self._unsent:
            self._unsent += data
            return True
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return False
        if sent < len(data):
            self._unsent += data[sent:]
            self.loop.add_writer(self.fd, self._writable)
        return True

    def _writable(self) -> None:
        try:
            sent = self.sock.send(self._unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the worker is gone; its end is on the way
            sent = len(self._unsent)
        del self._unsent[:sent]
        if not self._unsent:
            self.loop.remove_writer(self.fd)

    def readable(self) -> None:
        try:
            data = self.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            self.feed(data)
        else:
            self.hang_up()

    def feed(self, data: bytes) -> None:
        for payload in self.frames.feed(data):
            try:
                message = _PlainData(io.BytesIO(payload)).load()
            except Exception as exc:  # a worker's mistake is its attempt's, never the node's
                error = f"the worker's reply cannot be read: {type(exc).__name__}: {exc}"
                message = ("raised", "", b"", error, None, None, None, self.cpu_base, 0, None)
            if message[0] == "ready":
                _, self.cpu_base, self.rss_base = message
            elif self.reply is not None and not self.reply.done():
                self.reply.set_result(message)

    def drain(self) -> None:
        """Read what the worker wrote before it ended: its "ready", or a reply that crossed its end."""
        while self.sock.fileno() >= 0:
            try:
                data = self.sock.recv(_READ_SIZE)
            except OSError:
                return
            if not data:
                return
            self.feed(data)

    def hang_up(self) -> None:
        """Close the node's end; an idle worker takes that as its notice and exits."""
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.fd)
            if self._unsent:
                self.loop.remove_writer(self.fd)
                self._unsent.clear()
            self.sock.close()

    def kill(self, signum: int) -> None:
        """Signal the worker and whatever processes its task started (its process group)."""
        if self.ended.done():
            return
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:  # so new that it has no group of its own yet
            with contextlib.suppress(OSError):
                os.kill(self.pid, signum)
        except OSError:
            pass


class ProcessPool:
    """Up to ``max_children`` worker processes, each running one attempt at a time (see the module).

    ``memory_mb`` and ``cpu_s_limit`` are the defaults for attempts that give none. ``workdir`` holds the
    workers' logs (a temporary directory, removed by ``close``, when None). ``start_method``:
    "forkserver" forks workers from a clean preloaded process; "spawn" starts each as a new interpreter.
    """

    def __init__(
        self,
        max_children: int,
        *,
        max_tasks_per_child: int = 1000,
        kill_grace: float = 2.0,
        memory_mb: int | None = None,
        cpu_s_limit: float | None = None,
        start_method: str = "forkserver",
        workdir: Path | None = None,
    ) -> None:
        if max_children < 1 or max_tasks_per_child < 1:
            raise ValueError("max_children and max_tasks_per_child must be at least 1")
        launchers: dict[str, Callable[[], Launcher]] = {"forkserver": ForkServer, "spawn": Spawner}
        if start_method not in launchers:
            raise ValueError(f"start_method must be one of {', '.join(launchers)}, not {start_method!r}")
        self.max_children = max_children
        self.max_tasks_per_child = max_tasks_per_child
        self.kill_grace = kill_grace
        self.memory_mb = memory_mb
        self.cpu_s_limit = cpu_s_limit
        self.workdir = workdir
        self._own_workdir = workdir is None
        self._launcher = launchers[start_method]()
        self._slots = asyncio.Semaphore(max_children)
        self._workers: set[_Worker] = set()
        self._idle: list[_Worker] = []
        self._starting: set[asyncio.Task[_Worker]] = set()
        self._logs = 0  # log files made so far; a gone worker's is taken by the next (see _forget)
        self._free_logs: list[Path] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"<ProcessPool workers={len(self._workers)} idle={len(self._idle)} max={self.max_children}>"

    @property
    def size(self) -> int:
        """Worker processes alive now, busy or idle."""
        return len(self._workers)

    async def run(
        self,
        fn: Callable[..., Any],
        ctx: TaskContext,
        *,
        memory_mb: int | None = None,
        cpu_s_limit: float | None = None,
        timeout: float | None = None,
    ) -> ChildResult:
        """Run ``fn(ctx)`` in a worker (``ctx.cancelled`` is the worker's own); wait for a free one first.

        ``fn`` goes by reference (module and qualified name), so it must be a module-level function the
        worker can import. Returns once the attempt has ended and its worker is idle again or gone;
        cancelled, it stops the worker and raises CancelledError only once the worker is gone.
        """
        if self._closed:
            raise PoolClosed("the worker pool is closed")
        memory_mb = self.memory_mb if memory_mb is None else memory_mb
        cpu_s_limit = self.cpu_s_limit if cpu_s_limit is None else cpu_s_limit
        fields = {f.name: getattr(ctx, f.name) for f in dataclasses.fields(ctx) if f.name != "cancelled"}
        job = frame(pickle.dumps((*_reference(fn), fields, memory_mb, cpu_s_limit), pickle.HIGHEST_PROTOCOL))
        async with self._slots:
            worker = await self._take(job)
            return await self._attempt(worker, memory_mb, cpu_s_limit, timeout)

    async def _take(self, job: bytes) -> _Worker:
        """An idle worker (the most recently used, the warmest), or a new one, given ``job``."""
        while True:
            worker = self._idle.pop() if self._idle else await self._start()
            worker.reply = worker.loop.create_future()
            if worker.send(job):
                worker.busy = True
                worker.attempts += 1
                return worker
            worker.reply = None  # it died while idle; its end removes it

    async def _attempt(
        self, worker: _Worker, memory_mb: int | None, cpu_s_limit: float | None, timeout: float | None
    ) -> ChildResult:
        reply = worker.reply
        assert reply is not None
        started = time.perf_counter()
        timer = None if timeout is None else worker.loop.call_later(timeout, _expire, reply)
        try:
            outcome = await reply
        except asyncio.CancelledError:
            await self._halt(worker)
            self._release(worker)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if outcome is _TIMED_OUT:
            interrupted = await self._halt(worker)
            footprint = _footprint(worker, worker.ended.result(), started)
            self._release(worker)
            if interrupted:
                raise asyncio.CancelledError
            return ChildResult("timed out", None, f"timed out after {timeout:g}s", footprint, worker.pid)
        if isinstance(outcome, Exit):
            try:
                if self._closed:
                    raise PoolClosed("the worker pool was closed during the attempt")
                return _ended(worker, outcome, started, memory_mb, cpu_s_limit)
            finally:
                self._release(worker)
        kind, code, meta, error, wall_s, cpu_s, max_rss, worker.cpu_base, rss, value = outcome
        worker.retiring = (
            kind == "over limit"
            or worker.attempts >= self.max_tasks_per_child
            or (memory_mb is not None and rss - worker.rss_base > memory_mb * MB)
        )
        self._release(worker)
        output = None
        if kind == "returned":
            output = Output(code, orjson.loads(meta) if meta else {})
            if value is not None:  # a function task's return value, as JSON; its code is its text
                loaded = orjson.loads(value)
                text = loaded if isinstance(loaded, str) else bytes(value).decode()
                output = Output(text, output.meta, loaded, True)
        return ChildResult(kind, output, error, Footprint(wall_s, cpu_s, max_rss), worker.pid)

    async def _halt(self, worker: _Worker) -> bool:
        """SIGTERM the worker, SIGKILL it after ``kill_grace``, and return once it is gone.

        A cancellation meanwhile (a kill order is repeated until obeyed) does not cut this short: the
        slot must not be freed while the work goes on. Returns whether there was one."""
        interrupted = False
        worker.kill(signal.SIGTERM)
        deadline = worker.loop.time() + self.kill_grace
        while not worker.ended.done():
            left = deadline - worker.loop.time()
            if left <= 0:
                worker.kill(signal.SIGKILL)
            try:
                await asyncio.wait([worker.ended], timeout=left if left > 0 else None)
            except asyncio.CancelledError:
                interrupted = True
        return interrupted

    def _release(self, worker: _Worker) -> None:
        """Back to idle after an attempt, or on the way out."""
        worker.busy = False
        worker.reply = None
        if worker.ended.done():
            self._forget(worker)
        elif worker.retiring or self._closed:
            worker.hang_up()
        else:
            self._idle.append(worker)

    async def _start(self) -> _Worker:
        starting = asyncio.ensure_future(self._new_worker())
        self._starting.add(starting)
        starting.add_done_callback(self._starting.discard)
        try:
            return await asyncio.shield(starting)
        except asyncio.CancelledError:
            starting.add_done_callback(self._adopt)  # kept for the next attempt
            raise

    def _adopt(self, starting: asyncio.Task[_Worker]) -> None:
        if starting.cancelled() or starting.exception() is not None:
            return
        self._release(starting.result())

    async def _new_worker(self) -> _Worker:
        if self._closed:
            raise PoolClosed("the worker pool is closed")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="shoal-workers-"))
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)  # workers' output may hold task data
        if self._free_logs:
            log = self._free_logs.pop()
        else:
            self._logs += 1
            log = self.workdir / f"worker-{self._logs}.log"
        ours, theirs = socket.socketpair()
        try:
            with theirs:
                pid, ended = await self._launcher.start(theirs, log)
        except BaseException:
            ours.close()
            raise
        worker = _Worker(pid, ours, log, ended)
        self._workers.add(worker)
        worker.send(frame(pickle.dumps(sys.path)))  # so that the node's task modules import in the worker
        ended.add_done_callback(functools.partial(self._on_end, worker))
        return worker

    def _on_end(self, worker: _Worker, ended: asyncio.Future[Exit]) -> None:
        worker.drain()
        worker.hang_up()
        if worker.reply is not None and not worker.reply.done():
            worker.reply.set_result(ended.result())
        if worker in self._idle:
            self._idle.remove(worker)
        if not worker.busy:
            self._forget(worker)

    def _forget(self, worker: _Worker) -> None:
        """The worker is gone: so go the processes its tasks left behind. Its log's name goes to the next
        worker, so that a long-lived node, or one killed and restarted on the same workdir, keeps about
        ``max_children`` of them."""
        if worker in self._workers:
            self._workers.discard(worker)
            with contextlib.suppress(OSError):
                os.killpg(worker.pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                worker.log.unlink()
            self._free_logs.append(worker.log)

    async def close(self) -> None:
        """Stop every worker (an attempt still running ends in PoolClosed) and return once all are gone."""
        self._closed = True
        if self._starting:
            await asyncio.wait(list(self._starting))
        workers = list(self._workers)
        for worker in workers:
            if worker.busy:
                worker.kill(signal.SIGTERM)
            else:
                worker.hang_up()
        ends = [w.ended for w in workers]
        if ends:
            await asyncio.wait(ends, timeout=self.kill_grace)
            for worker in workers:
                worker.kill(signal.SIGKILL)
            await asyncio.wait(ends)
        await self._launcher.close()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


class _PlainData(pickle.Unpickler):
    """Reads a worker's messages, which hold plain data only: nothing a worker sends runs code in the node."""

    def find_class(self, module: str, name: str, /) -> Any:
        raise pickle.UnpicklingError(f"a worker sends plain data only, not {module}.{name}")


def _reference(fn: Callable[..., Any]) -> tuple[str, str]:
    """How a worker finds ``fn``: its module and qualified name."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname or module == "__main__":
        raise ValueError(
            f"{fn!r} cannot run in a worker process: it must be a function defined at the top level of an "
            "importable module, since workers import it by name"
        )
    return module, qualname


def _expire(reply: asyncio.Future[Any]) -> None:
    if not reply.done():
        reply.set_result(_TIMED_OUT)


def _footprint(worker: _Worker, ended: Exit, started: float) -> Footprint:
    """What an attempt cost when its worker did not live to say: from the rusage of its end."""
    cpu_s = None if ended.cpu_s is None else max(0.0, ended.cpu_s - worker.cpu_base)
    return Footprint(time.perf_counter() - started, cpu_s, ended.max_rss_bytes, ended.exit_code, ended.signal)


def _ended(
    worker: _Worker, ended: Exit, started: float, memory_mb: int | None, cpu_s_limit: float | None
) -> ChildResult:
    """The result of an attempt whose worker died under it: a crash, or a limit the kernel enforced."""
    tail = _tail(worker.log)
    if cpu_s_limit is not None and ended.signal in ("SIGXCPU", "SIGPROF"):
        kind: Kind = "over limit"
        error = f"cpu_s_limit: the attempt used more than its {cpu_s_limit:g}s of CPU"
    elif memory_mb is not None and OUT_OF_MEMORY.search(tail):
        kind, error = "over limit", f"memory_mb: the attempt went past its {memory_mb} MiB"
    else:
        kind = "crashed"
        if ended.signal:
            error = f"the worker process was killed by {ended.signal}"
        elif ended.exit_code is not None:
            error = f"the worker process exited with code {ended.exit_code}"
        else:
            error = "the worker process was lost with its fork server"
    if tail:
        error = f"{error}; the end of its output:\n{tail}"
    return ChildResult(kind, None, error, _footprint(worker, ended, started), worker.pid)


def _tail(path: Path) -> str:
    """The last lines a worker wrote (its log holds the current attempt's output only)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - TAIL_BYTES))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-TAIL_LINES:]).strip()
