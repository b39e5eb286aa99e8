"""Webhook secrets and signatures, as Standard Webhooks define them (the ``standardwebhooks`` package signs).

A secret is ``whsec_`` followed by the base64 of 24 to 64 random bytes; the HMAC-SHA256 key is those bytes.
Each POST carries ``webhook-id`` (the delivery's message id, the same for its retries and replays),
``webhook-timestamp`` (Unix seconds of this attempt) and ``webhook-signature: v1,<base64 of HMAC-SHA256 over
"id.timestamp.body">``. A receiver checks the signature with the secret it was shown once, at the
subscription's creation, and refuses timestamps far from its clock (replays carry a fresh one).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from datetime import UTC, datetime
from typing import Any

import orjson
from standardwebhooks import Webhook as _Signer

from shoal.errors import InvalidInput

PREFIX = "whsec_"
#: Bytes of a secret shoal makes; Standard Webhooks takes 24 to 64.
SECRET_BYTES = 32
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def check_secret(value: Any) -> str:
    """A user's own secret: ``whsec_`` and the base64 of 24 to 64 bytes."""
    why = f"secret must be {PREFIX} followed by the base64 of {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} random bytes"
    if not isinstance(value, str) or not value.startswith(PREFIX) or len(value) > 200:
        raise InvalidInput(f"{why} (leave it out to have one made)")
    try:
        key = base64.b64decode(value[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{why}: the part after {PREFIX} is not base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise InvalidInput(f"{why}: it holds {len(key)} bytes")
    return value


def headers(secret: str, message_id: str, body: str, at: float) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt, signed for ``at`` (Unix seconds)."""
    stamp = datetime.fromtimestamp(int(at), UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at)),
        "webhook-signature": _Signer(secret).sign(message_id, stamp, body),
    }


def iso(at: float) -> str:
    """``2026-12-06T10:00:00.123456Z``: the payload's ``timestamp``."""
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def payload(state: str, at: float, data: dict[str, Any]) -> str:
    """The body, in the envelope Standard Webhooks recommend: ``{type, timestamp, data}``."""
    return orjson.dumps({"type": f"task.{state.lower()}", "timestamp": iso(at), "data": data}).decode()
