"""Sign-in sessions of the web task center, kept in the store so that every node of the cluster knows them.

A session is a random id (``secrets.token_urlsafe(32)``) that the browser holds in a cookie; the store
keeps, under a digest of that id (so a reader of the store learns no usable cookie), the session's CSRF
token and the fingerprint of the cluster token it was opened with. The key expires with the session, so
an ended or expired session is gone on every node at once, and a node behind a balancer accepts a
session opened on another.

    sessions = SessionStore(redis, keys, ttl_s=3600)
    opened = await sessions.open(token_id)           # sign-in: opened.id goes in the cookie
    found = await sessions.find(cookie_value)        # any node, any time: the Session or None
    await sessions.end(cookie_value)                 # sign-out
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

from shoal.errors import StoreUnavailable
from shoal.keys import Keys
from shoal.store.redis import STORE_DOWN, STORE_DOWN_MESSAGE

#: What a session id looks like (token_urlsafe(32) makes 43 characters); anything else is not looked up.
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{32,64}")


@dataclass(frozen=True, slots=True)
class Session:
    """One signed-in browser: its id (the cookie's value), its CSRF token, and the fingerprint of the cluster
    token it signed in with (``shoal.auth.token_id``)."""

    id: str
    csrf: str
    token_id: str

    def __repr__(self) -> str:
        return f"Session(token_id={self.token_id!r})"  # the id and CSRF token are secrets


class SessionStore:
    """Sessions under ``keys.session(...)``, each expiring ``ttl_s`` after sign-in. Safe for concurrent use."""

    def __init__(self, redis: Redis, keys: Keys, *, ttl_s: float) -> None:
        if not ttl_s > 0:
            raise ValueError("ttl_s must be positive")
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s

    def _key(self, session_id: str) -> str:
        return self.keys.session(hashlib.sha256(session_id.encode()).hexdigest())

    async def open(self, token_id: str) -> Session:
        """A new session for a browser that proved it holds the token whose fingerprint is ``token_id``."""
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), token_id)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._key(session.id), mapping={"csrf": session.csrf, "token_id": token_id})
                pipe.pexpire(self._key(session.id), int(self.ttl_s * 1000))
                await pipe.execute()
        except STORE_DOWN:
            raise StoreUnavailable(STORE_DOWN_MESSAGE) from None
        return session

    async def find(self, session_id: str) -> Session | None:
        """The live session with this id, or None (unknown, ended, expired, or not an id at all)."""
        if not _SESSION_ID.fullmatch(session_id):
            return None
        try:
            fields = await self.redis.hgetall(self._key(session_id))
        except STORE_DOWN:
            raise StoreUnavailable(STORE_DOWN_MESSAGE) from None
        found = {_text(k): _text(v) for k, v in fields.items()}
        if not found.get("csrf") or not found.get("token_id"):
            return None
        return Session(session_id, found["csrf"], found["token_id"])

    async def end(self, session_id: str) -> bool:
        """End the session on every node; whether there was one."""
        if not _SESSION_ID.fullmatch(session_id):
            return False
        try:
            return bool(await self.redis.delete(self._key(session_id)))
        except STORE_DOWN:
            raise StoreUnavailable(STORE_DOWN_MESSAGE) from None

    def __repr__(self) -> str:
        return f"SessionStore(ttl_s={self.ttl_s:g})"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
