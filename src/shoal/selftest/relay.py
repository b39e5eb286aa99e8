"""A TCP relay from the selftest's address in its namespace lab to the embedded store on loopback.

The embedded store listens on 127.0.0.1 only, which nodes in other network namespaces cannot reach; the
relay listens on the lab address and copies bytes both ways, one pair of threads per connection. When the
store is crashed, its connections end and the relay ends theirs; new ones reach the restarted store.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class Relay:
    """Listens on ``host``:``port`` (0: any free port) and forwards to 127.0.0.1:``target_port``."""

    def __init__(self, host: str, target_port: int, port: int = 0) -> None:
        self.target_port = target_port
        self._server = socket.create_server((host, port), reuse_port=False)
        self.port: int = self._server.getsockname()[1]
        self._closed = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="selftest-relay", daemon=True)

    def start(self) -> Relay:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2.0)
                upstream.settimeout(None)
            except OSError:
                client.close()  # the store is down: the node sees its connection end, as it would
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
                with self._lock:
                    self._sockets.discard(sock)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._server.close()
        with self._lock:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
