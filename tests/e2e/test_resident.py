"""The resident answerer behind the real Claude Code's http hooks (install --resident)."""

from __future__ import annotations

import json
import os
import signal
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ClaudeRun, RunClaude, write_script
from tests.e2e.fake_api import FakeAnthropic
from tests.e2e.test_enforcement import (
    _site_paths,
    kept_stops,
    ledger,
    result_text,
    session_tokens,
    set_budgets,
    settings,
    settled,
)
from tokenbudget import claude_settings, resident

pytestmark = pytest.mark.e2e


@pytest.fixture
def answerer(private_home: Path) -> Iterator[resident.Setup]:
    """The answerer installed (as `install --resident` keeps it); ended after the test."""
    made = resident.create()
    resident.save(made)
    yield made
    pids = {resident.read_state().get("pid")}
    resident.remove()  # it exits within a second of its key going
    deadline = time.monotonic() + 5
    for pid in pids:
        while isinstance(pid, int) and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if isinstance(pid, int) and _alive(pid):
            os.kill(pid, signal.SIGTERM)


def _alive(pid: int) -> bool:
    """Running (a killed process that nobody has reaped yet is not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def resident_settings(made: resident.Setup) -> dict[str, Any]:
    return {"hooks": claude_settings.desired_hooks(sys_python(), _site_paths(), made)}


def sys_python() -> str:
    import sys

    return sys.executable


def health(made: resident.Setup) -> dict[str, Any]:
    found, info = resident.probe(made)
    assert found == "ours", info
    return info


def crossing(served: list[Any], limit: int) -> int:
    totals = [sum(r.total_tokens() for r in served[: i + 1]) for i in range(len(served))]
    return next(i for i, t in enumerate(totals) if t >= limit)


def test_a_budget_crossed_mid_turn_stops_at_the_same_request_as_with_command_hooks(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path, tmp_path: Path,
    answerer: resident.Setup,
) -> None:
    limit = 10_000
    set_budgets(private_home, {"kind": "session", "limit": limit})
    runs: dict[str, ClaudeRun] = {}
    served: dict[str, list[Any]] = {}
    for name, hooks in (("command", settings()), ("resident", resident_settings(answerer))):
        before = len(fake_api.requests)
        runs[name] = run_claude("please LOOP forever", settings=hooks,
                                cwd=tmp_path / f"{name} 'quoted' dir")
        out = runs[name].output
        assert out is not None and out["terminal_reason"] == "hook_stopped", runs[name].proc
        served[name] = fake_api.requests[before:]
    # The same request: the first whose response used the budget up, and nothing after it.
    for name in served:
        assert len(served[name]) == crossing(served[name], limit) + 1, name
    assert len(served["command"]) == len(served["resident"])
    stops = [(s["session"], s["event"]) for s in kept_stops()]
    assert stops == [(runs["command"].session_id, "PostToolBatch"),
                     (runs["resident"].session_id, "PostToolBatch")]
    # The resident session's PostToolBatch calls went to the answerer (one per tool batch).
    assert health(answerer)["answered"] == len(served["resident"])
    settled(private_home, *runs.values())
    for name, run in runs.items():
        assert session_tokens(private_home, run.session_id) == sum(
            r.total_tokens() for r in served[name]), name


def test_with_claude_config_dir_set_it_stops_at_the_same_request_as_the_command_hooks(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path, tmp_path: Path,
    answerer: resident.Setup,
) -> None:
    # The session's transcripts go to $CLAUDE_CONFIG_DIR/projects; the answerer, started
    # without the session's CLAUDE_ variables, learns that folder from the command hooks.
    limit = 10_000
    set_budgets(private_home, {"kind": "session", "limit": limit})
    config_dir = tmp_path / "claude 'config' dir"
    config_dir.mkdir()
    (config_dir / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    env = {"CLAUDE_CONFIG_DIR": str(config_dir)}
    runs: dict[str, ClaudeRun] = {}
    served: dict[str, list[Any]] = {}
    for name, hooks in (("command", settings()), ("resident", resident_settings(answerer))):
        before = len(fake_api.requests)
        runs[name] = run_claude("please LOOP forever", settings=hooks, env=env,
                                cwd=tmp_path / f"{name} dir")
        out = runs[name].output
        assert out is not None and out["terminal_reason"] == "hook_stopped", runs[name].proc
        served[name] = fake_api.requests[before:]
        assert list((config_dir / "projects").glob(f"*/{runs[name].session_id}.jsonl"))
    assert not (private_home / ".claude" / "projects").exists()
    for name in served:
        assert len(served[name]) == crossing(served[name], limit) + 1, name
    assert len(served["command"]) == len(served["resident"])
    stops = [(s["session"], s["event"]) for s in kept_stops()]
    assert stops == [(runs["command"].session_id, "PostToolBatch"),
                     (runs["resident"].session_id, "PostToolBatch")]
    assert health(answerer)["answered"] == len(served["resident"])


def test_a_prompt_is_refused_before_it_reaches_the_api(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path, answerer: resident.Setup
) -> None:
    set_budgets(private_home, {"kind": "session", "limit": "2k"})
    first = run_claude("Say hello.", settings=resident_settings(answerer))
    assert first.proc.returncode == 0, first.proc.stderr[-2000:]
    assert health(answerer)["answered"] == 1  # its Stop
    settled(private_home, first)
    relayed = health(answerer)["relayed"]
    second = run_claude("And again.", settings=resident_settings(answerer), args=["-c"])
    assert len(fake_api.requests) == 1, "the refused prompt reached the API"
    text = result_text(second)
    assert "blocked by hook" in text and "session budget is used up" in text
    # Its SessionStart and UserPromptSubmit hooks handed their events to the answerer.
    assert health(answerer)["relayed"] >= relayed + 2


def test_an_answerer_killed_mid_turn_lets_that_turn_run_and_the_next_prompt_is_refused(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path, tmp_path: Path,
    answerer: resident.Setup,
) -> None:
    limit = 10_000
    set_budgets(private_home, {"kind": "session", "limit": limit})
    killer = write_script(tmp_path / "kill it.sh", f"""#!/bin/sh
