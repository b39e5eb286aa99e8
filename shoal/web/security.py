"""Bearer-token check for every route but the health probes.

The token is compared in constant time (``shoal.auth.token_matches``). The dependency is declared with
FastAPI's ``HTTPBearer`` so that the OpenAPI document shows the scheme; the check itself is ours, so a
missing or wrong token gets shoal's 401 body and ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Protocol

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shoal.auth import token_matches
from shoal.errors import Unauthorized

_scheme = HTTPBearer(auto_error=False, description="The cluster token (`DATA_DIR/token`).")


class TokenCheck(Protocol):
    """Anything that says whether a token is accepted now (a rotating ``TokenKeeper`` does)."""

    def matches(self, given: str | None) -> bool: ...


def require_token(token: str | TokenCheck) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency that refuses any request without ``Authorization: Bearer <token>``."""
    accepts = (lambda given: token_matches(given, token)) if isinstance(token, str) else token.matches

    async def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_scheme)]) -> None:
        if credentials is None:
            raise Unauthorized("missing token: send 'Authorization: Bearer <token>'")
        if not accepts(credentials.credentials):
            raise Unauthorized("wrong token")

    return check
