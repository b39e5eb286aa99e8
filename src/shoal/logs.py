"""Logging set-up for the CLI; library code only calls ``logging.getLogger``."""

from __future__ import annotations

import logging


def setup(level: str = "info", name: str | None = None) -> None:
    fmt = "%(asctime)s %(levelname)-7s " + (f"[{name}] " if name else "") + "%(name)s: %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt, datefmt="%H:%M:%S")
    for noisy in ("httpx", "httpcore", "uvicorn.error", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
