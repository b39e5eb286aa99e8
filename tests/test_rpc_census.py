"""``shoal_grpc_calls_total`` on a node's ``/metrics``: every call its gRPC server received, by method,
refused ones too; a method name the node does not serve counts as ``other``, whatever a stranger sends."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shoal.rpc.client import open_channel

pytestmark = pytest.mark.e2e


def calls(node: Any) -> dict[str, float]:
    with httpx.Client(base_url=node.http_url, headers=node.headers(), timeout=10, trust_env=False) as http:
        text = http.get("/metrics").text
    prefix = 'shoal_grpc_calls_total{method="'
    return {line[len(prefix) :].split('"')[0]: float(line.split()[-1]) for line in text.splitlines()
            if line.startswith(prefix)}  # fmt: skip


async def test_calls_are_counted_by_method_and_strangers_cannot_add_labels(shoal_node: Any) -> None:
    before = calls(shoal_node)
    invented = [f"/evil.{uuid.uuid4().hex}/X" for _ in range(3)]
    channel = open_channel(shoal_node.grpc_addr, None)  # no token: refused, and counted all the same
    try:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        for method in invented:
            with pytest.raises(grpc.aio.AioRpcError):
                await channel.unary_unary(method)(b"", timeout=10)
    finally:
        await channel.close(None)

    after = calls(shoal_node)
    check = "/grpc.health.v1.Health/Check"
    assert after[check] - before.get(check, 0) >= 1
    assert after["other"] - before.get("other", 0) == 3
    assert not [label for label in after if "evil" in label]
    assert all(label == "other" or label.startswith(("/shoal.", "/grpc.")) for label in after), after
