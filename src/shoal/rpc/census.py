"""How many gRPC calls this node's server received, by method: ``shoal_grpc_calls_total`` on ``/metrics``.

Counted before authentication, so refused calls count too (an operator wants to see those). The method
label takes only the methods of the services this server registers; anything else a caller sends, whose
name a stranger chooses, counts as ``other``, so that no caller can grow the label set without end.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import grpc
from google.protobuf import descriptor_pool
from prometheus_client import Counter

from shoal.rpc.auth import ServerInterceptor

if TYPE_CHECKING:
    from shoal.rpc.auth import Handler, HandlerContinuation

#: The label of a call to a method this server does not have.
OTHER = "other"


def methods_of(services: Iterable[str]) -> frozenset[str]:
    """The full method names (``/package.Service/Method``) of ``services``, from their descriptors."""
    pool = descriptor_pool.Default()
    return frozenset(f"/{name}/{m.name}" for name in services for m in pool.FindServiceByName(name).methods)


class CallCensus(ServerInterceptor):
    """Counts every call by method in ``counter`` (labelled ``method``), then lets it go on."""

    def __init__(self, counter: Counter, methods: frozenset[str] = frozenset()) -> None:
        self.counter = counter
        self.methods = methods  # set once the server's services are registered

    async def intercept_service(
        self, continuation: HandlerContinuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        method: str = handler_call_details.method
        self.counter.labels(method if method in self.methods else OTHER).inc()
        return await continuation(handler_call_details)
