"""One configuration, four sources: flag > environment (SHOAL_*) > TOML file > default.

``shoal config show`` prints what a node would get and where each value came from; unknown keys and bad
values are refused with the key's name by ``config show`` and by ``shoal node`` alike (exit 2, no
traceback, nothing started). Real ``python -m shoal`` processes with real environments.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shoal.config import option_names


def shoal(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    return subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True, text=True, timeout=60,
                          env={**clean, **(env or {})}, cwd=cwd)  # fmt: skip


def show_json(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = shoal("config", "show", "--json", *args, env=env)
    assert done.returncode == 0, done.stderr
    shown: dict[str, Any] = json.loads(done.stdout)
    return shown


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(
        "\n".join([
            'cluster = "from-file"',
            "slots = 3",
            "priority = 5",
            "heartbeat_interval = 0.5",
            'token = "file-secret-token"',
            'redis = "redis://:file-password@127.0.0.1:6390/2"',
            'task_modules = ["one", "two"]',
        ])
        + "\n"
    )  # fmt: skip
    return path


@pytest.mark.e2e
def test_precedence_flag_over_env_over_file_over_default(config_file: Path) -> None:
    env = {"SHOAL_SLOTS": "4", "SHOAL_PRIORITY": "6", "SHOAL_RUN_TASKS": "no", "SHOAL_CONFIG": str(config_file)}
    shown = show_json("--slots", "7", "--name", "edge-1", env=env)
    config, sources = shown["config"], shown["sources"]
    assert shown["file"] == str(config_file)  # taken from SHOAL_CONFIG, as `shoal node` takes it
    assert (config["slots"], sources["slots"]) == (7, "flag")  # flag beats env and file
    assert (config["name"], sources["name"]) == ("edge-1", "flag")
    assert (config["priority"], sources["priority"]) == (6, "env SHOAL_PRIORITY")  # env beats file
    assert (config["run_tasks"], sources["run_tasks"]) == (False, "env SHOAL_RUN_TASKS")
    assert (config["cluster"], sources["cluster"]) == ("from-file", f"file {config_file}")  # file beats default
    assert (config["heartbeat_interval"], sources["heartbeat_interval"]) == (0.5, f"file {config_file}")
    assert config["task_modules"] == ["one", "two"]
    assert (config["dead_after"], sources["dead_after"]) == (5, "default")
    assert (config["shutdown_grace"], sources["shutdown_grace"]) == (30.0, "default")
    assert set(config) == set(sources) == set(option_names())
    # Secrets are never printed: the token is hidden, the Redis password replaced.
    assert config["token"] == "<redacted>" and sources["token"] == f"file {config_file}"
    assert "file-password" not in json.dumps(shown) and "file-secret-token" not in json.dumps(shown)
    assert config["redis"].startswith("redis://") and config["redis"].endswith("@127.0.0.1:6390/2")


@pytest.mark.e2e
def test_table_shows_each_value_with_its_source(config_file: Path) -> None:
    done = shoal("config", "show", "--config", str(config_file), "--proxy", "0.0.0.0:3129",
                 env={"SHOAL_DEAD_AFTER": "7"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.strip()}
    assert rows["proxy"][1:] == ["0.0.0.0:3129", "flag"]
    assert rows["dead_after"][1:] == ["7", "env", "SHOAL_DEAD_AFTER"]
    assert rows["slots"][1:] == ["3", "file", str(config_file)]
    assert rows["fetch_max_redirects"][1:] == ["10", "default"]
    assert "file-secret-token" not in done.stdout and "file-password" not in done.stdout


@pytest.mark.e2e
@pytest.mark.parametrize("command", [["config", "show"], ["node"]])
def test_unknown_key_in_the_file_is_refused_with_its_name(command: list[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("slots = 2\nslot_count = 4\n")
    done = shoal(*command, "--config", str(bad), "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "unknown option 'slot_count'" in done.stderr and str(bad) in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "data").exists()  # refused before anything started


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("command", "var", "value", "says"),
    [
        (cmd, "SHOAL_SLOTS", "many", "option 'slots' in environment variable SHOAL_SLOTS: 'many' is not a valid int")
        for cmd in (["config", "show"], ["node"])
    ]
    + [
        (["config", "show"], "SHOAL_HEARTBEAT_INTERVAL", "0", "option 'heartbeat_interval': must be between 0.05"),
        (["config", "show"], "SHOAL_IDEMPOTENCY_WINDOW", "2y", "option 'idempotency_window'"),
        (["config", "show"], "SHOAL_IDEMPOTENCY_WINDOW", "400d", "option 'idempotency_window': must be between 1 s"),
        (["config", "show"], "SHOAL_COLOUR", "blue", "unknown option 'colour' in environment variable SHOAL_COLOUR"),
    ],
)
def test_bad_value_in_the_environment_is_refused_with_its_name(
    command: list[str], var: str, value: str, says: str, tmp_path: Path
) -> None:
    done = shoal(*command, "--data-dir", str(tmp_path / "data"), env={var: value}, cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert says in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "data").exists()


@pytest.mark.e2e
def test_bad_flag_value_and_missing_file_are_refused(tmp_path: Path) -> None:
    done = shoal("config", "show", "--slots", "0")
    assert done.returncode == 2 and "option 'slots': must be between 1 and 10000" in done.stderr
    done = shoal("config", "show", "--config", str(tmp_path / "absent.toml"))
    assert done.returncode == 2 and "cannot read config file" in done.stderr and "absent.toml" in done.stderr


def test_test_knobs_and_client_variables_are_not_node_options() -> None:
    """``SHOAL_TEST_*`` (test suites), ``SHOAL_API`` and ``SHOAL_CONFIG`` may sit in a node's environment;
    any other unknown ``SHOAL_*`` is a mistake and refused with its name."""
    from shoal.config import load
    from shoal.errors import InvalidInput

    env = {"SHOAL_TEST_IMAGE": "1", "SHOAL_API": "http://127.0.0.1:1", "SHOAL_CONFIG": "x.toml", "SHOAL_SLOTS": "3"}
    assert load(env=env).slots == 3
    with pytest.raises(InvalidInput, match="'slotz'"):
        load(env={"SHOAL_SLOTZ": "3"})


def test_node_help_describes_every_option_and_names_its_variable() -> None:
    from click.testing import CliRunner

    from shoal.cli.main import cli
    from shoal.config import option_help

    done = CliRunner().invoke(cli, ["node", "--help"], terminal_width=1000, max_content_width=1000)
    assert done.exit_code == 0, done.output
    entries: list[str] = []  # one per option, its wrapped lines joined
    for line in done.output.split("Options:", 1)[1].splitlines():
        if line.lstrip().startswith("-"):
            entries.append(line.strip())
        elif line.strip() and entries:
            entries[-1] += " " + line.strip()
    for name in option_names():
        flag = "--" + name.replace("_", "-")
        shown = [e for e in entries if e.split()[0].rstrip(",") == flag]
        assert len(shown) == 1, f"{flag} not in:\n{done.output}"
        described = re.fullmatch(rf"{flag}(?: / --no-\S+)?(?:, --[a-z-]+)?(?: [A-Z:]+)? +(.+)", shown[0])
        assert described, shown[0]
        text = described.group(1)
        assert len(option_help(name).split()) >= 3, f"{name}: {option_help(name)!r} says too little"
        assert text.startswith(option_help(name) + " ("), f"{flag} has no description: {shown[0]!r}"
        assert re.search(rf"\((?:[^()]*; )?env SHOAL_{name.upper()}\)$", text), f"{flag}: {text!r}"


@pytest.mark.e2e
def test_proxy_policy_from_every_source(tmp_path: Path) -> None:
    defaults = show_json()
    assert defaults["config"]["proxy_connect_ports"] == [443]
    assert (defaults["config"]["proxy_allow"], defaults["config"]["proxy_deny"]) == ([], [])
    file = tmp_path / "node.toml"
    file.write_text('proxy_deny = ["192.168.0.0/16", "db.internal:5432"]\nproxy_connect_ports = [443, 8443]\n')
    shown = show_json("--config", str(file), "--proxy-connect-ports", "443,563",
                      env={"SHOAL_PROXY_ALLOW": "10.1.0.0/16,[fd00::1]:8443"})  # fmt: skip
    config, sources = shown["config"], shown["sources"]
    assert (config["proxy_connect_ports"], sources["proxy_connect_ports"]) == ([443, 563], "flag")
    assert (config["proxy_allow"], sources["proxy_allow"]) == (["10.1.0.0/16", "[fd00::1]:8443"],
                                                               "env SHOAL_PROXY_ALLOW")  # fmt: skip
    assert (config["proxy_deny"], sources["proxy_deny"]) == (["192.168.0.0/16", "db.internal:5432"], f"file {file}")
    table = shoal("config", "show", "--config", str(file))
    rows = {line.split()[0]: line for line in table.stdout.splitlines() if line.strip()}
    assert "443, 8443" in rows["proxy_connect_ports"] and "192.168.0.0/16, db.internal:5432" in rows["proxy_deny"]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--proxy-connect-ports", "0"], "option 'proxy_connect_ports': must be at most 1000 port numbers from 1"),
        (["--proxy-connect-ports", "https"], "option 'proxy_connect_ports' in flag --proxy-connect-ports: "),
        (["--proxy-allow", "10.0.0.0/33"], "option 'proxy_allow': '10.0.0.0/33' is not a network"),
        (["--proxy-deny", "db.internal:99999"], "option 'proxy_deny': 'db.internal:99999': the port must be a number"),
        (["--proxy-deny", "bad host"], "option 'proxy_deny': 'bad host' is not a network"),
    ],
)
def test_bad_proxy_policy_is_refused_with_its_name(flags: list[str], says: str, tmp_path: Path) -> None:
    for command in (["config", "show"], ["node", "--data-dir", str(tmp_path / "data")]):
        done = shoal(*command, *flags, cwd=tmp_path)
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert says in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()
