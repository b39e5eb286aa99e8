"""Cache keys shared by the parts that must agree on them: the HTTP cache (proxy and ``fetch``) and the
scheduler, which places a fetch on the node that owns its URL's key."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import httpx

HTTP_PREFIX = "http:"


def http_key(url: str) -> str:
    """The key of a GET of ``url``: encoded as httpx sends it (so a raw task target and the URL fetched agree),
    scheme and host lower-cased, default port and fragment dropped. ValueError for what is not a URL."""
    try:
        parts = urlsplit(str(httpx.URL(url)))
    except httpx.InvalidURL as exc:
        raise ValueError(str(exc)) from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    return HTTP_PREFIX + urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
