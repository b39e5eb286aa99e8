"""Hooks for the schemathesis run of ``test_openapi.py`` (loaded through ``SCHEMATHESIS_HOOKS``).

They keep the fuzzer's traffic on loopback and its run short, without changing what it checks:

- a ``fetch`` task is only submitted for a loopback URL: the node would fetch any
  other target it generates, and the suite never sends traffic off the machine;
- a valid long poll (``?wait=``) waits at most ``MAX_WAIT_S``, and a valid ``echo`` task at most
  ``MAX_DELAY_S``: a minute-long wait or an hour-long task is as valid as a short one, only slower.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

import schemathesis

from shoal import validation
from shoal.worker.handlers import echo

MAX_WAIT_S = 0.2
MAX_DELAY_S = 0.05


def _loopback(url: Any) -> bool:
    try:
        host = urlsplit(str(url)).hostname or ""
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    """No fetch of anything but loopback."""
    body = case.body
    return not (isinstance(body, dict) and body.get("type") == "fetch" and not _loopback(body.get("target")))


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    """Short waits and short echo tasks."""
    query, body = case.query, case.body
    if isinstance(query, dict) and _between(query.get("wait"), MAX_WAIT_S, validation.MAX_WAIT_S):
        query["wait"] = MAX_WAIT_S
    params = body.get("params") if isinstance(body, dict) else None
    if isinstance(params, dict) and _between(params.get("delay_s"), MAX_DELAY_S, echo.MAX_DELAY_S):
        params["delay_s"] = MAX_DELAY_S
    return case


def _between(value: Any, low: float, high: float) -> bool:
    """Whether ``value`` is a valid number above ``low``: one the fuzzer meant to be accepted (an invalid one
    is left as it is, to be refused)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and low < value <= high
