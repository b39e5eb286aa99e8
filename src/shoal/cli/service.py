"""``shoal service unit|install|uninstall``: run a node as a systemd service.

``unit`` prints the unit and changes nothing; ``install`` writes it (system: /etc/systemd/system, as root;
``--user``: ~/.config/systemd/user) and reloads systemd when it runs; ``uninstall`` stops, disables and
removes it. Warnings go to stderr, the unit or the JSON report to stdout.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from shoal.cli import _output as o
from shoal.errors import InvalidInput

F = Callable[..., Any]


def _common(fn: F) -> F:
    name_help = "node name; the unit becomes shoal-NAME.service with its own state directory"
    fn = click.option("--name", "node_name", metavar="NAME", help=name_help)(fn)
    fn = click.option("--user", "user", is_flag=True, help="a user unit (~/.config/systemd/user), no root needed")(fn)
    return fn


def _unit_options(fn: F) -> F:
    fn = click.option("--run-as", metavar="USER",
                      help="run as this existing account instead of a dynamic user (system units)")(fn)  # fmt: skip
    fn = click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), envvar="SHOAL_CONFIG",
                      help="TOML file of node options the unit runs with (env SHOAL_CONFIG)")(fn)  # fmt: skip
    return _common(fn)


def _dir_option(fn: F) -> F:
    return click.option("--unit-dir", type=click.Path(file_okay=False, path_type=Path),
                        help="write to this directory instead (packaging, tests); no root needed")(fn)  # fmt: skip


def _render(user: bool, config_file: Path | None, node_name: str | None, run_as: str | None, warn: bool = True) -> Any:
    from shoal.systemd.unit import render

    if user and run_as:
        raise click.UsageError("--run-as is for system units; a user unit runs as you")
    try:
        unit = render(user=user, config_file=config_file, node_name=node_name, run_as=run_as)
    except InvalidInput as exc:
        raise click.UsageError(exc.message) from None
    for warning in unit.warnings if warn else ():  # install reports them with its outcome
        o.err.print(f"warning: {warning}", style="yellow", highlight=False, markup=False, soft_wrap=True)
    return unit


def _need_root(user: bool, unit_dir: Path | None, what: str) -> None:
    if not user and unit_dir is None and os.geteuid() != 0:
        raise click.UsageError(f"{what} a system unit needs root: run it with sudo, or use --user for a user unit "
                               "(or --unit-dir DIR to write elsewhere)")  # fmt: skip


@click.group("service")
def service_group() -> None:
    """Run a node as a systemd service (Type=notify, watchdog, hardened)."""


@service_group.command("unit")
@_unit_options
def unit_command(user: bool, config_file: Path | None, node_name: str | None, run_as: str | None) -> None:
    """Print the unit that `install` would write; changes nothing."""
    unit = _render(user, config_file, node_name, run_as)
    click.echo(unit.text, nl=False)


@service_group.command("install")
@_unit_options
@_dir_option
@click.option("--json", "as_json", is_flag=True, help="print what was done as JSON")
def install_command(user: bool, config_file: Path | None, node_name: str | None, run_as: str | None,
                    unit_dir: Path | None, as_json: bool) -> None:  # fmt: skip
    """Write the unit, check it with systemd-analyze, reload systemd if it runs, say what to run next."""
    from shoal.systemd.install import install

    _need_root(user, unit_dir, "installing")
    unit = _render(user, config_file, node_name, run_as, warn=False)
    try:
        outcome = install(unit, unit_dir)
    except OSError as exc:
        raise click.ClickException(f"cannot write {unit.path(unit_dir)}: {exc.strerror or exc}") from None
    _report(outcome, as_json)
    if outcome.verify_output:
        raise click.ClickException("systemd-analyze verify found problems in the unit (above)")


@service_group.command("uninstall")
@_common
@_dir_option
@click.option("--json", "as_json", is_flag=True, help="print what was done as JSON")
def uninstall_command(user: bool, node_name: str | None, unit_dir: Path | None, as_json: bool) -> None:
    """Stop and disable the unit (when systemd runs) and remove it; the node's data is kept."""
    from shoal.systemd.install import uninstall
    from shoal.systemd.unit import unit_name

    _need_root(user, unit_dir, "removing")
    try:
        outcome = uninstall(unit_name(node_name), user, unit_dir)
    except OSError as exc:
        raise click.ClickException(f"cannot remove the unit: {exc.strerror or exc}") from None
    _report(outcome, as_json)


def _report(outcome: Any, as_json: bool) -> None:
    if as_json:
        o.print_json(outcome.to_json())
        return
    o.out.print(f"{outcome.action}: {outcome.path}", highlight=False)
    if outcome.verify_output is not None:
        verdict = "no findings" if outcome.verify_output == "" else "findings:\n" + outcome.verify_output
        o.out.print(f"systemd-analyze verify: {verdict}", highlight=False, markup=False)
    if outcome.reloaded:
        o.out.print("systemd reloaded", highlight=False)
    for note in outcome.notes:
        o.out.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    if outcome.next_steps:
        o.out.print("next:", highlight=False)
        for step in outcome.next_steps:
            o.out.print(f"  {step}", highlight=False, markup=False, soft_wrap=True)
