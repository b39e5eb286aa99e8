"""The task center's HTML routes: sign-in and sign-out, and the pages (tasks, one task, schedules, webhooks,
nodes).

Pages are thin server-rendered shells (Jinja2): the data comes from the REST API, fetched by the page's
ES modules with the session cookie, so a page served by any node works the same and shows nothing the
API would not. A page asked for without a valid session sends the browser to the sign-in page, with
the path to come back to (never the token) in ``next``.

Every page forbids framing, inline script and any script or style not served by the node itself
(Content-Security-Policy); the API may also be reached on the other nodes of the cluster, for when the
node that served the page goes away (``connect-src`` lists their origins, see ``ui.cors``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from shoal import validation
from shoal.auth import token_id
from shoal.errors import InvalidInput
from shoal.models import TaskState
from shoal.store.sessions import Session
from shoal.types import ClusterAPI
from shoal.version import __version__
from shoal.web.security import TokenCheck
from shoal.web.ui import session
from shoal.web.ui.cors import ORIGINS_TTL_S, origins_of

log = logging.getLogger("shoal.web.ui")

WEB_DIR = Path(__file__).resolve().parent.parent
TEMPLATES = WEB_DIR / "templates"
STATIC = WEB_DIR / "static"
#: The ES modules each page imports beyond the shared ones (api, ui, live): preloaded together.
TASKS_MODULES = ["tasks.js", "bulk.js", "form.js"]
TASK_MODULES = ["task.js", "result.js", "graph.js"]
NODES_MODULES = ["nodes.js", "chart.js"]
SCHEDULES_MODULES = ["schedules.js"]
WEBHOOKS_MODULES = ["webhooks.js"]
#: Largest sign-in form accepted, in bytes (a token is at most a few hundred characters).
MAX_FORM_BYTES = 4096


def _environment(tag: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True
    )
    env.globals["version"] = __version__
    env.globals["static"] = f"/static/{tag}"
    env.globals["states"] = [s.name for s in TaskState]
    return env


def static_tag(directory: Path = STATIC) -> str:
    """A short hash of every static file: part of their URLs, so a changed file gets a new URL."""
    digest = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def static_files(tag: str) -> StaticFiles:
    """The pages' scripts, styles and icon, public (they hold no data).

    Under ``/static/<tag>/`` (the URLs the pages use; modules import each other relatively, so they stay
    under it) a file never changes, so the browser may keep it for good; any other path is revalidated.
    """
    return _TaggedStatic(tag, directory=STATIC)


class _TaggedStatic(StaticFiles):
    def __init__(self, tag: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tag = tag

    def get_path(self, scope: Scope) -> str:
        path = super().get_path(scope)
        head, _, rest = path.partition(os.sep)
        if rest and len(head) == len(self.tag) and all(c in "0123456789abcdef" for c in head):
            scope["shoal.tagged"] = head == self.tag
            return rest  # another tag: a page from before an upgrade; serve the file as it is now
        return path

    def file_response(self, full_path: Any, stat_result: Any, scope: Scope, status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        immutable = scope.get("shoal.tagged", False)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable" if immutable else "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this node only (``/...`` but not ``//host``)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value[:2000]


class Pages:
    """Renders the pages for one node; ``tokens`` says which tokens are the cluster's now (they may rotate)."""

    def __init__(self, *, cluster: ClusterAPI, tokens: TokenCheck, node_name: str | None, static_tag: str) -> None:
        self.cluster = cluster
        self.tokens = tokens
        self.accepts = tokens.matches
        self.node_name = node_name
        self.env = _environment(static_tag)
        self._origins: list[str] = []
        self._origins_at = float("-inf")

    async def _cluster_origins(self) -> list[str]:
        """The other nodes' origins, for ``connect-src``; read at most every ``ORIGINS_TTL_S``."""
        if time.monotonic() - self._origins_at > ORIGINS_TTL_S:
            try:
                view = await self.cluster.view()
                self._origins = sorted(origins_of([n.http for n in view.nodes]))
            except Exception as exc:  # the page still works on this node alone
                log.debug("no cluster view for the page's connect-src: %s", exc)
            self._origins_at = time.monotonic()
        return self._origins

    async def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        found = await self.session(request)
        others = await self._cluster_origins() if found else []
        html = self.env.get_template(template).render(
            request=request,
            node=self.node_name or "",
            signed_in=found is not None,
            csrf=found.csrf if found else "",
            **{"modules": [], **context},
        )
        response = HTMLResponse(html, status_code=status)
        _page_headers(response, others)
        return response

    async def session(self, request: Request) -> Session | None:
        """The request's live session, if it is signed in."""
        return await session.current(request, self.tokens)

    async def signed_in(self, request: Request) -> bool:
        return await self.session(request) is not None


