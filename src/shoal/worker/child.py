"""A worker process: runs the task attempts its node sends it, one at a time, in its main thread.

A worker never touches the store. It reads a job from its socket (the handler by reference, the task's
context, the attempt's limits), runs it, and writes back what came of it with what it cost. Running the
handler in the main thread is what lets a kill stop it: SIGTERM sets ``ctx.cancelled`` and raises
``TaskCancelled`` wherever the handler is, and the worker then exits without a reply, since the node no
longer waits for one. Everything here runs in the worker, never in the node, except the framing helpers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import faulthandler
import importlib
import inspect
import math
import os
import pickle
import resource
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn

import orjson

from shoal.worker.handlers import FUNCTION_MARK, MAX_ERROR_CHARS, TaskContext, as_output, call_function

#: Longest exception text sent back for one attempt, as the node keeps it.
#: prctl option: the signal this process gets when its parent exits (linux/prctl.h).
PR_SET_PDEATHSIG = 1
HEADER = struct.Struct("!I")
MB = 1 << 20


def frame(payload: bytes) -> bytes:
    """One message on a worker's socket: its length, then the pickle."""
    return HEADER.pack(len(payload)) + payload


class Frames:
    """Cuts a byte stream back into the payloads of ``frame``; fed whatever one read returned."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes | memoryview]:
        if not self._buf and len(data) >= HEADER.size and HEADER.unpack_from(data)[0] == len(data) - HEADER.size:
            return [memoryview(data)[HEADER.size :]]  # the usual case: one read, one whole message
        buf = self._buf
        buf += data
        out: list[bytes | memoryview] = []
        while len(buf) >= HEADER.size:
            end = HEADER.size + HEADER.unpack_from(buf)[0]
            if len(buf) < end:
                break
            out.append(bytes(buf[HEADER.size : end]))
            del buf[:end]
        return out


class TaskCancelled(KeyboardInterrupt):
    """Raised in a worker's handler when its attempt is killed, timed out or stopped (SIGTERM).

    A KeyboardInterrupt, so that ``except Exception`` in a handler does not swallow it while cleanup in
    ``finally`` blocks and ``except KeyboardInterrupt`` still runs."""


class CancelFlag:
    """``ctx.cancelled`` in a worker: a plain flag, since a signal handler may set it at any bytecode."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


