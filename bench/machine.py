"""What the figures were measured on: cores, CPU model, kernel, Python, the Redis binary."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from bench.redis_server import redis_binary, redis_version


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": usable_cores(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
    }
    try:
        binary = redis_binary()
        info["redis"] = redis_version(binary)
        info["redis_binary"] = str(binary)
    except (RuntimeError, OSError) as exc:
        info["redis"] = f"unavailable: {exc}"
    return info
