"""The cluster token: made once per data directory, kept with mode 0600, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

TOKEN_FILE = "token"
_TOKEN_ID_LABEL = b"shoal/v1 token-id"


def load_or_create_token(data_dir: Path) -> str:
    """Return the token in ``data_dir/token``, creating a new URL-safe one (mode 0600) if there is none."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the token, logs, the embedded store: the owner's
    path = data_dir / TOKEN_FILE
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def token_matches(given: str | None, expected: str) -> bool:
    """Compare without leaking, through timing, how much of the token was right."""
    if not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def token_id(token: str) -> str:
    """A short public fingerprint of ``token``: which token a session was opened with, without keeping it."""
    return hmac.new(token.encode(), _TOKEN_ID_LABEL, hashlib.sha256).hexdigest()[:16]


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
