"""The process pool with real worker processes: kills that stop the work, crashes and limits as results,
footprints, recycling, parallelism, and what an attempt costs the node.

The task functions live in ``tests/plugins/shoal_pool_tasks.py``: workers import them by reference.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from shoal.worker.handlers import Output, TaskContext
from shoal.worker.pool import ChildResult, PoolClosed, ProcessPool

pytestmark = pytest.mark.e2e

PLUGINS = str(Path(__file__).parent / "plugins")
if PLUGINS not in sys.path:
    sys.path.insert(0, PLUGINS)
tasks = importlib.import_module("shoal_pool_tasks")
MB = 1 << 20


def ctx(target: str = "", attempt: int = 1, **params: Any) -> TaskContext:
    return TaskContext("task-1", "a task", "pooled", target, params, attempt, "node-1")


@pytest.fixture
async def make_pool(tmp_path: Path) -> AsyncIterator[Callable[..., ProcessPool]]:
    """``make_pool(max_children, **options)``: a pool, closed after the test."""
    pools: list[ProcessPool] = []

    def make(max_children: int = 2, **options: Any) -> ProcessPool:
        options.setdefault("workdir", tmp_path / f"workers-{len(pools)}")
        options["workdir"].mkdir(exist_ok=True)
        pools.append(ProcessPool(max_children, **options))
        return pools[-1]

    yield make
    for pool in pools:
        await pool.close()


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what} after {timeout}s"
        await asyncio.sleep(0.01)


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
async def test_results_come_back_as_the_handler_gave_them(make_pool, start_method):
    pool = make_pool(start_method=start_method)
    echoed = await pool.run(tasks.echo, ctx("hello"))
    assert (echoed.kind, echoed.value, echoed.error) == ("returned", Output("hello"), "")
    assert echoed.pid != os.getpid()
    rich = await pool.run(tasks.output, ctx("hi", attempt=2, k="v"))
    assert rich.value == Output("HI", {"attempt": 2, "node": "node-1", "params": {"k": "v"}})
    assert (await pool.run(tasks.raw, ctx("bytes"))).value == Output("bytes")
    assert (await pool.run(tasks.noop, ctx())).value == Output("")
    assert (await pool.run(tasks.sleepy, ctx("x"))).value == Output("async x")
    pids = {(await pool.run(tasks.pid, ctx())).value.code for _ in range(5)}
    assert pids == {str(echoed.pid)}, "one attempt at a time keeps reusing the same warm worker"


async def test_messages_larger_than_a_socket_buffer(make_pool):
    pool = make_pool()
    target = "x" * (8 * MB)
    result = await pool.run(tasks.echo, ctx(target))
    assert result.kind == "returned" and result.value == Output(target)
    assert (await pool.run(tasks.echo, ctx("small"))).value == Output("small")


async def test_an_exception_comes_back_as_its_text(make_pool):
    pool = make_pool()
    result = await pool.run(tasks.fail, ctx("nope"))
    assert (result.kind, result.value, result.error) == ("raised", None, "ValueError: bad target 'nope'")
    assert result.footprint.cpu_s is not None
    assert (await pool.run(tasks.pid, ctx())).value.code == str(result.pid), "a raising task spoils no worker"


async def test_a_result_the_store_could_not_keep_is_refused_in_the_worker(make_pool):
    pool = make_pool()
    result = await pool.run(tasks.odd_meta, ctx())
    assert result.kind == "raised"
    assert result.error.startswith("TypeError: the result's meta cannot be kept as JSON")


async def test_a_function_must_go_by_reference(make_pool):
    pool = make_pool()
    with pytest.raises(ValueError, match="top level of an importable module"):
        await pool.run(lambda c: "x", ctx())


async def start_busy(pool: ProcessPool, path: Path, fn: Callable[..., str] = tasks.busy, **options: Any):
    """Run ``fn`` on ``path`` and wait until it is writing; the running attempt and its worker's pid."""
    running = asyncio.create_task(pool.run(fn, ctx(str(path)), **options))
    await wait_for(lambda: lines(path) > 3, "the task to start writing")
    return running, int(path.with_suffix(".pid").read_text())


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
async def test_cancelling_stops_a_busy_sync_task(make_pool, tmp_path, start_method):
    pool = make_pool(start_method=start_method)
    path = tmp_path / "busy.txt"
    running, pid = await start_busy(pool, path)
    cancelled_at = time.monotonic()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert time.monotonic() - cancelled_at < 3
    assert gone(pid), "run() returned before its worker was gone"
    written = lines(path)
    await asyncio.sleep(0.2)
    assert lines(path) == written
    after = await pool.run(tasks.pid, ctx())
    assert after.kind == "returned" and after.pid != pid, "a stopped worker is not reused"


