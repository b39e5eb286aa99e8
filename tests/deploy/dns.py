"""A DNS server on loopback that answers A queries for a few names: nginx's ``resolver`` needs one.

nginx does not read /etc/hosts at request time; it asks a DNS server. The shipped nginx.conf finds the nodes
by a name that resolves to every node's address (a compose network alias, a Kubernetes headless Service);
this server plays that part for nodes bound to several loopback addresses, and counts the queries so a
test can see that nginx resolved the name while it ran.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections import Counter

_A, _IN = 1, 1
_NXDOMAIN = 3


class LoopbackDNS:
    """UDP DNS on 127.0.0.1 (a free port): ``names`` maps a lower-case name to its IPv4 addresses."""

    def __init__(self, names: dict[str, list[str]], ttl: int = 1) -> None:
        self.names = names
        self.ttl = ttl
        self.queries: Counter[str] = Counter()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="loopback-dns", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                query, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            answer = self.answer(query)
            if answer is not None:
                self.sock.sendto(answer, peer)

    def answer(self, query: bytes) -> bytes | None:
        """The response to one query, or None for a packet that is not a one-question query."""
        if len(query) < 12:
            return None
        ident, flags, qdcount = struct.unpack("!HHH", query[:6])
        if qdcount != 1 or flags & 0x8000:
            return None
        labels, at = [], 12
        while at < len(query) and query[at] != 0:
            length = query[at]
            labels.append(query[at + 1 : at + 1 + length].decode("ascii", "replace"))
            at += 1 + length
        question_end = at + 5  # the zero byte, then QTYPE and QCLASS
        if question_end > len(query):
            return None
        qtype, qclass = struct.unpack("!HH", query[at + 1 : question_end])
        name = ".".join(labels).lower()
        self.queries[name] += 1
        known = name in self.names
        addresses = self.names.get(name, []) if (qtype, qclass) == (_A, _IN) else []
        rcode = 0 if known else _NXDOMAIN
        header = struct.pack("!HHHHHH", ident, 0x8580 | rcode, 1, len(addresses), 0, 0)
        records = b"".join(
            struct.pack("!HHHIH", 0xC00C, _A, _IN, self.ttl, 4) + socket.inet_aton(address) for address in addresses
        )
        return header + query[12:question_end] + records