def _page_headers(response: Response, connect: list[str]) -> None:
    csp = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; font-src 'self'; "
        f"connect-src 'self' {' '.join(connect)}; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
    response.headers["Content-Security-Policy"] = csp
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"


def _to_signin(request: Request) -> RedirectResponse:
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/signin?next={quote(path, safe='')}", status_code=303)


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form, read by hand (no multipart parser needed)."""
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise InvalidInput("the form is too large")
    fields = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=10)
    return {k: v[0] for k, v in fields.items()}


def _same_origin(request: Request) -> bool:
    """A form post must come from a page of this node (or from a client that sends no Origin)."""
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


def build_pages_router(pages: Pages) -> APIRouter:
    """The HTML routes; they are not part of the REST API and are left out of the OpenAPI document."""
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def tasks_page(request: Request) -> Response:
        if not await pages.signed_in(request):
            return _to_signin(request)
        return await pages.render(request, "tasks.html", page="tasks", open_create=False, modules=TASKS_MODULES)

    @router.get("/new")
    async def new_task_page(request: Request) -> Response:
        if not await pages.signed_in(request):
            return _to_signin(request)
        return await pages.render(request, "tasks.html", page="tasks", open_create=True, modules=TASKS_MODULES)

    @router.get("/tasks/{task_id}")
    async def task_page(request: Request, task_id: str) -> Response:
        if not await pages.signed_in(request):
            return _to_signin(request)
        try:
            tid = validation.task_id(task_id)
        except InvalidInput as exc:
            return await pages.render(request, "missing.html", status=404, page="tasks", message=exc.message)
        return await pages.render(request, "task.html", page="task", task_id=tid, modules=TASK_MODULES)

    @router.get("/nodes")
    async def nodes_page(request: Request) -> Response:
        if not await pages.signed_in(request):
            return _to_signin(request)
        return await pages.render(request, "nodes.html", page="nodes", modules=NODES_MODULES)

    @router.get("/schedules")
    async def schedules_page(request: Request) -> Response:
        if not await pages.signed_in(request):
            return _to_signin(request)
        return await pages.render(request, "schedules.html", page="schedules", modules=SCHEDULES_MODULES)

    _add_webhooks_page(router, pages)
    _add_session_routes(router, pages)
    return router


def _add_webhooks_page(router: APIRouter, pages: Pages) -> None:
    @router.get("/webhooks")
    async def webhooks_page(request: Request) -> Response:
        if not await pages.signed_in(request):
            return _to_signin(request)
        return await pages.render(request, "webhooks.html", page="webhooks", modules=WEBHOOKS_MODULES)


def _add_session_routes(router: APIRouter, pages: Pages) -> None:
    """Sign-in (a plain form: works without scripts) and sign-out (a form carrying the CSRF token)."""

    @router.get("/signin")
    async def signin_page(request: Request, next: str | None = None) -> Response:
        if await pages.signed_in(request):
            return RedirectResponse(safe_next(next), status_code=303)
        return await pages.render(request, "signin.html", page="signin", next=safe_next(next), error="")

    @router.post("/signin")
    async def signin(request: Request) -> Response:
        form = await _form(request)
        target = safe_next(form.get("next"))
        if not _same_origin(request):
            return await pages.render(request, "signin.html", status=403, page="signin", next=target,
                                      error="sign in from this node's own sign-in page")  # fmt: skip
        token = form.get("token", "").strip()
        if not token:
            return await pages.render(request, "signin.html", status=400, page="signin", next=target,
                                      error="token is required")  # fmt: skip
        if not pages.accepts(token):
            return await pages.render(request, "signin.html", status=401, page="signin", next=target,
                                      error="wrong token: use the cluster token (DATA_DIR/token)")  # fmt: skip
        store = session.store_of(request)
        if store is None:
            return await pages.render(request, "signin.html", status=503, page="signin", next=target,
                                      error="signing in needs the store, which this node does not have")  # fmt: skip
        opened = await store.open(token_id(token))
        response = RedirectResponse(target, status_code=303)
        session.start(response, request, opened, store.ttl_s)
        return response

    @router.post("/signout")
    async def signout(request: Request) -> Response:
        form = await _form(request)
        found = await pages.session(request)
        if found is not None and not session.csrf_matches(found, form.get(session.CSRF_FIELD)):
            return await pages.render(request, "missing.html", status=403, page="signin",
                                      message="sign out from a page of the task center")  # fmt: skip
        response = RedirectResponse("/signin", status_code=303)
        await session.end(response, request)
        return response
