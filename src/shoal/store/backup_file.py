"""The backup file: one cluster's keys as Redis DUMP payloads, checked end to end before any is restored.

Layout (integers big-endian)::

    b"SHOAL-BACKUP\\n"                                   magic
    u32 n, n bytes of JSON                              header: format, cluster, created_at, redis_version, tasks
    per key: u32 k, k bytes (the key after the prefix), i64 ttl in ms (-1: none), u32 p, p bytes (DUMP payload)
    u32 0                                               end of keys
    u64 count, 32 bytes                                 number of keys, SHA-256 of every byte before the count

A restore file is whatever an operator hands over, so everything read is bounded before it is read (header,
key and payload sizes, TTLs) and a file that is short, long, garbled or not a backup is refused as a whole.
The checksum tells damage, not forgery: what is inside a payload is for the Redis restoring it to check
(shoal.store.backup has it do so for every key before it changes anything).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from shoal.errors import InvalidInput

MAGIC = b"SHOAL-BACKUP\n"
FORMAT = 1
MAX_HEADER = 64 * 1024
#: Longer than any key shoal writes (a uuid or a node name of at most 64 characters after a short word).
MAX_KEY = 1024
#: Redis's own limit on one bulk string (proto-max-bulk-len).
MAX_PAYLOAD = 512 * 1024 * 1024
MAX_TTL_MS = 100 * 365 * 86400 * 1000
#: A DUMP payload ends with the RDB version (2 bytes) and a CRC64 (8 bytes).
PAYLOAD_FOOTER = 10

_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")


@dataclass(frozen=True)
class Record:
    """One key: its name after the cluster prefix, its remaining time to live (-1: none), its DUMP payload."""

    key: bytes
    ttl_ms: int
    payload: bytes


@dataclass(frozen=True)
class Header:
    """What the file says about itself, written before the keys."""

    cluster: str
    created_at: float
    redis_version: str
    tasks: dict[str, int] = field(default_factory=dict)
    format: int = FORMAT

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "cluster": self.cluster, "created_at": self.created_at,
                "redis_version": self.redis_version, "tasks": self.tasks}  # fmt: skip


@dataclass(frozen=True)
class Summary:
    """A whole file, checked: its header, and how many keys and payload bytes it holds."""

    header: Header
    keys: int
    payload_bytes: int
    file_bytes: int


class Writer:
    """Writes a backup next to ``path`` and moves it into place only once complete (mode 0600: task data).

    Opened before the copy starts, so a bad path is refused before the store is touched; ``begin`` writes
    the header, ``add`` each key, ``commit`` seals it, ``discard`` leaves nothing behind."""

    def __init__(self, path: Path) -> None:
        if path.exists():
            raise InvalidInput(f"{path} already exists: choose a new file name (a backup never overwrites one)")
        self.path = path
        self.partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        try:
            fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise InvalidInput(f"cannot write {path}: {exc.strerror}") from None
        self.file: IO[bytes] = os.fdopen(fd, "wb")
        self.digest = hashlib.sha256()
        self.count = 0
        self.bytes = 0

    def begin(self, header: Header) -> None:
        head = orjson.dumps(header.to_json())
        self._write(MAGIC + _U32.pack(len(head)) + head)

    def _write(self, data: bytes) -> None:
        self.digest.update(data)
        self.file.write(data)

    def add(self, key: bytes, ttl_ms: int, payload: bytes) -> None:
        self._write(b"".join((_U32.pack(len(key)), key, _I64.pack(ttl_ms), _U32.pack(len(payload)), payload)))
        self.count += 1
        self.bytes += len(payload)

    def commit(self) -> None:
        """Close the key list, seal the file with its checksum, and give it its name."""
        self._write(_U32.pack(0))
        self.file.write(_U64.pack(self.count) + self.digest.digest())
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if self.path.exists():  # appeared meanwhile: never replace a file that may be an older backup
            raise InvalidInput(f"{self.path} appeared while the backup was taken; nothing was written")
        self.partial.rename(self.path)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            self.partial.unlink()


class _Reader:
    """Reads exactly what is asked for, hashing it, and calls any shortfall a truncated file."""

    def __init__(self, file: IO[bytes], name: str) -> None:
        self.file = file
        self.name = name
        self.digest = hashlib.sha256()
        self.offset = 0

    def raw(self, n: int) -> bytes:
        data = self.file.read(n)
        if len(data) != n:
            raise self.bad("it ends too early (truncated)")
        self.offset += n
        return data

    def read(self, n: int) -> bytes:
        data = self.raw(n)
        self.digest.update(data)
        return data

    def bad(self, why: str) -> InvalidInput:
        return InvalidInput(f"{self.name} is not a usable shoal backup: {why} (at byte {self.offset})")


def _header(r: _Reader) -> Header:
    magic = r.file.read(len(MAGIC))
    if magic != MAGIC:
        raise InvalidInput(f"{r.name} is not a shoal backup (it does not start with {MAGIC.strip().decode()})")
    r.digest.update(magic)
    r.offset += len(magic)
    size = _U32.unpack(r.read(4))[0]
    if size > MAX_HEADER:
        raise r.bad(f"its header claims {size} bytes (at most {MAX_HEADER})")
    try:
        data = orjson.loads(r.read(size))
    except orjson.JSONDecodeError:
        raise r.bad("its header is not JSON") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise r.bad(f"format {found!r} is not one this shoal reads (it reads format {FORMAT})")
    cluster, created, version, tasks = (data.get(k) for k in ("cluster", "created_at", "redis_version", "tasks"))
    if not isinstance(cluster, str) or not cluster or len(cluster) > 200 or any(c in cluster for c in " :{}\n\t"):
        raise r.bad("its header names no valid cluster")
    if not isinstance(created, int | float) or not isinstance(version, str) or not isinstance(tasks, dict):
        raise r.bad("its header lacks created_at, redis_version or tasks")
    counts = {str(k): v for k, v in tasks.items() if isinstance(v, int) and not isinstance(v, bool)}
    return Header(cluster=cluster, created_at=float(created), redis_version=version[:64], tasks=counts)


def _record(r: _Reader, key_size: int) -> Record:
    if key_size > MAX_KEY:
        raise r.bad(f"a key of {key_size} bytes (at most {MAX_KEY})")
    key = r.read(key_size)
    ttl_ms = _I64.unpack(r.read(8))[0]
    if ttl_ms != -1 and not 0 < ttl_ms <= MAX_TTL_MS:
        raise r.bad(f"key {key!r} has a time to live of {ttl_ms} ms")
    size = _U32.unpack(r.read(4))[0]
    if not PAYLOAD_FOOTER < size <= MAX_PAYLOAD:
        raise r.bad(f"key {key!r} has a payload of {size} bytes")
    return Record(key, ttl_ms, r.read(size))


def read(path: Path) -> tuple[Header, Iterator[Record]]:
    """The header, and the records one at a time; the iterator raises InvalidInput on anything amiss,
    the checksum last, so a caller that must change nothing on a bad file checks it whole first (``verify``)."""
    try:
        file = path.open("rb")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    r = _Reader(file, str(path))
    try:
        header = _header(r)
    except BaseException:
        file.close()
        raise

    def records() -> Iterator[Record]:
        with file:
            count = 0
            while key_size := _U32.unpack(r.read(4))[0]:
                yield _record(r, key_size)
                count += 1
            expected = r.digest.digest()
            stated, digest = _U64.unpack(r.raw(8))[0], r.raw(32)
            if digest != expected:
                raise r.bad("its checksum does not match (the file was changed or damaged)")
            if stated != count or file.read(1):
                raise r.bad("its key count or its length is wrong")

    return header, records()


def verify(path: Path) -> Summary:
    """Read the whole file and check it (bounds, structure, checksum) without keeping it in memory."""
    header, records = read(path)
    keys = size = 0
    for record in records:
        keys += 1
        size += len(record.payload)
    return Summary(header=header, keys=keys, payload_bytes=size, file_bytes=path.stat().st_size)
