"""The service manager's notify protocol: ``READY=1``, ``STATUS=...``, ``WATCHDOG=1`` and friends.

Each message is one AF_UNIX datagram of ``KEY=value`` lines sent to ``$NOTIFY_SOCKET`` (a path, or an
abstract address written with a leading ``@``), as sd_notify(3) sends it; no library is needed. The socket
is non-blocking: a manager that does not read must never stall the node's event loop, so a message that
does not fit in the socket's queue is dropped with a warning.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import MutableMapping

from shoal._utils import is_digits

log = logging.getLogger("shoal.systemd.notify")

#: Environment variables of the protocol; read once, then removed so that task subprocesses never see them.
NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID = "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"


def socket_address(value: str) -> str | None:
    """The address to send to for a ``$NOTIFY_SOCKET`` value, or None if it is not an AF_UNIX address."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # e.g. vsock:..., which this node does not speak


def watchdog_seconds(env: MutableMapping[str, str], pid: int | None = None) -> float | None:
    """The watchdog period the manager asks for, as sd_watchdog_enabled(3) reads it; None when off.

    ``WATCHDOG_USEC`` is a positive number of microseconds; when ``WATCHDOG_PID`` is set, the watchdog
    is meant for that process only (a child that inherited the variables must not ping).
    """
    raw_usec = env.get(WATCHDOG_USEC)
    if raw_usec is None:
        return None
    raw_pid = env.get(WATCHDOG_PID)
    if raw_pid is not None:
        if not is_digits(raw_pid.strip()):
            log.warning("ignoring the watchdog: %s=%r is not a process id", WATCHDOG_PID, raw_pid)
            return None
        if int(raw_pid) != (os.getpid() if pid is None else pid):
            return None
    if not is_digits(raw_usec.strip()) or int(raw_usec) == 0:
        log.warning("ignoring the watchdog: %s=%r is not a positive number of microseconds", WATCHDOG_USEC, raw_usec)
        return None
    return int(raw_usec) / 1e6


class Notifier:
    """Sends notify messages to one socket. Safe to call from any thread (the watchdog pings from its own)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sent = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)
        self._failing = False

    def __repr__(self) -> str:
        shown = "@" + self.address[1:] if self.address.startswith("\0") else self.address
        return f"<Notifier {shown} sent={self.sent} dropped={self.dropped}>"

    @classmethod
    def from_environ(cls, env: MutableMapping[str, str] | None = None) -> Notifier | None:
        """A notifier for ``$NOTIFY_SOCKET``, or None when the node does not run under a service manager.

        The variable is removed from ``env`` (default ``os.environ``) as sd_notify's ``unset_environment``
        does, so that processes the node starts do not talk to the manager in its name.
        """
        env = os.environ if env is None else env
        value = env.pop(NOTIFY_SOCKET, None)
        if not value:
            return None
        address = socket_address(value)
        if address is None:
            log.warning("ignoring %s=%r: only AF_UNIX paths and @abstract addresses are supported", NOTIFY_SOCKET,
                        value)  # fmt: skip
            return None
        return cls(address)

    def send(self, *lines: str) -> bool:
        """Send one message made of ``lines`` (``"READY=1"``, ``"STATUS=..."``); False if it was not sent."""
        data = "\n".join(line.replace("\n", " ") for line in lines).encode()
        with self._lock:
            try:
                self._sock.sendto(data, self.address)
            except BlockingIOError:
                self.dropped += 1
                log.warning("the service manager is not reading %s; dropped %r", self, lines[0])
                return False
            except OSError as exc:
                self.dropped += 1
                if not self._failing:  # once per outage, not once per ping
                    log.warning("cannot notify the service manager at %r: %s", self.address.lstrip("\0"), exc)
                    self._failing = True
                return False
            self._failing = False
            self.sent += 1
            return True

    def close(self) -> None:
        with self._lock:
            self._sock.close()
