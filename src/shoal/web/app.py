"""The node's HTTP application: REST ``/api/v1``, the event stream, probes and metrics.

``create_app`` is the only entry point; the node builds it with its TaskAPI/ClusterAPI and serves it with
uvicorn. Middleware, outermost first: ``HttpMetrics`` (counts every answer, 413s included), ``BodyLimit``
(refuses big bodies before they are read), ``ClusterCors`` (CORS for ``/api/v1`` from the origins of the
cluster's own nodes only), ``CatchAll`` (unexpected errors -> generic 500, traceback to the log), then
FastAPI's exception handlers (``shoal.web.errors``: ShoalError -> its status).

The web task center (``shoal.web.ui``) is served at ``/`` (pages) and ``/static`` (its scripts and styles);
its pages call the same REST API with the session cookie set at sign-in.

``/openapi.json`` is public, like the probes: it describes shapes, holds no data, and tools that render it
(or generate clients) should not need the cluster token. Swagger UI and ReDoc are off because they load
their scripts from a CDN, which a private cluster may not reach.
"""

from __future__ import annotations

import os

from fastapi import Depends, FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.responses import Response

from shoal import validation
from shoal.schedules import ScheduleService
from shoal.store.sessions import SessionStore
from shoal.types import CacheAPI, ClusterAPI, StoreAPI, TaskAPI
from shoal.version import __version__
from shoal.web import api, cache_api, cluster_api, errors, events, openapi, schedules_api, schemas, store_api
from shoal.web.limits import BodyLimit
from shoal.web.metrics import HttpMetrics, register_cache_metrics
from shoal.web.responses import JSONResponse
from shoal.web.security import TokenCheck, as_check, require_token
from shoal.web.ui.cors import ClusterCors, origins_of
from shoal.web.ui.pages import Pages, build_pages_router, static_files, static_tag
from shoal.web.webhooks_api import build_webhooks_router
from shoal.web.workflows_api import build_workflows_router
from shoal.webhooks.service import WebhookService

DEFAULT_CACHE_MAX_VALUE = 8 * 1024 * 1024

DESCRIPTION = """\
REST API of a shoal node. Every route but `/healthz`, `/readyz` and `/openapi.json` needs
`Authorization: Bearer <token>` (the cluster token, `DATA_DIR/token`). Errors have the body
`{"error": "<kind>", "message": "<text>"}`. Times are Unix seconds.
"""


def create_app(
    *,
    tasks: TaskAPI,
    cluster: ClusterAPI,
    token: str | TokenCheck,
    registry: CollectorRegistry,
    keepalive_s: float = 15.0,
    max_body_bytes: int = validation.MAX_BODY_BYTES,
    node_name: str | None = None,
    cache: CacheAPI | None = None,
    cache_max_value: int = DEFAULT_CACHE_MAX_VALUE,
    sessions: SessionStore | None = None,
    store: StoreAPI | None = None,
    schedules: ScheduleService | None = None,
    webhooks: WebhookService | None = None,
) -> FastAPI:
    """Build the HTTP app over the node's APIs.

    Parameters:
        tasks: what users may do with tasks.
        cluster: membership and readiness.
        token: the cluster token every non-probe route requires.
        registry: the node's Prometheus registry; served at ``/metrics`` and given the HTTP metrics.
        keepalive_s: seconds between keep-alive comments on ``/api/v1/events``.
        max_body_bytes: largest request body accepted (413 above it).
        node_name: this node's name, shown on the task center's pages and in the probes' answers.
        cache: the cluster cache as this node offers it, served at ``/api/v1/cache`` (None: those routes
            answer 503) and its shard's use at ``/metrics``.
        cache_max_value: largest cache value a PUT may carry (413 above it); the node's ``cache_max_value``.
        sessions: where the task center's sign-in sessions live (the store); without it, no one can sign in.
        store: the store's figures, served at ``/api/v1/store`` (None: that route answers 503).
        schedules: the named schedules, served at ``/api/v1/schedules`` (None: those routes answer 503).
        webhooks: the webhook subscriptions, served at ``/api/v1/webhooks`` (None: those routes answer 503).

    ``app.state.event_streams.close()`` ends every open event stream; call it when the node stops so
    the server does not wait on them.
    """
    app = FastAPI(
        title="shoal",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served by shoal.web.openapi
        default_response_class=JSONResponse,
    )
    errors.install(app)
    app.add_middleware(errors.CatchAll)

    async def cluster_origins() -> set[str]:
        return origins_of([n.http for n in (await cluster.view()).nodes])

    app.add_middleware(ClusterCors, origins=cluster_origins)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, own=(cache_api.PREFIX + "/",))
    app.add_middleware(HttpMetrics, registry=registry)

    streams = events.EventStreams(tasks, cluster=cluster, keepalive_s=keepalive_s, registry=registry)
    app.state.event_streams = streams
    app.state.sessions = sessions
    if cache is not None:
        register_cache_metrics(registry, cache)
    app.include_router(api.build_router(tasks=tasks, token=token))
    app.include_router(cluster_api.build_cluster_router(cluster=cluster, token=token))
    app.include_router(events.build_router(streams, token=token))
    app.include_router(cache_api.build_cache_router(cache=cache, token=token, max_value=cache_max_value))
    app.include_router(store_api.build_store_router(store=store, token=token))
    app.include_router(schedules_api.build_schedules_router(schedules=schedules, token=token))
    app.include_router(build_webhooks_router(webhooks=webhooks, token=token))
    app.include_router(build_workflows_router(tasks=tasks, token=token))
    openapi.install(app, tasks)
    tag = static_tag()
    pages = Pages(cluster=cluster, tokens=as_check(token), node_name=node_name, static_tag=tag)
    app.include_router(build_pages_router(pages))
    app.mount("/static", static_files(tag), name="static")

    # The probes say which process answers (name and pid, nothing secret): whoever started the node can
    # then tell it from another process that holds the same port.
    me = {"node": node_name, "pid": os.getpid()}

    @app.get("/healthz", response_model=schemas.StatusOut, tags=["probes"], summary="Liveness: the process runs")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok", **me})

    @app.get(
        "/readyz",
        response_model=schemas.StatusOut,
        responses=schemas.errors(503),
        tags=["probes"],
        summary="Readiness: the store answers and a master is known",
    )
    async def readyz() -> Response:
        ready, reason = await cluster.ready()
        if not ready:
            return errors.error_response(503, "not_ready", reason or "not ready")
        return JSONResponse({"status": "ready", "reason": reason or None, **me})

    @app.get(
        "/metrics",
        dependencies=[Depends(require_token(token))],
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}, **schemas.errors(401)},
        response_class=Response,
        tags=["probes"],
        summary="Prometheus metrics",
    )
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