async def test_a_task_that_ignores_the_kill_is_killed_after_kill_grace(make_pool, tmp_path):
    pool = make_pool(kill_grace=1.0)
    path = tmp_path / "stubborn.txt"
    running, pid = await start_busy(pool, path, tasks.stubborn)
    cancelled_at = time.monotonic()
    running.cancel()
    await wait_for(lambda: path.with_suffix(".cancelled").exists(), "the task to see the interruption")
    assert path.with_suffix(".cancelled").read_text() == "True", "ctx.cancelled is set when the kill comes"
    assert not running.done(), "the slot is held while the task goes on"
    with pytest.raises(asyncio.CancelledError):
        await running
    assert 1.0 <= time.monotonic() - cancelled_at < 3
    assert gone(pid)
    written = lines(path)
    await asyncio.sleep(0.2)
    assert lines(path) == written


async def test_repeated_cancels_do_not_cut_the_stop_short(make_pool, tmp_path):
    pool = make_pool(kill_grace=0.5)
    path = tmp_path / "stubborn.txt"
    running, pid = await start_busy(pool, path, tasks.stubborn)
    while not running.done():  # as a kill order repeats its cancel until obeyed
        running.cancel()
        await asyncio.wait([running], timeout=0.05)
    assert running.cancelled()
    assert gone(pid)


@pytest.mark.parametrize(("fn", "ended_by"), [(tasks.busy, None), (tasks.stubborn, "SIGKILL")])
async def test_a_timeout_stops_the_task(make_pool, tmp_path, fn, ended_by):
    pool = make_pool(kill_grace=0.5)
    path = tmp_path / "slow.txt"
    started = time.monotonic()
    result = await pool.run(fn, ctx(str(path)), timeout=0.5)
    assert time.monotonic() - started < 3
    assert (result.kind, result.error) == ("timed out", "timed out after 0.5s")
    assert gone(result.pid)
    assert result.footprint.signal == ended_by
    assert 0 < result.footprint.cpu_s < 2, "it burnt CPU until it was stopped"
    written = lines(path)
    await asyncio.sleep(0.2)
    assert lines(path) == written
    assert (await pool.run(tasks.pid, ctx())).pid != result.pid


async def test_a_timeout_that_is_not_reached_changes_nothing(make_pool):
    pool = make_pool()
    first = await pool.run(tasks.echo, ctx("quick"), timeout=5)
    second = await pool.run(tasks.echo, ctx("again"), timeout=5)
    assert (first.kind, second.value, second.pid) == ("returned", Output("again"), first.pid)


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
@pytest.mark.parametrize(
    ("fn", "exit_code", "signal", "said"),
    [
        (tasks.exit3, 3, None, "exit3 says goodbye"),
        (tasks.segfault, None, "SIGSEGV", "Fatal Python error: Segmentation fault"),
    ],
)
async def test_a_crash_is_a_result_and_the_pool_carries_on(make_pool, start_method, fn, exit_code, signal, said):
    pool = make_pool(start_method=start_method)
    before = await pool.run(tasks.pid, ctx())
    result = await pool.run(fn, ctx())
    assert result.kind == "crashed"
    assert (result.footprint.exit_code, result.footprint.signal) == (exit_code, signal)
    assert result.pid == before.pid and gone(result.pid)
    assert said in result.error
    assert result.error.startswith(f"the worker process {'was killed by SIGSEGV' if signal else 'exited with code 3'}")
    assert result.footprint.cpu_s is not None and result.footprint.cpu_s < 1
    assert result.footprint.max_rss_bytes and result.footprint.max_rss_bytes > MB
    after = await pool.run(tasks.echo, ctx("still here"))
    assert (after.kind, after.value) == ("returned", Output("still here"))
    assert after.pid != result.pid
    assert pool.size == 1


async def test_a_crash_leaves_the_other_attempts_alone(make_pool, tmp_path):
    pool = make_pool(3)
    path = tmp_path / "busy.txt"
    running, pid = await start_busy(pool, path)
    assert (await pool.run(tasks.segfault, ctx())).kind == "crashed"
    assert not running.done() and not gone(pid)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running


async def test_memory_over_the_limit(make_pool):
    pool = make_pool(memory_mb=100)
    result = await pool.run(tasks.allocate, ctx(mb=500))
    assert result.kind == "over limit"
    assert result.error.startswith("memory_mb: the attempt went past its 100 MiB")
    fits = await pool.run(tasks.allocate, ctx(mb=20))
    assert (fits.kind, fits.value) == ("returned", Output(str(20 * MB)))
    assert fits.pid != result.pid, "a worker that passed a limit is replaced"
    bigger = await pool.run(tasks.allocate, ctx(mb=500), memory_mb=800)
    assert bigger.kind == "returned", "an attempt's own limit overrides the pool's"


async def test_a_worker_that_keeps_growing_is_replaced(make_pool):
    pool = make_pool()
    pids = [(await pool.run(tasks.leak, ctx(mb=60), memory_mb=100)).pid for _ in range(3)]
    assert pids[0] == pids[1] != pids[2], "60 MB kept, then 120 MB: past 100 MB, so replaced"


