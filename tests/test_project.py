"""The project's own promises: CI runs the README's test command, and the code is ruff and mypy clean."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_test_command() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"# 2\. [^\n]*\n(.+)\n", text)
    assert match, "the README's quick start must give the test command as its step 2"
    return match.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    command = readme_test_command()
    assert "pytest" in command
    assert f'test_command="{command}"' in ci


@pytest.mark.parametrize(
    "args",
    [
        ["-m", "ruff", "check", "shoal", "tests", "bench", "scripts"],
        ["-m", "ruff", "format", "--check", "shoal", "tests", "bench", "scripts"],
        ["-m", "mypy", "shoal"],
    ],
    ids=["ruff", "ruff-format", "mypy"],
)
def test_code_is_clean(args: list[str]) -> None:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
