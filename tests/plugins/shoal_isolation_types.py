"""Task types that misbehave, for the isolation tests (tests/test_isolation.py), loaded into real nodes with
``--task-modules shoal_isolation_types``.

Each shows one way a user's task can try to take its node down or run on after it was stopped: a busy
loop that never looks at ``ctx.cancelled``, one that even swallows the interruption, a crash, a runaway
allocation, a task that kills the very process it runs in, and one that burns a known amount of CPU.
The sync ones run in the node's worker processes; ``iso-poison`` runs inline, in the node itself.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from shoal.worker.handlers import Output, TaskContext, task_type

#: Longest any type here waits for a file the test writes: a forgotten task still ends on its own.
WAIT_S = 120.0


def _tick(path: Path, count: int, every_s: float = 0.01) -> None:
    """Busy-wait ``every_s`` (never sleeping, as a CPU-bound loop would), then append ``count`` to ``path``."""
    until = time.perf_counter() + every_s
    while time.perf_counter() < until:
        pass
    with path.open("a") as f:
        f.write(f"{count}\n")


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


@task_type("iso-busy")
def busy(ctx: TaskContext) -> str:
    """Append a counter to the file ``target`` every 10 ms, for ever; it never looks at ``ctx.cancelled``."""
    path = Path(ctx.target)
    path.with_suffix(".pid").write_text(str(os.getpid()))
    count = 0
    while True:
        count += 1
        _tick(path, count)


@task_type("iso-stubborn")
def stubborn(ctx: TaskContext) -> str:
    """Like ``iso-busy``, but it catches the interruption a stop brings (whatever it is) and loops on."""
    path = Path(ctx.target)
    path.with_suffix(".pid").write_text(str(os.getpid()))
    count = 0
    while True:
        try:
            count += 1
            _tick(path, count)
        except BaseException as exc:  # swallowing the stop is the point
            path.with_suffix(".interrupted").write_text(type(exc).__name__)


@task_type("iso-exit")
def exit_1(ctx: TaskContext) -> str:
    """Leave the process at once with exit code 1, as a C extension calling exit() would."""
    print("iso-exit leaves now", file=sys.stderr, flush=True)
    os._exit(1)


@task_type("iso-segv")
def segfault(ctx: TaskContext) -> str:
    """Die of SIGSEGV, as a crash in a C extension would."""
    print("iso-segv is about to crash", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)
    return "unreachable"


@task_type("iso-wait")
def wait(ctx: TaskContext) -> Output:
    """Run until the file ``target`` exists (the test writes it), then succeed with this process's pid."""
    _wait_for(Path(ctx.target))
    return Output("waited", {"pid": os.getpid()})


@task_type("iso-hog", memory_mb=100)
def hog(ctx: TaskContext) -> str:
    """Allocate and touch ``params.mb`` MB (far past the type's 100 MB when asked to)."""
    data = bytearray(int(ctx.params["mb"]) << 20)
    for i in range(0, len(data), 4096):
        data[i] = 1
    return str(len(data))


@task_type("iso-burn")
def burn(ctx: TaskContext) -> Output:
    """Burn ``params.s`` seconds of this process's CPU in a loop."""
    start = time.process_time()
    while time.process_time() - start < float(ctx.params["s"]):
        pass
    return Output("burnt", {"pid": os.getpid()})


@task_type("iso-sleep")
def nap(ctx: TaskContext) -> str:
    """Sleep ``params.s`` seconds in a worker process, then return ``target``."""
    time.sleep(float(ctx.params.get("s", 0)))
    return ctx.target


@task_type("iso-poison", isolation="inline")
async def poison(ctx: TaskContext) -> str:
    """Kill the node that runs it, on every attempt: inline, its process is the node's own. It first notes
    the node's name and pid in the file ``target``."""
    with Path(ctx.target).open("a") as f:
        f.write(f"{ctx.node} {os.getpid()} attempt {ctx.attempt}\n")
    os.kill(os.getpid(), signal.SIGKILL)
    return "unreachable"