async def test_footprint_of_a_cpu_burn(make_pool):
    pool = make_pool()
    result = await pool.run(tasks.burn, ctx(s=1))
    footprint = result.footprint
    assert result.kind == "returned"
    assert 0.8 <= footprint.cpu_s <= 1.5
    assert footprint.wall_s >= footprint.cpu_s * 0.9
    assert 5 * MB < footprint.max_rss_bytes < 500 * MB
    assert footprint.exit_code is None and footprint.signal is None


async def test_peak_memory_is_the_attempts_own(make_pool):
    pool = make_pool()
    big = await pool.run(tasks.allocate, ctx(mb=64))
    small = await pool.run(tasks.noop, ctx())
    assert small.pid == big.pid
    assert big.footprint.max_rss_bytes > 64 * MB
    assert small.footprint.max_rss_bytes < big.footprint.max_rss_bytes - 32 * MB, "the peak is reset per attempt"


async def test_cpu_over_the_limit(make_pool):
    pool = make_pool()
    result = await pool.run(tasks.burn, ctx(s=5), cpu_s_limit=0.5)
    assert result.kind == "over limit"
    assert result.error.startswith("cpu_s_limit: the attempt used more than its 0.5s of CPU")
    assert 0.4 <= result.footprint.cpu_s < 1.6
    assert gone(result.pid)
    assert (await pool.run(tasks.burn, ctx(s=0.2), cpu_s_limit=0.5)).kind == "returned", "the limit is per attempt"


async def test_workers_are_recycled_after_max_tasks_per_child(make_pool):
    pool = make_pool(1, max_tasks_per_child=2)
    pids = [(await pool.run(tasks.pid, ctx())).pid for _ in range(5)]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    await wait_for(lambda: gone(pids[0]) and gone(pids[2]), "recycled workers to exit")
    assert len(list(pool.workdir.iterdir())) <= 2, "a new worker takes the log name of a gone one"


async def test_attempts_run_in_parallel_up_to_max_children(make_pool, tmp_path):
    pool = make_pool(3)
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    results = await asyncio.gather(*(pool.run(tasks.rendezvous, ctx(str(meeting), n=3)) for _ in range(3)))
    assert [r.kind for r in results] == ["returned"] * 3
    assert len({r.pid for r in results}) == 3
    queued = await asyncio.gather(*(pool.run(tasks.pid, ctx()) for _ in range(8)))
    assert len({r.pid for r in queued}) <= 3 and pool.size <= 3, "never more workers than max_children"


def pool_processes() -> set[int]:
    """The fork server and workers this test process started, as /proc shows them."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if b"shoal.worker" in cmdline and ppid == os.getpid():
                found.add(int(entry.name))
    return found


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
async def test_close_leaves_no_process_behind(make_pool, tmp_path, start_method):
    pool = make_pool(3, kill_grace=0.5, start_method=start_method)
    path = tmp_path / "stubborn.txt"
    running, busy_pid = await start_busy(pool, path, tasks.stubborn)
    idle = await asyncio.gather(*(pool.run(tasks.pid, ctx()) for _ in range(2)))
    assert pool_processes()
    await pool.close()
    assert gone(busy_pid) and all(gone(r.pid) for r in idle)
    assert not pool_processes()
    with pytest.raises(PoolClosed):
        await running
    with pytest.raises(PoolClosed):
        await pool.run(tasks.noop, ctx())
    assert not pool.workdir.exists() or not list(pool.workdir.iterdir()), "worker logs are removed"


NODE = """
import asyncio, sys
sys.path.insert(0, {plugins!r})
import shoal_pool_tasks
from shoal.worker.handlers import TaskContext
from shoal.worker.pool import ProcessPool

async def main():
    pool = ProcessPool(1, start_method={start_method!r})
    await pool.run(shoal_pool_tasks.busy, TaskContext("t", "n", "busy", {target!r}, {{}}, 1, "node-1"))

asyncio.run(main())
"""


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
async def test_a_node_killed_with_sigkill_takes_its_workers_along(tmp_path, start_method):
    path = tmp_path / "busy.txt"
    code = NODE.format(plugins=PLUGINS, start_method=start_method, target=str(path))
    node = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
    try:
        await wait_for(lambda: lines(path) > 3, "the task to start writing")
        pid = int(path.with_suffix(".pid").read_text())
    finally:
        node.kill()
        await node.wait()
    await wait_for(lambda: gone(pid), "the worker to die with its node", timeout=5)


async def test_what_an_attempt_costs_the_node(make_pool):
    pool = make_pool(1)
    await pool.run(tasks.noop, ctx())
    attempts = 2000
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(attempts):
        result: ChildResult = await pool.run(tasks.noop, ctx())
    cpu, wall = (time.process_time() - cpu) / attempts, (time.perf_counter() - wall) / attempts
    print(f"\nper attempt: node CPU {cpu * 1e6:.0f} µs, wall {wall * 1e6:.0f} µs")
    assert result.kind == "returned"
    assert cpu < 1e-3, f"a warm no-op attempt cost the node {cpu * 1e6:.0f} µs of CPU"
