"""``shoal cluster ...``: what the cluster looks like from any node."""

from __future__ import annotations

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
