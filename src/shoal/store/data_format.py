"""Whether a server can read the data directory it is about to open, told from the files themselves.

A redis-server or valkey-server reads the data of its own and older versions, never of newer ones, and
the embedded store may meet a data directory written by a newer server (a node moved back to an older
shoal, a ``redis_server`` pointed at an older binary, a wheel missing on another machine). Left to the
server, that data is opened empty (Redis 6 does not see Redis 7's ``appendonlydir/``) or the server exits
with a line in its log ("Can't handle RDB format version 11"). ``refusal`` says instead, in one line,
which server wrote the data and which cannot read it.

The append-only file's base (named in ``appendonlydir/appendonly.aof.manifest``, or the single
``appendonly.aof`` of Redis 6) starts as an RDB file does: ``REDIS0011`` or ``VALKEY080`` (magic and
format version), then aux fields naming the writer (``redis-ver``, ``valkey-ver``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

#: The newest RDB format each server line reads (and writes): (product, the line's first version) -> format.
#: A server newer than the newest line of its product is not judged here (it answers for itself).
READS_UP_TO: dict[tuple[str, tuple[int, int]], int] = {
    ("Redis", (6, 2)): 9,
    ("Redis", (7, 0)): 10,
    ("Redis", (7, 2)): 11,
    ("Redis", (7, 4)): 12,
    ("Redis", (8, 0)): 12,
    ("Valkey", (7, 2)): 11,
    ("Valkey", (8, 0)): 11,
    ("Valkey", (8, 1)): 11,
    ("Valkey", (9, 0)): 80,
}
#: The newest known line of each product: a server past its minor version is one this table cannot judge.
_NEWEST = {product: max(line for p, line in READS_UP_TO if p == product) for product, _ in READS_UP_TO}
#: How much of a file's head is read: the magic and the first aux fields fit in far less.
HEAD_BYTES = 512
_AUX = 0xFA
_MANIFEST_LINE = re.compile(r"file (\S+) seq \d+ type b")


class Server(Protocol):
    """What is known of the server about to open the data (shoal.store.embedded.ServerBinary)."""

    @property
    def product(self) -> str: ...  # "Redis" or "Valkey"

    @property
    def version(self) -> tuple[int, ...]: ...


@dataclass(frozen=True)
class DataFormat:
    """The format of a data directory's base file, and the server that wrote it when the file says."""

    rdb_version: int
    writer: str | None  # "Valkey 8.1.8", "Redis 7.0.15"; None when the file names none

    def __str__(self) -> str:
        return f"{self.writer or 'a newer server'} (RDB format {self.rdb_version})"


def refusal(redis_dir: Path, server: Server) -> str | None:
    """Why ``server`` (named as ``str(server)`` says) must not open ``redis_dir``, in one line, or None when it
    can (or when nothing says it cannot: an empty directory, a base file without an RDB head, a server newer
    than READS_UP_TO knows)."""
    if server.product == "Redis" and server.version < (7, 0) and (redis_dir / "appendonlydir").is_dir():
        written = data_format(redis_dir)
        writer = written.writer if written and written.writer else "Redis 7 or newer"
        return (f"{redis_dir} was written by {writer}, which {server} cannot read (it would start empty): "
                "install a newer server or point redis_server at one")  # fmt: skip
    limit = reads_up_to(server)
    written = data_format(redis_dir)
    if limit is None or written is None or written.rdb_version <= limit:
        return None
    return (f"{redis_dir} was written by {written}, which {server} cannot read (it reads up to RDB format "
            f"{limit}): install a server as new as the one that wrote it or point redis_server at one")  # fmt: skip


def reads_up_to(server: Server) -> int | None:
    """The newest RDB format ``server`` reads; None for a product or version newer than the table knows."""
    line = tuple(server.version[:2])
    newest = _NEWEST.get(server.product)
    if newest is None or line > newest:
        return None
    known = [(first, fmt) for (product, first), fmt in READS_UP_TO.items() if product == server.product]
    fitting = [fmt for first, fmt in sorted(known) if first <= line]
    return fitting[-1] if fitting else None


def data_format(redis_dir: Path) -> DataFormat | None:
    """The format of the append-only file's base in ``redis_dir``, or None if there is none with an RDB head."""
    base = _base_file(redis_dir)
    if base is None:
        return None
    try:
        with base.open("rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError:
        return None
    return parse_head(head)


def _base_file(redis_dir: Path) -> Path | None:
    """The base of the append-only file: the one the manifest of ``appendonlydir/`` names (Redis 7 and
    Valkey), else the single ``appendonly.aof`` of Redis 6 (which starts with an RDB head when preambled)."""
    folder = redis_dir / "appendonlydir"
    try:
        manifests = sorted(folder.glob("*.manifest"))
    except OSError:
        manifests = []
    for manifest in manifests:
        try:
            lines = manifest.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            match = _MANIFEST_LINE.match(line)
            if match and "/" not in match.group(1):
                return folder / match.group(1)
    single = redis_dir / "appendonly.aof"
    return single if single.is_file() else None


def parse_head(head: bytes) -> DataFormat | None:
    """The RDB format version of a file starting with ``head``, and its writer from the aux fields."""
    match = re.match(rb"(REDIS|VALKEY)(\d{3,4})", head)
    if match is None or match.end() != 9:
        return None
    aux = _aux_fields(head[9:])
    if "valkey-ver" in aux:
        writer: str | None = f"Valkey {aux['valkey-ver']}"
    elif "redis-ver" in aux:
        writer = f"Redis {aux['redis-ver']}"
    else:
        writer = None
    return DataFormat(int(match.group(2)), writer)


def _aux_fields(data: bytes) -> dict[str, str]:
    """The aux fields (opcode 0xFA, then a name and a value) at the start of ``data``, as far as they are
    whole in it."""
    fields: dict[str, str] = {}
    at = 0
    while at < len(data) and data[at] == _AUX:
        name, at = _string(data, at + 1)
        value, at = _string(data, at)
        if name is None or value is None:
            break
        fields[name] = value
    return fields


def _string(data: bytes, at: int) -> tuple[str | None, int]:
    """A length-prefixed RDB string at ``at`` (6-, 14- or 32-bit length, or an integer encoding)."""
    if at >= len(data):
        return None, at
    first = data[at]
    kind = first >> 6
    if kind == 0:
        size, at = first & 0x3F, at + 1
    elif kind == 1:
        if at + 2 > len(data):
            return None, at
        size, at = ((first & 0x3F) << 8) | data[at + 1], at + 2
    elif kind == 2 and first == 0x80:
        if at + 5 > len(data):
            return None, at
        size, at = int.from_bytes(data[at + 1 : at + 5], "big"), at + 5
    elif kind == 3 and (first & 0x3F) in (0, 1, 2):  # an integer of 1, 2 or 4 bytes
        width = 1 << (first & 0x3F)
        if at + 1 + width > len(data):
            return None, at
        return str(int.from_bytes(data[at + 1 : at + 1 + width], "little", signed=True)), at + 1 + width
    else:
        return None, at
    if at + size > len(data):
        return None, at
    return data[at : at + size].decode("ascii", "replace"), at + size
