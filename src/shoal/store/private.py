"""Files and directories only their owner may read: the embedded store's data, passwords and URL.

Directories are 0700 and files 0600 whether shoal creates them or finds them from an older version, which
made them readable by everyone (``tighten``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import stat
from pathlib import Path

log = logging.getLogger("shoal.store.private")

DIR_MODE = 0o700
FILE_MODE = 0o600
#: Longest secret read back from a file: generated ones are 43 characters.
MAX_SECRET = 1024
_SECRET = re.compile(r"[A-Za-z0-9_-]{16,1024}")


def private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) if missing, and make it 0700 if it is this user's and is not yet
    (never a shared directory such as /tmp, which has the sticky bit)."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if not path.stat().st_mode & stat.S_ISVTX:
        _restrict(path, DIR_MODE)


def tighten(folder: Path) -> None:
    """Make everything under ``folder`` this user's alone: directories 0700, files 0600 (symlinks are left)."""
    for path in folder.rglob("*"):
        if not path.is_symlink():
            _restrict(path, DIR_MODE if path.is_dir() else FILE_MODE)


def _restrict(path: Path, mode: int) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077 == 0:
        return
    os.chmod(path, mode)
    log.info("made %s private to its owner (mode %o)", path, mode)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (mode 0600) in one step: a reader sees the old file or the new one."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    partial.replace(path)


def secret_in(path: Path) -> str:
    """The secret kept in ``path``, created (URL-safe, 256 bits, mode 0600) on first use."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return _read_secret(path)
    with os.fdopen(fd, "w") as f:
        value = secrets.token_urlsafe(32)
        f.write(value + "\n")
    return value


def _read_secret(path: Path) -> str:
    _restrict(path, FILE_MODE)
    with path.open("rb") as f:
        text = f.read(MAX_SECRET + 2).decode("ascii", "replace").strip()
    if not _SECRET.fullmatch(text):
        raise ValueError(f"{path} does not hold a password shoal wrote (16 to 1024 of A-Z a-z 0-9 _ -)")
    return text
