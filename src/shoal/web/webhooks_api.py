"""REST routes of webhook subscriptions under ``/api/v1/webhooks``, and their shapes in the OpenAPI document.

Bodies are read by hand and checked by ``shoal.webhooks`` (as ``api.py`` does for tasks), so bad input gets
shoal's 400 with words that say what is wrong. A subscription's secret is in the answer to its creation only.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field, WithJsonSchema
from starlette.responses import Response

from shoal.errors import ShoalError
from shoal.web.api import body_schema, json_body
from shoal.web.responses import JSONResponse
from shoal.web.schemas import errors
from shoal.web.security import TokenCheck, require_token
from shoal.webhooks.model import KEEP_ATTEMPTS, MAX_PAGE, STATES, STATUSES
from shoal.webhooks.service import WebhookService

PREFIX = "/api/v1/webhooks"
WebhookIdPath = Annotated[
    str,
    WithJsonSchema({"type": "string", "pattern": r"^wh_[0-9a-f]{16}$"}),
    Path(description="the webhook's id: wh_ and 16 hex digits"),
]
DeliveryIdPath = Annotated[
    str,
    WithJsonSchema({"type": "string", "pattern": r"^[1-9][0-9]{0,18}$"}),
    Path(description="the delivery's id, a whole number"),
]
LimitQuery = Annotated[
    int | None,
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
    Query(description=f"deliveries to show, newest first; default 50, at most {MAX_PAGE}"),
]
StatusQuery = Annotated[
    str | None,
    WithJsonSchema({"type": "string", "enum": list(STATUSES)}),
    Query(description="only deliveries of this status"),
]
State = Literal["WAITING", "INQUEUE", "RUNNING", "RUNTIME_ERROR", "SUCCEED", "KILLED"]


class WebhookOut(BaseModel):
    id: str = Field(description="wh_ and 16 hex digits")
    url: str
    events: list[State] = Field(description="the task states whose events it receives")
    types: list[str] = Field(description="the task types it receives events of; empty: every type")
    include_result: bool = Field(description="whether a payload carries the task's result (up to a size)")
    created_at: float = Field(description="Unix seconds; events before it are not delivered")
    dropped: int = Field(description="pending deliveries dropped because its log was full")


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(description="whsec_ and base64: the signing key, shown only in this answer")


class WebhooksOut(BaseModel):
    webhooks: list[WebhookOut]


class AttemptOut(BaseModel):
    at: float = Field(description="when its outcome was recorded, Unix seconds")
    status_code: int | None = Field(description="the receiver's HTTP status; null when it did not answer")
    latency_ms: float | None
    response: str = Field(description="the start of the receiver's answer (at most 500 characters)")
    error: str = Field(description="why it failed (empty when the receiver answered 2xx)")
    node: str = Field(description="the node that sent it")


class DeliveryOut(BaseModel):
    id: str
    webhook_id: str
    message_id: str = Field(description="the webhook-id header: the same for every attempt and replay")
    type: str = Field(description="the payload's type: task.succeed, task.runtime_error, ...")
    task_id: str
    state: State
    task_type: str
    event_at: float = Field(description="when the task changed state, Unix seconds")
    created_at: float
    status: Literal["pending", "delivered", "failed"] = Field(
        description="pending: waiting for its next attempt or being sent; delivered: answered 2xx; failed: "
        "retried for the whole retry window without a 2xx"
    )
    attempts: int
    replays: int
    next_attempt_at: float | None
    first_attempt_at: float | None
    last_attempt_at: float | None
    status_code: int | None = Field(description="the last attempt's status")
    latency_ms: float | None = Field(description="the last attempt's time, in milliseconds")
    response: str = Field(description="the start of the last attempt's answer")
    error: str
    history: list[AttemptOut] = Field(description=f"the latest {KEEP_ATTEMPTS} attempts, oldest first")


class DeliveriesOut(BaseModel):
    deliveries: list[DeliveryOut]


class ReplayOut(BaseModel):
    since: float = Field(description="the time read from the body, Unix seconds")
    replayed: int
    deliveries: list[str] = Field(description="the ids of the deliveries sent again")


def components() -> dict[str, Any]:
    """``WebhookIn`` and ``ReplaySinceIn``, the bodies the handlers read themselves."""
    return {
        "WebhookIn": {
            "title": "WebhookIn",
            "type": "object",
            "properties": {
                "url": {
                    "type": "string",
                    "maxLength": 2048,
                    "pattern": r"^\s*\S",
                    "description": "the http:// or https:// URL events are POSTed to; no cloud metadata or "
                    "link-local address, nor loopback unless the node's webhook_allow_loopback is on",
                },
                "events": {
                    "type": "array",
                    "items": {"type": "string", "enum": list(STATES)},
                    "minItems": 1,
                    "description": "the task states whose events it receives",
                },
                "types": {
                    "anyOf": [
                        {
                            "type": "array",
                            "items": {"type": "string", "pattern": r"^[A-Za-z0-9_.:-]{1,64}$"},
                            "maxItems": 100,
                        },
                        {"type": "null"},
                    ],
                    "description": "only events of tasks of these types; default every type",
                },
                "include_result": {
                    "anyOf": [{"type": "boolean"}, {"type": "null"}],
                    "description": "carry the task's result in the payload, up to the node's webhook_result_max_bytes",
                },
                "secret": {
                    "anyOf": [{"type": "string", "pattern": r"^whsec_"}, {"type": "null"}],
                    "description": "whsec_ and the base64 of 24 to 64 random bytes; default: one is made",
                },
            },
            "required": ["url", "events"],
            "additionalProperties": False,
        },
        "ReplaySinceIn": {
            "title": "ReplaySinceIn",
            "type": "object",
            "properties": {
                "since": {
                    "anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}],
                    "description": "Unix seconds, or an ISO 8601 time with its offset (2026-12-06T10:00:00Z)",
                }
            },
            "required": ["since"],
            "additionalProperties": False,
        },
    }


def build_webhooks_router(*, webhooks: WebhookService | None, token: str | TokenCheck) -> APIRouter:
    """The webhook routes, all behind the bearer token; 503 when the app serves no webhooks."""
    api = APIRouter(prefix=PREFIX, dependencies=[Depends(require_token(token))], responses=errors(401))

    def service() -> WebhookService:
        if webhooks is None:
            raise WebhooksUnavailable("this node does not serve webhooks")
        return webhooks

    @api.post(
        "",
        status_code=201,
        response_model=WebhookCreatedOut,
        responses=errors(400, 413, 503),
        openapi_extra=body_schema("WebhookIn"),
        summary="Subscribe a URL to task events: a signed POST per matching event",
    )
    async def add(request: Request) -> Response:
        return JSONResponse((await service().add(await json_body(request))).to_json(), status_code=201)

    @api.get("", response_model=WebhooksOut, responses=errors(503), summary="Every webhook (without secrets)")
    async def list_webhooks() -> Response:
        return JSONResponse({"webhooks": [w.to_json() for w in await service().list()]})

    @api.get("/{webhook_id}", response_model=WebhookOut, responses=errors(400, 404, 503), summary="Get a webhook")
    async def get(webhook_id: WebhookIdPath) -> Response:
        return JSONResponse((await service().get(webhook_id)).to_json())

    @api.delete(
        "/{webhook_id}",
        status_code=204,
        responses=errors(400, 404, 503),
        summary="Delete a webhook, its delivery log and its pending deliveries",
    )
    async def delete(webhook_id: WebhookIdPath) -> Response:
        await service().delete(webhook_id)
        return Response(status_code=204)

    @api.get(
        "/{webhook_id}/deliveries",
        response_model=DeliveriesOut,
        responses=errors(400, 404, 503),
        summary="The webhook's delivery log, newest event first",
    )
    async def deliveries(webhook_id: WebhookIdPath, limit: LimitQuery = None, status: StatusQuery = None) -> Response:
        found = await service().deliveries(webhook_id, limit=limit, status=status)
        return JSONResponse({"deliveries": [d.to_json() for d in found]})

    @api.get(
        "/{webhook_id}/deliveries/{delivery_id}",
        response_model=DeliveryOut,
        responses=errors(400, 404, 503),
        summary="One delivery, with its latest attempts",
    )
    async def delivery(webhook_id: WebhookIdPath, delivery_id: DeliveryIdPath) -> Response:
        return JSONResponse((await service().delivery(webhook_id, delivery_id)).to_json())

    @api.post(
        "/{webhook_id}/deliveries/{delivery_id}/replay",
        status_code=202,
        response_model=DeliveryOut,
        responses=errors(400, 404, 503),
        summary="Send a delivery again now (same body and webhook-id, fresh signature)",
    )
    async def replay(webhook_id: WebhookIdPath, delivery_id: DeliveryIdPath) -> Response:
        return JSONResponse((await service().replay(webhook_id, delivery_id)).to_json(), status_code=202)

    @api.post(
        "/{webhook_id}/replay",
        status_code=202,
        response_model=ReplayOut,
        responses=errors(400, 404, 413, 503),
        openapi_extra=body_schema("ReplaySinceIn"),
        summary="Send again every delivery of an event at or after a time",
    )
    async def replay_since(webhook_id: WebhookIdPath, request: Request) -> Response:
        since, ids = await service().replay_since(webhook_id, await json_body(request))
        return JSONResponse({"since": since, "replayed": len(ids), "deliveries": ids}, status_code=202)

    return api


class WebhooksUnavailable(ShoalError):
    """Raised when this app was built without webhooks (an app serving only part of a node)."""

    http_status = 503
