"""What a shared HTTP cache may store, for how long, and what a request asks of it (RFC 9111, essentials).

Pure functions over header lists; no I/O. The choices shoal makes where the RFC leaves room:

- Stored: responses to GET with a status in ``STORABLE_STATUSES`` that carry explicit freshness
  (``s-maxage``, ``max-age``, or ``Expires``) or a validator (``ETag``, ``Last-Modified``). A response with a
  validator but no freshness left is stored stale, to be revalidated on its next use. No heuristic freshness.
- Never stored: ``no-store``, ``private``, ``Set-Cookie``, ``Vary`` on anything but ``Accept-Encoding``
  (the cache asks origins for ``identity``, so a representation that varies only on encoding is the one
  every client accepts), a ``Content-Encoding`` beside ``Vary: Accept-Encoding``.
- Requests with ``Authorization`` or ``Cookie``, a ``Range``, or ``Cache-Control: no-store`` bypass the cache
  in both directions (neither served from it nor stored): what they get may be someone's own.
- ``no-cache``, ``max-age=0`` or ``Pragma: no-cache`` on a request force a revalidation.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from shoal._utils import is_digits

Headers = Sequence[tuple[str, str]]

#: Hop-by-hop headers (RFC 9110 7.6.1), never forwarded nor stored; plus those a Connection header names.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
     "trailer", "transfer-encoding", "upgrade"}
)  # fmt: skip
#: Statuses stored when the response allows it (the heuristically cacheable ones of RFC 9110 15.1, but 206).
STORABLE_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
#: How long a stale response with a validator is kept for revalidation.
KEEP_STALE_S = 24 * 3600.0
#: Longest freshness the cluster cache takes (``shoal.validation.MAX_CACHE_TTL_S``).
MAX_TTL_S = 365 * 24 * 3600.0
#: Freshness given to a response stored only for revalidation (the cache takes no TTL of 0).
STALE_ON_ARRIVAL_S = 0.001
#: Request headers that make a GET bypass the cache.
BYPASS_HEADERS = ("authorization", "cookie", "range")
#: Request headers that are the client's own conditions, never sent on a fill shared with others.
CONDITIONALS = frozenset({"if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "if-range"})


def get(headers: Headers, name: str) -> str | None:
    """The first value of header ``name`` (any case), or None."""
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def get_all(headers: Headers, name: str) -> list[str]:
    name = name.lower()
    return [value for key, value in headers if key.lower() == name]


def end_to_end(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` without the hop-by-hop ones, including any that a ``Connection`` header names."""
    headers = list(headers)
    named = {t.strip().lower() for v in get_all(headers, "connection") for t in v.split(",")}
    return [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP and k.lower() not in named]


def without(headers: Iterable[tuple[str, str]], names: Iterable[str]) -> list[tuple[str, str]]:
    drop = {n.lower() for n in names}
    return [(k, v) for k, v in headers if k.lower() not in drop]


def cache_control(headers: Headers, name: str = "cache-control") -> dict[str, str | None]:
    """Directives of every ``Cache-Control`` header, names lower-cased, quoted values unquoted."""
    directives: dict[str, str | None] = {}
    for value in get_all(headers, name):
        for part in _split_list(value):
            key, eq, arg = part.partition("=")
            key = key.strip().lower()
            if key and key not in directives:
                directives[key] = arg.strip().strip('"') if eq else None
    return directives


def _split_list(value: str) -> list[str]:
    """A comma-separated header list, commas inside quoted strings kept."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def seconds(value: str | None) -> float | None:
    """A delta-seconds value; None when absent or not a non-negative integer."""
    if value is None or not is_digits(value.strip()):
        return None
    return float(value.strip())


def parse_date(value: str | None) -> float | None:
    """An HTTP date as Unix seconds, or None when absent or invalid."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp()


def http_date(when: float) -> str:
    return email.utils.formatdate(when, usegmt=True)


class Mode(Enum):
    """What a request may do with the cache."""

    USE = "use"  # serve a fresh stored response, else fill
    REVALIDATE = "revalidate"  # the client asked for a check with the origin first
    BYPASS = "bypass"  # neither read nor store


def request_mode(headers: Headers) -> Mode:
    """How a GET with these headers may use the cache."""
    if any(get(headers, name) is not None for name in BYPASS_HEADERS):
        return Mode.BYPASS
    directives = cache_control(headers)
    if "no-store" in directives:
        return Mode.BYPASS
    if "no-cache" in directives or seconds(directives.get("max-age", "x")) == 0:
        return Mode.REVALIDATE
    if not directives and "no-cache" in (get(headers, "pragma") or "").lower():
        return Mode.REVALIDATE
    return Mode.USE


