"""The install routes on the real Claude Code: install.sh, the plugin, and both at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RunClaude, wait_for_session_end
from tests.e2e.fake_api import FakeAnthropic
from tests.helpers import stored_ledger
from tokenbudget import claude_settings

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def ledger(home: Path) -> dict[str, Any]:
    return stored_ledger(home / "tb state")


def total_tokens(home: Path) -> int:
    return sum(sum(m[:5]) for s in ledger(home)["sessions"].values() for m in s["m"].values())


def install_sh(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HOME=str(home))
    return subprocess.run(
        ["sh", str(REPO / "install.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_install_sh_then_claude_counts_exactly_and_uninstall_restores(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path
) -> None:
    settings = private_home / ".claude" / "settings.json"
    settings.parent.mkdir(parents=True)
    before = {
        "model": "opus",
        "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "true # someone else's"}]}]},
    }
    settings.write_text(json.dumps(before, indent=2))
    proc = install_sh(private_home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    venv_python = private_home / "tb state" / "venv" / "bin" / "python"
    regs = claude_settings.find_registrations(settings)
    assert {r.event for r in regs} == set(claude_settings.OUR_EVENTS)
    assert all(claude_settings.interpreter_of(r.command) == str(venv_python) for r in regs)
    assert (private_home / ".local" / "bin" / "tokenbudget").resolve().exists()
    # Installed a second time: nothing changes.
    text = settings.read_text()
    assert install_sh(private_home).returncode == 0
    assert settings.read_text() == text

    run = run_claude("please LOOP 2")  # no --settings: the user's settings.json has our hooks
    assert run.proc.returncode == 0, run.proc.stderr[-2000:]
    wait_for_session_end(private_home / "tb state" / "ledger.json", run)
    assert total_tokens(private_home) == fake_api.total_tokens() > 0

    proc = install_sh(private_home, "--uninstall")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(settings.read_text()) == before
    assert (private_home / "tb state" / "ledger.json").exists()  # kept without --purge
    assert not (private_home / "tb state" / "venv").exists()
    assert not (private_home / ".local" / "bin" / "tokenbudget").exists()
    # --purge deletes tokenbudget's own files only: TOKENBUDGET_HOME may hold others.
    (private_home / "tb state" / "notes.txt").write_text("mine")
    # What other commands leave there (status --check's stops, a replaced status line, the
    # plugin's runs, team mode, a schema-1 ledger kept aside by its upgrade, the index of a
    # large ledger's records) goes too.
    for name in ("stops.jsonl", "stops.jsonl.1", "statusline-previous.json", "plugin-runs.json",
                 "team-cache.json", "team-state.json", "ledger.index",
                 "ledger.json.schema1-20270101-000000",
                 "ledger.journal.jsonl.schema1-20270101-000000"):
        (private_home / "tb state" / name).write_text("{}")
    proc = install_sh(private_home, "--uninstall", "--purge")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (private_home / "tb state").iterdir()) == ["notes.txt"]


def _plugin_ready(data: Path) -> bool:
    return any((p / "venv" / ".ready").exists() for p in [data, *data.glob("*")])


def test_plugin_route_first_run_then_enforces(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path
) -> None:
    env = {"TOKENBUDGET_PYTHON": ""}  # the plugin must find or build its own Python
    first = run_claude("Say hello.", plugin_dir=REPO, env=env)
    assert first.proc.returncode == 0, first.proc.stderr[-2000:]
    assert len(fake_api.requests) == 1, "the first run must not block while setting up"
    shown = [
        line["attachment"]["content"]
        for line in first.transcript()
        if line.get("type") == "attachment"
        and line["attachment"].get("type") == "hook_system_message"
    ]
    assert any("setting up" in m for m in shown), shown
    data = private_home / ".claude" / "plugins" / "data"
    deadline = time.monotonic() + 300
    while not _plugin_ready(data) and time.monotonic() < deadline:
        time.sleep(1)
    # setup.log sits in the plugin's data folder; a recursive walk would race with the
    # setup's lock folder and build folders, which come and go while it finishes.
    logs = "\n".join(p.read_text() for p in data.glob("*/setup.log"))
    assert _plugin_ready(data), f"the plugin's environment was not set up: {logs[-3000:]}"

    # The budget is set the way README tells a plugin user: the plugin's /tokenbudget, with
    # no --allowedTools (the skill carries its own permission). Claude Code runs the CLI
    # before it asks the model, and sends it what the CLI printed.
    command = "/tokenbudget budget set session 2k"
    done = run_claude(command, plugin_dir=REPO, env=env, args=["-c"], allowed_tools=())
    assert done.proc.returncode == 0, done.proc.stderr[-2000:]
    assert "Set session: 2k tokens (block)." in fake_api.requests[-1].prompt
    cfg = json.loads((private_home / "tb state" / "config.json").read_text())
    assert [(b["kind"], b["limit"]) for b in cfg["budgets"]] == [("session", 2000)]

    asked = len(fake_api.requests)
    second = run_claude("Say hello again.", plugin_dir=REPO, env=env, args=["-c"])
    # The hooks now run: the session's usage is recorded and its budget refuses.
    assert len(fake_api.requests) == asked
    assert "session budget is used up" in str(second.output.get("result") if second.output else "")

    # doctor is green for a plugin user, in the session (the skill is never refused, or a
    # used-up budget could not be raised) and from the environment's own tokenbudget.
    run_claude("/tokenbudget doctor", plugin_dir=REPO, env=env, args=["-c"], allowed_tools=())
    assert len(fake_api.requests) == asked + 1
    report = fake_api.requests[-1].prompt
    assert "ok  hooks ran as a plugin: " + str(REPO) in report, report
    assert "\nAll good.\n" in report and "!!" not in report, report
    [cli] = data.glob("*/venv/bin/tokenbudget")
    direct = subprocess.run([str(cli), "doctor"], capture_output=True, text=True, check=False)
    assert direct.returncode == 0 and direct.stdout.endswith("All good.\n"), direct.stdout
    assert "hooks are not registered anywhere" not in direct.stdout


def test_plugin_and_settings_together_count_and_block_once(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path, tmp_path: Path
) -> None:
    # The plugin's interpreter is this one (TOKENBUDGET_PYTHON), settings name it too.
    settings = {"hooks": claude_settings.desired_hooks(sys.executable)}
    env = {"TOKENBUDGET_PYTHON": sys.executable}
    run = run_claude("please LOOP 2", plugin_dir=REPO, settings=settings, env=env)
    assert run.proc.returncode == 0, run.proc.stderr[-2000:]
    wait_for_session_end(private_home / "tb state" / "ledger.json", run)
    assert total_tokens(private_home) == fake_api.total_tokens()
    cfg = private_home / "tb state" / "config.json"
    cfg.write_text(json.dumps({"version": 1, "budgets": [{"kind": "session", "limit": "2k"}]}))
    refused = run_claude("more", plugin_dir=REPO, settings=settings, env=env, args=["-c"])
    text = str(refused.output.get("result") if refused.output else refused.proc.stdout)
    assert text.count("session budget is used up") == 1, text
    wait_for_session_end(private_home / "tb state" / "ledger.json", refused)
    assert total_tokens(private_home) == fake_api.total_tokens()
