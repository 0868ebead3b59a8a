"""The status line in an interactive Claude Code session, read off a tmux screen."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import RunClaude, claude_env
from tests.e2e.fake_api import FakeAnthropic
from tokenbudget import claude_settings, sync

pytestmark = pytest.mark.e2e
SCREEN_TIMEOUT = 90.0


class Screen:
    """One interactive program in a tmux server of its own (its socket under tmp_path)."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-S", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout

    def start(self, script: Path, cwd: Path) -> None:
        self.tmux("new-session", "-d", "-x", "160", "-y", "40", "-c", str(cwd), str(script))

    def text(self) -> str:
        return self.tmux("capture-pane", "-p", "-J")

    def wait_for(self, pattern: str, timeout: float = SCREEN_TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.text(), re.MULTILINE)
            if found:
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"no {pattern!r} on the screen in {timeout} s:\n{self.text()}")
            time.sleep(0.5)


@pytest.fixture
def screen(tmp_path: Path) -> Iterator[Screen]:
    if shutil.which("tmux") is None:
        pytest.fail("the interactive status line test needs tmux (apt-get install tmux)")
    s = Screen(tmp_path / "tmux.sock")
    yield s
    # Only this test's own server, by its socket.
    subprocess.run(["tmux", "-S", str(s.socket), "kill-server"], capture_output=True, check=False)


def test_the_blocking_budget_comes_first_on_the_screen(
    run_claude: RunClaude,
    fake_api: FakeAnthropic,
    claude_bin: Path,
    private_home: Path,
    tmp_path: Path,
    screen: Screen,
) -> None:
    first = run_claude("hello")
    assert first.proc.returncode == 0, first.proc.stderr[-2000:]
    store = sync.open_store()
    sync.sync_all(store)
    used = sum(sum(m[:5]) for s in store.snapshot()["sessions"].values() for m in s["m"].values())
    assert used == fake_api.total_tokens()
    # Issue 11's case: a daily budget at 102% blocks, a warn-only weekly one is at 162%.
    daily, weekly = round(used / 1.025), round(used / 1.625)
    config = {
        "version": 1,
        "budgets": [
            {"kind": "session", "limit": "$2"},
            {"kind": "weekly", "limit": weekly, "mode": "warn"},
            {"kind": "daily", "limit": daily},
        ],
    }
    (private_home / "tb state" / "config.json").write_text(json.dumps(config))
    settings = tmp_path / "statusline-settings.json"
    command = claude_settings.statusline_command(sys.executable)
    settings.write_text(json.dumps({"statusLine": {"type": "command", "command": command}}))
    cwd = first.cwd
    claude_json = private_home / ".claude.json"
    state = json.loads(claude_json.read_text())
    # Answered in advance: use the API key from the environment, trust this folder.
    state["customApiKeyResponses"] = {"approved": ["test"], "rejected": []}
    state["projects"] = {str(cwd): {"hasTrustDialogAccepted": True}}
    claude_json.write_text(json.dumps(state))
    env = claude_env(private_home, fake_api.base_url)
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items() if k.isidentifier())
    script = tmp_path / "interactive.sh"
    script.write_text(
        f"#!/bin/sh\n{exports}exec {shlex.quote(str(claude_bin))}"
        f" --settings {shlex.quote(str(settings))}\n"
    )
    script.chmod(0o700)
    screen.start(script, cwd)
    # Shown from the start: the budget that blocks, then the session's; the warn-only weekly
    # budget, fuller but not blocking, is the one left out to keep the line short.
    line = screen.wait_for(r"^ *(daily|session|weekly|tokenbudget).*$").group(0)
    assert re.fullmatch(
        r" *daily 102% of 3k BLOCKS · resets [0-9hm]+ │ session 0 · \$0\.00/\$2\.00 │ \+1 more",
        line,
    ), screen.text()
    # After a turn (no hooks here: the prompt goes through) the line runs again with the
    # session's own usage, read from its transcript.
    screen.tmux("send-keys", "-t", "0", "hi", "Enter")
    line = screen.wait_for(r"^ *(daily|session|weekly).*session [1-9].*$").group(0)
    assert re.fullmatch(
        r" *daily 2[0-9][0-9]% of 3k BLOCKS · resets [0-9hm]+"
        r" │ session [0-9.]+k · \$0\.[0-9]+/\$2\.00 │ \+1 more",
        line,
    ), screen.text()
