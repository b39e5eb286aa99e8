"""Token check for every route but the health probes: a bearer header, or the web task center's cookie.

The token is compared in constant time (``shoal.auth.token_matches``). The dependency is declared with
FastAPI's ``HTTPBearer`` so that the OpenAPI document shows the scheme; the check itself is ours, so a
missing or wrong token gets shoal's 401 body and ``WWW-Authenticate: Bearer``.

Without an ``Authorization`` header, the ``shoal_session`` cookie set by the sign-in page is accepted
instead; a cookie-authenticated request that may change something must then carry the CSRF header
(``shoal.web.ui.session``), or it gets 403. Bearer calls never need one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Protocol

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shoal.auth import token_matches
from shoal.errors import Unauthorized
from shoal.web.ui import session

_scheme = HTTPBearer(auto_error=False, description="The cluster token (`DATA_DIR/token`).")


class TokenCheck(Protocol):
    """Anything that says whether a token is accepted now (a rotating ``TokenKeeper`` does)."""

    def matches(self, given: str | None) -> bool: ...


def accepter(token: str | TokenCheck) -> Callable[[str | None], bool]:
    """``token`` as a predicate on a given token."""
    if isinstance(token, str):
        return lambda given: token_matches(given, token)
    return token.matches


def require_token(token: str | TokenCheck) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency that refuses any request without the token (bearer header or session cookie)."""
    accepts = accepter(token)

    async def check(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_scheme)]
    ) -> None:
        if credentials is not None:
            if not accepts(credentials.credentials):
                raise Unauthorized("wrong token")
            return
        cookie = session.session_token(request)
        if cookie is None:
            raise Unauthorized("missing token: send 'Authorization: Bearer <token>'")
        if not accepts(cookie):
            raise Unauthorized("wrong token: the session's token is no longer accepted; sign in again")
        session.check_csrf(request, cookie)

    return check
