"""``shoal up``: a whole local cluster from one command (embedded Redis + N nodes on loopback)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click
from rich.console import Console
from rich.table import Table

from shoal.errors import EmbeddedRedisError, InvalidInput
from shoal.launcher import LocalCluster


def _redis_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse a bad --redis URL before any node starts (each node would refuse it too)."""
    if value is not None:
        from shoal.store.redis import check_url

        try:
            check_url(value)
        except InvalidInput as exc:
            raise click.BadParameter(exc.message) from None
    return value


@click.command("up")
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
def up_command(
    nodes: int,
    data_dir: Path,
    http_port: int,
    grpc_port: int,
    proxy_port: int,
    redis_url: str | None,
    ready_timeout: float,
) -> None:
    """Start a local cluster and keep it running until Ctrl-C or SIGTERM."""
    console = Console(stderr=False)
    cluster = LocalCluster(data_dir, nodes, http_port, grpc_port, proxy_port, redis_url=redis_url)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        cluster.start()
        cluster.wait_ready(ready_timeout)
    except EmbeddedRedisError as exc:
        cluster.stop()
        raise click.ClickException(exc.message) from None
    except (TimeoutError, RuntimeError, OSError) as exc:
        cluster.stop()
        raise click.ClickException(str(exc)) from None
    _print(console, cluster)
    while not stop.wait(0.5):
        cluster.supervise()
    console.print("stopping the cluster...")
    cluster.stop()
    console.print("stopped.")


def _print(console: Console, cluster: LocalCluster) -> None:
    table = Table(title=f"shoal: {len(cluster.processes)} node(s) ready", title_justify="left")
    for column in ("node", "pid", "http", "grpc", "proxy", "log"):
        table.add_column(column)
    for proc in cluster.processes:
        table.add_row(proc.name, str(proc.pid), proc.http_url, proc.grpc, proc.proxy, str(proc.log_path))
    console.print(table)
    store = cluster.redis.url if cluster.redis else "external (--redis)"
    console.print(f"store:  {store}")
    console.print(f"token:  {cluster.token_path.resolve()}  (API: Authorization: Bearer <token>)")
    console.print(f"web:    {cluster.processes[0].http_url}/")
    console.print("Ctrl-C stops the cluster.")
