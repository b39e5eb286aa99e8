"""What the figures were measured on (cores, CPU model, kernel, Python, the Redis binary), what else ran
meanwhile, and the CPU each process of a system used."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

from bench.procs import descendants
from bench.redis_server import redis_binary, redis_version


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": usable_cores(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }
    try:  # the binary every system of a run is given (each system's entry says what its server reported)
        binary = redis_binary()
        info["redis"] = redis_version(binary)
        info["redis_binary"] = str(binary)
    except (RuntimeError, OSError) as exc:
        info["redis"] = f"unavailable: {exc}"
    return info


class OtherLoad:
    """CPU time used by processes that are not the benchmark or its children, over one measurement.

    The benchmark shares the machine; when something else runs (a test suite, a build), figures drop,
    and this says by how much the machine was not ours. Counted from /proc, in percent of one core;
    processes that start and end within the measurement are missed.
    """

    def __init__(self) -> None:
        self._before: dict[int, tuple[str, int]] = {}
        self._t0 = 0.0

    def start(self) -> None:
        self._before, self._t0 = _foreign_times(), time.monotonic()

    def stop(self) -> float:
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        used = 0
        for pid, (started, ticks) in _foreign_times().items():
            prior = self._before.get(pid)
            used += ticks - prior[1] if prior is not None and prior[0] == started else ticks
        return 100.0 * used / _HZ / elapsed


_HZ = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> tuple[str, int, int] | None:
    """From /proc/PID/stat: the process's start time, its own CPU (utime + stime, all its threads) and the
    CPU of the children it has reaped (cutime + cstime), in clock ticks; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[19], int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
    except (OSError, IndexError, ValueError):
        return None


def ticks_to_s(ticks: int) -> float:
    return ticks / _HZ


def _foreign_times() -> dict[int, tuple[str, int]]:
    mine = {os.getpid(), *descendants(os.getpid())}
    times = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        pid = int(stat.parent.name)
        if pid in mine:
            continue
        ticks = cpu_ticks(pid)
        if ticks is not None:
            times[pid] = ticks[:2]
    return times


class TreeLoad:
    """CPU used by each process below ``root`` over one span, in percent of one core, labelled by its role
    (a shoal node by its ``--name``, the redis-server, the launcher): where the cores went in a run."""

    def __init__(self, root: int) -> None:
        self.root = root
        self._before: dict[int, tuple[str, int]] = {}
        self._t0 = 0.0

    def start(self) -> None:
        self._before, self._t0 = self._times(), time.monotonic()

    def stop(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        used: dict[str, float] = {}
        for pid, (started, ticks) in self._times().items():
            prior = self._before.get(pid)
            spent = ticks - prior[1] if prior is not None and prior[0] == started else ticks
            label = process_role(pid)
            used[label] = used.get(label, 0.0) + round(100.0 * spent / _HZ / elapsed, 1)
        return dict(sorted(used.items()))

    def _times(self) -> dict[int, tuple[str, int]]:
        times = {}
        for pid in descendants(self.root):
            ticks = cpu_ticks(pid)
            if ticks is not None:
                times[pid] = ticks[:2]
        return times


def process_role(pid: int) -> str:
    """A shoal node by its ``--name``, the redis-server, else the program's name."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "gone"
    if argv and argv[0].split(" ")[0].endswith("redis-server"):  # it retitles itself "redis-server HOST:PORT"
        return "redis-server"
    if "--name" in argv[:-1]:
        return argv[argv.index("--name") + 1]
    return Path(argv[0]).name if argv and argv[0] else str(pid)


class SystemCpu:
    """CPU used over one span by every process of a system under test, by role, in seconds.

    ``roots`` maps a role ("redis", "nodes", "workers") to the pid of the process the benchmark started for
    it; the role's CPU is that of the process and of every process below it (utime + stime of each, plus
    cutime + cstime: what the children it reaped had used, so a worker that ends within the span still
    counts). The client is this process (all its threads), read with ``time.process_time``.
    """

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self._before: dict[str, int] = {}
        self._client0 = 0.0

    def start(self) -> None:
        self._before, self._client0 = self._ticks(), time.process_time()

    def stop(self) -> dict[str, float]:
        """Seconds of CPU per role over the span, the client's included."""
        after = self._ticks()
        used = {role: ticks_to_s(after.get(role, 0) - ticks) for role, ticks in self._before.items()}
        return {"client": time.process_time() - self._client0, **used}

    def _ticks(self) -> dict[str, int]:
        totals = {}
        for role, root in self.roots.items():
            total = 0
            for pid in (root, *descendants(root)):
                ticks = cpu_ticks(pid)
                if ticks is not None:
                    total += ticks[1] + ticks[2]
            totals[role] = total
        return totals
