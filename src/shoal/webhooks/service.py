"""What users may do with webhooks; the REST adapter (and through it the CLI and the task center) calls it."""

from __future__ import annotations

import builtins
import time
from typing import Any, Protocol

from shoal.errors import InvalidInput
from shoal.webhooks import guard
from shoal.webhooks.model import (
    MAX_PAGE,
    STATUSES,
    Delivery,
    Webhook,
    WebhookSpec,
    delivery_id,
    since_time,
    webhook_id,
    webhook_spec,
)
from shoal.webhooks.signing import new_secret


class WebhookStoreAPI(Protocol):
    """The store's side of webhooks (``shoal.store.webhooks.WebhookStore``)."""

    async def add(self, spec: WebhookSpec, secret: str) -> Webhook: ...
    async def get(self, webhook_id: str) -> Webhook: ...
    async def list(self) -> builtins.list[Webhook]: ...
    async def delete(self, webhook_id: str) -> None: ...
    async def deliveries(
        self, webhook_id: str, *, limit: int = 50, status: str | None = None
    ) -> builtins.list[Delivery]: ...
    async def delivery(self, webhook_id: str, delivery_id: str) -> Delivery: ...
    async def replay(self, webhook_id: str, delivery_id: str) -> Delivery: ...
    async def replay_since(self, webhook_id: str, since: float) -> builtins.list[str]: ...


class WebhookService:
    """Checks what users ask for and hands it to the store. ``allow_loopback``: the node's
    ``webhook_allow_loopback``, which decides whether a URL on loopback is taken."""

    def __init__(self, *, store: WebhookStoreAPI, allow_loopback: bool = False) -> None:
        self.store = store
        self.allow_loopback = allow_loopback

    async def add(self, data: Any) -> Webhook:
        """Check the body (``webhook_spec``) and the URL (``guard.check_url``) and store the subscription;
        the answer carries its secret, made here when the body has none, shown this once."""
        spec = webhook_spec(data)
        await guard.check_url(spec.url, allow_loopback=self.allow_loopback)
        return await self.store.add(spec, spec.secret or new_secret())

    async def list(self) -> builtins.list[Webhook]:
        return await self.store.list()

    async def get(self, wid: str) -> Webhook:
        return await self.store.get(webhook_id(wid))

    async def delete(self, wid: str) -> None:
        await self.store.delete(webhook_id(wid))

    async def deliveries(
        self, wid: str, *, limit: int | None = None, status: str | None = None
    ) -> builtins.list[Delivery]:
        """The subscription's delivery log, newest event first."""
        if limit is not None and not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}, got {status[:40]!r}")
        return await self.store.deliveries(webhook_id(wid), limit=limit or 50, status=status)

    async def delivery(self, wid: str, did: str) -> Delivery:
        return await self.store.delivery(webhook_id(wid), delivery_id(did))

    async def replay(self, wid: str, did: str) -> Delivery:
        """Send one delivery again, now, with the body and webhook-id of its first attempt."""
        return await self.store.replay(webhook_id(wid), delivery_id(did))

    async def replay_since(self, wid: str, data: Any) -> tuple[float, builtins.list[str]]:
        """Send again every delivery of an event at or after ``since`` (body ``{since}``: Unix seconds or an
        ISO 8601 time); the time read, and the ids of the deliveries made due."""
        wid = webhook_id(wid)
        if not isinstance(data, dict):
            raise InvalidInput("the body must be a JSON object with since")
        unknown = sorted(set(data) - {"since"})
        if unknown:
            raise InvalidInput(f"unknown field(s): {', '.join(unknown)}")
        since = since_time(data.get("since"), time.time())
        return since, await self.store.replay_since(wid, since)
