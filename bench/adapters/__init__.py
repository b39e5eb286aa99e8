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


SYSTEMS: dict[str, Callable[[Settings], System]] = {"shoal": _shoal, "celery": _celery}

__all__ = ["SYSTEMS", "Batch", "Client", "Settings", "System"]
