"""``echo``: returns its target as the result after ``params.delay_s`` seconds; what tests and benchmarks run."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from shoal.errors import InvalidInput
from shoal.worker.handlers import Output, TaskContext

MAX_DELAY_S = 3600.0


def validate(target: str, params: dict[str, Any]) -> None:
    delay = params.get("delay_s", 0)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not math.isfinite(delay):
        raise InvalidInput("params.delay_s must be a number of seconds")
    if not 0 <= delay <= MAX_DELAY_S:
        raise InvalidInput(f"params.delay_s must be between 0 and {MAX_DELAY_S:g}")


async def echo(ctx: TaskContext) -> Output:
    delay = float(ctx.params.get("delay_s", 0))
    if delay > 0:
        await asyncio.sleep(delay)
    return Output(ctx.target)
