"""``shoal webhook ...``: add, list and rm webhook subscriptions, read their delivery log, replay deliveries.

Bad input is refused before anything is sent where the CLI can tell (exit 2, as a bad option is), and
otherwise by the server with the same words (a URL it refuses to reach, for one).
"""

from __future__ import annotations

import time

import click
from rich.table import Table
from rich.text import Text

from shoal import validation
from shoal.cli import _output as o
from shoal.cli._api import BadInput, api_options, client, handle_errors, json_option
from shoal.errors import InvalidInput
from shoal.webhooks.model import (
    DELIVERED,
    FAILED,
    STATUSES,
    Delivery,
    Webhook,
    comma_list,
    since_time,
    webhook_spec,
)


@click.group("webhook")
@api_options
def webhook_group() -> None:
    """Webhooks: a signed POST to a URL for every task event it subscribes to, retried for up to a day."""


@webhook_group.command("add")
@click.argument("url")
@click.option(
    "--events",
    required=True,
    metavar="STATES",
    help="Task states whose events it receives, a comma list: SUCCEED,RUNTIME_ERROR (also WAITING, INQUEUE, "
    "RUNNING, KILLED).",
)
@click.option("--types", metavar="TYPES", help="Only tasks of these types, a comma list [default: every type].")
@click.option("--include-result", is_flag=True, help="Carry the task's result in the payload (up to a size).")
@click.option("--secret", metavar="whsec_...", help="The signing secret [default: one is made and shown once].")
@api_options
@json_option
@handle_errors
def add(url: str, events: str, types: str | None, include_result: bool, secret: str | None, as_json: bool) -> None:
    """Subscribe URL to task events; prints its id and its signing secret, which is shown only now."""
    body = {
        "url": url,
        "events": comma_list(events, upper=True),
        "types": comma_list(types),
        "include_result": include_result,
        "secret": secret,
    }
    try:
        spec = webhook_spec({k: v for k, v in body.items() if v is not None})  # refused here: exit 2
    except InvalidInput as exc:
        raise BadInput(exc.message) from None
    with client() as c:
        added = c.add_webhook(
            spec.url, spec.events, types=spec.types, include_result=spec.include_result, secret=spec.secret
        )
    if as_json:
        o.print_json(added.to_json())
        return
    o.out.print(f"added webhook {added.id} -> {added.url}")
    o.out.print(f"events: {', '.join(added.events)}" + (f"; types: {', '.join(added.types)}" if added.types else ""))
    o.out.print(f"secret: {added.secret}", crop=False, soft_wrap=True)
    click.echo("keep the secret: it signs every POST, and is not shown again", err=True)


@webhook_group.command("list")
@api_options
@json_option
@handle_errors
def list_webhooks(as_json: bool) -> None:
    """List every webhook (secrets are never shown again)."""
    with client() as c:
        found = c.webhooks()
    if as_json:
        o.print_json({"webhooks": [w.to_json() for w in found]})
        return
    o.out.print(webhooks_table(found))
    click.echo(f"{len(found)} webhook(s)", err=True)


@webhook_group.command("rm")
@click.argument("webhook_id")
@api_options
@handle_errors
def rm(webhook_id: str) -> None:
    """Delete a webhook, its delivery log and the deliveries it has pending."""
    with client() as c:
        c.delete_webhook(webhook_id)
    click.echo(f"deleted webhook {webhook_id}")


@webhook_group.command("deliveries")
@click.argument("webhook_id")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="Deliveries to show.")
@click.option("--status", type=click.Choice(STATUSES), help="Only deliveries of this status.")
@api_options
@json_option
@handle_errors
def deliveries(webhook_id: str, limit: int, status: str | None, as_json: bool) -> None:
    """A webhook's delivery log, newest event first: status, attempts, the last answer and its latency."""
    with client() as c:
        found = c.deliveries(webhook_id, limit=limit, status=status)
    if as_json:
        o.print_json({"deliveries": [d.to_json() for d in found]})
        return
    o.out.print(deliveries_table(found))
    click.echo(f"{len(found)} deliveries", err=True)


@webhook_group.command("replay")
@click.argument("webhook_id")
@click.argument("delivery_id", required=False)
@click.option(
    "--since",
    metavar="TIME",
    help="Replay every delivery of an event at or after TIME: Unix seconds, ISO 8601 (2026-12-06T10:00:00Z), "
    "or a span ago (90s, 15m, 2h, 1d).",
)
@api_options
@json_option
@handle_errors
def replay(webhook_id: str, delivery_id: str | None, since: str | None, as_json: bool) -> None:
    """Send DELIVERY_ID of WEBHOOK_ID again now (same body and webhook-id, fresh signature), or with --since,
    every delivery since a time."""
    if (delivery_id is None) == (since is None):
        raise BadInput("give either a DELIVERY_ID or --since TIME")
    with client() as c:
        if delivery_id is not None:
            done = c.replay_delivery(webhook_id, delivery_id)
            if as_json:
                o.print_json(done.to_json())
            else:
                click.echo(f"replaying delivery {done.id} ({done.event_type} of task {done.task_id})")
            return
        assert since is not None
        at = _since(since)
        ids = c.replay_webhook(webhook_id, at)
    if as_json:
        o.print_json({"since": at, "replayed": len(ids), "deliveries": ids})
    else:
        click.echo(f"replaying {len(ids)} deliveries since {o.when(at)}")


def _since(text: str) -> float:
    """``--since``: a span ago (``2h``), Unix seconds or ISO 8601; exit 2 when it is none of them."""
    now = time.time()
    if text and text[-1] in "smhdw" and text[:-1].replace(".", "", 1).isdigit():
        try:
            return now - validation.duration(text, "--since")
        except InvalidInput as exc:
            raise BadInput(exc.message) from None
    try:
        return since_time(text, now)
    except InvalidInput as exc:
        raise BadInput(exc.message.replace("since", "--since", 1)) from None


def _status(d: Delivery) -> Text:
    style = "green" if d.status == DELIVERED else "red" if d.status == FAILED else "yellow"
    return Text(d.status, style=style)


def webhooks_table(found: list[Webhook]) -> Table:
    table = o.plain_table()
    for column in ("ID", "URL", "EVENTS", "TYPES", "RESULT", "CREATED"):
        table.add_column(column, no_wrap=True, overflow="ellipsis")
    for w in found:
        table.add_row(
            w.id,
            o.short(w.url, 60),
            ",".join(w.events),
            ",".join(w.types) or "*",
            "yes" if w.include_result else "no",
            o.ago(w.created_at),
        )
    return table


def deliveries_table(found: list[Delivery]) -> Table:
    table = o.plain_table()
    for column in ("ID", "EVENT", "TASK", "STATUS", "ATTEMPTS", "CODE", "LATENCY", "WHEN", "ANSWER"):
        table.add_column(column, no_wrap=True, overflow="ellipsis")
    for d in found:
        last = d.last
        table.add_row(
            d.id,
            d.event_type,
            d.task_id[:8],
            _status(d),
            str(d.attempts),
            str(last.status_code) if last and last.status_code else "-",
            f"{last.latency_ms:.0f} ms" if last and last.latency_ms is not None else "-",
            o.ago(last.at) if last else "-",
            o.short((last.error or last.response) if last else "", 40),
        )
    return table
