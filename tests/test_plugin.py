"""The plugin route: the environment setup-env builds, the /tokenbudget skill's CLI shim, and
the note the hooks leave for doctor when they run as a plugin."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_hook import run_hook, session, set_budgets
from tokenbudget import plugin

REPO = Path(__file__).resolve().parent.parent
SETUP_ENV = REPO / "hooks" / "setup-env"
CLI_SHIM = REPO / "hooks" / "tokenbudget-cli"
SKILL = REPO / "skills" / "tokenbudget" / "SKILL.md"


def _setup_env(venv: Path, version: str) -> None:
    proc = subprocess.run(
        ["sh", str(SETUP_ENV), str(REPO), str(venv), version],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def _interpreter(script: Path) -> Path:
    """The Python a console script starts: its #! line, or pip's `exec` line when the path
    has a space (the #! line is then /bin/sh)."""
    lines = script.read_text().splitlines()
    assert lines[0].startswith("#!"), lines[0]
    if lines[0] == "#!/bin/sh":
        found = re.match(r"'''exec' \"([^\"]+)\" ", lines[1])
        assert found, lines[1]
        return Path(found.group(1))
    return Path(lines[0][2:].split()[0])


def test_setup_env_builds_an_environment_whose_console_script_runs(tmp_path: Path) -> None:
    data = tmp_path / "plugin data"  # a space, as in many a home folder
    venv = data / "venv"
    # What an older setup-env left: a plain folder (scripts naming venv.partial) and debris.
    (venv / "bin").mkdir(parents=True)
    (venv / ".ready").write_text("0.0.9")
    (data / "venv.partial").mkdir()
    _setup_env(venv, "0.1.0")

    assert venv.is_symlink() and (venv / ".ready").read_text() == "0.1.0"
    script = venv / "bin" / "tokenbudget"
    interpreter = _interpreter(script)
    assert interpreter.exists(), f"{script} starts {interpreter}, which does not exist"
    assert interpreter.parent.parent.parent == data
    run = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert run.returncode == 0 and "0.1.0" in run.stdout, run.stderr
    assert oct(venv.resolve().stat().st_mode & 0o777) == oct(0o700)
    first = venv.resolve()
    assert sorted(p.name for p in data.iterdir()) == sorted(["venv", first.name])

    # An upgrade builds beside it and swaps the link; the build it replaced stays for hooks
    # that started on it, until the next setup.
    _setup_env(venv, "0.2.0")
    assert (venv / ".ready").read_text() == "0.2.0" and venv.resolve() != first
    assert sorted(p.name for p in data.iterdir()) == sorted(
        ["venv", first.name, venv.resolve().name]
    )
    assert (
        subprocess.run([str(script), "--version"], capture_output=True, check=False).returncode == 0
    )


def test_the_hook_rebuilds_an_environment_from_an_older_setup_env(tmp_path: Path) -> None:
    data = tmp_path / "data"
    venv = data / "venv"
    (venv / "bin").mkdir(parents=True)
    os.symlink(sys.executable, venv / "bin" / "python")
    version = json.loads((REPO / ".claude-plugin" / "plugin.json").read_text())["version"]
    (venv / ".ready").write_text(version)  # the current version, but a plain folder
    fake_root = tmp_path / "plugin"
    (fake_root / "hooks").mkdir(parents=True)
    (fake_root / ".claude-plugin").mkdir()
    shutil.copy(REPO / ".claude-plugin" / "plugin.json", fake_root / ".claude-plugin")
    marker = tmp_path / "setup ran"
    (fake_root / "hooks" / "setup-env").write_text(f'touch "{marker}"\n')
    env = {
        "TOKENBUDGET_PYTHON": "",
        "CLAUDE_PLUGIN_ROOT": str(fake_root),
        "CLAUDE_PLUGIN_DATA": str(data),
    }
    proc = subprocess.run(
        [str(REPO / "hooks" / "tokenbudget-hook"), "Stop"],
        input=b"{}",
        capture_output=True,
        env={**os.environ, **env},
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0
    for _ in range(100):
        if marker.exists():
            break
        time.sleep(0.05)
    assert marker.exists(), "an environment that is not a link was not set up again"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI_SHIM), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def test_the_cli_shim_runs_the_cli_with_the_users_arguments(private_home: Path) -> None:
    done = _cli("", "budget", "set", "session", "$2", env={"TOKENBUDGET_PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    cfg = json.loads((private_home / "tb state" / "config.json").read_text())
    assert [(b["kind"], b["limit"], b["unit"]) for b in cfg["budgets"]] == [("session", 2, "usd")]
    alone = _cli("", env={"TOKENBUDGET_PYTHON": sys.executable})
    assert alone.returncode == 0 and alone.stdout.startswith("Usage: tokenbudget "), alone.stdout


def test_the_cli_shim_finds_the_plugin_environment(private_home: Path, tmp_path: Path) -> None:
    data = tmp_path / "data dir"
    bad = _cli(str(data), "status", env={"TOKENBUDGET_PYTHON": ""})
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith("tokenbudget is still setting up its Python environment")
    (data / "venv" / "bin").mkdir(parents=True)
    python = data / "venv" / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o700)
    (data / "venv" / ".ready").write_text("0.1.0")
    good = _cli(str(data), "budget", "list", env={"TOKENBUDGET_PYTHON": ""})
    assert good.returncode == 0 and good.stdout.startswith("No budgets."), good.stderr


def test_the_skill_runs_the_shim_under_the_permission_it_asks_for() -> None:
    text = SKILL.read_text()
    allowed = re.search(r"^allowed-tools: Bash\((.*):\*\)$", text, re.MULTILINE)
    command = re.search(r"^!`(.*)`$", text, re.MULTILINE)
    assert allowed and command
    # Claude Code checks the expanded command against the pattern as a prefix.
    assert command.group(1).startswith(allowed.group(1) + " ")
    assert command.group(1).endswith('"${CLAUDE_PLUGIN_DATA}" $ARGUMENTS')
    assert "disable-model-invocation: true" in text  # only the user runs it


@pytest.mark.parametrize(
    "prompt", ["/tokenbudget budget set session 1M", "/tokenbudget:tokenbudget"]
)
def test_the_skill_is_never_refused(private_home: Path, prompt: str) -> None:
    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "10k"})
    assert run_hook("UserPromptSubmit", {**base, "prompt": "go on"})[1]["decision"] == "block"
    rc, out, _ = run_hook("UserPromptSubmit", {**base, "prompt": prompt})
    assert rc == 0 and out == {}
    refused = run_hook("UserPromptSubmit", {**base, "prompt": "/tokenbudgets x"})[1]
    assert refused["decision"] == "block"


