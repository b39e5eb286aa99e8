"""One adapter per task system. ``SYSTEMS`` maps the name used on the command line to a factory."""

from __future__ import annotations

from collections.abc import Callable

from bench.adapters.base import Batch, Client, Settings, System


def _shoal(settings: Settings) -> System:
    from bench.adapters.shoal_ import ShoalSystem

    return ShoalSystem(settings)


def _celery(settings: Settings) -> System:
    from bench.adapters.celery_ import CelerySystem

    return CelerySystem(settings)


def _dramatiq(settings: Settings) -> System:
    from bench.adapters.dramatiq_ import DramatiqSystem

    return DramatiqSystem(settings)


def _taskiq(settings: Settings) -> System:
    from bench.adapters.taskiq_ import TaskiqSystem

    return TaskiqSystem(settings)


SYSTEMS: dict[str, Callable[[Settings], System]] = {
    "shoal": _shoal,
    "celery": _celery,
    "dramatiq": _dramatiq,
    "taskiq": _taskiq,
}
#: The systems shoal is compared with: each figure's ratio is to the best of them.
PEERS = ("celery", "dramatiq", "taskiq")

__all__ = ["PEERS", "SYSTEMS", "Batch", "Client", "Settings", "System"]
