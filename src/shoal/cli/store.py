"""``shoal store backup|restore|verify|stats``: a cluster's store to a file and back, and what it holds,
without knowing Redis.

They find the store as a node does (``--redis`` URL, else the embedded server of ``--data-dir``, from
flags, ``SHOAL_*`` variables or ``--config FILE``), so running them with a node's configuration reaches that
node's store. Refusals (a missing or damaged file, nodes still running, a store that is not empty) exit 2
and change nothing; a store that cannot be reached exits 1.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from shoal import config as config_module
from shoal.cli import _output as o
from shoal.cli._api import BadInput, CommandError, handle_errors
from shoal.errors import InvalidInput, ShoalError, StoreFault
from shoal.store.client import translating

T = TypeVar("T")
F = Callable[..., Any]


def _store_options(fn: F) -> F:
    fn = click.option("--json", "as_json", is_flag=True, help="print the outcome as JSON")(fn)
    fn = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                      help="the node's data directory, for the embedded store (env SHOAL_DATA_DIR) [default: .shoal]",
                      )(fn)  # fmt: skip
    fn = click.option("--redis-password-file", type=click.Path(dir_okay=False, path_type=Path),
                      help="the --redis store's password, in a file (env SHOAL_REDIS_PASSWORD_FILE)")(fn)  # fmt: skip
    fn = click.option("--redis", metavar="URL", help="the cluster's Redis (env SHOAL_REDIS) [default: embedded]")(fn)
    fn = click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), envvar="SHOAL_CONFIG",
                      help="a node's TOML config file, to reach its store (env SHOAL_CONFIG)")(fn)  # fmt: skip
    return fn


def _config(config_file: Path | None, **flags: Any) -> config_module.NodeConfig:
    try:
        return config_module.load(config_file, os.environ, flags)
    except InvalidInput as exc:
        raise click.UsageError(exc.message) from None


def _live_within(config: config_module.NodeConfig) -> float:
    """A node silent for twice its death sentence is surely not running."""
    return 2 * config.heartbeat_interval * config.dead_after


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(translating(coro))  # the copy's raw connection raises redis-py's errors
    except InvalidInput as exc:
        raise BadInput(exc.message) from None
    except StoreFault as exc:  # an operator at the store's side is told what it said
        raise CommandError(f"the store refused: {exc.detail or exc.message}") from None
    except ShoalError as exc:
        raise CommandError(str(exc)) from None  # a store error's str() adds what the store said


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit}"


def _tasks(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    detail = ", ".join(f"{state} {n}" for state, n in counts.items())
    return f"{total} task(s)" + (f" ({detail})" if detail else "")


@click.group("store")
def store_group() -> None:
    """Back up, restore and size up the cluster's store (tasks, results, nodes, timeline).

    \b
    shoal store backup FILE      copy the store of a running (or stopped) cluster
    shoal store verify FILE      check a backup file and say what it holds
    shoal store restore FILE     put it back into a stopped cluster's store
    shoal store stats            what the store runs, holds and keeps
    """


@store_group.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cluster", metavar="NAME", help="the cluster to back up (env SHOAL_CLUSTER) [default: shoal]")
@click.option("--max-pause", type=click.FloatRange(0.1, 8.0), default=5.0, show_default=True, metavar="SECONDS",
              help="while nodes run, writes wait (reads go on) for the copy; give up after this (max 8)")  # fmt: skip
@_store_options
@handle_errors
def backup_command(file: Path, cluster: str | None, max_pause: float, config_file: Path | None, redis: str | None,
                   redis_password_file: Path | None, data_dir: Path | None, as_json: bool) -> None:  # fmt: skip
    """Copy the cluster's store to a new FILE, consistently, while it runs."""
    from shoal.store import backup

    config = _config(config_file, redis=redis, redis_password_file=redis_password_file, data_dir=data_dir,
                     cluster=cluster)  # fmt: skip
    if file.exists():
        raise BadInput(f"{file} already exists: choose a new file name (a backup never overwrites one)")

    async def go() -> tuple[backup.BackupReport, str]:
        async with backup.open_store(config, create=False) as store:
            report = await backup.backup(store, config.cluster, file, max_pause=max_pause,
                                         live_within=_live_within(config))  # fmt: skip
            return report, store.where

    report, where = _run(go())
    if as_json:
        o.print_json({"file": str(report.file), "cluster": report.cluster, "store": where, "keys": report.keys,
                      "bytes": report.payload_bytes, "tasks": report.tasks, "redis_version": report.redis_version,
                      "paused_s": report.paused_s})  # fmt: skip
        return
    paused = "no node was running" if report.paused_s is None else f"writes waited {report.paused_s:.2f}s"
    click.echo(f"backed up cluster {report.cluster!r} from {where} to {report.file}: {report.keys} keys "
               f"({_size(report.payload_bytes)}), {_tasks(report.tasks)}; {paused}")  # fmt: skip


