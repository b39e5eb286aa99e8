"""Task functions that the process pool tests (tests/test_pool.py) run in real worker processes.

Workers import them by reference, so they live in a module of their own on the workers' path. Each one
shows one way a task can behave, or misbehave, inside a worker.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from shoal.worker.handlers import Output, TaskContext


def noop(ctx: TaskContext) -> None:
    """Nothing at all: what an attempt costs the node, and no more."""


def echo(ctx: TaskContext) -> str:
    return ctx.target


def output(ctx: TaskContext) -> Output:
    return Output(ctx.target.upper(), {"attempt": ctx.attempt, "node": ctx.node, "params": ctx.params})


def raw(ctx: TaskContext) -> bytes:
    return ctx.target.encode()


async def sleepy(ctx: TaskContext) -> str:
    """An async function runs in the worker too, in an event loop of its own."""
    import asyncio

    await asyncio.sleep(0.01)
    return f"async {ctx.target}"


def pid(ctx: TaskContext) -> str:
    return str(os.getpid())


def fail(ctx: TaskContext) -> str:
    raise ValueError(f"bad target {ctx.target!r}")


def _tick(path: Path, every_s: float) -> None:
    """Busy-wait ``every_s`` (never sleeping, as a CPU-bound loop would), then append a line."""
    until = time.perf_counter() + every_s
    while time.perf_counter() < until:
        pass
    with path.open("a") as f:
        f.write(f"{time.time()}\n")


def busy(ctx: TaskContext) -> str:
    """Append a line to the file ``target`` every 10 ms, for ever: it ends only when stopped."""
    path = Path(ctx.target)
    path.with_suffix(".pid").write_text(str(os.getpid()))
    while True:
        _tick(path, 0.01)


def stubborn(ctx: TaskContext) -> str:
    """Like ``busy``, but it catches the interruption of a kill (noting ``ctx.cancelled``) and goes on."""
    path = Path(ctx.target)
    path.with_suffix(".pid").write_text(str(os.getpid()))
    while True:
        try:
            _tick(path, 0.01)
        except BaseException:
            path.with_suffix(".cancelled").write_text(str(ctx.cancelled.is_set()))


def exit3(ctx: TaskContext) -> str:
    print("exit3 says goodbye", file=sys.stderr)
    os._exit(3)


def segfault(ctx: TaskContext) -> str:
    print("segfault is about to crash", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)
    return "unreachable"


def allocate(ctx: TaskContext) -> str:
    """Allocate and touch ``params.mb`` MB, so that it is resident; the size is the result."""
    data = b"\x01" * (int(ctx.params["mb"]) << 20)
    return str(len(data))


def burn(ctx: TaskContext) -> str:
    """Burn ``params.s`` seconds of CPU in a loop."""
    start = time.process_time()
    while time.process_time() - start < float(ctx.params["s"]):
        pass
    return "burnt"


def rendezvous(ctx: TaskContext) -> str:
    """Write this worker's pid in the directory ``target``, then wait (up to 20 s) until ``params.n`` have."""
    folder = Path(ctx.target)
    (folder / str(os.getpid())).write_text("")
    deadline = time.monotonic() + 20
    while len(list(folder.iterdir())) < int(ctx.params["n"]):
        if time.monotonic() > deadline:
            raise TimeoutError("the other attempts never arrived")
        time.sleep(0.01)
    return str(os.getpid())


_kept: list[bytes] = []


def leak(ctx: TaskContext) -> str:
    """Keep ``params.mb`` MB more of resident memory after each attempt, as a leaky task would."""
    _kept.append(b"\x01" * (int(ctx.params["mb"]) << 20))
    return str(os.getpid())


def odd_meta(ctx: TaskContext) -> Output:
    """A result whose meta cannot be kept as JSON."""
    return Output("code", {"when": object()})
