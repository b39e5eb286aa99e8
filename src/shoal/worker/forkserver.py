"""Starting worker processes, and learning how each one ended (wait status and rusage).

Workers must not inherit the node: its event loop, gRPC threads and Redis connections do not survive a
fork. So they come from a clean process. ``ForkServer`` (the default) spawns one fresh interpreter that
imports shoal once and forks a worker per request, which costs a few milliseconds instead of the
~150 ms of a new interpreter; ``Spawner`` starts each worker as a new interpreter.

multiprocessing's own forkserver is not used because it reaps its children and drops their rusage:
the CPU time and peak memory of a worker that crashed could not be told. This fork server reaps them
with ``os.wait4`` and reports status and rusage to the node; a spawned worker is reaped by the node
through a pidfd. Neither needs a thread or polling in the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import selectors
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shoal.worker import child

#: Where a spawned process finds its socket.
CHANNEL_FD = 3


@dataclass(frozen=True, slots=True)
class Exit:
    """How a process ended: its wait status and rusage, or None for what could not be learnt."""

    status: int | None = None
    cpu_s: float | None = None
    max_rss_bytes: int | None = None

    @property
    def exit_code(self) -> int | None:
        return None if self.status is None or not os.WIFEXITED(self.status) else os.WEXITSTATUS(self.status)

    @property
    def signal(self) -> str | None:
        if self.status is None or not os.WIFSIGNALED(self.status):
            return None
        number = os.WTERMSIG(self.status)
        try:
            return signal.Signals(number).name
        except ValueError:
            return f"signal {number}"

    @classmethod
    def of(cls, status: int, usage: Any) -> Exit:
        return cls(status, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024)


class Launcher(Protocol):
    async def start(self, channel: socket.socket, log_path: Path) -> tuple[int, asyncio.Future[Exit]]:
        """Start a worker on ``channel`` (the worker's end); its pid, and a future of how it ends."""
        ...

    async def close(self) -> None: ...


def spawn(code: str, *args: str, channel: int) -> int:
    """Start ``python -c code args`` with ``channel`` as fd 3, in a process group of its own.

    posix_spawn rather than subprocess: no Popen object to reap, and no preexec hook in a threaded node.
    ``-P``: a shoal clone in the working directory does not shadow the installed package."""
    actions: list[tuple[Any, ...]] = [(os.POSIX_SPAWN_DUP2, channel, CHANNEL_FD)]
    for name in os.listdir("/proc/self/fd"):  # the node's inheritable fds are none of the worker's business
        fd = int(name)
        if fd > CHANNEL_FD and fd != channel:
            with contextlib.suppress(OSError):
                if os.get_inheritable(fd):
                    actions.append((os.POSIX_SPAWN_CLOSE, fd))
    argv = [sys.executable, "-P", "-c", code, *args]
    return os.posix_spawn(sys.executable, argv, os.environ, file_actions=actions, setpgroup=0)


def watch(pid: int) -> asyncio.Future[Exit]:
    """A future of how the node's own child ``pid`` ends, read through a pidfd: no thread, no polling."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[Exit] = loop.create_future()
    pidfd = os.pidfd_open(pid)

    def readable() -> None:
        try:
            got, status, usage = os.wait4(pid, os.WNOHANG)
            result = Exit.of(status, usage)
        except ChildProcessError:  # reaped by someone else: how it ended is lost
            got, result = pid, Exit()
        if got:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            if not ended.done():
                ended.set_result(result)

    loop.add_reader(pidfd, readable)
    return ended


class Spawner:
    """Each worker a new interpreter: slower to start, shares nothing with any other process."""

    async def start(self, channel: socket.socket, log_path: Path) -> tuple[int, asyncio.Future[Exit]]:
        code = "import sys; from shoal.worker.child import main; main(3, sys.argv[1], int(sys.argv[2]))"
        pid = spawn(code, str(log_path), str(os.getpid()), channel=channel.fileno())
        return pid, watch(pid)

    async def close(self) -> None:
        pass


class ForkServer:
    """The node's side of the fork server: asks it for workers and hears how they ended.

    It talks over a SOCK_SEQPACKET socket, one pickle per message, the worker's socket passed along
    (SCM_RIGHTS). If the server dies, its workers die with it (PR_SET_PDEATHSIG) and the next start
    begins a new one."""

    def __init__(self, *, stop_grace: float = 5.0) -> None:
        self.stop_grace = stop_grace
        self._ctl: socket.socket | None = None
        self._pid = 0
        self._ended: asyncio.Future[Exit] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._forks: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[Exit]] = {}
        self._tokens = 0
        self._lock = asyncio.Lock()

    async def start(self, channel: socket.socket, log_path: Path) -> tuple[int, asyncio.Future[Exit]]:
        async with self._lock:
            if self._ctl is None:
                await self._boot()
        ctl = self._ctl
        if ctl is None:
            raise RuntimeError("the worker fork server exited")
        self._tokens += 1
        token = self._tokens
        forked = self._forks[token] = asyncio.get_running_loop().create_future()
        socket.send_fds(ctl, [pickle.dumps((token, str(log_path)))], [channel.fileno()])
        pid = await forked
        return pid, self._exits[pid]

    async def _boot(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            code = "import sys; from shoal.worker.forkserver import serve; serve(3, int(sys.argv[1]))"
            self._pid = spawn(code, str(os.getpid()), channel=theirs.fileno())
        ours.setblocking(False)
        self._ctl = ours
        self._ready = loop.create_future()
        self._ended = ended = watch(self._pid)
        ended.add_done_callback(lambda _: self._lost(ours))
        loop.add_reader(ours.fileno(), self._readable)
        first: list[asyncio.Future[Any]] = [self._ready, ended]
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if not self._ready.done():
            self._lost(ours)
            how = ended.result()
            raise RuntimeError(f"the worker fork server failed to start ({how.signal or how.exit_code})")

    def _readable(self) -> None:
        ctl = self._ctl
        if ctl is not None and self._drain(ctl):
            self._lost(ctl)

    def _drain(self, ctl: socket.socket) -> bool:
        """Handle every message waiting; True once the server has closed its end."""
        while True:
            try:
                data = ctl.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                return True
            if not data:
                return True
            message = pickle.loads(data)
            if message[0] == "exited":
                _, pid, status, cpu_s, max_rss = message
                ended = self._exits.pop(pid, None)
                if ended is not None and not ended.done():
                    ended.set_result(Exit(status, cpu_s, max_rss))
            elif message[0] == "forked":
                _, token, pid = message
                self._exits[pid] = asyncio.get_running_loop().create_future()
                forked = self._forks.pop(token)
                if not forked.done():
                    forked.set_result(pid)
            elif message[0] == "failed":
                _, token, error = message
                forked = self._forks.pop(token)
                if not forked.done():
                    forked.set_exception(OSError(f"cannot start a worker process: {error}"))
            elif self._ready is not None and not self._ready.done():
                self._ready.set_result(None)

    def _lost(self, ctl: socket.socket | None) -> None:
        """The server is gone: so are its workers (the kernel kills them), whose ends are unknown."""
        if ctl is None or ctl is not self._ctl:
            return  # an earlier server's end, already handled
        self._ctl = None
        asyncio.get_running_loop().remove_reader(ctl.fileno())
        self._drain(ctl)  # exits it reported before it went
        ctl.close()
        for forked in self._forks.values():
            if not forked.done():
                forked.set_exception(RuntimeError("the worker fork server exited"))
        for pid, ended in self._exits.items():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            if not ended.done():
                ended.set_result(Exit())
        self._forks.clear()
        self._exits.clear()

    async def close(self) -> None:
        """Stop the server: closing its socket tells it to kill what workers remain and exit."""
        ended = self._ended
        self._lost(self._ctl)
        if ended is not None and not ended.done():
            await asyncio.wait([ended], timeout=self.stop_grace)
            if not ended.done():
                with contextlib.suppress(OSError):
                    os.kill(self._pid, signal.SIGKILL)
                await ended


def serve(fd: int, parent: int) -> None:
    """The fork server's loop (in its own process): fork a worker per request, report every exit."""
    child.die_with(parent)
    for signum in (signal.SIGINT, signal.SIGTERM):  # the node stops its pool itself, after its grace
        signal.signal(signum, signal.SIG_IGN)
    ctl = socket.socket(fileno=fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd only hears signals that have a handler
    selector = selectors.DefaultSelector()
    selector.register(ctl, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    workers: set[int] = set()
    me = os.getpid()
    ctl.send(pickle.dumps(("ready",)))
    while True:
        for key, _ in selector.select():
            if key.fileobj == wake_r:
                os.read(wake_r, 4096)
                _reap(ctl, workers)
                continue
            data, fds, _, _ = socket.recv_fds(ctl, 1 << 16, 1)
            if not data:  # the node closed the pool, or died
                for pid in workers:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                return
            token, log_path = pickle.loads(data)
            sys.stdout.flush()
            sys.stderr.flush()
            try:
                pid = os.fork()
            except OSError as exc:  # out of processes or memory: this worker's start fails, not the server
                os.close(fds[0])
                ctl.send(pickle.dumps(("failed", token, str(exc))))
                continue
            if pid == 0:
                try:
                    selector.close()
                    ctl.close()
                    os.close(wake_r)
                    os.close(wake_w)
                    child.main(fds[0], log_path, me)
                finally:
                    os._exit(1)
            os.close(fds[0])
            workers.add(pid)
            ctl.send(pickle.dumps(("forked", token, pid)))


def _reap(ctl: socket.socket, workers: set[int]) -> None:
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return
        workers.discard(pid)
        ended = Exit.of(status, usage)
        with contextlib.suppress(OSError):  # the node is gone: its socket's end says so next
            ctl.send(pickle.dumps(("exited", pid, status, ended.cpu_s, ended.max_rss_bytes)))
