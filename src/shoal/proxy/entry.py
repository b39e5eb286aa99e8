"""A stored HTTP response and its encoding as a cluster cache value.

The value is ``MAGIC``, a 4-byte big-endian length, a JSON head (status, reason, end-to-end headers, when
it was stored and how old it was then) and the body as it came from the origin. Anyone holding the token
can write any key through the cache API, so a value that does not decode is treated as absent.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import Any

import orjson

from shoal.proxy import policy

MAGIC = b"SHC1"
_LEN = struct.Struct(">I")
#: Headers set afresh each time a stored response is served, never taken from the store.
SERVED_FRESH = frozenset({"age", "content-length", "x-cache"})


class BadEntry(ValueError):
    """Raised when a cache value is not a stored HTTP response."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored response. ``stored_at`` is Unix seconds; ``age`` is how old it was then."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    stored_at: float
    age: float = 0.0

    def encode(self) -> bytes:
        head = orjson.dumps({"s": self.status, "r": self.reason, "h": self.headers, "t": self.stored_at, "a": self.age})
        return MAGIC + _LEN.pack(len(head)) + head + self.body

    @classmethod
    def decode(cls, value: bytes) -> Entry:
        if not value.startswith(MAGIC) or len(value) < len(MAGIC) + _LEN.size:
            raise BadEntry("not a stored HTTP response")
        (size,) = _LEN.unpack_from(value, len(MAGIC))
        start = len(MAGIC) + _LEN.size
        try:
            head: Any = orjson.loads(value[start : start + size])
            headers = tuple((str(k), str(v)) for k, v in head["h"])
            entry = cls(int(head["s"]), str(head["r"]), headers, value[start + size :], float(head["t"]),
                        float(head["a"]))  # fmt: skip
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise BadEntry(f"bad stored HTTP response: {exc}") from None
        if not 100 <= entry.status <= 599:
            raise BadEntry(f"bad stored status {entry.status}")
        return entry

    @classmethod
    def make(cls, status: int, reason: str, headers: policy.Headers, body: bytes, stored_at: float,
             age: float) -> Entry:  # fmt: skip
        kept = [(k, v) for k, v in policy.end_to_end(headers) if k.lower() not in SERVED_FRESH]
        return cls(status, reason, tuple(kept), body, stored_at, age)

    def current_age(self, now: float) -> float:
        return self.age + max(0.0, now - self.stored_at)

    def refreshed(self, headers: policy.Headers, stored_at: float, age: float) -> Entry:
        """This response after a 304 with ``headers``: same body, updated headers, stored anew."""
        merged = [(k, v) for k, v in policy.updated(self.headers, headers) if k.lower() not in SERVED_FRESH]
        return replace(self, headers=tuple(merged), stored_at=stored_at, age=age)

    def served_headers(self, now: float, *, with_age: bool) -> list[tuple[str, str]]:
        """The headers to send with this response: stored ones, the body's length, ``Age`` if asked."""
        out = list(self.headers)
        if self.status not in (204, 304) and not 100 <= self.status < 200:
            out.append(("Content-Length", str(len(self.body))))
        if with_age:
            out.append(("Age", str(int(self.current_age(now)))))
        return out
