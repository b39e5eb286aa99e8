"""What a data directory's files say about the server that wrote them, and which servers refuse to open them
(shoal.store.data_format). No server runs here: the files are made as each server writes them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from shoal.store.data_format import DataFormat, data_format, parse_head, reads_up_to, refusal


@dataclass(frozen=True)
class Server:
    product: str
    version: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.product} {'.'.join(map(str, self.version))}"


REDIS_6_2, REDIS_7_0 = Server("Redis", (6, 2, 14)), Server("Redis", (7, 0, 15))
VALKEY_8_1, VALKEY_9_0 = Server("Valkey", (8, 1, 8)), Server("Valkey", (9, 0, 0))


def aux(name: str, value: str | int) -> bytes:
    """An RDB aux field as servers write it: a short string, or an 8-bit integer (``redis-bits``)."""
    encoded = bytes([0xC0, value]) if isinstance(value, int) else bytes([len(value)]) + value.encode()
    return b"\xfa" + bytes([len(name)]) + name.encode() + encoded


def rdb_head(magic: bytes, **fields: str | int) -> bytes:
    return magic + b"".join(aux(name.replace("_", "-"), value) for name, value in fields.items()) + b"\xfe\x00"


VALKEY_8_1_HEAD = rdb_head(b"REDIS0011", valkey_ver="8.1.8", redis_bits=64)
REDIS_7_0_HEAD = rdb_head(b"REDIS0010", redis_ver="7.0.15", redis_bits=64)


def data_dir(tmp_path: Path, head: bytes, *, multi_part: bool = True) -> Path:
    """A data directory whose append-only file's base starts with ``head``: Redis 7 and Valkey keep it in
    ``appendonlydir/`` with a manifest, Redis 6 as one ``appendonly.aof``."""
    redis_dir = tmp_path / "redis"
    if multi_part:
        folder = redis_dir / "appendonlydir"
        folder.mkdir(parents=True)
        (folder / "appendonly.aof.manifest").write_text(
            "file appendonly.aof.3.base.rdb seq 3 type b\nfile appendonly.aof.3.incr.aof seq 3 type i\n"
        )
        (folder / "appendonly.aof.3.base.rdb").write_bytes(head + b"\xff" + bytes(8))
        (folder / "appendonly.aof.3.incr.aof").write_bytes(b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n")
    else:
        redis_dir.mkdir(parents=True)
        (redis_dir / "appendonly.aof").write_bytes(head + b"\xff" + bytes(8))
    return redis_dir


def test_the_head_of_a_base_file_names_its_format_and_writer() -> None:
    assert parse_head(VALKEY_8_1_HEAD) == DataFormat(11, "Valkey 8.1.8")
    assert parse_head(REDIS_7_0_HEAD) == DataFormat(10, "Redis 7.0.15")
    assert parse_head(rdb_head(b"VALKEY080", valkey_ver="9.0.0")) == DataFormat(80, "Valkey 9.0.0")
    assert parse_head(rdb_head(b"REDIS0009")) == DataFormat(9, None)
    assert parse_head(b"*2\r\n$6\r\nSELECT\r\n") is None, "an append-only file without an RDB preamble"
    assert parse_head(VALKEY_8_1_HEAD[:24]) == DataFormat(11, None), "a field cut short is not read"


def test_valkey_8_1_data_is_refused_by_redis_7_0_in_one_line_naming_both(tmp_path: Path) -> None:
    redis_dir = data_dir(tmp_path, VALKEY_8_1_HEAD)
    said = refusal(redis_dir, REDIS_7_0)
    assert said is not None and "\n" not in said
    assert said.startswith(f"{redis_dir} was written by Valkey 8.1.8 (RDB format 11), which Redis 7.0.15 cannot read")
    assert "reads up to RDB format 10" in said, said
    assert refusal(redis_dir, VALKEY_8_1) is None
    assert refusal(redis_dir, VALKEY_9_0) is None


@pytest.mark.parametrize("server", [VALKEY_8_1, REDIS_7_0], ids=str)
def test_data_of_the_servers_shoal_ran_on_before_opens_on_newer_ones(tmp_path: Path, server: Server) -> None:
    redis_6 = data_dir(tmp_path / "6.2", rdb_head(b"REDIS0009", redis_ver="6.2.14"), multi_part=False)
    redis_7 = data_dir(tmp_path / "7.0", REDIS_7_0_HEAD)
    assert refusal(redis_6, server) is None
    assert refusal(redis_7, server) is None


def test_redis_6_never_opens_the_append_only_folder_of_a_newer_server_empty(tmp_path: Path) -> None:
    redis_dir = data_dir(tmp_path, VALKEY_8_1_HEAD)
    said = refusal(redis_dir, REDIS_6_2)
    assert said is not None and "written by Valkey 8.1.8, which Redis 6.2.14 cannot read" in said, said
    (tmp_path / "bare" / "redis" / "appendonlydir").mkdir(parents=True)
    said = refusal(tmp_path / "bare" / "redis", REDIS_6_2)
    assert said is not None and "written by Redis 7 or newer" in said, "no base file: the folder says enough"


def test_newer_formats_are_refused_by_valkey_8_1(tmp_path: Path) -> None:
    redis_7_4 = data_dir(tmp_path / "7.4", rdb_head(b"REDIS0012", redis_ver="7.4.2"))
    valkey_9 = data_dir(tmp_path / "9.0", rdb_head(b"VALKEY080", valkey_ver="9.0.0"))
    for redis_dir, writer in [(redis_7_4, "Redis 7.4.2 (RDB format 12)"), (valkey_9, "Valkey 9.0.0 (RDB format 80)")]:
        said = refusal(redis_dir, VALKEY_8_1)
        assert said is not None and f"written by {writer}, which Valkey 8.1.8 cannot read" in said, said


def test_a_server_newer_than_the_table_and_a_directory_without_a_base_are_not_judged(tmp_path: Path) -> None:
    assert reads_up_to(Server("Valkey", (9, 1, 0))) is None and reads_up_to(Server("Redis", (8, 4, 0))) is None
    assert reads_up_to(REDIS_7_0) == 10 and reads_up_to(Server("Redis", (7, 2, 4))) == 11
    assert data_format(tmp_path) is None
    assert refusal(tmp_path, REDIS_7_0) is None
    plain = data_dir(tmp_path / "plain", b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n")
    assert data_format(plain) is None and refusal(plain, REDIS_7_0) is None
