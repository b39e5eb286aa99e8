"""The ``shoal`` command: one entry point for running nodes and for using the cluster.

Sub-commands are imported only when used (``LazyGroup``), so ``shoal task list`` does not pay for loading
the node's server code, and the client commands keep to ``shoal.client``.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from shoal.cli._api import api_options
from shoal.version import __version__

#: name -> "module:attribute" of each sub-command.
COMMANDS = {
    "node": "shoal.cli.node:node_command",
    "up": "shoal.cli.up:up_command",
    "task": "shoal.cli.task:task_group",
    "schedule": "shoal.cli.schedule:schedule_group",
    "workflow": "shoal.cli.workflow:workflow_group",
    "webhook": "shoal.cli.webhook:webhook_group",
    "cluster": "shoal.cli.cluster:cluster_group",
    "config": "shoal.cli.config:config_group",
    "service": "shoal.cli.service:service_group",
    "cache": "shoal.cli.cache:cache_group",
    "store": "shoal.cli.store:store_group",
    "selftest": "shoal.cli.selftest:selftest_command",
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported from ``COMMANDS`` on first use."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            self.add_command(self._load(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def _load(self, cmd_name: str) -> click.Command:
        """Import one sub-command; a broken install gets one line naming the command, not a traceback."""
        module_name, _, attr = self.lazy[cmd_name].partition(":")
        try:
            command = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            return _Unavailable(cmd_name, f"shoal {cmd_name} cannot be loaded ({exc}); reinstall shoal")
        if not isinstance(command, click.Command):
            return _Unavailable(cmd_name, f"{self.lazy[cmd_name]} is not a click command")
        return command


class _Unavailable(click.Command):
    """Stands in for a sub-command whose module failed to import: says so and exits 1."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name, help=f"(unavailable: {reason})", context_settings={"ignore_unknown_options": True})
        self.reason = reason
        self.params = [click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)]

    def invoke(self, ctx: click.Context) -> Any:
        raise click.ClickException(self.reason)


@click.group(
    "shoal",
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", "-V", prog_name="shoal")
@api_options
def cli() -> None:
    """shoal: a self-healing task cluster.

    \b
    Run:    shoal up                       a local cluster (embedded Redis + 3 nodes)
            shoal node --redis URL ...     one node of a cluster
    Use:    shoal task submit fetch http://127.0.0.1:8000/ --wait
            shoal task list | show ID | kill ID... | rm ID... | result ID | watch
            shoal cluster status
            shoal cache set KEY VALUE --ttl 60 | get KEY | rm KEY | stats
    Ops:    shoal config show [NODE FLAGS]     the options a node gets, and where each came from
            shoal service install --config F   a node as a systemd service
            shoal store backup F | restore F   the cluster's store to a file and back

    User commands talk to --api URL (or SHOAL_API, default http://127.0.0.1:8080) with --token (or
    SHOAL_TOKEN, else ./.shoal/token). Exit codes: 0 ok, 1 failed, 2 bad usage or input, 130 interrupted.
    """


def main() -> None:
    """Entry point of the ``shoal`` script and of ``python -m shoal``."""
    cli(prog_name="shoal")
