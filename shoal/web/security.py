"""Bearer-token check for every route but the health probes.

The token is compared in constant time (``shoal.auth.token_matches``). The dependency is declared with
FastAPI's ``HTTPBearer`` so that the OpenAPI document shows the scheme; the check itself is ours, so a
missing or wrong token gets shoal's 401 body and ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shoal.auth import token_matches
from shoal.errors import Unauthorized

_scheme = HTTPBearer(auto_error=False, description="The cluster token (`DATA_DIR/token`).")


def require_token(token: str) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency that refuses any request without ``Authorization: Bearer <token>``."""

    async def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_scheme)]) -> None:
        if credentials is None:
            raise Unauthorized("missing token: send 'Authorization: Bearer <token>'")
        if not token_matches(credentials.credentials, token):
            raise Unauthorized("wrong token")

    return check
