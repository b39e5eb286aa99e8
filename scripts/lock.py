"""Refresh ``constraints.txt``: every package shoal, its tests and its benchmarks install, at one version each.

    python3 scripts/lock.py            # newest versions that pyproject.toml's ranges allow
    python3 scripts/lock.py --check    # exit 1 if constraints.txt no longer satisfies pyproject.toml

The README's commands, ``.ci/run``, the Dockerfile and ``deploy/podman-image.sh`` install with
``-c constraints.txt``, so a fresh machine gets what the suite last passed with. pip-compile runs from a
throwaway virtual environment with a pinned pip-tools, so the refresh itself is reproducible.
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
OUTPUT = ROOT / "constraints.txt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the lock still fits pyproject.toml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shoal-lock-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([venv / "bin/pip", "install", "-q", PIP_TOOLS], check=True)
        output = Path(tmp) / "constraints.txt" if args.check else OUTPUT
        if args.check:  # pip-compile keeps what the existing file pins while it still fits
            output.write_bytes(OUTPUT.read_bytes())
        command = [
            str(venv / "bin/pip-compile"),
            "--quiet",
            "--all-extras",
            "--strip-extras",
            "--no-emit-index-url",
            "--no-emit-find-links",
            "--no-emit-trusted-host",
            "--allow-unsafe",
            "--resolver=backtracking",
            "--output-file",
            str(output) if args.check else OUTPUT.name,
            *([] if args.check else ["--upgrade"]),
            "pyproject.toml",
        ]
        env = {**os.environ, "CUSTOM_COMPILE_COMMAND": "python3 scripts/lock.py"}
        subprocess.run(command, check=True, cwd=ROOT, env=env)
        if args.check and _pins(output) != _pins(OUTPUT):
            print("constraints.txt does not fit pyproject.toml: run python3 scripts/lock.py", file=sys.stderr)
            return 1
    return 0


def _pins(path: Path) -> set[str]:
    return {line for line in path.read_text().splitlines() if line and not line.startswith((" ", "#"))}


if __name__ == "__main__":
    sys.exit(main())
