"""``shoal cache ...``: read, write and remove values of the cluster cache, and see each node's shard.

Values are bytes: ``get`` writes them unchanged to stdout (or ``--output``; a newline is added only when
stdout is a terminal), ``set`` takes them from the argument (as the shell passed it), a file, or stdin
(``-``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import BinaryIO

import click
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from shoal.cli import _output as o
from shoal.cli._api import BadInput, CommandError, api_options, client, handle_errors, json_option

#: Largest value ``set`` reads from a file or stdin: the largest ``cache_max_value`` a node accepts.
MAX_VALUE_BYTES = 512 * 1024 * 1024


@click.group("cache")
@api_options
def cache_group() -> None:
    """Use the cluster cache: values spread over the live nodes, each kept by its owners."""


@cache_group.command("get")
@click.argument("key")
@click.option("--output", "-o", "output", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              default=None, help="File to write the value to [default: stdout].")  # fmt: skip
@api_options
@handle_errors
def get(key: str, output: Path | None) -> None:
    """Print the value of KEY (bytes, unchanged; a newline added on a terminal); exit 1 if the cache has no
    fresh value for it."""
    with client() as c:
        value = c.cache_get(key)
    if value is None:
        raise CommandError(f"no value in the cache for key {key!r}")
    if output is not None:
        output.write_bytes(value)
        return
    o.write_data(value)


@cache_group.command("set")
@click.argument("key")
@click.argument("value", required=False)
@click.option("--file", "-f", "from_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Read the value from this file.")  # fmt: skip
@click.option("--ttl", type=float, default=None, metavar="SECONDS", help="Fresh this long [default: until evicted].")
@api_options
@handle_errors
def set_(key: str, value: str | None, from_file: Path | None, ttl: float | None) -> None:
    """Store VALUE under KEY on every owner; VALUE '-' reads stdin, --file reads a file."""
    if (value is None) == (from_file is None):
        raise BadInput("give the value once: as the VALUE argument, '-' for stdin, or --file FILE")
    if from_file is not None:
        with from_file.open("rb") as f:
            data = _read_bounded(f, str(from_file))
    elif value == "-":
        data = _read_bounded(sys.stdin.buffer, "stdin")
    else:
        assert value is not None
        data = os.fsencode(value)
    with client() as c:
        c.cache_set(key, data, ttl)
    o.err.print(f"stored {len(data)} bytes under {key!r}" + (f" for {ttl:g}s" if ttl is not None else ""))


@cache_group.command("rm")
@click.argument("key")
@api_options
@handle_errors
def rm(key: str) -> None:
    """Remove KEY from every owner; exit 1 if none had it."""
    with client() as c:
        removed = c.cache_delete(key)
    if not removed:
        raise CommandError(f"no value in the cache for key {key!r}")
    o.err.print(f"removed {key!r}")


@cache_group.command("stats")
@api_options
@json_option
@handle_errors
def stats(as_json: bool) -> None:
    """Each live node's shard: items, bytes used of its capacity, hits, misses, hit ratio, evictions."""
    with client() as c:
        nodes = c.cache_stats()
    if as_json:
        o.print_json({"nodes": nodes})
        return
    o.out.print(stats_table(nodes))


def _read_bounded(f: BinaryIO, what: str) -> bytes:
    data = f.read(MAX_VALUE_BYTES + 1)
    if len(data) > MAX_VALUE_BYTES:
        raise BadInput(f"the value from {what} is over {MAX_VALUE_BYTES} bytes, more than any node accepts")
    return data


def stats_table(nodes: dict[str, dict[str, int]]) -> RenderableType:
    table: Table = o.plain_table()
    for column in ("NODE", "ITEMS", "USED / CAPACITY", "HITS", "MISSES", "HIT RATIO", "EVICTIONS"):
        table.add_column(column, no_wrap=True, justify="left" if column == "NODE" else "right")
    total: dict[str, int] = {}
    for name in sorted(nodes):
        s = nodes[name]
        for k, v in s.items():
            total[k] = total.get(k, 0) + int(v)
        table.add_row(name, *_cells(s))
    if len(nodes) > 1:
        table.add_row(Text("all", style="bold"), *_cells(total))
    if not nodes:
        return Text("no live node reports a cache shard", style="yellow")
    return table


def _cells(s: dict[str, int]) -> list[str]:
    used, capacity = int(s.get("bytes", 0)), int(s.get("capacity", 0))
    return [
        str(s.get("items", 0)),
        f"{o.size(used)} / {o.size(capacity)} ({o.share(used, capacity)})",
        str(s.get("hits", 0)),
        str(s.get("misses", 0)),
        o.hit_ratio(s),
        str(s.get("evictions", 0)),
    ]
