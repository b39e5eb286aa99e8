"""The systemd unit of a shoal node: rendered from the running install, written, and removed.

The unit runs ``<this python> -m shoal node`` as ``Type=notify`` (the node says READY=1 itself and pings the
watchdog while it makes progress), restarts it on failure, and confines it: its own dynamic user, a
read-only system, a state directory for its data, no capabilities, a system-call filter. Paths are
absolute and taken from the interpreter running this command, so the unit runs the same shoal.
"""

from __future__ import annotations

import math
import os
import pwd
import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from shoal import config as config_module
from shoal.errors import InvalidInput
from shoal.version import __version__

#: Where system and user units go (user: relative to the home directory).
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
USER_UNIT_DIR = Path(".config/systemd/user")
#: Watchdog period: the node pings every 5 s. Long enough for a GC pause, a slow store call or a sync
#: handler that briefly holds the loop; short enough that a stuck node is restarted about when the cluster
#: has declared it dead (5 beats of 1 s) and re-placed its tasks, so that it rejoins soon after.
WATCHDOG_SEC = 10
#: Seconds past ``shutdown_grace`` before systemd kills: closing servers and the store after the drain.
STOP_MARGIN_S = 15
#: Directories systemd hides or makes read-only with ProtectHome=.
HOME_ROOTS = (Path("/home"), Path("/root"), Path("/run/user"))


@dataclass(frozen=True)
class Unit:
    """A rendered unit: its file name, its text, and what the user should know about it."""

    name: str
    text: str
    user: bool
    warnings: list[str] = field(default_factory=list)

    def path(self, unit_dir: Path | None = None) -> Path:
        return (unit_dir or default_dir(self.user)) / self.name


def default_dir(user: bool) -> Path:
    return Path.home() / USER_UNIT_DIR if user else SYSTEM_UNIT_DIR


def unit_name(node_name: str | None) -> str:
    return f"shoal-{node_name}.service" if node_name else "shoal.service"


def render(
    *, user: bool = False, config_file: Path | None = None, node_name: str | None = None, run_as: str | None = None
) -> Unit:
    """The unit for this install. Raises InvalidInput for a config file that is missing or refused."""
    warnings: list[str] = []
    if node_name is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", node_name):
        raise InvalidInput(f"--name {node_name!r}: a node run as a unit needs a name of letters, digits, '.', '_', '-'")
    flags = {"name": node_name} if node_name else {}
    if config_file is not None:
        config_file = config_file.expanduser().absolute()
        if not config_file.is_file():
            raise InvalidInput(f"config file {config_file} does not exist")
    config = config_module.load(config_file, {}, flags)  # the unit runs with no SHOAL_* of this shell
    state = f"shoal-{node_name}" if node_name else "shoal"
    if config.sources.get("data_dir", "default").startswith("file"):
        warnings.append(f"data_dir = {config.data_dir} in {config_file} is overridden: the unit keeps the data in "
                        f"its state directory (SHOAL_DATA_DIR=%S/{state}), the one place it may write")  # fmt: skip
    python = Path(sys.executable).absolute()
    exec_start = [_arg(str(python)), "-m", "shoal", "node"]
    credential = ""
    if config_file is not None:
        if user:
            exec_start += ["--config", _arg(str(config_file))]
        else:  # read by systemd (root) at each start: the file may stay readable by root only
            credential = f"LoadCredential=shoal.toml:{_arg(str(config_file), quote=False)}"
            exec_start += ["--config", "%d/shoal.toml"]
    if node_name:
        exec_start += ["--name", node_name]
    package = Path(__file__).resolve().parents[1]  # the shoal package this unit will run
    code_paths = [python, python.resolve(), Path(sys.prefix), Path(sys.base_prefix), package]
    in_home = any(_under(p, root) for p in code_paths for root in HOME_ROOTS)
    if not user:
        warnings += _unreadable(run_as, [python.resolve(), package / "__main__.py"])
    stop_timeout = math.ceil(config.shutdown_grace) + STOP_MARGIN_S
    lines = _header(config_file, user, credential != "")
    lines += ["[Unit]", f"Description=shoal node{' ' + node_name if node_name else ''} (self-healing task cluster)"]
    if not user:
        lines += ["After=network-online.target", "Wants=network-online.target"]
    lines += ["StartLimitIntervalSec=300", "StartLimitBurst=10", "", "[Service]"]
    lines += _service(exec_start, credential, state, stop_timeout, config.shutdown_grace)
    lines += _identity(user, run_as, in_home)
    lines += _hardening(user)
    lines += ["", "[Install]", f"WantedBy={'default.target' if user else 'multi-user.target'}", ""]
    return Unit(unit_name(node_name), "\n".join(lines), user, warnings)


def _header(config_file: Path | None, user: bool, credential: bool) -> list[str]:
    where = "the defaults and SHOAL_* in Environment= lines" if config_file is None else str(config_file)
    how = " (read by systemd at each start and handed over as a credential)" if credential else ""
    return [
        f"# A shoal node as a systemd {'user ' if user else ''}service; written by `shoal service install` "
        f"(shoal {__version__}).",
        f"# Options: {where}{how}.",
        "# Change options there or in a drop-in (`systemctl edit`), not here: reinstalling rewrites this file.",
        "",
    ]


