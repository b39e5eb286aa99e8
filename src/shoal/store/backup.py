"""Back up one cluster's store while it runs, and restore it into a stopped one, over any store URL.

A backup is a logical copy: every key under ``shoal:{cluster}:`` as Redis DUMP payloads (see
shoal.store.backup_file). That works over every URL a node takes (Sentinel, TLS, unix sockets, the
embedded server), touches no other data in a shared Redis, and restores into the same or a newer Redis.

Consistency: shoal changes tasks, indexes and streams together in scripts, so a copy taken key by key
while nodes write could hold a task in one state and its index in another. With nodes running (connected
to the store, or beating lately), the copy is therefore taken under ``CLIENT PAUSE ... WRITE``: writes
wait (reads go on) until it is done, at most ``max_pause`` seconds, after which Redis resumes them by
itself and the backup is given up, never written half-consistent. With no node running, nothing writes
and no pause is needed.

The master lease and hand-over note are left out: a restored cluster elects a master of its own (the epoch
is kept, so fencing only moves forward). Tasks that were INQUEUE or RUNNING on nodes at backup time are
still placed on those nodes in the copy; when a node of that name starts it hands them back, and the master
declares nodes that never come back dead and re-places their tasks, so none is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shoal.config import NodeConfig
from shoal.errors import InvalidInput, ShoalError, StoreUnavailable
from shoal.keys import Keys
from shoal.models import TaskState
from shoal.store import backup_file
from shoal.store.embedded import EmbeddedRedis, serving
from shoal.store.redis import STORE_DOWN, connect, redacted
from shoal.store.wire import Wire

#: Keys of the running cluster's master role, not carried over (see the module docstring).
EXCLUDED = (b"lease", b"handover")
SCAN_COUNT = 2000
#: Keys per round trip while copying out; keys, or payload bytes, per round trip while restoring.
BATCH_KEYS = 500
BATCH_BYTES = 16 * 1024 * 1024
#: Writes must not wait longer than the nodes' 10 s reply timeout (shoal.store.redis.SOCKET_TIMEOUT).
MAX_PAUSE_LIMIT = 8.0
#: The scratch key every payload is restored under once, to be checked, before the store is changed.
CHECK_KEY = "restore-check"
#: This tool's connections; a node's are named ``shoal-NAME`` (shoal.node), which this can never be.
CLIENT_NAME = "shoal:store"


class PauseTooShort(ShoalError):
    """Raised when a live store could not be copied within the write pause allowed; nothing was written."""


@dataclass
class Store:
    """An open store: the client, and how to name it to a person."""

    redis: Redis
    where: str


@contextlib.asynccontextmanager
async def open_store(config: NodeConfig, *, create: bool) -> AsyncIterator[Store]:
    """The store a node with ``config`` uses: its Redis URL, or the embedded server of ``data_dir``.

    An embedded store that no server runs for is opened with a server of its own for the time of the call
    (``create``: even if the data directory is new, as when restoring on a new machine).
    """
    server: EmbeddedRedis | None = None
    url = config.redis
    where = redacted(url) if url else ""
    if url is None:
        redis_dir = config.data_dir / "redis"
        url = await asyncio.to_thread(serving, redis_dir)
        where = f"the embedded store in {redis_dir}"
        if url is None:
            if not create and not _has_data(redis_dir):
                raise InvalidInput(f"no store in {redis_dir} (no append-only file there): check --data-dir, "
                                   "or give --redis URL")  # fmt: skip
            server = EmbeddedRedis(config.data_dir, binary=config.redis_server)
            await asyncio.to_thread(server.start)
            url = server.url
            where += " (stopped; opened for this)"
    redis = connect(url, name=CLIENT_NAME, max_connections=4, password_file=config.redis_password_file)
    try:
        try:
            await redis.ping()
        except STORE_DOWN as exc:
            raise StoreUnavailable(f"cannot reach the store at {where}: {exc}") from None
        yield Store(redis, where)
    finally:
        await redis.aclose()
        if server is not None:
            await asyncio.to_thread(server.stop)


def _has_data(redis_dir: Path) -> bool:
    return (redis_dir / "appendonly.aof").exists() or (redis_dir / "appendonlydir").is_dir()


async def _beats(redis: Redis, keys: Keys) -> tuple[float, dict[str, float]]:
    """The Redis clock, and each node's last beat by it."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.zrange(keys.nodes, 0, -1, withscores=True)
        (secs, micros), found = await pipe.execute()
    return secs + micros / 1e6, {name.decode(): float(score) for name, score in found}


