"""The webhook API calls as data (see ``_calls``), shared by ``Client`` and ``AsyncClient``. Ids are checked
before they go into a path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shoal.client._calls import Call, json_of
from shoal.webhooks.model import Delivery, Webhook, delivery_id, webhook_from_json, webhook_id

PREFIX = "/api/v1/webhooks"


def _path(wid: str, tail: str = "") -> str:
    return f"{PREFIX}/{webhook_id(wid)}{tail}"


def add(
    url: str,
    events: Sequence[str],
    *,
    types: Sequence[str] | None = None,
    include_result: bool | None = None,
    secret: str | None = None,
) -> Call[Webhook]:
    body: dict[str, Any] = {"url": url, "events": list(events)}
    if types:
        body["types"] = list(types)
    if include_result is not None:
        body["include_result"] = include_result
    if secret is not None:
        body["secret"] = secret
    return Call("POST", PREFIX, lambda r: webhook_from_json(json_of(r)), body=body)


def webhooks() -> Call[list[Webhook]]:
    return Call("GET", PREFIX, lambda r: [webhook_from_json(w) for w in json_of(r)["webhooks"]])


def webhook(wid: str) -> Call[Webhook]:
    return Call("GET", _path(wid), lambda r: webhook_from_json(json_of(r)))


def delete(wid: str) -> Call[None]:
    return Call("DELETE", _path(wid), lambda r: None)


def deliveries(wid: str, *, limit: int | None = None, status: str | None = None) -> Call[list[Delivery]]:
    params = {k: v for k, v in (("limit", limit), ("status", status)) if v is not None}
    return Call(
        "GET",
        _path(wid, "/deliveries"),
        lambda r: [Delivery.from_json(d) for d in json_of(r)["deliveries"]],
        params=params or None,
    )


def replay(wid: str, did: str) -> Call[Delivery]:
    return Call("POST", _path(wid, f"/deliveries/{delivery_id(did)}/replay"), lambda r: Delivery.from_json(json_of(r)))


def replay_since(wid: str, since: float | str) -> Call[list[str]]:
    return Call(
        "POST", _path(wid, "/replay"), lambda r: [str(d) for d in json_of(r)["deliveries"]], body={"since": since}
    )
