"""Cache keys shared by the parts that must agree on them: the HTTP cache (proxy and ``fetch``) and the
scheduler, which places a fetch on the node that owns its URL's key."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

HTTP_PREFIX = "http:"


def http_key(url: str) -> str:
    """The key of a GET of ``url``: scheme and host lower-cased, default port and fragment dropped."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    return HTTP_PREFIX + urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
