"""A `claude -p` turn interrupted (Ctrl-C) while a response streams, on the real Claude Code."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC
from pathlib import Path

import pytest

from tests.e2e.conftest import claude_env, parse_output, start_claude
from tests.e2e.fake_api import FakeAnthropic
from tests.e2e.test_enforcement import settings
from tokenbudget import history, query, sync

pytestmark = pytest.mark.e2e


def test_a_response_interrupted_by_ctrl_c_is_counted_once(
    claude_bin: Path, fake_api: FakeAnthropic, private_home: Path, tmp_path: Path
) -> None:
    (private_home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    hooks = tmp_path / "settings.json"
    hooks.write_text(json.dumps(settings()))
    cwd = tmp_path / "project"
    cwd.mkdir()
    fake_api.stream_pause = 3.0
    cmd = [str(claude_bin), "-p", "Say hello.", "--output-format", "json", "--settings", str(hooks)]
    with start_claude(cmd, cwd, claude_env(private_home, fake_api.base_url)) as proc:
        deadline = time.monotonic() + 60
        while not fake_api.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fake_api.requests, "no request reached the fake"
        time.sleep(1.0)  # the answer's first block is out; its end is 2 s away
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the group
        proc.communicate(timeout=60)
    [served] = fake_api.requests
    store = sync.open_store()
    sync.sync_all(store)  # whatever the hooks left unread
    ledger = store.snapshot()
    groups = query.group("session", query.cells(ledger, history.read_records(ledger)), UTC)
    got = {g.key: g.usage for g in groups if g.usage.total}
    assert list(got) == [served.session_id]
    u = got[served.session_id]
    # What reached Claude Code: the input and cache counts whole, the output only in part.
    assert (u.input, u.cache_write_5m + u.cache_write_1h, u.cache_read) == (
        served.input_tokens,
        served.cache_creation_input_tokens,
        served.cache_read_input_tokens,
    )
    assert 0 < u.output <= served.output_tokens


def test_a_response_interrupted_in_a_resumed_process_is_counted_once(
    claude_bin: Path, fake_api: FakeAnthropic, private_home: Path, tmp_path: Path
) -> None:
    # A resumed process's total carries the first process's startTime on and adds only its
    # own running time: the time it names falls short of when it was written by the pause
    # between the processes, and the interrupted response's line is dated after that time.
    (private_home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    hooks = tmp_path / "settings.json"
    hooks.write_text(json.dumps(settings()))
    cwd = tmp_path / "project"
    cwd.mkdir()
    env = claude_env(private_home, fake_api.base_url)
    base = [str(claude_bin), "-p", "--output-format", "json", "--settings", str(hooks)]
    with start_claude([*base, "Say hello."], cwd, env) as proc:
        out, err = proc.communicate(timeout=120)
    first = parse_output(out)
    assert first is not None, err[-2000:]
    sid = str(first["session_id"])
    time.sleep(6.0)  # longer than the resumed process runs from its response's start on
    fake_api.stream_pause = 3.0
    with start_claude([*base, "--resume", sid, "Say more."], cwd, env) as proc:
        deadline = time.monotonic() + 60
        while len(fake_api.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(fake_api.requests) == 2, "the resumed process's request did not come"
        time.sleep(1.0)  # the answer's first block is out; its end is 2 s away
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the group
        proc.communicate(timeout=60)
    served = fake_api.requests
    assert [r.session_id for r in served] == [sid, sid]
    store = sync.open_store()
    sync.sync_all(store)  # whatever the hooks left unread
    ledger = store.snapshot()
    groups = query.group("session", query.cells(ledger, history.read_records(ledger)), UTC)
    got = {g.key: g.usage for g in groups if g.usage.total}
    assert list(got) == [sid]
    u = got[sid]
    # What reached Claude Code: the input and cache counts whole, the second response's
    # output only in part.
    assert (u.input, u.cache_write_5m + u.cache_write_1h, u.cache_read) == (
        sum(r.input_tokens for r in served),
        sum(r.cache_creation_input_tokens for r in served),
        sum(r.cache_read_input_tokens for r in served),
    )
    assert served[0].output_tokens < u.output <= served[0].output_tokens + served[1].output_tokens
