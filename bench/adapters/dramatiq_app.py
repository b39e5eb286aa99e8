"""The Dramatiq application both the benchmark client and the ``dramatiq`` worker import.

A ``RedisBroker`` with the ``Results`` middleware on the Redis result backend, both on the Redis of
``BENCH_REDIS_URL`` (the worker reads it at import: ``dramatiq bench.adapters.dramatiq_app:broker``; the
client calls ``build`` with its own URL). Everything else is Dramatiq's default middleware and settings.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend


def echo(target: str) -> str:
    """The same work as shoal's ``echo`` type: return the target."""
    return target


def build(url: str) -> tuple[RedisBroker, RedisBackend, Any]:
    """A broker, its result backend and the ``echo`` actor declared on that broker (results stored)."""
    broker = RedisBroker(url=url)  # type: ignore[no-untyped-call]
    backend = RedisBackend(url=url)  # type: ignore[no-untyped-call]
    broker.add_middleware(Results(backend=backend))  # type: ignore[no-untyped-call]
    actor = dramatiq.actor(actor_name="echo", broker=broker, store_results=True)(echo)
    return broker, backend, actor


broker, backend, echo_actor = build(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
