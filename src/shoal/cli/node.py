"""``shoal node``: run one node. Every config option is a flag here, an env var and a config-file key."""

from __future__ import annotations

import asyncio
import os
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

import click

from shoal import config as config_module
from shoal.cli._api import BadInput
from shoal.errors import EmbeddedRedisError, InvalidInput, StoreUnavailable

_SKIP = {"sources"}
#: Flags that read better one at a time (``--label gpu=1 --label zone=a``).
_ALIASES = {"labels": ("--label",)}


def _options(fn: Any) -> Any:
    """One ``--flag`` per NodeConfig field, with no default (an unset flag leaves env, file or default)."""
    for f in reversed([f for f in fields(config_module.NodeConfig) if f.name not in _SKIP]):
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        if kind == "bool":
            decl = f"{flag}/--no-{f.name.replace('_', '-')}"
            fn = click.option(decl, f.name, default=None, help=_help(f))(fn)
        elif kind.startswith("tuple"):
            flags = [flag, *_ALIASES.get(f.name, ())]
            fn = click.option(*flags, f.name, multiple=True, help=_help(f, "repeatable, or a comma list"))(fn)
        else:
            fn = click.option(flag, f.name, default=None, metavar=_metavar(f.name, kind), help=_help(f))(fn)
    return fn


def _help(f: Field[Any], how: str = "") -> str:
    """The option's description, then its default (when it has a plain one) and its environment variable."""
    notes = [how] if how else []
    if f.default not in (None, MISSING, ()):
        notes.append(f"default: {_shown(f.default)}")
    notes.append(f"env SHOAL_{f.name.upper()}")
    return f"{config_module.option_help(f.name)} ({'; '.join(notes)})"


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _metavar(name: str, kind: str) -> str:
    if name in ("grpc", "http", "proxy"):
        return "HOST:PORT"
    if name in config_module.DURATIONS:
        return "DURATION"
    if kind.startswith("Mapping"):
        return "JSON"
    return {"int": "N", "float": "SECONDS", "Path": "DIR"}.get(kind, "TEXT")


@click.command("node")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), envvar="SHOAL_CONFIG",
              help="TOML file of options (env SHOAL_CONFIG)")  # fmt: skip
@_options
def node_command(config_file: Path | None, **flags: Any) -> None:
    """Run one shoal node (embedded Redis unless --redis URL is given)."""
    from shoal import logs
    from shoal.node import run_node

    try:
        config = config_module.load(config_file, os.environ, flags)
    except InvalidInput as exc:
        raise click.UsageError(exc.message) from None
    logs.setup(config.log_level, config.name)
    try:
        _run(run_node(config))
    except InvalidInput as exc:  # e.g. a task module that cannot be imported: exit 2, not restarted by systemd
        raise BadInput(exc.message) from None
    except (EmbeddedRedisError, StoreUnavailable) as exc:
        raise click.ClickException(exc.message) from None
    except OSError as exc:
        raise click.ClickException(f"cannot start node {config.name}: {exc}") from None


def _run(coro: Any) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)
