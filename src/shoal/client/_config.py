"""Where the client finds the API and its token: argument, then environment, then the default."""

from __future__ import annotations

import os
from pathlib import Path

from shoal.version import __version__

DEFAULT_API = "http://127.0.0.1:8080"
#: Where ``shoal up`` writes the token by default, relative to the working directory.
DEFAULT_TOKEN_FILE = Path(".shoal") / "token"


def base_url(api: str | None = None) -> str:
    """``api``, else ``SHOAL_API``, else ``http://127.0.0.1:8080``; a missing scheme means http."""
    url = (api or os.environ.get("SHOAL_API") or DEFAULT_API).strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


def token(token: str | None = None, token_file: Path | None = None) -> str | None:
    """``token``, else ``SHOAL_TOKEN``, else the first line of ``./.shoal/token``; None if none is found."""
    if token:
        return token.strip()
    env = os.environ.get("SHOAL_TOKEN", "").strip()
    if env:
        return env
    try:
        text = (token_file or DEFAULT_TOKEN_FILE).read_text().strip()
    except OSError:
        return None
    return text.splitlines()[0].strip() if text else None


#: Seconds each request may take; long polls add the time the server may hold them.
DEFAULT_TIMEOUT_S = 15.0


def headers(token: str | None) -> dict[str, str]:
    """The headers every request of a client carries."""
    sent = {"User-Agent": f"shoal-client/{__version__}", "Accept": "application/json"}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    return sent