echo "step $1" >> '{tmp_path}/ran.txt'
[ "$1" = 1 ] && [ ! -e '{tmp_path}/killed' ] || exit 0
touch '{tmp_path}/killed'
kill -9 "$(sed -n 's/.*"pid": \\([0-9]*\\).*/\\1/p' '{resident.state_file()}')"
""")
    fake_api.bash_command = f"sh '{killer}' {{step}}"
    hooks = resident_settings(answerer)
    first = run_claude("please LOOP 6", settings=hooks)
    pid = resident.read_state()["pid"]
    assert not _alive(pid)
    assert first.output is not None and first.output["terminal_reason"] == "completed"
    served = len(fake_api.requests)
    # What README says: the rest of the turn went unchecked, past the crossing request.
    assert served == 7 and crossing(fake_api.requests, limit) + 1 < served
    assert kept_stops() == []
    settled(private_home, first)
    assert session_tokens(private_home, first.session_id) == fake_api.total_tokens()
    # The next prompt: its command hook refuses it (the budget is used up).
    second = run_claude("And again.", settings=hooks, args=["-c"])
    assert len(fake_api.requests) == served
    assert "session budget is used up" in result_text(second)
    # With room again, the next prompt starts a new answerer, and it checks that turn.
    set_budgets(private_home, {"kind": "session", "limit": "1M"})
    third = run_claude("please LOOP 1", settings=hooks, args=["-c"])
    assert third.output is not None and third.output["terminal_reason"] == "completed"
    now = health(answerer)
    assert now["pid"] != pid and now["answered"] == 2  # one PostToolBatch, one Stop


def test_two_sessions_share_one_answerer_and_one_exact_ledger(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path, tmp_path: Path,
    answerer: resident.Setup,
) -> None:
    set_budgets(private_home, {"kind": "daily", "limit": "10M"})
    runs: list[ClaudeRun] = []
    hooks = resident_settings(answerer)

    def go(name: str) -> None:
        runs.append(run_claude("please LOOP 3", settings=hooks, cwd=tmp_path / name))

    threads = [threading.Thread(target=go, args=(n,)) for n in ("a dir", "b dir")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(runs) == 2 and all(r.proc.returncode == 0 for r in runs)
    # One answerer answered both: 3 PostToolBatch and a Stop each.
    assert health(answerer)["answered"] == 8
    settled(private_home, *runs)
    per_session = {r.session_id: session_tokens(private_home, r.session_id) for r in runs}
    assert sum(per_session.values()) == fake_api.total_tokens()
    assert all(per_session.values())


def test_every_file_it_creates_is_private(
    run_claude: RunClaude, private_home: Path, answerer: resident.Setup
) -> None:
    state = private_home / "tb state"
    set_budgets(private_home, {"kind": "daily", "limit": "10M"})
    (state / "config.json").chmod(0o600)
    run = run_claude("please LOOP 1", settings=resident_settings(answerer))
    assert run.proc.returncode == 0
    assert health(answerer)["answered"] == 2
    settled(private_home, run)
    folder = Path(resident.folder())
    assert {p.name for p in folder.iterdir()} == {"key.json", "state.json", "answerer.sock",
                                                  "start.lock"}
    loose = []
    for p in [state, *state.rglob("*")]:
        try:
            mode = p.stat().st_mode
        except FileNotFoundError:
            continue  # a temp file renamed into place meanwhile (a hook still writing)
        if stat.S_IMODE(mode) != (0o700 if stat.S_ISDIR(mode) else 0o600):
            loose.append(f"{p}: {stat.S_IMODE(mode):04o}")
    assert loose == []
    assert json.loads((folder / "key.json").read_text())["key"] == answerer.key


def test_a_session_with_tokenbudget_disabled_is_not_checked_by_a_running_answerer(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path, answerer: resident.Setup
) -> None:
    hooks = resident_settings(answerer)
    first = run_claude("please LOOP 1", settings=hooks)
    assert first.output is not None and health(answerer)["answered"] == 2
    set_budgets(private_home, {"kind": "session", "limit": "1k"})
    off = run_claude("please LOOP 3", settings=hooks, env={"TOKENBUDGET_DISABLE": "1"})
    assert off.output is not None and off.output["terminal_reason"] == "completed"
    assert len(fake_api.requests) == 2 + 4 and health(answerer)["answered"] == 2


def _first_request_text(fake_api: FakeAnthropic) -> str:
    """Everything the session's first Messages request sent, as JSON text."""
    first = next(c for c in fake_api.calls if c.method == "POST" and "/v1/messages" in c.path
                 and "count_tokens" not in c.path)
    return json.dumps(first.body)


