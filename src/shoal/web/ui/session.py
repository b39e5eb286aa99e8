"""The browser's session: the API token in a cookie, and the CSRF token that goes with it.

Signing in puts the cluster token itself in ``shoal_session``: HttpOnly (page scripts never see it),
SameSite=Strict (no other site's page or link makes the browser send it), Secure when the page came over
HTTPS, path ``/``. The token is never put in a URL, and a wrong token sets no cookie.

The REST API accepts this cookie as well as ``Authorization: Bearer``. A request that authenticates
with the cookie and may change something (any method but GET, HEAD and OPTIONS) must also carry
``X-CSRF-Token``: an HMAC of the token, which the server writes into each page it renders. Another
site can neither read that page nor compute the HMAC, so it cannot forge the header; SameSite=Strict
already keeps the cookie off its requests, and this second lock holds even where SameSite does not
(an old browser, a sibling subdomain). Bearer calls need no CSRF token: a browser never adds that
header by itself. The HMAC is derived, not stored, so every node of the cluster agrees on it without
sharing any state, and it changes when the token is rotated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from starlette.requests import Request
from starlette.responses import Response

from shoal.errors import ShoalError

#: Name of the cookie that holds the API token.
COOKIE = "shoal_session"
#: Header that carries the CSRF token on unsafe cookie-authenticated requests.
CSRF_HEADER = "X-CSRF-Token"
#: Form field that carries it on the sign-out form.
CSRF_FIELD = "csrf"
#: Methods that change nothing, so need no CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Lifetime of the sign-in, in seconds (a working week); signing out ends it at once.
MAX_AGE_S = 7 * 24 * 3600

_CSRF_CONTEXT = b"shoal web task center csrf v1"


class Forbidden(ShoalError):
    """Raised when a cookie-authenticated request that changes something lacks a valid CSRF token."""

    http_status = 403
    grpc_code = "PERMISSION_DENIED"


def csrf_token(token: str) -> str:
    """The CSRF token for a session holding ``token``: URL-safe, reveals nothing of the token."""
    digest = hmac.new(token.encode(), _CSRF_CONTEXT, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def csrf_matches(token: str, given: str | None) -> bool:
    """Constant-time check of a CSRF token sent with a request."""
    if not given:
        return False
    return hmac.compare_digest(csrf_token(token).encode(), given.encode())


def check_csrf(request: Request, token: str) -> None:
    """Refuse an unsafe request authenticated by the session cookie unless it carries the CSRF header."""
    if request.method in SAFE_METHODS:
        return
    if not csrf_matches(token, request.headers.get(CSRF_HEADER)):
        raise Forbidden(f"missing or wrong {CSRF_HEADER} header: reload the page (signed-in pages send it)")


def session_token(request: Request) -> str | None:
    """The token in the request's session cookie, if any."""
    return request.cookies.get(COOKIE) or None


def is_https(request: Request) -> bool:
    """Whether the browser reached us over HTTPS (directly, or through a proxy that says so)."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def start(response: Response, request: Request, token: str) -> None:
    """Put the token in the session cookie."""
    response.set_cookie(
        COOKIE,
        token,
        max_age=MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


def end(response: Response, request: Request) -> None:
    """Remove the session cookie."""
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=is_https(request))