def test_a_failed_setup_leaves_no_build_and_is_not_retried_on_every_event(
    tmp_path: Path,
) -> None:
    data = tmp_path / "plugin data"
    data.mkdir()
    (data / ".setup-lock").mkdir()  # taken by the hook that starts it
    not_a_package = tmp_path / "empty"
    not_a_package.mkdir()
    proc = subprocess.run(["sh", str(SETUP_ENV), str(not_a_package), str(data / "venv"), "9"],
                          capture_output=True, timeout=300, check=False)
    assert proc.returncode != 0
    assert sorted(p.name for p in data.iterdir()) == ["setup.failed"]  # no build, no lock
    env = {**os.environ, "TOKENBUDGET_PYTHON": "", "CLAUDE_PLUGIN_ROOT": str(REPO),
           "CLAUDE_PLUGIN_DATA": str(data)}
    out = subprocess.run([str(REPO / "hooks" / "tokenbudget-hook"), "UserPromptSubmit"],
                         input=b"{}", capture_output=True, env=env, timeout=30, check=True)
    message = json.loads(out.stdout)["systemMessage"]
    assert "could not set up its Python environment" in message and "setup.log" in message
    time.sleep(0.5)
    assert sorted(p.name for p in data.iterdir()) == ["setup.failed"]  # no new setup started


def test_a_plugin_session_start_is_noted_for_doctor(private_home: Path, tmp_path: Path) -> None:
    base = session(private_home)
    start = {**base, "hook_event_name": "SessionStart", "source": "startup"}
    assert run_hook("SessionStart", start)[0] == 0
    assert plugin.read_runs() == {}  # not a plugin: nothing noted
    env = {"CLAUDE_PLUGIN_ROOT": str(tmp_path / "root"), "CLAUDE_PLUGIN_DATA": str(tmp_path)}
    for _ in range(2):  # the second is a double registration, answered once: still noted
        assert run_hook("SessionStart", start, env=env)[0] == 0
    runs = plugin.read_runs()
    assert list(runs) == [str(tmp_path / "root")]
    assert runs[str(tmp_path / "root")]["data"] == str(tmp_path)
    assert runs[str(tmp_path / "root")]["python"] == sys.executable
    assert oct(os.stat(plugin.runs_file()).st_mode & 0o777) == oct(0o600)


def test_plugin_notes_keep_the_last_month_and_survive_a_bad_file(private_home: Path) -> None:
    day = 86400.0
    plugin.note_run("/old", None, "/py", 1000 * day)
    plugin.note_run("/new", "/data", "/py", 1000 * day + plugin.KEEP_DAYS * day)
    assert list(plugin.read_runs()) == ["/new"]
    assert list(plugin.recent_runs(1000 * day + 2 * plugin.KEEP_DAYS * day)) == []
    Path(plugin.runs_file()).write_text(
        '{"runs": {"/huge": {"at": 1e400}, "/int": {"at": 10000000000000000000000},'
        ' "/true": {"at": true}, "/new": {"at": 5.0}}}'
    )
    assert list(plugin.read_runs()) == ["/new"]
    Path(plugin.runs_file()).write_text("{not json")
    assert plugin.read_runs() == {}
    plugin.note_run("/again", None, "/py", 5.0)
    assert list(plugin.read_runs()) == ["/again"]


def test_the_plugin_registers_what_install_registers() -> None:
    from tokenbudget import claude_settings

    hooks = json.loads((REPO / "hooks" / "hooks.json").read_text())["hooks"]
    assert list(hooks) == list(claude_settings.OUR_EVENTS)
    for event, groups in hooks.items():
        (group,) = groups
        (entry,) = group["hooks"]
        wanted = claude_settings.desired_hooks("python")[event][0]
        # The same matcher, timeout and "async"; only the command finds tokenbudget its way.
        assert {**entry, "command": None} == {**wanted["hooks"][0], "command": None}
        assert group.get("matcher") == wanted.get("matcher")
        assert claude_settings.parse_hook_command(entry["command"]) == (
            claude_settings.ParsedHook("plugin", event, None)
        )
