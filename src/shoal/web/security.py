"""Token check for every route but the health probes: a bearer header, or the web task center's cookie.

The token is compared in constant time (``shoal.auth.token_matches``). The dependency is declared with
FastAPI's ``HTTPBearer`` so that the OpenAPI document shows the scheme; the check itself is ours, so a
missing or wrong token gets shoal's 401 body and ``WWW-Authenticate: Bearer``.

Without an ``Authorization`` header, a session cookie set by the sign-in page is accepted instead, while
its session lives in the store; a cookie-authenticated request that may change something must then carry
the session's CSRF header (``shoal.web.ui.session``), or it gets 403. Bearer calls never need one.
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
    """Anything that says which tokens are accepted now (a rotating ``TokenKeeper`` does)."""

    def matches(self, given: str | None) -> bool: ...

    def accepted(self) -> tuple[str, ...]: ...


class _FixedToken:
    """One token that never changes, as a TokenCheck."""

    def __init__(self, token: str) -> None:
        self._token = token

    def matches(self, given: str | None) -> bool:
        return token_matches(given, self._token)

    def accepted(self) -> tuple[str, ...]:
        return (self._token,)

    def __repr__(self) -> str:
        return "_FixedToken(<hidden>)"


def as_check(token: str | TokenCheck) -> TokenCheck:
    """``token`` as a TokenCheck."""
    return _FixedToken(token) if isinstance(token, str) else token


def accepter(token: str | TokenCheck) -> Callable[[str | None], bool]:
    """``token`` as a predicate on a given token."""
    return as_check(token).matches


def require_token(token: str | TokenCheck) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency that refuses any request without the token (bearer header or session cookie)."""
    tokens = as_check(token)
    accepts = tokens.matches

    async def check(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_scheme)]
    ) -> None:
        if credentials is not None:
            if not accepts(credentials.credentials):
                raise Unauthorized("wrong token")
            return
        if not session.presented(request):
            raise Unauthorized("missing token: send 'Authorization: Bearer <token>'")
        found = await session.current(request, tokens)
        if found is None:
            raise Unauthorized("the session has ended (signed out, expired, or the token was rotated); sign in again")
        session.check_csrf(request, found)

    return check
