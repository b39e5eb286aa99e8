"""Task types for the limit tests (tests/test_task_limits.py), loaded into real nodes with
``--task-modules shoal_limit_types``.

Each runs in a worker process and takes what it uses from its params: ``mb`` MiB to allocate (and touch,
so that the pages are real), ``cpu_s`` seconds of CPU to burn. ``limit-use`` sets no bounds of its own
(the node's defaults bound it); ``limit-capped`` allows at most 200 MiB and 1 s of CPU per attempt,
whatever its task asks for.
"""

from __future__ import annotations

import time

from shoal.worker.handlers import Output, TaskContext, task_type

#: The bounds of ``limit-capped``.
CAPPED_MEMORY_MB = 200
CAPPED_CPU_S = 1.0


def _use(ctx: TaskContext) -> Output:
    """Allocate ``mb`` MiB, touching every page, then burn ``cpu_s`` seconds of CPU."""
    mb = int(ctx.params.get("mb", 0))
    block = bytearray(mb * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    cpu_s = float(ctx.params.get("cpu_s", 0))
    until = time.process_time() + cpu_s
    while time.process_time() < until:
        pass
    return Output(f"used {mb} MiB and {cpu_s:g}s of CPU", {"mb": mb, "cpu_s": cpu_s})


@task_type("limit-use", isolation="process")
def use(ctx: TaskContext) -> Output:
    return _use(ctx)


@task_type("limit-capped", isolation="process", memory_mb=CAPPED_MEMORY_MB, cpu_s_limit=CAPPED_CPU_S)
def capped(ctx: TaskContext) -> Output:
    return _use(ctx)