def _service(exec_start: list[str], credential: str, state: str, stop_timeout: int, grace: float) -> list[str]:
    lines = [
        "Type=notify",
        "# Only the node itself may notify: not its embedded redis-server, not the processes its tasks start.",
        "NotifyAccess=main",
        "ExecStart=" + " ".join(exec_start),  # already quoted by _arg
    ]
    if credential:
        lines.append(credential)
    return lines + [
        f"StateDirectory={state}",
        "StateDirectoryMode=0700",
        f"WorkingDirectory=%S/{state}",
        f"Environment=SHOAL_DATA_DIR=%S/{state}",
        "Environment=PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1",
        f"# WATCHDOG=1 every {WATCHDOG_SEC // 2}s while the event loop runs and the heartbeat, worker and "
        "scheduler advance;",
        f"# {WATCHDOG_SEC}s rides out a GC pause or a slow store call, and restarts a stuck node about when the",
        "# cluster (5 missed beats) has given its tasks to others.",
        f"WatchdogSec={WATCHDOG_SEC}",
        "Restart=on-failure",
        "RestartSec=2",
        "# Exit 2 is a refused option (unknown key, bad value): restarting cannot fix it.",
        "RestartPreventExitStatus=2",
        "# SIGTERM goes to the node alone: it stops taking work, hands the master role over, lets running",
        f"# tasks finish for shutdown_grace ({grace:g}s) and hands back the rest, then stops its embedded",
        "# Redis and task processes itself. Whatever is left after TimeoutStopSec gets SIGKILL.",
        "KillMode=mixed",
        f"TimeoutStopSec={stop_timeout}",
        "LimitNOFILE=65536",
    ]


def _identity(user: bool, run_as: str | None, in_home: bool) -> list[str]:
    if user:
        return []
    lines = ["# Its own user, with a read-only system: only the state directory is writable."]
    lines += ["DynamicUser=yes"] if run_as is None else [f"User={run_as}"]
    if in_home:
        lines += ["# Python or shoal is installed under a home directory: keep it visible (read-only).",
                  "ProtectHome=read-only"]  # fmt: skip
    else:
        lines.append("ProtectHome=yes")
    return lines + ["ProtectSystem=strict", "PrivateTmp=yes", "PrivateDevices=yes", "RemoveIPC=yes"]


def _hardening(user: bool) -> list[str]:
    """Confinement. User units keep to what needs no privilege (seccomp, no_new_privs): namespacing
    options there depend on unprivileged user namespaces, which many machines turn off."""
    common = [
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "LockPersonality=yes",
        "# CPython, grpcio, uvloop and redis-server need no writable executable memory.",
        "MemoryDenyWriteExecute=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged @resources",
        "# A refused call fails with EPERM instead of killing the node (libuv probes io_uring, for one).",
        "SystemCallErrorNumber=EPERM",
        "UMask=0077",
    ]
    if user:
        return common
    return [
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "RestrictSUIDSGID=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "ProtectProc=invisible",
        *common,
    ]


def _arg(text: str, quote: bool = True) -> str:
    """``text`` as one unit-file word: specifier and variable signs doubled, quoted if it has spaces."""
    text = text.replace("%", "%%").replace("$", "$$")
    if quote and any(ch in text for ch in " \t\"'\\"):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _unreadable(run_as: str | None, paths: list[Path]) -> list[str]:
    """Warnings for code the service's user cannot reach (e.g. a Python under /root, mode 0700)."""
    if run_as is None:
        uid, gids, who = -1, set[int](), "the service's dynamic user"
    else:
        try:
            entry = pwd.getpwnam(run_as)
        except KeyError:
            create = f"useradd --system --no-create-home --shell /usr/sbin/nologin {run_as}"
            raise InvalidInput(
                f"--run-as: there is no user {run_as!r} on this machine (create it first: {create})"
            ) from None
        uid, gids, who = entry.pw_uid, {entry.pw_gid, *os.getgrouplist(run_as, entry.pw_gid)}, f"user {run_as}"
    if uid == 0:
        return []
    for path in paths:
        blocked = _blocked(path, uid, gids)
        if blocked is not None:
            fix = (
                "install shoal where every user may read it (e.g. python3 -m venv /opt/shoal && "
                "/opt/shoal/bin/pip install shoal, then /opt/shoal/bin/shoal service install), "
                "or --run-as an account that can, or use --user"
            )
            return [f"{who} cannot read {path}: {blocked}. The unit would fail to start; {fix}"]
    return []


def _blocked(path: Path, uid: int, gids: set[int]) -> str | None:
    """Which directory or file keeps ``uid`` from reading ``path``, or None."""
    chain = [*reversed(path.parents), path]
    for i, part in enumerate(chain):
        try:
            st = part.stat()
        except OSError as exc:
            return f"{part}: {exc.strerror}"
        need = stat.S_IXOTH if i < len(chain) - 1 else stat.S_IROTH
        if st.st_uid == uid:
            need <<= 6
        elif st.st_gid in gids:
            need <<= 3
        if not st.st_mode & need:
            return f"{part} is mode {stat.S_IMODE(st.st_mode):04o}, owned by uid {st.st_uid}"
    return None
