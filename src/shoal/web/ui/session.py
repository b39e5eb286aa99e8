"""The browser's session: a random id in a cookie, the session itself in the store, and its CSRF token.

Signing in with the cluster token opens a session in the store (``shoal.store.sessions``) and puts only its
random id in a cookie: HttpOnly (page scripts never see it), SameSite=Strict (no other site's page or link
makes the browser send it), Secure when the page came over HTTPS, path ``/``. The token itself is never in
a cookie or a URL, so another service on the same host, which gets the host's cookies whatever its port,
gets at most a session: one that sign-out, ``session_ttl`` or a rotation ends, never the token itself.
(Serve the task center on a host name of its own where other services share the address.) The cookie's name
carries the port the browser reached the node on (``shoal_session_8080``), so two clusters on one host do
not overwrite each other's sign-in; a node accepts any ``shoal_session_*`` cookie whose id its store knows,
so a page served by one node keeps working through another node of the same cluster.

A session ends at sign-out (on every node at once), ``session_ttl`` after sign-in, or when the token it
was opened with is no longer accepted: a token rotation ends every session once the old token's grace
period is over.

The REST API accepts the session cookie as well as ``Authorization: Bearer``. A request that
authenticates with the cookie and may change something (any method but GET, HEAD and OPTIONS) must also
carry ``X-CSRF-Token``: the session's random CSRF token, which the server writes into each page it
renders. Another site can neither read that page nor guess the token, so it cannot forge the header;
SameSite=Strict already keeps the cookie off its requests, and this second lock holds even where SameSite
does not (an old browser, a sibling subdomain). Bearer calls need no CSRF token: a browser never adds
that header by itself.
"""

from __future__ import annotations

import hmac
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response

from shoal.auth import token_id
from shoal.errors import ShoalError
from shoal.store.sessions import Session, SessionStore

#: Start of the name of every session cookie; the rest is the port the browser reached the node on.
COOKIE_PREFIX = "shoal_session_"
#: Session cookies of one request looked up at most (a browser holds one per port it signed in on).
MAX_COOKIES = 4
#: Header that carries the CSRF token on unsafe cookie-authenticated requests.
CSRF_HEADER = "X-CSRF-Token"
#: Form field that carries it on the sign-out form.
CSRF_FIELD = "csrf"
#: Methods that change nothing, so need no CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Forbidden(ShoalError):
    """Raised when a cookie-authenticated request that changes something lacks a valid CSRF token."""

    http_status = 403
    grpc_code = "PERMISSION_DENIED"


class AcceptedTokens(Protocol):
    """The tokens the node accepts now (a rotating ``TokenKeeper``: the current one, and the previous one
    during a rotation's grace period)."""

    def accepted(self) -> tuple[str, ...]: ...


def cookie_name(request: Request) -> str:
    """``shoal_session_<port>``: the port the browser used, so that sign-ins on other ports keep their own."""
    port = request.url.port or (443 if is_https(request) else 80)
    return f"{COOKIE_PREFIX}{port}"


def presented(request: Request) -> list[tuple[str, str]]:
    """(name, value) of the request's session cookies, at most MAX_COOKIES, this port's first."""
    own = cookie_name(request)
    found = sorted((name != own, name, value) for name, value in request.cookies.items()
                   if name.startswith(COOKIE_PREFIX) and value)  # fmt: skip
    return [(name, value) for _, name, value in found[:MAX_COOKIES]]


def store_of(request: Request) -> SessionStore | None:
    """The node's session store (``create_app`` keeps it in ``app.state.sessions``)."""
    store: SessionStore | None = getattr(request.app.state, "sessions", None)
    return store


async def current(request: Request, tokens: AcceptedTokens) -> Session | None:
    """The request's live session, opened with a token the node still accepts; None without one."""
    store = store_of(request)
    if store is None:
        return None
    accepted = {token_id(t) for t in tokens.accepted()}
    for _, value in presented(request):
        found = await store.find(value)
        if found is not None and found.token_id in accepted:
            return found
    return None


def csrf_matches(found: Session, given: str | None) -> bool:
    """Constant-time check of a CSRF token sent with a request against the session's."""
    return bool(given) and hmac.compare_digest(found.csrf.encode(), (given or "").encode())


def check_csrf(request: Request, found: Session) -> None:
    """Refuse an unsafe request authenticated by the session cookie unless it carries the CSRF header."""
    if request.method in SAFE_METHODS:
        return
    if not csrf_matches(found, request.headers.get(CSRF_HEADER)):
        raise Forbidden(f"missing or wrong {CSRF_HEADER} header: reload the page (signed-in pages send it)")


def is_https(request: Request) -> bool:
    """Whether the browser reached us over HTTPS (directly, or through a proxy that says so)."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def start(response: Response, request: Request, opened: Session, max_age_s: float) -> None:
    """Put the session's id in this port's session cookie."""
    response.set_cookie(
        cookie_name(request),
        opened.id,
        max_age=int(max_age_s),
        path="/",
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


async def end(response: Response, request: Request) -> None:
    """End every session the request presents, in the store, and remove their cookies."""
    store = store_of(request)
    for name, value in presented(request):
        if store is not None:
            await store.end(value)
        response.delete_cookie(name, path="/", httponly=True, samesite="strict", secure=is_https(request))
