"""Ports handed to test nodes and embedded stores: one process never hands out the same port twice, since
two picks made before either is bound (a node's HTTP and gRPC ports) would otherwise collide."""

from __future__ import annotations

import socket

from shoal.testing import free_port


def test_ports_handed_out_are_never_repeated() -> None:
    ports = [free_port() for _ in range(3000)]  # far past the birthday bound of the ~22,000 ports drawn from
    assert len(set(ports)) == len(ports)


def test_a_port_handed_out_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
