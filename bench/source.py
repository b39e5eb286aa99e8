"""Which shoal code a run measures: the working tree as it is, or a clean export of one git commit.

The repository is shared with people editing it; ``--shoal-ref HEAD`` measures the last commit rather
than whatever half-written state the working tree is in, and the JSON records which it was.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Where the working tree's ``shoal`` package lives (what PYTHONPATH needs to import it).
PACKAGE_ROOT = ROOT / "src"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def shoal_source(ref: str | None, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """A directory holding the ``shoal`` package to run, and a description of it for the report."""
    try:
        head = _git("rev-parse", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        return PACKAGE_ROOT, {"source": "working tree (not a git checkout)"}
    if ref is None:
        changed = [line for line in _git("status", "--porcelain", "--", "src", "proto").splitlines() if line]
        return PACKAGE_ROOT, {"source": "working tree", "commit": head, "uncommitted_files": len(changed)}
    sha = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    target = workdir / f"shoal-src-{sha[:12]}"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", sha], cwd=ROOT, capture_output=True, check=True)
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    package_root = target / "src" if (target / "src" / "shoal").is_dir() else target  # older commits: no src/
    return package_root, {"source": f"git archive {ref}", "commit": sha}
