"""What every client command shares: ``--api``/``--token``, building the Client, and errors -> exit codes.

Exit codes of the user commands:

- 0: done.
- 1: the operation failed: not found, conflict (409), unauthorized, server error, API unreachable, a waited
  task that ended other than SUCCEED, an interrupted wait.
- 2: bad usage or bad input: a malformed option or argument, or input the server refused as invalid
  (400/413), since the fix is the same in both cases: change the command line.
- 130: interrupted with Ctrl-C.

Errors print one line, ``Error: <message>``, on stderr; never a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from shoal.client import AsyncClient, Client, _config
from shoal.client.errors import ApiUnreachable
from shoal.errors import InvalidInput, ShoalError, Unauthorized

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CommandError(click.ClickException):
    """The operation failed: a one-line ``Error: ...`` on stderr, exit code 1."""

    exit_code = EXIT_FAILED


class BadInput(CommandError):
    """Input refused before or by the server: one line (no usage dump), exit code 2."""

    exit_code = EXIT_USAGE


@dataclass
class ApiSettings:
    """``--api``/``--token`` as given on the command line; None lets the client use SHOAL_API/SHOAL_TOKEN/files."""

    api: str | None = None
    token: str | None = None
    warned: bool = False  # about --token, once per command


def _store(field: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is not None:
            setattr(ctx.ensure_object(ApiSettings), field, value)

    return callback


def _token_flag(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Take ``--token``, and say once that a secret on the command line is in every user's process list."""
    s = ctx.ensure_object(ApiSettings)
    if value is not None and not s.warned:
        click.echo("warning: --token shows the cluster token to every user of this machine (ps); "
                   "prefer SHOAL_TOKEN or the token file", err=True)  # fmt: skip
        s.warned = True
    _store("token")(ctx, param, value)


def api_options(f: F) -> F:
    """``--api URL`` and ``--token TOKEN``, accepted on the root group and on every command that calls the API."""
    f = click.option(
        "--token",
        metavar="TOKEN",
        expose_value=False,
        callback=_token_flag,
        help="Cluster token [default: $SHOAL_TOKEN, then ./.shoal/token]; as a flag it shows in the process list.",
    )(f)
    f = click.option(
        "--api",
        metavar="URL",
        expose_value=False,
        callback=_store("api"),
        help="REST API of any node [default: $SHOAL_API, then http://127.0.0.1:8080].",
    )(f)
    return f


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")


def settings() -> ApiSettings:
    return click.get_current_context().ensure_object(ApiSettings)


def client() -> Client:
    s = settings()
    return Client(s.api, s.token)


def async_client() -> AsyncClient:
    s = settings()
    return AsyncClient(s.api, s.token)


def to_click(exc: BaseException) -> click.ClickException | None:
    """The click exception (message and exit code) for an error of ours, or None if it is not one."""
    if isinstance(exc, InvalidInput):
        return BadInput(exc.message)
    if isinstance(exc, Unauthorized):
        s = settings()
        hint = (
            ""
            if _config.token(s.token)
            else " (no token found: pass --token, set SHOAL_TOKEN or run where ./.shoal/token is)"
        )
        return CommandError(f"unauthorized: {exc.message}{hint}")
    if isinstance(exc, ApiUnreachable):
        return CommandError(exc.message)
    if isinstance(exc, ShoalError):
        return CommandError(exc.message)
    return None


def handle_errors(f: F) -> F:
    """Turn shoal errors and Ctrl-C inside a command into one line on stderr and an exit code."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except ShoalError as exc:
            converted = to_click(exc)
            assert converted is not None
            raise converted from None

    return wrapper  # type: ignore[return-value]
