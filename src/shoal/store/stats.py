"""What the store holds and costs: the server, its memory, its keys, the tasks by state and the oldest kept.

``GET /api/v1/store`` and ``shoal store stats`` answer with ``StoreStats``; both read it here, so an
operator sees the same figures from a node and, with the nodes down, from the store's own configuration.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from shoal.models import TaskState
from shoal.store.tasks import TaskStore


@dataclass(frozen=True)
class StoreStats:
    """One reading of the store, with the retention in force where it was taken."""

    server_name: str
    server_version: str
    used_memory_bytes: int
    keys: int
    tasks: dict[str, int]
    oldest_finished_at: float | None
    retention_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "server": {"name": self.server_name, "version": self.server_version},
            "used_memory_bytes": self.used_memory_bytes,
            "keys": self.keys,
            "tasks": self.tasks,
            "oldest_finished_at": self.oldest_finished_at,
            "retention_s": self.retention_s,
        }


async def read_stats(tasks: TaskStore, retention_s: float) -> StoreStats:
    """Read the store's figures in three concurrent round trips.

    ``keys`` is DBSIZE: every key of the store's database, the cluster's and any other cluster's or
    application's sharing it, since counting only one cluster's would mean a SCAN of the whole keyspace.
    ``retention_s`` is passed through: the store does not keep it, the node's (or the CLI's) config does.
    """
    server, counts, oldest = await asyncio.gather(_server(tasks.redis), tasks.counts(), tasks.oldest_finished_at())
    name, version, memory, keys = server
    return StoreStats(
        server_name=name,
        server_version=version,
        used_memory_bytes=memory,
        keys=keys,
        tasks={state.name: int(counts.get(state.name, 0)) for state in TaskState},
        oldest_finished_at=oldest,
        retention_s=float(retention_s),
    )


async def _server(redis: Redis) -> tuple[str, str, int, int]:
    """The server's product and version (Valkey says ``server_name:valkey``; Redis says no name), the memory
    it uses and DBSIZE, from one pipeline."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.info("server")
        pipe.info("memory")
        pipe.dbsize()
        server, memory, keys = await pipe.execute()
    name, version = server_of(server)
    return name, version, int(memory["used_memory"]), int(keys)


def server_of(info: dict[str, Any]) -> tuple[str, str]:
    """The product and version that ``INFO server`` tells: Valkey has ``server_name:valkey`` and
    ``valkey_version`` (and a ``redis_version`` it is compatible with, which is not its own); Redis has
    neither."""
    if str(info.get("server_name", "")).lower() == "valkey" or "valkey_version" in info:
        return "valkey", str(info.get("valkey_version") or info.get("redis_version", "unknown"))
    return "redis", str(info.get("redis_version", "unknown"))