async def _connected(redis: Redis, names: set[str]) -> set[str] | None:
    """Which of ``names`` hold a connection to the store (a node names its connections ``shoal-NAME``),
    or None where this Redis does not tell (CLIENT LIST refused, as some hosted services do)."""
    try:
        clients: Any = await redis.client_list()
    except ResponseError:
        return None
    named = (str(c.get("name", "")) for c in clients)
    return {name[len("shoal-") :] for name in named if name.startswith("shoal-")} & names


async def writers(redis: Redis, keys: Keys, within: float) -> list[tuple[str, float]]:
    """Nodes that may write now: connected to the store, or beaten within ``within`` s (so a copy pauses)."""
    now, beats = await _beats(redis, keys)
    found = {n for n, at in beats.items() if now - at <= within} | (await _connected(redis, set(beats)) or set())
    return [(n, max(0.0, now - beats[n])) for n in sorted(found)]


async def running_nodes(redis: Redis, keys: Keys, within: float, interval: float) -> list[tuple[str, float]]:
    """Nodes of the cluster running on this store: those connected to it or, where Redis does not tell,
    those that beat again while this watches (up to 2.5 intervals, and only if some beat was recent).

    A recent beat alone does not say a node runs: a store restored a moment ago holds the beats of the
    backup, and a node killed a second ago left its last one.
    """
    now, beats = await _beats(redis, keys)
    connected = await _connected(redis, set(beats))
    if connected is not None:
        return [(n, max(0.0, now - beats[n])) for n in sorted(connected)]
    first = {n: at for n, at in beats.items() if now - at <= within}
    deadline = time.monotonic() + max(2.0, 2.5 * interval)
    while first and time.monotonic() < deadline:
        await asyncio.sleep(min(0.2, interval / 2))
        now, beats = await _beats(redis, keys)
        moved = [(n, max(0.0, now - at)) for n, at in beats.items() if n in first and at != first[n]]
        if moved:
            return moved
    return []


def _live_text(nodes: list[tuple[str, float]]) -> str:
    shown = ", ".join(f"{name} ({silent:.1f}s ago)" for name, silent in nodes[:5])
    return shown + (f" and {len(nodes) - 5} more" if len(nodes) > 5 else "")


async def task_counts(redis: Redis, keys: Keys) -> dict[str, int]:
    async with redis.pipeline(transaction=False) as pipe:
        for state in TaskState:
            pipe.zcard(keys.state_index(state.name))
        replies = await pipe.execute()
    return {state.name: n for state, n in zip(TaskState, replies, strict=True) if n}


def _match(prefix: str) -> str:
    """A SCAN pattern for every key under ``prefix`` (glob characters in a cluster name taken literally)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"


async def _scan(redis: Redis, prefix: str) -> AsyncIterator[list[bytes]]:
    """Every key under ``prefix`` once, in batches (SCAN may repeat a key; it never misses a stable one)."""
    seen: set[bytes] = set()
    cursor = 0
    while True:
        reply: Any = await redis.scan(cursor, match=_match(prefix), count=SCAN_COUNT)
        cursor, found = reply
        fresh: list[bytes] = [k for k in found if k not in seen]
        seen.update(fresh)
        for i in range(0, len(fresh), BATCH_KEYS):
            yield fresh[i : i + BATCH_KEYS]
        if cursor == 0:
            return


@dataclass(frozen=True)
class BackupReport:
    file: Path
    cluster: str
    keys: int
    payload_bytes: int
    tasks: dict[str, int]
    redis_version: str
    paused_s: float | None  # how long writes waited; None: no node was beating, so none were paused


async def backup(store: Store, cluster: str, path: Path, *, max_pause: float, live_within: float) -> BackupReport:
    """Copy the cluster's keys to a new file at ``path``, consistently (see the module docstring)."""
    keys = Keys(cluster)
    if not 0.1 <= max_pause <= MAX_PAUSE_LIMIT:
        raise InvalidInput(f"--max-pause must be between 0.1 and {MAX_PAUSE_LIMIT:g} seconds")
    redis = store.redis
    writer = backup_file.Writer(path)
    try:
        info: Any = await redis.info("server")
        version = str(info.get("redis_version", "unknown"))
        live = await writers(redis, keys, live_within)
        async with Wire(redis) as wire:  # connected before writes wait
            started = time.monotonic()
            paused = bool(live) and await _pause(redis, max_pause, live)
            try:
                tasks = await task_counts(redis, keys)
                writer.begin(backup_file.Header(cluster, time.time(), version, tasks))
                await _copy(redis, wire, keys.prefix, writer, (started, max_pause) if paused else None)
                paused_s = time.monotonic() - started if paused else None
                if paused_s is not None and paused_s > max_pause:
                    raise _too_long(max_pause, writer.count)
            finally:
                if paused:
                    with contextlib.suppress(*STORE_DOWN, ResponseError):
                        await redis.client_unpause()
        writer.commit()
    except BaseException:
        writer.discard()
        raise
    return BackupReport(path, cluster, writer.count, writer.bytes, tasks, version, paused_s)


