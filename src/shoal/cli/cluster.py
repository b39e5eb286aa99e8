"""``shoal cluster ...``: what the cluster looks like from any node."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from shoal.cli import _output as o
from shoal.cli._api import api_options, client, handle_errors, json_option


@click.group("cluster")
@api_options
def cluster_group() -> None:
    """See the cluster's nodes and master."""


@cluster_group.command("status")
@api_options
@json_option
@handle_errors
def status(as_json: bool) -> None:
    """Show every node (state, role, load, last heartbeat), the master and the epoch, and readiness."""
    with client() as c:
        view = c.cluster()
        ready, reason = c.ready()
    if as_json:
        o.print_json({**view.to_json(), "ready": ready, "ready_reason": reason})
        return
    o.out.print(o.cluster_table(view))
    if not ready:
        o.err.print(f"[yellow]the node at {c.base_url} is not ready: {reason}[/]")


@cluster_group.command("handover")
@click.argument("node")
@api_options
@json_option
@handle_errors
def handover(node: str, as_json: bool) -> None:
    """Make NODE the master now (the current master hands over; the epoch grows)."""
    with client() as c:
        master, epoch = c.hand_over(node)
    if as_json:
        o.print_json({"master": master, "epoch": epoch})
        return
    o.out.print(f"master: {master}  epoch: {epoch}")


@cluster_group.command("rotate-token")
@click.option("--write", "write_to", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="file to write the new token to (mode 0600); default: print where nothing was written")  # fmt: skip
@api_options
@handle_errors
def rotate_token(write_to: Path | None) -> None:
    """Give every live node a new cluster token (the old one keeps working for a grace period)."""
    with client() as c:
        token, taken = c.rotate_token()
    missed = sorted(n for n, ok in taken.items() if not ok)
    if write_to is not None:
        fd = os.open(write_to, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        o.out.print(f"new token written to {write_to}; taken by {len(taken) - len(missed)} node(s)")
    else:
        o.out.print(f"taken by {len(taken) - len(missed)} node(s); every node wrote it to its data dir's token file")
    if missed:
        raise click.ClickException(f"not taken by {', '.join(missed)}: they are locked out after the grace period")


@cluster_group.command("timeline")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@api_options
@json_option
@handle_errors
def timeline(limit: int, as_json: bool) -> None:
    """The latest membership events, oldest first (the order they happened in): joins, suspicions, deaths,
    rejections, elections, and why."""
    with client() as c:
        events = c.timeline(limit)[::-1]  # the API answers newest first
    if as_json:
        o.print_json(events)
        return
    for event in events:
        when = time.strftime("%H:%M:%S", time.localtime(event["at"])) + f".{int(event['at'] * 1000) % 1000:03d}"
        o.out.print(f"{when}  {event['kind']:<11} {event['node']:<16} epoch {event['epoch']:<4} {event['rule']}")
