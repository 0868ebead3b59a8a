"""A `claude -p` turn interrupted (Ctrl-C) while a response streams, on the real Claude Code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import UTC
from pathlib import Path

import pytest

from tests.e2e.conftest import claude_env, parse_output, start_claude
from tests.e2e.fake_api import FakeAnthropic, ServedRequest
from tests.e2e.test_enforcement import settings
from tokenbudget import history, query, sync
from tokenbudget.usage import Usage

pytestmark = pytest.mark.e2e


def _setup(private_home: Path, tmp_path: Path, base_url: str
           ) -> tuple[list[str], Path, dict[str, str]]:
    """`claude -p` with tokenbudget's hooks, JSON output: the command's start, its folder and
    its environment."""
    (private_home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    hooks = tmp_path / "settings.json"
    hooks.write_text(json.dumps(settings()))
    cwd = tmp_path / "project"
    cwd.mkdir()
    env = claude_env(private_home, base_url)
    return ["-p", "--output-format", "json", "--settings", str(hooks)], cwd, env


def _interrupt(proc: subprocess.Popen[str], fake_api: FakeAnthropic, served: int) -> None:
    """Ctrl-C `proc` while the answer to its first request (the fake's `served`-th) streams."""
    deadline = time.monotonic() + 60
    while len(fake_api.requests) < served and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(fake_api.requests) == served, "the request did not reach the fake"
    time.sleep(1.0)  # the answer's first block is out; its end is 2 s away (stream_pause)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the group
    proc.communicate(timeout=60)


def _recorded() -> dict[str, Usage]:
    """Each session's usage as recorded, after a sync of whatever the hooks left unread."""
    store = sync.open_store()
    sync.sync_all(store)
    ledger = store.snapshot()
    groups = query.group("session", query.cells(ledger, history.read_records(ledger)), UTC)
    return {g.key: g.usage for g in groups if g.usage.total}


def _assert_input_and_cache_whole(u: Usage, served: list[ServedRequest]) -> None:
    """What reached Claude Code whole is recorded whole: the input and cache counts."""
    assert (u.input, u.cache_write_5m + u.cache_write_1h, u.cache_read) == (
        sum(r.input_tokens for r in served),
        sum(r.cache_creation_input_tokens for r in served),
        sum(r.cache_read_input_tokens for r in served),
    )


def test_a_response_interrupted_by_ctrl_c_is_counted_once(
    claude_bin: Path, fake_api: FakeAnthropic, private_home: Path, tmp_path: Path
) -> None:
    args, cwd, env = _setup(private_home, tmp_path, fake_api.base_url)
    fake_api.stream_pause = 3.0
    with start_claude([str(claude_bin), *args, "Say hello."], cwd, env) as proc:
        _interrupt(proc, fake_api, 1)
    [served] = fake_api.requests
    got = _recorded()
    assert list(got) == [served.session_id]
    u = got[served.session_id]
    # What reached Claude Code: the input and cache counts whole, the output only in part.
    _assert_input_and_cache_whole(u, [served])
    assert 0 < u.output <= served.output_tokens


def test_a_response_interrupted_in_a_resumed_process_is_counted_once(
    claude_bin: Path, fake_api: FakeAnthropic, private_home: Path, tmp_path: Path
) -> None:
    # A resumed process's total carries the first process's startTime on and adds only its
    # own running time: the time it names falls short of when it was written by the pause
    # between the processes, and the interrupted response's line is dated after that time.
    args, cwd, env = _setup(private_home, tmp_path, fake_api.base_url)
    with start_claude([str(claude_bin), *args, "Say hello."], cwd, env) as proc:
        out, err = proc.communicate(timeout=120)
    first = parse_output(out)
    assert first is not None, err[-2000:]
    sid = str(first["session_id"])
    time.sleep(6.0)  # longer than the resumed process runs from its response's start on
    fake_api.stream_pause = 3.0
    with start_claude([str(claude_bin), *args, "--resume", sid, "Say more."], cwd, env) as proc:
        _interrupt(proc, fake_api, 2)
    served = fake_api.requests
    assert [r.session_id for r in served] == [sid, sid]
    got = _recorded()
    assert list(got) == [sid]
    # The input and cache counts whole, the second response's output only in part.
    _assert_input_and_cache_whole(got[sid], served)
    assert served[0].output_tokens < got[sid].output <= sum(r.output_tokens for r in served)
