"""Where the deployment tests find their tools, and what happens when one is missing.

Off CI a test whose tool is missing skips and names the tool; on CI (``CI=true``) it fails instead, since
``.ci/run`` installs nginx and docker-compose and the ``test`` extra brings hadolint and the Kubernetes
schemas, so a missing one there is a broken CI, not a reason to skip.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true, so this deployment check must run, but: {reason}")
    pytest.skip(reason)


def find(name: str) -> str | None:
    """``name`` on PATH, in an sbin directory, or beside this Python (where pip puts console scripts)."""
    extra = os.pathsep.join(["/usr/sbin", "/usr/local/sbin", "/sbin", str(Path(sys.executable).parent)])
    return shutil.which(name) or shutil.which(name, path=extra)


def tool(name: str, how: str) -> str:
    """The path of ``name``, or skip (fail on CI) saying how to install it."""
    found = find(name)
    if found is None:
        missing(f"{name} is not installed ({how})")
    assert found is not None
    return found
