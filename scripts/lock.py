"""constraints.txt: every package shoal, its tests and its benchmarks install, at one version each.

    python3 scripts/lock.py             # after editing pyproject.toml: pin what is new, keep every other pin
    python3 scripts/lock.py --upgrade   # refresh: the newest versions pyproject.toml's ranges allow
    python3 scripts/lock.py --check     # exit 1 if constraints.txt no longer fits pyproject.toml

The README's commands, ``.ci/run``, the Dockerfile and ``deploy/podman-image.sh`` install with
``-c constraints.txt``, so a fresh machine gets what the suite last passed with. pip-compile runs from a
throwaway virtual environment with a pinned pip-tools, so the lock itself is made reproducibly.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIP_TOOLS = "pip-tools==7.6.2"
LOCK = "constraints.txt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--upgrade", action="store_true", help="refresh every pin to the newest allowed version")
    mode.add_argument("--check", action="store_true", help="only check that the lock still fits pyproject.toml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shoal-lock-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([venv / "bin/pip", "install", "-q", PIP_TOOLS], check=True)
        output = Path(tmp) / LOCK if args.check else ROOT / LOCK
        if args.check:  # pip-compile keeps what the existing file pins while it still fits
            output.write_bytes((ROOT / LOCK).read_bytes())
        command = [
            str(venv / "bin/pip-compile"),
            "--quiet",
            "--all-extras",
            "--strip-extras",
            "--no-emit-index-url",
            "--no-emit-find-links",
            "--no-emit-trusted-host",
            "--allow-unsafe",
            "--output-file",
            str(output) if args.check else LOCK,
            *(["--upgrade"] if args.upgrade else []),
            "pyproject.toml",
        ]
        env = {**os.environ, "CUSTOM_COMPILE_COMMAND": "python3 scripts/lock.py"}
        subprocess.run(command, check=True, cwd=ROOT, env=env)
        if args.check and _pins(output) != _pins(ROOT / LOCK):
            print(f"{LOCK} does not fit pyproject.toml: run python3 scripts/lock.py", file=sys.stderr)
            return 1
    return 0


def _pins(path: Path) -> set[str]:
    return {line for line in path.read_text().splitlines() if line and not line.startswith((" ", "#"))}


if __name__ == "__main__":
    sys.exit(main())