async def _pause(redis: Redis, max_pause: float, live: list[tuple[str, float]]) -> bool:
    try:
        await redis.client_pause(int(max_pause * 1000), all=False)  # WRITE: reads go on
    except ResponseError as exc:
        raise InvalidInput(f"this Redis refuses to pause writes ({exc}), and nodes are running on it: "
                           f"{_live_text(live)}; stop them, then back up") from None  # fmt: skip
    return True


def _too_long(max_pause: float, copied: int) -> PauseTooShort:
    return PauseTooShort(f"the store did not fit in a {max_pause:g}s write pause ({copied} keys copied, none "
                         "written): allow a longer one with --max-pause (writes wait that long), or stop the nodes "
                         "first (no pause is needed then)")  # fmt: skip


async def _copy(
    redis: Redis, wire: Wire, prefix: str, writer: backup_file.Writer, pause: tuple[float, float] | None
) -> None:
    """DUMP and PTTL every key, one batch in flight while the replies of the one before are written out;
    ``pause`` (start, longest) gives up once the write pause is over."""
    flight: list[bytes] = []
    async for batch in _scan(redis, prefix):
        await wire.write(b"".join(_DUMP_PTTL % (len(k), k, len(k), k) for k in batch))
        if flight:
            _keep(prefix, flight, await wire.read(2 * len(flight)), writer)
        flight = batch
        if pause is not None and time.monotonic() - pause[0] > pause[1]:
            raise _too_long(pause[1], writer.count)
    if flight:
        _keep(prefix, flight, await wire.read(2 * len(flight)), writer)


_DUMP_PTTL = b"*2\r\n$4\r\nDUMP\r\n$%d\r\n%b\r\n*2\r\n$4\r\nPTTL\r\n$%d\r\n%b\r\n"


def _keep(prefix: str, batch: list[bytes], replies: list[Any], writer: backup_file.Writer) -> None:
    for key, payload, ttl in zip(batch, replies[::2], replies[1::2], strict=True):
        name = key[len(prefix) :]
        if payload is None or ttl == -2 or name in EXCLUDED:  # gone (expired) since the scan, or left out
            continue
        writer.add(name, -1 if ttl < 0 else max(1, int(ttl)), payload)


@dataclass(frozen=True)
class RestoreReport:
    file: Path
    cluster: str
    keys: int
    dropped: int
    tasks: dict[str, int]
    backed_up_at: float


