"""Counts the gRPC calls a node's server receives, by method, for ``bench/members.py``.

The node has no counter of its own for them, so the benchmark loads this module into each of its nodes
with ``--task-modules bench.rpc_census``. A node imports its task modules at the start of ``Node.start``,
before it builds its gRPC server; wrapping ``grpc.aio.server`` here puts a counting interceptor in front
of every service (the auth interceptor included, so refused calls count too). Every call has exactly one
server, so the sum over all nodes is every call made in the cluster.

The counts cost the node one dictionary increment per call and nothing while idle: they are written to
``$BENCH_RPC_CENSUS_DIR/<pid>.json`` (``{"seq": n, "calls": {method: count}}``) only when the node gets
SIGUSR1. The module also has to declare a task type for the node to accept it: ``rpc-census-noop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from shoal import TaskContext, task_type

#: Where the counts go; the benchmark sets it before it starts the nodes.
DIR_ENV = "BENCH_RPC_CENSUS_DIR"

CALLS: Counter[str] = Counter()
_dumps = 0


class CallCounter(grpc.aio.ServerInterceptor):
    """Counts each call as it arrives, before any other interceptor sees it."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        CALLS[handler_call_details.method] += 1
        return await continuation(handler_call_details)


_original_server = grpc.aio.server


def _counting_server(*args: Any, interceptors: Any = None, **kwargs: Any) -> grpc.aio.Server:
    return _original_server(*args, interceptors=[CallCounter(), *(interceptors or ())], **kwargs)


def dump() -> None:
    """Write the counts so far, atomically (the reader never sees half a file)."""
    global _dumps
    _dumps += 1
    path = Path(os.environ.get(DIR_ENV, ".")) / f"{os.getpid()}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"seq": _dumps, "calls": dict(CALLS)}))
    os.replace(tmp, path)


def _install() -> None:
    grpc.aio.server = _counting_server
    try:  # imported inside Node.start: the node's own loop (asyncio or uvloop) runs the handler
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)
    except RuntimeError:  # imported elsewhere (a worker process of the node's pool): nothing to count there
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGUSR1, lambda signum, frame: dump())


_install()


@task_type("rpc-census-noop", isolation="inline")
async def noop(ctx: TaskContext) -> str:
    return ctx.target