@store_group.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print what the file holds as JSON")
@handle_errors
def verify_command(file: Path, as_json: bool) -> None:
    """Check a backup FILE whole and say what it holds.

    Reads every byte (format, sizes, checksum); touches no store.
    """
    from shoal.store import backup_file

    try:
        summary = backup_file.verify(file)
    except InvalidInput as exc:
        raise BadInput(exc.message) from None
    h = summary.header
    if as_json:
        o.print_json({**h.to_json(), "keys": summary.keys, "bytes": summary.file_bytes, "ok": True})
        return
    click.echo(f"{file}: a good backup of cluster {h.cluster!r}, taken {o.when(h.created_at)} from Redis "
               f"{h.redis_version}: {summary.keys} keys ({_size(summary.file_bytes)}), {_tasks(h.tasks)}")  # fmt: skip


@store_group.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="drop what the store holds of the cluster first")
@click.option("--force", is_flag=True, help="restore even though nodes are running on the store")
@_store_options
@handle_errors
def restore_command(file: Path, replace: bool, force: bool, config_file: Path | None, redis: str | None,
                    redis_password_file: Path | None, data_dir: Path | None, as_json: bool) -> None:  # fmt: skip
    """Put the cluster's store back from FILE; then start the nodes.

    The whole file is checked before the store is touched. Tasks that were placed on nodes when the backup
    was taken (INQUEUE, RUNNING) run again once the nodes start.
    """
    from shoal.store import backup, backup_file

    config = _config(config_file, redis=redis, redis_password_file=redis_password_file, data_dir=data_dir)
    try:
        summary = backup_file.verify(file)
    except InvalidInput as exc:
        raise BadInput(exc.message) from None
    if (
        "cluster" in config.sources
        and config.sources["cluster"] != "default"
        and config.cluster != summary.header.cluster
    ):
        raise BadInput(f"{file} holds cluster {summary.header.cluster!r}, not {config.cluster!r}")

    async def go() -> tuple[backup.RestoreReport, str]:
        async with backup.open_store(config, create=True) as store:
            report = await backup.restore(
                store, summary, file, replace=replace, force=force,
                live_within=_live_within(config), interval=config.heartbeat_interval,
            )  # fmt: skip
            return report, store.where

    report, where = _run(go())
    again = report.tasks.get("INQUEUE", 0) + report.tasks.get("RUNNING", 0)
    if as_json:
        o.print_json({"file": str(report.file), "cluster": report.cluster, "store": where, "keys": report.keys,
                      "dropped": report.dropped, "tasks": report.tasks, "to_run_again": again,
                      "backed_up_at": report.backed_up_at})  # fmt: skip
        return
    dropped = f"; dropped {report.dropped} keys first" if report.dropped else ""
    click.echo(f"restored cluster {report.cluster!r} into {where}: {report.keys} keys, {_tasks(report.tasks)} "
               f"as of {o.when(report.backed_up_at)}{dropped}")  # fmt: skip
    if again:
        click.echo(f"{again} task(s) were on nodes at backup time: they run again once the nodes start")


@store_group.command("stats")
@click.option("--cluster", metavar="NAME", help="the cluster whose tasks to count (env SHOAL_CLUSTER) [default: shoal]")
@click.option("--retention", metavar="DURATION",
              help="the retention to show, as the nodes' (env SHOAL_RETENTION) [default: 7d]")  # fmt: skip
@_store_options
@handle_errors
def stats_command(cluster: str | None, retention: str | None, config_file: Path | None, redis: str | None,
                  redis_password_file: Path | None, data_dir: Path | None, as_json: bool) -> None:  # fmt: skip
    """What the store runs, its memory and keys, the cluster's tasks by state, and what retention keeps.

    The figures of ``GET /api/v1/store``, read from the store itself, so it works with the nodes down.
    """
    from shoal.keys import Keys
    from shoal.store import backup
    from shoal.store.redis import database_of
    from shoal.store.stats import StoreStats, read_stats
    from shoal.store.tasks import TaskStore

    config = _config(config_file, redis=redis, redis_password_file=redis_password_file, data_dir=data_dir,
                     cluster=cluster, retention=retention)  # fmt: skip

    async def go() -> tuple[StoreStats, str]:
        async with backup.open_store(config, create=False) as store:
            keys = Keys(config.cluster, db=database_of(store.redis))
            tasks = TaskStore(store.redis, keys, result_max_bytes=config.result_max_bytes)
            return await read_stats(tasks, config.retention), store.where

    stats, where = _run(go())
    if as_json:
        o.print_json(stats.to_json())
        return
    click.echo(f"store of cluster {config.cluster!r}: {where}")
    table = o.plain_table()
    table.add_column("FIGURE")
    table.add_column("VALUE", overflow="fold")
    table.add_row("server", f"{stats.server_name} {stats.server_version}")
    table.add_row("used memory", f"{o.size(stats.used_memory_bytes)} ({stats.used_memory_bytes} bytes)")
    table.add_row("keys", str(stats.keys))
    table.add_row("tasks", str(sum(stats.tasks.values())))
    for state, n in stats.tasks.items():
        table.add_row(f"  {state}", str(n))
    table.add_row("oldest finished", o.when(stats.oldest_finished_at) if stats.oldest_finished_at else "none")
    table.add_row("retention", _retention(stats.retention_s))
    o.out.print(table)


def _retention(seconds: float) -> str:
    """``7d (604800 s)``, ``90m (5400 s)``; ``kept for ever`` for 0."""
    if seconds <= 0:
        return "0 (finished tasks are kept for ever)"
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit} ({seconds:g} s)"
    return f"{seconds:g} s"