async def restore(
    store: Store,
    summary: backup_file.Summary,
    path: Path,
    *,
    replace: bool,
    force: bool,
    live_within: float,
    interval: float,
) -> RestoreReport:
    """Put a checked backup (``summary`` from backup_file.verify) back; refuse, changing nothing, when nodes
    are running on the store (unless ``force``) or when it holds the cluster already (unless ``replace``)."""
    redis = store.redis
    cluster = summary.header.cluster
    keys = Keys(cluster)
    live = [] if force else await running_nodes(redis, keys, live_within, interval)
    if live:
        raise InvalidInput(f"nodes of cluster {cluster!r} are running on {store.where}: {_live_text(live)}; "
                           "stop them first (or pass --force to restore under them)")  # fmt: skip
    present = await _any_key(redis, keys.prefix)
    if present and not replace:
        raise InvalidInput(f"{store.where} already holds cluster {cluster!r}: restore into an empty store, or pass "
                           "--replace to drop what is there first")  # fmt: skip
    await _check_payloads(redis, keys, summary, path)
    dropped = await _drop(redis, keys.prefix) if present else 0
    restored = 0
    _, records = backup_file.read(path)
    try:
        async with Wire(redis) as wire:
            pending: list[tuple[bytes, ...]] = []
            size = 0
            for r in records:
                ttl = b"0" if r.ttl_ms < 0 else str(r.ttl_ms).encode()
                pending.append((b"RESTORE", keys.prefix.encode() + r.key, ttl, r.payload, b"REPLACE"))
                size += len(r.payload)
                if len(pending) >= BATCH_KEYS or size >= BATCH_BYTES:
                    restored += len(await wire.call(pending))
                    pending, size = [], 0
            if pending:
                restored += len(await wire.call(pending))
    except (*STORE_DOWN, ResponseError, InvalidInput) as exc:
        raise ShoalError(f"the restore stopped after {restored} of {summary.keys} keys ({exc}); the store holds "
                         "part of the backup: run the restore again with --replace") from None  # fmt: skip
    tasks = await task_counts(redis, keys)
    return RestoreReport(path, cluster, restored, dropped, tasks, summary.header.created_at)


async def _any_key(redis: Redis, prefix: str) -> bool:
    cursor = 0
    while True:
        cursor, found = await redis.scan(cursor, match=_match(prefix), count=SCAN_COUNT)
        if found:
            return True
        if cursor == 0:
            return False


async def _check_payloads(redis: Redis, keys: Keys, summary: backup_file.Summary, path: Path) -> None:
    """Restore every payload once under one scratch key, each replacing the one before, then drop it, so
    that one this Redis cannot take is refused before the store is changed: written by a newer Redis, or
    damaged or forged inside (a server with ``sanitize-dump-payload yes``, as the embedded store runs,
    checks each payload whole; one without would take it and might crash when the key is read)."""
    scratch = (keys.prefix + CHECK_KEY).encode()
    _, records = backup_file.read(path)
    batch: list[backup_file.Record] = []
    size = 0
    try:
        async with Wire(redis) as wire:
            for record in records:
                batch.append(record)
                size += len(record.payload)
                if len(batch) >= BATCH_KEYS or size >= BATCH_BYTES:
                    await _check_batch(redis, wire, scratch, batch, summary, path)
                    batch, size = [], 0
            if batch:
                await _check_batch(redis, wire, scratch, batch, summary, path)
    finally:
        with contextlib.suppress(*STORE_DOWN, ResponseError):
            await redis.delete(scratch)


async def _check_batch(redis: Redis, wire: Wire, scratch: bytes, batch: list[backup_file.Record],
                       summary: backup_file.Summary, path: Path) -> None:  # fmt: skip
    try:
        await wire.call([(b"RESTORE", scratch, b"0", r.payload, b"REPLACE") for r in batch])
        return
    except ResponseError:
        pass
    for record in batch:  # one was refused: which?
        try:
            await redis.restore(scratch, 0, record.payload, replace=True)
        except ResponseError as exc:
            raise await _refused(redis, record, exc, summary, path) from None
    raise ShoalError("this Redis refused a key of the backup, then took each one alone; try the restore again")


async def _refused(redis: Redis, record: backup_file.Record, exc: ResponseError, summary: backup_file.Summary,
                   path: Path) -> InvalidInput:  # fmt: skip
    info: Any = await redis.info("server")
    this = f"this Redis ({info.get('redis_version')})"
    if "version" in str(exc):
        return InvalidInput(f"{this} cannot take the backup's keys, written by Redis {summary.header.redis_version} "
                            f"({exc}): restore into that version or a newer one; nothing was restored")  # fmt: skip
    return InvalidInput(f"{path} holds a damaged key {record.key.decode(errors='replace')!r}: {this} refused its "
                        f"payload ({exc}); nothing was restored")  # fmt: skip


async def _drop(redis: Redis, prefix: str) -> int:
    dropped = 0
    async for batch in _scan(redis, prefix):
        dropped += int(await redis.unlink(*batch))
    return dropped
