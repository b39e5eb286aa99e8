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
    server = embedded_server(config)
    if as_json:
        o.print_json({"file": str(config_file) if config_file else None, "config": values, "sources": sources,
                      "embedded_server": server})  # fmt: skip
        return
    table = o.plain_table()
    for column in ("OPTION", "VALUE", "SOURCE"):
        table.add_column(column, overflow="fold")
    for name, value in values.items():
        text = UNSET.get(name, "-") if value is None else _text(value)
        if name == "redis_server":
            text = _server_text(value, server)
        table.add_row(name, text, sources[name])
    o.out.print(table)


def embedded_server(config: config_module.NodeConfig) -> dict[str, str] | None:
    """The redis-server binary a node with ``config`` would start, its version and where it was found;
    None when the node uses ``redis`` instead, ``{"error": ...}`` when it has none it can run."""
    if config.redis is not None:
        return None
    from shoal.errors import EmbeddedRedisError
    from shoal.store.embedded import find_server

    try:
        found = find_server(config.redis_server)
    except EmbeddedRedisError as exc:
        return {"error": exc.message}
    return {"product": found.product, "version": found.version_text, "path": found.path, "origin": found.origin}


def _server_text(value: Any, server: dict[str, str] | None) -> str:
    if server is None:
        return "- (not used: the node uses the redis URL)"
    if "error" in server:
        return f"{_text(value)} ({server['error']})"
    return f"{server['path']} ({server['product']} {server['version']}, from {server['origin']})"


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
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