def max_age_asked(headers: Headers) -> float | None:
    """The request's ``max-age``: the oldest stored response the client accepts."""
    return seconds(cache_control(headers).get("max-age"))


def initial_age(headers: Headers, response_time: float, request_time: float) -> float:
    """The age of a response when it arrived (RFC 9111 4.2.3): its ``Age`` plus the request's delay, or how
    long ago its ``Date`` was (in whole seconds, as ``Date`` has no finer unit), whichever is more."""
    age_value = seconds(get(headers, "age")) or 0.0
    date = parse_date(get(headers, "date"))
    apparent = max(0.0, math.floor(response_time) - date) if date is not None else 0.0
    return max(apparent, age_value + max(0.0, response_time - request_time))


def freshness_lifetime(headers: Headers, response_time: float) -> float | None:
    """Explicit freshness in seconds (``s-maxage``, ``max-age``, ``Expires``), 0 when ``no-cache`` says to
    revalidate each time or a freshness header is invalid, None when the response gives none."""
    directives = cache_control(headers)
    if "no-cache" in directives:
        return 0.0
    for name in ("s-maxage", "max-age"):
        if name in directives:
            return seconds(directives[name]) or 0.0
    expires = get(headers, "expires")
    if expires is None:
        return None
    when = parse_date(expires)
    if when is None:
        return 0.0  # an invalid Expires (e.g. "0") means already expired
    date = parse_date(get(headers, "date"))
    return max(0.0, when - (date if date is not None else response_time))


def has_validator(headers: Headers) -> bool:
    return get(headers, "etag") is not None or get(headers, "last-modified") is not None


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether to store a response, fresh for ``ttl_s`` then kept stale for ``keep_s``; ``why`` if not."""

    store: bool
    ttl_s: float = 0.0
    keep_s: float = 0.0
    why: str = ""


def storable(status: int, headers: Headers, age: float, response_time: float) -> Decision:
    """Whether a shared cache may store this response to a GET, and for how long."""
    if status not in STORABLE_STATUSES:
        return Decision(False, why=f"status {status}")
    directives = cache_control(headers)
    for directive in ("no-store", "private"):
        if directive in directives:
            return Decision(False, why=directive)
    if get(headers, "set-cookie") is not None:
        return Decision(False, why="set-cookie")
    vary = {t.strip().lower() for v in get_all(headers, "vary") for t in v.split(",") if t.strip()}
    if vary - {"accept-encoding"}:
        return Decision(False, why="vary")
    if vary and (get(headers, "content-encoding") or "identity").lower() != "identity":
        return Decision(False, why="encoded variant")
    lifetime = freshness_lifetime(headers, response_time)
    validator = has_validator(headers)
    keep = KEEP_STALE_S if validator else 0.0
    if lifetime is not None and lifetime > age:
        return Decision(True, min(lifetime - age, MAX_TTL_S), keep)
    if validator:
        return Decision(True, STALE_ON_ARRIVAL_S, keep)
    return Decision(False, why="no freshness" if lifetime is None else "stale on arrival")


def conditional_headers(headers: Headers) -> list[tuple[str, str]]:
    """The request headers that revalidate a stored response with these headers."""
    out = []
    etag = get(headers, "etag")
    if etag is not None:
        out.append(("If-None-Match", etag))
    modified = get(headers, "last-modified")
    if modified is not None:
        out.append(("If-Modified-Since", modified))
    return out


def updated(stored: Headers, fresh: Headers) -> list[tuple[str, str]]:
    """A stored response's headers after a 304: those the 304 carries replace the stored ones
    (RFC 9111 3.2), except the ones that describe the body, which the 304 has not sent."""
    keep_body = {"content-length", "content-encoding", "content-range", "content-type"}
    replaced = {k.lower() for k, _ in fresh} - keep_body
    merged = [(k, v) for k, v in stored if k.lower() not in replaced]
    merged += [(k, v) for k, v in end_to_end(fresh) if k.lower() not in keep_body]
    return merged


def not_modified(stored: Headers, request: Headers) -> bool:
    """Whether a client's own conditional GET is answered by a 304 from a stored response."""
    if_none_match = get(request, "if-none-match")
    if if_none_match is not None:
        etag = get(stored, "etag")
        if etag is None:
            return False
        tags = {t.strip().removeprefix("W/") for t in _split_list(if_none_match)}
        return "*" in tags or etag.strip().removeprefix("W/") in tags
    since = parse_date(get(request, "if-modified-since"))
    modified = parse_date(get(stored, "last-modified"))
    return since is not None and modified is not None and modified <= since
