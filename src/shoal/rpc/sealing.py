"""A new cluster token, sealed under the current one, for ``Elections.UpdateSecret``.

The key is HKDF-SHA256 of the token the receiver holds (with a random salt per message), and the new
token is encrypted with AES-256-GCM under it; the key id (a fingerprint of that token) is the associated
data. Only a holder of that token can open the message or make one that opens, and the new token never
crosses the wire in clear.

    sealed, kid = seal(new_token, under=keeper.current)      # the sender
    new_token = adopt_sealed(keeper, sealed, kid)            # the receiver (PeerAPI.update_secret)
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shoal.auth import token_matches
from shoal.rpc.tokens import TokenKeeper, check_token

VERSION = 1
SALT_BYTES = 16
NONCE_BYTES = 12
TAG_BYTES = 16
#: Largest sealed message accepted: version, salt, nonce, the longest token, tag.
MAX_SEALED_BYTES = 1 + SALT_BYTES + NONCE_BYTES + 512 + TAG_BYTES
KEY_ID_CHARS = 16

_KEY_ID_LABEL = b"shoal/v1 key-id"
_HKDF_INFO = b"shoal/v1 update-secret"


class SealError(ValueError):
    """A sealed token that cannot be opened; the message says why (for the log, never the token)."""


def key_id(token: str) -> str:
    """A short public fingerprint of ``token``: which token a message is sealed under."""
    return hmac.new(token.encode(), _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:KEY_ID_CHARS]


def _key(token: str, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_HKDF_INFO).derive(token.encode())


def seal(new_token: str, *, under: str) -> tuple[bytes, str]:
    """Encrypt ``new_token`` for holders of ``under``; returns the sealed bytes and ``under``'s key id."""
    check_token(new_token)
    kid = key_id(under)
    salt = os.urandom(SALT_BYTES)
    nonce = os.urandom(NONCE_BYTES)
    body = AESGCM(_key(under, salt)).encrypt(nonce, new_token.encode(), kid.encode())
    return bytes([VERSION]) + salt + nonce + body, kid


def unseal(sealed: bytes, kid: str, token: str) -> str:
    """Open a message sealed under ``token``. Raises SealError when it is malformed or was not."""
    head = 1 + SALT_BYTES + NONCE_BYTES
    if len(sealed) < head + TAG_BYTES + 1 or len(sealed) > MAX_SEALED_BYTES:
        raise SealError(f"sealed secret must be {head + TAG_BYTES + 1}-{MAX_SEALED_BYTES} bytes")
    if sealed[0] != VERSION:
        raise SealError(f"unknown sealed secret version {sealed[0]}")
    salt, nonce, body = sealed[1 : 1 + SALT_BYTES], sealed[1 + SALT_BYTES : head], sealed[head:]
    try:
        plain = AESGCM(_key(token, salt)).decrypt(nonce, body, kid.encode())
    except InvalidTag:
        raise SealError("sealed secret does not open with this token (altered, or sealed under another)") from None
    try:
        new_token = plain.decode("ascii")
        check_token(new_token)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SealError(f"sealed secret holds no usable token: {exc}") from None
    return new_token


def adopt_sealed(keeper: TokenKeeper, sealed: bytes, kid: str, *, grace_s: float | None = None) -> str:
    """Open ``sealed``, make its token current in ``keeper`` and return it (for the node to persist).

    A message sealed under the current token rotates to the new one (the old stays accepted for the
    grace period). One sealed under the previous token is accepted only if it carries the token that is
    already current (a repeat from a sender that rotated first): a different token there would undo a
    later rotation. Raises SealError with the reason when the message cannot be adopted.
    """
    current = keeper.current
    if hmac.compare_digest(kid, key_id(current)):
        new_token = unseal(sealed, kid, current)
        keeper.rotate(new_token, grace_s=grace_s)
        return new_token
    previous = keeper.previous
    if previous is not None and hmac.compare_digest(kid, key_id(previous)):
        new_token = unseal(sealed, kid, previous)
        if token_matches(new_token, current):
            return current
        raise SealError("sealed under the token this node already replaced, with a different new token")
    raise SealError("sealed under a token this node does not hold")
