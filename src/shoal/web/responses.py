"""Response classes of the REST API: JSON rendered by orjson (fast, and knows dataclasses and floats)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse as _StarletteJSON


class JSONResponse(_StarletteJSON):
    """``application/json`` rendered with orjson; used by every route and error handler."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)
