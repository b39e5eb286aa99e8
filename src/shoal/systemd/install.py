"""Putting a unit in place and taking it away, with systemctl when systemd runs this machine.

Writing a unit never starts anything: ``install`` writes the file, checks it with ``systemd-analyze verify``
when that tool exists, reloads systemd if it is running, and says what to run next.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from shoal.systemd.unit import Unit, default_dir

#: Seconds a systemctl or systemd-analyze call may take.
TOOL_TIMEOUT_S = 60.0


@dataclass
class Outcome:
    """What ``install`` or ``uninstall`` did, for people (``lines``) and scripts (``to_json``)."""

    path: Path
    action: str  # written, updated, unchanged, removed, absent
    systemd_running: bool
    reloaded: bool = False
    verify_output: str | None = None  # None: systemd-analyze is not installed
    next_steps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "action": self.action,
            "systemd_running": self.systemd_running,
            "reloaded": self.reloaded,
            "verified": None if self.verify_output is None else self.verify_output == "",
            "verify_output": self.verify_output,
            "next_steps": self.next_steps,
            "notes": self.notes,
        }


def systemd_running() -> bool:
    """Whether systemd is this machine's init (sd_booted: it creates /run/systemd/system)."""
    return Path("/run/systemd/system").is_dir()


def _systemctl(user: bool, *args: str) -> subprocess.CompletedProcess[str]:
    command = ["systemctl", *(["--user"] if user else []), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)


def _prefix(user: bool) -> str:
    return "systemctl --user" if user else "systemctl"


def verify(path: Path, user: bool) -> str | None:
    """Everything ``systemd-analyze verify`` says about the unit ("" when nothing); None without the tool.

    Bad values are only warnings there (exit 0), so any output at all counts as a finding.
    """
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return None
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="shoal-verify-") as runtime:
        if user and not env.get("XDG_RUNTIME_DIR"):
            env["XDG_RUNTIME_DIR"] = runtime  # a user manager's runtime directory, for the offline check
        command = [tool, *(["--user"] if user else []), "verify", str(path)]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=TOOL_TIMEOUT_S, check=False)
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0 and not output:
        output = f"systemd-analyze verify exited with {done.returncode}"
    return output


def install(unit: Unit, unit_dir: Path | None = None) -> Outcome:
    """Write the unit (mode 0644), verify it, and reload systemd when it runs and reads that directory."""
    path = unit.path(unit_dir)
    old = path.read_text() if path.is_file() else None
    action = "unchanged" if old == unit.text else ("updated" if old is not None else "written")
    if action != "unchanged":
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(unit.text)
        tmp.chmod(0o644)
        tmp.replace(path)
    outcome = Outcome(path=path, action=action, systemd_running=systemd_running(), notes=list(unit.warnings))
    outcome.verify_output = verify(path, unit.user)
    systemctl = _prefix(unit.user)
    standard = unit_dir is None or path.parent.resolve() == default_dir(unit.user).resolve()
    if not standard:
        outcome.next_steps.append(f"{systemctl} link {path}   # {path.parent} is not where systemd looks for units")
    elif outcome.systemd_running:
        done = _systemctl(unit.user, "daemon-reload")
        outcome.reloaded = done.returncode == 0
        if not outcome.reloaded:
            outcome.notes.append(f"{systemctl} daemon-reload failed: {(done.stderr or done.stdout).strip()}")
            outcome.next_steps.append(f"{systemctl} daemon-reload")
    else:
        outcome.notes.append("systemd is not running on this machine (PID 1 is not systemd); on a machine where it "
                             "runs, reload it first")  # fmt: skip
        outcome.next_steps.append(f"{systemctl} daemon-reload")
    if unit.user:
        outcome.next_steps.append("loginctl enable-linger $USER   # keep it running while you are logged out")
    outcome.next_steps.append(f"{systemctl} enable --now {unit.name}")
    outcome.next_steps.append(f"{systemctl} status {unit.name}   # READY, status line and watchdog from the node")
    return outcome


def uninstall(name: str, user: bool, unit_dir: Path | None = None) -> Outcome:
    """Stop and disable the unit, then remove its file. The node's data is kept.

    Where systemd does not run, ``systemctl disable --no-reload`` still removes the links an earlier
    ``enable`` made (it edits them offline), so nothing points at the removed file.
    """
    path = (unit_dir or default_dir(user)) / name
    outcome = Outcome(path=path, action="absent", systemd_running=systemd_running())
    systemctl = _prefix(user)
    present = path.exists() or path.is_symlink()
    if present and unit_dir is None and shutil.which("systemctl") is not None:
        args = ["disable", "--now", name] if outcome.systemd_running else ["disable", "--no-reload", name]
        done = _systemctl(user, *args)
        if done.returncode != 0:
            outcome.notes.append(f"{systemctl} {' '.join(args)}: {(done.stderr or done.stdout).strip()}")
    if present:
        path.unlink()
        outcome.action = "removed"
    if outcome.systemd_running and unit_dir is None and present:
        outcome.reloaded = _systemctl(user, "daemon-reload").returncode == 0
    state = name.removesuffix(".service")
    where = f"~/.local/state/{state}" if user else f"/var/lib/{state} (/var/lib/private/{state} for a dynamic user)"
    outcome.notes.append(f"the node's data is kept in {where}")
    return outcome