def die_with(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent exits: a worker never outlives its node."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def cpu_seconds(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def _status_kb(status: bytes, key: bytes) -> int:
    """A ``kB`` figure of /proc/self/status, e.g. ``VmHWM``; 0 when absent."""
    at = status.find(key)
    if at < 0:
        return 0
    line = status[at + len(key) : status.find(b"\n", at)]
    return int(line.strip(b": \tkB") or 0)


class Worker:
    """The worker's loop: a job in, an attempt run, a reply out, until the node closes the socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frames = Frames()
        self.pending: list[bytes | memoryview] = []
        self.cancelled = CancelFlag()
        self.handlers: dict[tuple[str, str], tuple[Callable[..., Any], bool, Callable[..., Any] | None]] = {}
        self.status = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
        try:  # writing "5" resets the peak RSS (VmHWM), so that each attempt reports its own peak
            self.clear_refs: int | None = os.open("/proc/self/clear_refs", os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            self.clear_refs = None
        self.as_hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        self.cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)[1]

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        """Cancel the attempt: only the first SIGTERM interrupts, so the exit that follows is not cut short."""
        if not self.cancelled.is_set():
            self.cancelled.set()
            raise TaskCancelled("the attempt was stopped (SIGTERM)")

    def recv(self) -> Any:
        """The next message from the node, or None once it has closed the socket (this worker is retired)."""
        while not self.pending:
            data = self.sock.recv(1 << 16)
            if not data:
                return None
            self.pending.extend(self.frames.feed(data))
        return pickle.loads(self.pending.pop(0))

    def send(self, message: Any) -> None:
        self.sock.sendall(frame(pickle.dumps(message, pickle.HIGHEST_PROTOCOL)))

    def serve(self) -> None:
        sys.path[:] = self.recv() or sys.path  # the node's, so that its task modules import here too
        rss = _status_kb(os.pread(self.status, 8192, 0), b"VmRSS") * 1024
        self.send(("ready", cpu_seconds(resource.getrusage(resource.RUSAGE_SELF)), rss))
        while (job := self.recv()) is not None:
            reply = self.attempt(*job)
            if self.cancelled.is_set():
                raise TaskCancelled("the attempt was stopped (SIGTERM)")
            self.send(reply)

    def attempt(
        self, module: str, qualname: str, fields: dict[str, Any], memory_mb: int | None, cpu_s_limit: float | None
    ) -> tuple[Any, ...]:
        """Run one attempt; the reply is (kind, code, meta, error, wall_s, cpu_s, max_rss, cpu_total, rss,
        value), ``fields`` being the TaskContext's but ``cancelled``.

        It holds plain data only (``meta`` and a function task's ``value`` as JSON, as the store keeps them;
        ``value`` None for a handler), so that nothing a task returns runs code in the node when the node
        reads it."""
        ctx = TaskContext(**fields, cancelled=self.cancelled)
        kind, code, meta, error, value_json = "returned", "", b"", "", None
        with contextlib.suppress(OSError):  # the log holds this attempt's output only: a crash shows its own
            os.ftruncate(2, 0)
        if self.clear_refs is not None:
            os.write(self.clear_refs, b"5")
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        try:
            try:
                self.limit(memory_mb, cpu_s_limit)
                value, function = self.call(module, qualname, ctx)
            finally:
                self.lift(memory_mb, cpu_s_limit)
            if function:
                code, meta, value_json = _function_output(value)
            else:
                code, meta = _as_output(value)
        except TaskCancelled:
            raise
        except MemoryError as exc:
            if memory_mb is None:
                kind, error = "raised", _describe(exc)
            else:
                kind, error = "over limit", f"memory_mb: the attempt went past its {memory_mb} MiB ({_describe(exc)})"
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            kind, error = "raised", _describe(exc)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        _flush()
        status = os.pread(self.status, 8192, 0)
        peak = _status_kb(status, b"VmHWM") * 1024 if self.clear_refs is not None else None
        total, rss = cpu_seconds(after), _status_kb(status, b"VmRSS") * 1024
        return (kind, code, meta, error, wall, total - cpu_seconds(before), peak, total, rss, value_json)

    def call(self, module: str, qualname: str, ctx: TaskContext) -> tuple[Any, bool]:
        """Run the handler, or the ``@shoal.task`` function with the task's arguments; its return value, and
        whether it came from such a function."""
        handler = self.handlers.get((module, qualname))
        if handler is None:
            fn: Any = importlib.import_module(module)
            for part in qualname.split("."):
                fn = getattr(fn, part)
            function = getattr(fn, FUNCTION_MARK, None)
            handler = self.handlers[module, qualname] = (fn, inspect.iscoroutinefunction(fn), function)
        fn, is_async, function = handler
        if function is not None:
            return call_function(function, ctx), True
        if is_async:
            return asyncio.run(fn(ctx)), False
        value = fn(ctx)
        if inspect.isawaitable(value):
            return asyncio.run(_wait(value)), False
        return value, False

    def limit(self, memory_mb: int | None, cpu_s_limit: float | None) -> None:
        """Soft limits for this attempt only, so that a reused worker can be given others next time.

        ``memory_mb`` bounds the address space the attempt may add to the idle worker's (RLIMIT_AS).
        ``cpu_s_limit`` arms ITIMER_PROF, whose SIGPROF ends the worker at that much CPU (all threads),
        and RLIMIT_CPU, which the kernel enforces in whole seconds (SIGXCPU) should the timer be disarmed.
        """
        if memory_mb is not None:
            size = _status_kb(os.pread(self.status, 8192, 0), b"VmSize") * 1024 + memory_mb * MB
            resource.setrlimit(resource.RLIMIT_AS, (_within(size, self.as_hard), self.as_hard))
        if cpu_s_limit is not None:
            soft = math.ceil(cpu_seconds(resource.getrusage(resource.RUSAGE_SELF)) + cpu_s_limit)
            resource.setrlimit(resource.RLIMIT_CPU, (_within(soft, self.cpu_hard), self.cpu_hard))
            signal.setitimer(signal.ITIMER_PROF, max(cpu_s_limit, 1e-3))

    def lift(self, memory_mb: int | None, cpu_s_limit: float | None) -> None:
        if memory_mb is not None:
            resource.setrlimit(resource.RLIMIT_AS, (self.as_hard, self.as_hard))
        if cpu_s_limit is not None:
            signal.setitimer(signal.ITIMER_PROF, 0)
            resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_hard, self.cpu_hard))


def _within(soft: int, hard: int) -> int:
    return soft if hard == resource.RLIM_INFINITY else min(soft, hard)


async def _wait(awaitable: Any) -> Any:
    return await awaitable


def _as_output(value: Any) -> tuple[str, bytes]:
    """A handler's return value as the result's code and meta (JSON, as the store keeps it)."""
    output = as_output(value)
    try:
        return str(output.code), orjson.dumps(output.meta) if output.meta else b""
    except TypeError as exc:
        raise TypeError(f"the result's meta cannot be kept as JSON: {exc}") from None


def _function_output(value: Any) -> tuple[str, bytes, bytes]:
    """A function's return value as the result's code, meta (none) and value (JSON). The code is the node's
    to read from the value (``shoal.worker.pool``): it is not sent twice."""
    try:
        text = orjson.dumps(value)
    except TypeError as exc:
        raise TypeError(f"return value is not JSON: {exc}") from None
    return "", b"", text


def _describe(exc: BaseException) -> str:
    try:
        message = str(exc)
    except Exception:  # an exception whose __str__ fails still says what it was
        message = ""
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text[:MAX_ERROR_CHARS]


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()


def _redirect_stdio(log_path: str) -> None:
    """Send fd 1 and 2 to this worker's own log, so the node can show the last lines after a crash.

    stdin is /dev/null: a worker is in a process group of its own, which a terminal would stop (SIGTTIN)
    if it read from it."""
    fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            setattr(sys, name, open(1 if name == "stdout" else 2, "w", buffering=1, closefd=False))
        else:
            stream.reconfigure(line_buffering=True)
    faulthandler.enable(sys.stderr)  # a segfault leaves the Python stack in the log


def main(fd: int, log_path: str, parent: int) -> NoReturn:
    """A worker's life: from its start (forked by the fork server, or spawned) to its exit."""
    code = 1
    try:
        die_with(parent)
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)  # its own process group, so a kill reaches the subprocesses a task started
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGXCPU, signal.SIGPROF):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C at a terminal is the node's to handle
        _redirect_stdio(log_path)
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
        worker = Worker(socket.socket(fileno=fd))
        signal.signal(signal.SIGTERM, worker.on_sigterm)
        worker.serve()
        code = 0
    except TaskCancelled:
        code = 0
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        _flush()
        os._exit(code)
