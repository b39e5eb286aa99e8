"""Errors -> gRPC statuses, shared by every servicer.

A ``ShoalError`` becomes the status its class names, with its message; anything else becomes INTERNAL
with a generic message, and its traceback goes to the node's log only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
import grpc.aio

from shoal.errors import ShoalError, StoreError, StoreFault

log = logging.getLogger("shoal.rpc.services")

INTERNAL_MESSAGE = "internal error; the node's log has the details"

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")


async def answer(context: Context, method: str, call: Callable[[], Awaitable[T]]) -> T:
    """Run one unary call, turning errors into statuses (a ShoalError's own, or a generic INTERNAL)."""
    try:
        return await call()
    except StoreError as err:  # str(): what users are told, and what the store said (shoal.store.client)
        if isinstance(err, StoreFault):
            log.error("%s: %s", method, err, exc_info=err)
        else:
            log.warning("%s: %s", method, err)
        await abort(context, err)
    except ShoalError as err:
        await abort(context, err)
    except Exception:
        log.exception("%s failed", method)
        await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


async def abort(context: Context, err: ShoalError) -> NoReturn:
    """End the call with the status ``err`` names and its message."""
    try:
        code = grpc.StatusCode[err.grpc_code]
    except KeyError:
        log.error("%r names no gRPC status; answering INTERNAL", err)
        code = grpc.StatusCode.INTERNAL
    await context.abort(code, err.message)
