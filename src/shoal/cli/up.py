"""``shoal up``: a whole local cluster from one command (embedded Redis + N nodes on loopback)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import FrameType

import click
import httpx
from rich.console import Console
from rich.table import Table

from shoal import config as config_module
from shoal.cli._api import BadInput
from shoal.config import NodeConfig
from shoal.errors import EmbeddedRedisError, InvalidInput
from shoal.launcher import LocalCluster

#: Node options ``shoal up`` sets itself, and what to use instead.
OWN_OPTIONS = {
    "name": "shoal up names its nodes node-1 ... node-N",
    "http": "use shoal up --http-port",
    "grpc": "use shoal up --grpc-port",
    "proxy": "use shoal up --proxy-port",
    "data_dir": "use shoal up --data-dir",
    "redis": "use shoal up --redis",
    "token": "shoal up gives its nodes the token in DATA_DIR/token",
}
#: Width of the output when it is not a terminal: wide enough that no URL or path is cut or folded.
FILE_WIDTH = 10_000


def _redis_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse a bad --redis URL before any node starts (each node would refuse it too)."""
    if value is not None:
        from shoal.store.redis import check_url

        try:
            check_url(value)
        except InvalidInput as exc:
            raise click.BadParameter(exc.message) from None
    return value


class _UpCommand(click.Command):
    """``shoal up``, saying where a node option given before ``--`` belongs."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            if exc.option_name.lstrip("-").replace("-", "_") not in config_module.option_names():
                raise
            hint = f"it is a node option: give it after --, as in: shoal up -- {exc.option_name} ..."
            raise click.UsageError(f"{exc.format_message()} {hint}", ctx) from None


@click.command("up", cls=_UpCommand)
@click.option("--nodes", "-n", default=3, show_default=True, type=click.IntRange(1, 64), help="node processes")
@click.option("--data-dir", default=Path(".shoal"), show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--http-port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="first node's")
@click.option("--grpc-port", default=6666, show_default=True, type=click.IntRange(1, 65535), help="first node's")
@click.option("--proxy-port", default=3128, show_default=True, type=click.IntRange(1, 65535), help="first node's")
@click.option(
    "--redis",
    "redis_url",
    envvar="SHOAL_REDIS",
    default=None,
    callback=_redis_url,
    help="use this Redis (redis://, rediss://, unix://, redis+sentinel://), not an embedded one",
)
@click.option("--ready-timeout", default=30.0, show_default=True, type=float, help="seconds to wait for readiness")
@click.argument("node_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- NODE OPTIONS...]")
def up_command(
    nodes: int,
    data_dir: Path,
    http_port: int,
    grpc_port: int,
    proxy_port: int,
    redis_url: str | None,
    ready_timeout: float,
    node_args: tuple[str, ...],
) -> None:
    """Start a local cluster and keep it running until Ctrl-C or SIGTERM.

    Node i listens on each port + i - 1; every port is checked before anything starts. Everything after
    `--` is given to every node, e.g. `shoal up -- --task-modules mytasks --slots 4` (see `shoal node
    --help`), and SHOAL_* environment variables pass through to the nodes too.

    The first Ctrl-C (or SIGTERM) stops the nodes: running tasks get the nodes' --shutdown-grace (30 s by
    default) to finish. A second one has them hand back their running tasks at once. A node that keeps
    exiting at start stops the cluster with the end of its log (exit code 1).
    """
    config = _node_config(node_args, data_dir, redis_url, http_port, grpc_port, proxy_port)
    console = _console()
    cluster = LocalCluster(data_dir, nodes, http_port, grpc_port, proxy_port, redis_url=redis_url,
                           node_args=list(node_args), shutdown_grace=config.shutdown_grace,
                           proxy=config.proxy_enabled, say=console.print)  # fmt: skip
    stop, hurry = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        (hurry if stop.is_set() else stop).set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    error: str | None = None
    try:
        cluster.check_ports()
        cluster.start()
        cluster.wait_ready(ready_timeout, cancel=stop)
        if not stop.is_set():
            _print(console, cluster)
        with httpx.Client(timeout=0.5, trust_env=False) as probes:
            while not stop.wait(0.5):
                cluster.supervise(probes)
        console.print(f"stopping the cluster: running tasks get up to {config.shutdown_grace:g}s to finish "
                      "(Ctrl-C or SIGTERM again hands them back now)...")  # fmt: skip
    except EmbeddedRedisError as exc:
        error = exc.message
    except (TimeoutError, RuntimeError, OSError) as exc:
        error = str(exc)
    stop.set()  # from here on, a signal hurries the stop
    killed = cluster.stop(hurry)
    if error is not None:
        raise click.ClickException(error)
    if killed:
        raise click.ClickException(f"{', '.join(killed)} did not stop in time and had to be killed")
    console.print("stopped.")


def _node_config(args: tuple[str, ...], data_dir: Path, redis_url: str | None, *ports: int) -> NodeConfig:
    """The first node's config, from the node options through `shoal node`'s own parser and loader, so that
    a bad one is refused (exit 2) before anything starts, and the launcher knows the nodes' grace."""
    from shoal.cli.node import node_command

    try:
        ctx = node_command.make_context("shoal node", list(args))
    except click.ClickException as exc:
        raise BadInput(f"node option: {exc.format_message()}") from None
    flags = dict(ctx.params)
    config_file = flags.pop("config_file")
    for key, instead in OWN_OPTIONS.items():
        if flags.get(key) is not None:
            raise BadInput(f"node option --{key.replace('_', '-')} is set by shoal up for each node: {instead}")
    addresses = {key: f"127.0.0.1:{port}" for key, port in zip(("http", "grpc", "proxy"), ports, strict=True)}
    flags |= {"name": "node-1", "data_dir": data_dir, "redis": redis_url, **addresses}
    try:
        return config_module.load(config_file, os.environ, flags)
    except InvalidInput as exc:
        raise BadInput(exc.message) from None


def _console() -> Console:
    """Rich on a terminal; anywhere else (a file, a pipe) lines as wide as they are, so nothing is cut."""
    console = Console(markup=False)
    return console if console.is_terminal else Console(markup=False, width=FILE_WIDTH)


def _print(console: Console, cluster: LocalCluster) -> None:
    table = Table(title=f"shoal: {len(cluster.processes)} node(s) ready", title_justify="left")
    for column in ("node", "pid"):
        table.add_column(column)
    for column in ("http", "grpc", "proxy", "log"):
        table.add_column(column, overflow="fold")  # on a narrow terminal: folded, never cut
    for proc in cluster.processes:
        table.add_row(proc.name, str(proc.pid), proc.http_url, proc.grpc, proc.proxy, str(proc.log_path))
    console.print(table)
    if cluster.redis is not None:  # its password stays in the url file (0600), out of the terminal's scrollback
        from shoal.store.redis import redacted

        store = f"{redacted(cluster.redis.url)}  (with its password: {(cluster.redis.dir / 'url').resolve()})"
    else:
        store = "external (--redis)"
    console.print(f"store:  {store}", soft_wrap=True)
    console.print(f"token:  {cluster.token_path.resolve()}  (API: Authorization: Bearer <token>)", soft_wrap=True)
    console.print(f"web:    {cluster.processes[0].http_url}/", soft_wrap=True)
    console.print("Ctrl-C stops the cluster.")