def _shown(run: ClaudeRun) -> list[tuple[str, str]]:
    """The hooks' systemMessages Claude Code kept in the session's transcript: (event, text)."""
    return [(line["attachment"].get("hookEvent"), line["attachment"]["content"])
            for line in run.transcript()
            if line.get("type") == "attachment"
            and line["attachment"].get("type") == "hook_system_message"]


def test_session_start_is_async_and_the_first_prompt_says_what_it_would_have(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path, answerer: resident.Setup
) -> None:
    from tokenbudget.store import open_store

    hooks = resident_settings(answerer)
    [start] = [h for g in hooks["hooks"]["SessionStart"] for h in g["hooks"]]
    assert start["async"] is True and start["type"] == "command"
    assert all("async" not in h for g in hooks["hooks"]["UserPromptSubmit"] for h in g["hooks"])
    config = private_home / "tb state" / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({"version": 1, "context_hint": True,
                                  "budgets": [{"kind": "daily", "limit": "10M"}]}))
    with open_store().transaction() as held:
        held["notices"].append("tokenbudget: a note waiting for the next hook")
    assert resident.probe(answerer)[0] == "down"
    run = run_claude("Say hello.", settings=hooks)
    assert run.proc.returncode == 0, run.proc.stderr[-2000:]
    # The hint reached the model with the first request (the prompt's additionalContext).
    hint = "Token budget (tokenbudget): the daily budget: 10M left."
    assert "UserPromptSubmit hook additional context: " + hint in _first_request_text(fake_api)
    # The note: said once, by the prompt's hook (kept before the model's answer).
    shown = _shown(run)
    assert shown == [("UserPromptSubmit", "tokenbudget: a note waiting for the next hook")]
    settled(private_home, run)
    assert ledger(private_home)["notices"] == []
    # The answerer was down: the session's hooks started it (health() asserts it is ours).
    # Which events it decided depends on how fast it came up: a hook that waited its bound
    # decides in its own process (the waits: tests/test_resident.py); under load, none of
    # this session's may have been relayed.
    health(answerer)
    assert run.session_id in ledger(private_home)["sessions"]


def test_a_budget_used_up_refuses_the_first_prompt_of_a_session(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path, answerer: resident.Setup
) -> None:
    set_budgets(private_home, {"kind": "daily", "limit": "10M"})
    first = run_claude("Say hello.", settings=resident_settings(answerer))
    assert first.proc.returncode == 0, first.proc.stderr[-2000:]
    settled(private_home, first)
    set_budgets(private_home, {"kind": "daily", "limit": "2k"})
    # The answerer down too: the prompt's own hook decides, whatever SessionStart does.
    resident.save(answerer)  # its key file rewritten: it exits within a second
    deadline = time.monotonic() + 10
    while resident.probe(answerer)[0] != "down":
        assert time.monotonic() < deadline, "the answerer did not exit"
        time.sleep(0.05)
    second = run_claude("A new session.", settings=resident_settings(answerer))
    assert len(fake_api.requests) == 1, "the refused prompt reached the API"
    text = result_text(second)
    assert "blocked by hook" in text and "daily budget is used up" in text


def test_an_async_session_start_says_nothing_the_model_reads(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path, answerer: resident.Setup
) -> None:
    config = private_home / "tb state" / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("{not json")
    run = run_claude("please LOOP 2", settings=resident_settings(answerer))
    assert run.proc.returncode == 0, run.proc.stderr[-2000:]
    # Said to the user by the prompt's hook (and the tool batches' and Stop's).
    assert ("UserPromptSubmit", "config is broken") in [
        (event, "config is broken") for event, text in _shown(run) if "config is broken" in text]
    answered = [line["attachment"]["response"] for line in run.transcript()
                if line.get("type") == "attachment"
                and line["attachment"].get("type") == "async_hook_response"
                and line["attachment"].get("hookEvent") == "SessionStart"]
    assert all(r == {} for r in answered), answered  # (Claude Code may keep no empty one)
    requests = [json.dumps(c.body) for c in fake_api.calls if c.method == "POST"
                and "/v1/messages" in c.path and "count_tokens" not in c.path]
    assert len(requests) == 3
    assert not any("config is broken" in r for r in requests)
