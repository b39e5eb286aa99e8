"""Child processes of the benchmark: start them in their own session, reap them all on any exit.

Every process the benchmark starts is registered with one ``Reaper``. Each child leads its own process
group, so a terminal's Ctrl-C reaches only the benchmark, which then stops its children itself, in
reverse order of start: SIGTERM to the whole group, a grace period, then SIGKILL. ``main`` calls
``REAPER.reap()`` in a ``finally``; it also runs at exit and on SIGINT/SIGTERM/SIGHUP, so a crash, Ctrl-C
or a kill of the benchmark leaves nothing running. A second signal while stopping SIGKILLs what is left.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held open together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port_block(count: int, low: int = 20000, high: int = 32000) -> int:
    """The first of ``count`` consecutive loopback ports that are all free right now.

    ``shoal up`` puts node i on each first port + i. Searched below the kernel's usual ephemeral range
    (32768 and up), where outgoing connections would otherwise take ports from under the block.
    """
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(low, high - count)
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports between {low} and {high}")


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    interval: float = 0.05,
) -> None:
    """Poll ``predicate`` until it holds; fail early if ``proc`` exits, and after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with code {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(interval)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Reaper:
    """Owns every child the benchmark started; ``reap()`` stops them all (safe to call more than once)."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[bytes], float]] = []
        self._installed = False
        self._stopping = False
        self._finally: list[Callable[[], None]] = []

    def at_exit(self, action: Callable[[], None]) -> None:
        """Run ``action`` after the children are stopped, also when a signal forces a hard exit."""
        self._finally.append(action)

    def run_exit_actions(self) -> None:
        while self._finally:
            with contextlib.suppress(Exception):
                self._finally.pop()()

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        grace: float = 15.0,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` as the leader of a new session, output to ``log``, and register it. Refused once a
        signal is stopping the benchmark: the unwinding may pass through code that would start more."""
        self.install()
        if self._stopping:
            raise RuntimeError(f"not starting {name}: the benchmark is stopping")
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        self._procs.append((name, proc, grace))
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop one registered child (and its process group) now."""
        for entry in list(self._procs):
            if entry[1] is proc:
                self._procs.remove(entry)
                _stop_group(entry[1], entry[2])

    def reap(self) -> None:
        while self._procs:
            entry = self._procs[-1]  # stays listed while it stops, so a second signal can still kill it
            _stop_group(entry[1], entry[2])
            if entry in self._procs:
                self._procs.remove(entry)

    def kill_all(self) -> None:
        for _name, proc, _grace in self._procs:
            _signal_group(proc.pid, signal.SIGKILL)

    def install(self) -> None:
        """Reap at interpreter exit and on SIGINT (Ctrl-C), SIGTERM and SIGHUP."""
        if self._installed:
            return
        self._installed = True
        atexit.register(self.reap)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGINT even if started with it ignored
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        """Stop the children first, then unwind; exit hard if the unwinding is swallowed.

        The exception can land inside a ``__del__`` (Celery's AsyncResult has one), where Python
        ignores it, or leave a client retrying a broker that is already gone, hence the watchdog.
        """
        if self._stopping:
            self.kill_all()
            self.run_exit_actions()
            os._exit(128 + signum)
        self._stopping = True
        print(f"\n{signal.Signals(signum).name}: stopping every process the benchmark started", file=sys.stderr)
        self.reap()
        threading.Thread(target=self._exit_soon, args=(128 + signum,), daemon=True).start()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def _exit_soon(self, code: int, delay: float = 5.0) -> None:
        time.sleep(delay)
        self.kill_all()
        self.run_exit_actions()
        os._exit(code)


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` in the process tree, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the child's process group, give it ``grace`` seconds to empty, then SIGKILL what is left.

    A child may put its own children in other sessions (shoal's embedded redis-server has its own), so
    the whole tree is noted first and whatever of it outlives the group is killed too.
    """
    tree = {pid: _start_time(pid) for pid in descendants(proc.pid)}
    _signal_group(proc.pid, signal.SIGTERM)  # spawn() made the child a session (and group) leader
    _signal_group(proc.pid, signal.SIGCONT)  # a group held with SIGSTOP acts on the SIGTERM only once resumed
    deadline = time.monotonic() + grace
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # the leader is gone; let its children finish their own shutdown
    _signal_group(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=5)
    for pid, started in tree.items():
        if started is not None and _start_time(pid) == started:  # the same process, not a reused pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


REAPER = Reaper()
