"""The taskiq application both the benchmark client and the ``taskiq worker`` processes import.

taskiq-redis's ``RedisStreamBroker`` (a Redis stream read by a consumer group, each message acknowledged
once done) with its ``RedisAsyncResultBackend``, both on the Redis of ``BENCH_REDIS_URL`` (the worker reads
it at import: ``taskiq worker bench.adapters.taskiq_app:broker``; the client calls ``build``). Everything
else is taskiq's default.
"""

from __future__ import annotations

import os
from typing import Any

from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker


async def echo(target: str) -> str:
    """The same work as shoal's ``echo`` type: return the target (a coroutine, as taskiq's tasks are)."""
    return target


def build(url: str) -> tuple[RedisStreamBroker, Any]:
    """A broker with its result backend, and the ``echo`` task registered on it."""
    broker = RedisStreamBroker(url=url).with_result_backend(RedisAsyncResultBackend(redis_url=url))
    return broker, broker.register_task(echo, task_name="echo")


broker, echo_task = build(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
