"""The hot view (tokenbudget/hot.py): what a hook call with nothing new decides on.

The heart is the contract: on every ledger built here (every fixture, slash commands over
several 5-hour blocks, warnings given, an allow pending or spent, sessions ended by /clear,
folded ones), for every session and event, the engine's judgement on the view's part of the
ledger is its judgement on the whole ledger, and the quick path's "nothing to do" too. The
suite also checks, after every commit of every test (tests/conftest.py `journal_check`), that
the view on disk is the one built afresh from the committed ledger.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.claude_lines import Session, set_budgets
from tests.helpers import ALL_CASES, install_fixture
from tokenbudget import config as config_mod
from tokenbudget import hook, hot, sync
from tokenbudget.budgets import Budget, window
from tokenbudget.store import CRASH_ENV, JsonFileStore, open_store

EVENTS = ("UserPromptSubmit", "PreToolUse", "PostToolUse", "PostToolBatch", "Stop",
          "SubagentStop", "SessionEnd")
PROMPTS = ("fix the tests", "/test --fast", "/review", "/tokenbudget status", "/deploy now")
# Budgets of every kind and unit, limits low enough that some warn and some block.
BUDGETS = [
    {"kind": "daily", "limit": "40k", "warn_at": 0.5},
    {"kind": "weekly", "limit": "$2", "mode": "warn"},
    {"kind": "monthly", "limit": "2M"},
    {"kind": "5h", "limit": "30k", "warn_at": 0.3},
    {"kind": "5h", "limit": "$0.5", "project": "/home/dev/alpha"},
    {"kind": "session", "limit": "8k", "warn_at": 0.2},
    {"kind": "command", "name": "/test", "limit": "5k"},
    {"kind": "command", "name": "/review", "limit": "$0.02", "unit": "usd"},
    {"kind": "total", "limit": "9M"},
    {"kind": "project", "name": "/home/dev/beta", "limit": "3k"},
]


def _store(home: Path) -> JsonFileStore:
    return open_store(path=home / "tb state" / "ledger.json")


def _judged(ev: hook.Event, cfg: Any, budgets: list[Budget], ledger: Any, now: float) -> Any:
    try:
        return hook._judge(ev, cfg, budgets, ledger, now), hook._nothing_to_do(
            ev, cfg, budgets, ledger, now)
    except Exception as e:  # an error must be the same error on both
        return repr(e)


def _events(store: JsonFileStore, home: Path, now: float) -> list[tuple[str, dict[str, Any]]]:
    """Every event to judge: each event kind for each live session (and one unknown), each
    prompt, in each of the session's turns and a new one."""
    ledger = store.snapshot()
    out = []
    for sid, s in [*ledger["sessions"].items(), ("not-a-session", None)]:
        transcript = next((p for p, rec in ledger["files"].items()
                           if rec[3] == sid and p.endswith(f"/{sid}.jsonl")), None)
        for name in EVENTS:
            for pid in [*list(s["t"] if s else [])[-3:], "a-new-turn"]:
                for prompt in PROMPTS if name == "UserPromptSubmit" else (None,):
                    payload = {"session_id": sid, "cwd": s["p"] if s else "/home/dev/alpha",
                               "prompt_id": pid, "hook_event_name": name}
                    if transcript:
                        payload["transcript_path"] = transcript
                    if prompt is not None:
                        payload["prompt"] = prompt
                    out.append((name, payload))
    return out


def assert_same_decisions(home: Path, nows: list[float]) -> int:
    """Judge every event on the whole ledger and on the view; return how many."""
    store = _store(home)
    cfg = config_mod.load_config()
    budgets = [Budget.from_json(b) for b in BUDGETS]
    full = store.snapshot()
    n = 0
    for now in nows:
        for name, payload in _events(store, home, now):
            ev = hook.parse_event(name, json.dumps(payload).encode())
            part = hook._hot(ev, store)
            if payload["session_id"] == "not-a-session":
                assert part is None  # no file: the whole ledger decides
                continue
            if part is None:  # only a prompt of a command with live runs: the ledger decides
                command = (payload.get("prompt") or " ").split()[0]
                assert any(t[0] == command for s in full["sessions"].values()
                           for t in s["t"].values()), payload
                continue
            want = _judged(ev, cfg, budgets, json.loads(json.dumps(full)), now)
            assert _judged(ev, cfg, budgets, part, now) == want, (payload, now)
            n += 1
    return n


def _history(home: Path, day: float) -> None:
    """Sessions with slash commands and plain prompts in two projects, over several 5-hour
    blocks, recorded by their hooks (which give and remember warnings)."""
    set_budgets(home, *BUDGETS)
    alpha = Session(home, "syn-alpha", "/home/dev/alpha")
    beta = Session(home, "syn-beta", "/home/dev/beta")
    gamma = Session(home, "syn-gamma", "/home/dev/alpha/sub")
    t = day - 20 * 3600
    for k in range(6):
        for s, text in ((alpha, "/test --fast"), (beta, "/review"), (gamma, "plain words")):
            s.event("SessionStart", t, source="startup") if k == 0 else None
            pid = f"{s.sid}-p{k}"
            s.turn(pid, text, t + k * 4 * 3600, 900 + 300 * k, 1200)
            s.event("Stop", t + k * 4 * 3600 + 10, prompt_id=pid)
    # The same start for two runs of /test: their order must be the whole ledger's.
    alpha.turn("syn-alpha-tie", "/test", t + 4 * 3600, 500)
    beta.turn("syn-beta-tie", "/test", t + 4 * 3600, 700)
    alpha.event("Stop", t + 5 * 3600, prompt_id="syn-alpha-tie")
    beta.event("Stop", t + 5 * 3600, prompt_id="syn-beta-tie")


@pytest.mark.parametrize("case", ALL_CASES)
def test_a_fixture_is_decided_on_the_view_as_on_the_whole_ledger(
    case: str, private_home: Path, recorded_day: float
) -> None:
    install_fixture(case, private_home / ".claude")
    set_budgets(private_home, *BUDGETS)
    store = _store(private_home)
    sync.sync_all(store, now=recorded_day)
    with store.transaction():
        pass  # no change: the view is written all the same
    nows = [recorded_day + d for d in (0, 3600, 6 * 3600, 3 * 86400)]
    assert assert_same_decisions(private_home, nows) > 0


def test_a_history_of_commands_blocks_warnings_and_allows_is_decided_alike(
    private_home: Path, recorded_day: float
) -> None:
    for case in ALL_CASES:
        install_fixture(case, private_home / ".claude", unique_ids=True)
    _history(private_home, recorded_day)
    store = _store(private_home)
    sync.sync_all(store, now=recorded_day)
    assert store.snapshot()["warned"]  # the hooks gave warnings, and remember them
    nows = [recorded_day + d for d in (-3 * 3600, 0, 2 * 3600, 5 * 3600, 26 * 3600)]
    n = assert_same_decisions(private_home, nows)
    # `tokenbudget allow`: pending, then spent on a prompt that a budget refuses.
    with store.transaction() as ledger:
        ledger["allow"] = {"pending": True, "at": recorded_day}
    assert_same_decisions(private_home, nows[1:3])
    alpha = Session(private_home, "syn-alpha", "/home/dev/alpha")
    assert "decision" not in alpha.prompt("/test --fast", recorded_day + 60, pid="allowed")
    assert store.snapshot()["allow"].get("prompt_id") == "allowed"
    assert_same_decisions(private_home, nows[1:3])
    # /clear: the ended session's transcript is read by the next session's hooks for a while.
    Session(private_home, "syn-delta", "/home/dev/alpha").event(
        "SessionStart", recorded_day + 120, source="clear")
    # And in the fixtures' folder, where a session ended had subagents.
    Session(private_home, "syn-epsilon", "/home/dev/project").event(
        "SessionStart", recorded_day + 120, source="clear")
    assert store.snapshot()["ended"]
    assert_same_decisions(private_home, [recorded_day + 130])
    # A session starting folds the idle ones into history: their files go too.
    with store.transaction(checkpoint=True) as ledger:
        from tokenbudget import history

        history.fold(ledger, recorded_day - 3600)
    assert n > 1000
    # Slash prompts of commands no live session ran are decided on the view too.
    alpha = Session(private_home, "syn-alpha", "/home/dev/alpha")
    ev = hook.parse_event("UserPromptSubmit", json.dumps({
        "session_id": alpha.sid, "transcript_path": str(alpha.path), "prompt": "/deploy now",
        "prompt_id": "x"}).encode())
    assert hook._hot(ev, store) is not None
    assert hook._hot(ev.__class__(**{**{k: getattr(ev, k) for k in ev.__slots__},
                                    "prompt": "/test"}), store) is None
    assert assert_same_decisions(private_home, nows) > 0
    folder = hot.paths(store.file)[1]
    live = {hot.session_file(folder, sid) for sid in store.snapshot()["sessions"]}
    assert {os.path.join(folder, f) for f in os.listdir(folder)} == live


def test_a_quick_call_reads_the_view_not_the_ledger(
    private_home: Path, recorded_day: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    _history(private_home, recorded_day)
    set_budgets(private_home, {"kind": "daily", "limit": "900M"},
                {"kind": "session", "limit": "900M"}, {"kind": "5h", "limit": "900M"})
    alpha = Session(private_home, "syn-alpha", "/home/dev/alpha")
    alpha.event("Stop", recorded_day)  # everything read

    def no_full_read(self: JsonFileStore) -> Any:
        raise AssertionError("the whole ledger was read")

    monkeypatch.setattr(JsonFileStore, "read", no_full_read)
    assert alpha.tool("syn-alpha-p5", recorded_day + 1) == {}
    assert alpha.event("PostToolBatch", recorded_day + 2, prompt_id="syn-alpha-p5") == {}
    monkeypatch.undo()
    # Without the view (deleted, or never written), the whole ledger gives the same answer.
    os.unlink(hot.paths(_store(private_home).file)[0])
    monkeypatch.setattr(hook, "_hot", lambda ev, store: None)
    assert alpha.tool("syn-alpha-p5", recorded_day + 1) == {}


def test_the_view_is_private_and_its_file_names_are_safe_for_any_id(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path / "a 'quoted' dir" / "ledger.json")
    odd = ["../escape", "a/b", "x" * 300, "é ü", ".hidden", "-dash", "+runs", "plain-id"]
    with store.transaction() as ledger:
        for sid in odd:
            ledger["sessions"][sid] = _session(sid)
    shared, folder = hot.paths(store.file)
    names = {hot.session_file(folder, sid) for sid in odd}
    assert len(names) == len(odd)
    assert all(os.path.dirname(n) == folder and len(os.path.basename(n)) < 255 for n in names)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    for path in [shared, *names]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    for sid in odd:
        part = hot.read(store.file, store.journal, sid)
        assert part is not None and part["sessions"] == {sid: _session(sid)}


def _session(sid: str, *turns: tuple[str, str, float]) -> dict[str, Any]:
    return {"p": "/p", "f": 1.0, "l": 2.0, "m": {}, "x": {}, "s": {}, "a": {}, "adj": [],
            "fk": [], "cs": {}, "t": {pid: [cmd, start, 10, 0.1] for pid, cmd, start in turns}}


def test_a_view_behind_the_ledger_is_not_read_and_the_next_commit_rewrites_it(
    tmp_path: Path,
) -> None:
    store = JsonFileStore(tmp_path / "ledger.json")
    with store.transaction() as ledger:
        ledger["sessions"]["a"] = _session("a", ("p1", "/test", 5.0))
        ledger["sessions"]["b"] = _session("b")
    shared, folder = hot.paths(store.file)
    kept = Path(shared).read_bytes()
    with store.transaction() as ledger:
        ledger["sessions"]["a"]["l"] = 9.0
        del ledger["sessions"]["b"]
    assert hot.read(store.file, store.journal, "a") is not None
    Path(shared).write_bytes(kept)  # as a writer killed before its shared part leaves it
    assert hot.read(store.file, store.journal, "a") is None
    with store.transaction() as ledger:
        ledger["warned"]["w"] = 1.0
    assert hot.differences(store.file, store.journal, store.snapshot()) == []
    part = hot.read(store.file, store.journal, "a")
    assert part is not None and part["sessions"]["a"]["l"] == 9.0
    assert not os.path.exists(hot.session_file(folder, "b"))


def test_differences_finds_a_view_that_is_wrong(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path / "ledger.json")
    with store.transaction() as ledger:
        ledger["sessions"]["a"] = _session("a", ("p1", "/test", 5.0))
    target = hot.session_file(hot.paths(store.file)[1], "a")
    good = json.loads(Path(target).read_text())
    good["session"]["l"] = 3.0
    Path(target).write_text(json.dumps(good))
    assert hot.differences(store.file, store.journal, store.snapshot()) == [f"{target}: differs"]


def test_a_commit_between_the_views_reads_is_not_mixed_into_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JsonFileStore(tmp_path / "ledger.json")
    with store.transaction() as ledger:
        ledger["sessions"]["a"] = _session("a")
    real = hot._load
    busy: list[str] = []
    done: list[bool] = []  # the first commit appends to the journal, the second checkpoints

    def load_while_another_commits(path: str) -> Any:
        got = real(path)
        if not busy:  # the reader's load, not the writer's
            busy.append(path)
            with JsonFileStore(store.file).transaction(checkpoint=len(done) > 0) as other:
                other["sessions"]["a"]["l"] += 1
            busy.clear()
        return got

    monkeypatch.setattr(hot, "_load", load_while_another_commits)
    for _ in range(2):
        assert hot.read(store.file, store.journal, "a") is None
        done.append(True)
    monkeypatch.undo()
    part = hot.read(store.file, store.journal, "a")
    assert part is not None and part["sessions"]["a"]["l"] == 4.0


VIEW_STEPS = ["view.session", "view.shared"]


@pytest.mark.parametrize("checkpoint", [False, True])
@pytest.mark.parametrize("how", ["exit", "kill"])
@pytest.mark.parametrize("step", VIEW_STEPS)
def test_a_writer_killed_between_the_views_writes_leaves_no_wrong_quick_answer(
    step: str, how: str, checkpoint: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOKENBUDGET_STORE_CHECK")  # the child dies before its own check
    store = JsonFileStore(tmp_path / "tb" / "ledger.json", lock_timeout=30)
    ready = tmp_path / "ready"
    for n in range(1, 4):
        with store.transaction() as ledger:  # a view in step, then a child that dies
            ledger["sessions"][f"s{n}"] = _session(f"s{n}", (f"p{n}", "/test", float(n)))
            ledger["sessions"].pop(f"s{n - 2}", None)
            ledger["hours"][str(n)] = {"/p": [n, 0.5, n * 900, n * 900 + 1]}
        before = store.snapshot()
        pid = os.fork()
        if pid == 0:
            try:
                os.environ[CRASH_ENV] = step + (":pause" if how == "kill" else "")
                os.environ[CRASH_ENV + "_READY"] = str(ready)
                with JsonFileStore(store.file).transaction(checkpoint=checkpoint) as ledger:
                    ledger["sessions"][f"s{n}"]["t"][f"q{n}"] = ["/test", 9.0, 99, 1.0]
                    ledger["sessions"].pop(f"s{n - 1}", None)
                    ledger["warned"][f"crash-{n}"] = 1.0
                    ledger["hours"][str(n)]["/p"][0] += 1  # one bucket's line written again
            finally:
                os._exit(0)
        if how == "kill":
            deadline = time.monotonic() + 30
            while not ready.exists():
                assert time.monotonic() < deadline, f"the child never reached {step}"
                time.sleep(0.001)
            os.kill(pid, signal.SIGKILL)
            ready.unlink()
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) or os.waitstatus_to_exitcode(status) == 70
        after = store.snapshot()
        assert after != before  # the child's commit is made
        for sid in [*before["sessions"], *after["sessions"]]:
            part = hot.read(store.file, store.journal, sid)
            # Read as the ledger is now, or not at all: never the ledger before the commit,
            # nor a mix of both.
            if part is not None:
                assert part["sessions"] == {sid: after["sessions"][sid]}
                assert part["warned"] == after["warned"]
                assert part["hours"] == after["hours"]
        assert hot.read(store.file, store.journal, f"s{n}") is None  # behind: not read
        monkeypatch.setenv("TOKENBUDGET_STORE_CHECK", str(tmp_path / "check.txt"))
        with store.transaction() as ledger:
            ledger["folded"]["tokens"] += 1
        assert not (tmp_path / "check.txt").exists()  # the view is whole again
        assert hot.read(store.file, store.journal, f"s{n}") is not None
        monkeypatch.delenv("TOKENBUDGET_STORE_CHECK")


def test_a_shared_part_cut_short_by_a_killed_writer_is_rewritten_by_a_commit_of_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written in place, the shared part a writer killed mid-file leaves has a whole head that
    names the commit made: the next commit, even one that changes nothing (a call under the
    lock with nothing to record), writes it whole, not only a later commit with a change."""
    monkeypatch.delenv("TOKENBUDGET_STORE_CHECK")  # the child dies before its own check
    store = JsonFileStore(tmp_path / "tb" / "ledger.json", lock_timeout=30)
    with store.transaction() as ledger:
        ledger["sessions"]["a"] = _session("a", ("p1", "/test", 5.0))
        for n in range(1, 40):
            ledger["hours"][str(n)] = {"/p": [n, 0.5, n * 900, n * 900 + 1]}
    pid = os.fork()
    if pid == 0:
        try:
            os.environ[CRASH_ENV] = "view.shared"
            with JsonFileStore(store.file).transaction() as ledger:
                ledger["warned"]["w"] = 1.0
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 70
    assert hot.read(store.file, store.journal, "a") is None  # cut short: not read
    monkeypatch.setenv("TOKENBUDGET_STORE_CHECK", str(tmp_path / "check.txt"))
    with store.transaction():
        pass
    assert not (tmp_path / "check.txt").exists()  # the view is whole again
    part = hot.read(store.file, store.journal, "a")
    assert part is not None and part["warned"] == {"w": 1.0}


@pytest.mark.parametrize("checkpoint", [False, True])
def test_a_commit_that_moves_only_a_read_position_rewrites_that_sessions_file(
    checkpoint: bool, tmp_path: Path
) -> None:
    store = JsonFileStore(tmp_path / "ledger.json")
    path = str(tmp_path / "a.jsonl")
    with store.transaction() as ledger:
        ledger["sessions"]["a"] = _session("a")
        ledger["sessions"]["b"] = _session("b")
        ledger["files"][path] = ["1:2", "head", 10, "a", None]
    with store.transaction(checkpoint=checkpoint) as ledger:
        ledger["files"][path][2] = 20
    part = hot.read(store.file, store.journal, "a")
    assert part is not None and part["files"] == {path: ["1:2", "head", 20, "a", None]}
    with store.transaction(checkpoint=checkpoint) as ledger:
        ledger["files"][path][3] = "b"  # now another session's
    for sid, files in (("a", {}), ("b", {path: ["1:2", "head", 20, "b", None]})):
        part = hot.read(store.file, store.journal, sid)
        assert part is not None and part["files"] == files


def test_a_commit_writes_again_only_the_shared_lines_it_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JsonFileStore(tmp_path / "ledger.json")
    with store.transaction() as ledger:
        ledger["sessions"]["a"] = _session("a")
        for n in range(1, 5):
            ledger["hours"][str(n * 4)] = {"/p": [n, 0.25, n * 3600, n * 3600 + 60]}
        ledger["warned"]["w"] = 1.0
        ledger["projects"]["/p"] = [10, 1.0]
    real = hot._dumps
    dumped: list[Any] = []

    def dumps(value: Any) -> bytes:
        dumped.append(value)
        return real(value)

    monkeypatch.setattr(hot, "_dumps", dumps)
    monkeypatch.delenv("TOKENBUDGET_STORE_CHECK")  # its fresh build serialises everything
    with store.transaction() as ledger:
        ledger["hours"]["8"]["/p"][0] += 5
        ledger["hours"]["20"] = {"/q": [1, 0.5, 72000, 72001]}
        ledger["sessions"]["a"]["l"] = 3.0
        ledger["warned"]["v"] = 2.0
    # The two buckets changed, the tables a changed path begins with, and the head: not
    # the buckets nor the tables the commit left alone (projects, commands...).
    assert {"/p": [1, 0.25, 3600, 3660]} not in dumped
    assert {"/p": [4, 0.25, 14400, 14460]} not in dumped
    assert {"/p": [10, 1.0]} not in dumped
    assert {"w": 1.0, "v": 2.0} in dumped
    assert {"/p": [7, 0.25, 7200, 7260]} in dumped and {"/q": [1, 0.5, 72000, 72001]} in dumped
    monkeypatch.undo()
    assert hot.differences(store.file, store.journal, store.snapshot()) == []
    part = hot.read(store.file, store.journal, "a")
    assert part is not None and part["hours"] == store.snapshot()["hours"]
    assert list(part["hours"]) == ["4", "8", "12", "16", "20"]  # the ledger's order
    # A view whose lines were wrong would be told apart from the ledger (the suite's check).
    shared = hot.paths(store.file)[0]
    raw = Path(shared).read_bytes()
    Path(shared).write_bytes(raw.replace(b'"12":{"/p":[3,', b'"12":{"/p":[4,'))
    assert "the shared part differs" in hot.differences(store.file, store.journal,
                                                        store.snapshot())


def test_a_shared_line_that_is_not_key_and_value_is_not_carried_into_the_next_view(
    tmp_path: Path,
) -> None:
    """A line of the view's shared part without its `":` (here the `projects` line cut to
    `"projects"`) is taken for no table's line: the next commit writes that table anew."""
    store = JsonFileStore(tmp_path / "ledger.json")
    with store.transaction() as ledger:
        ledger["sessions"]["a"] = _session("a")
        ledger["projects"]["/p"] = [10, 1.0]
    shared = Path(hot.paths(store.file)[0])
    raw = shared.read_bytes()
    line = b'"projects":{"/p":[10,1.0]}\n'
    assert line in raw
    shared.write_bytes(raw.replace(line, b'"projects"\n'))
    with store.transaction() as ledger:
        ledger["warned"]["w"] = 1.0  # a commit that leaves projects alone
    assert line in shared.read_bytes()
    assert hot.differences(store.file, store.journal, store.snapshot()) == []


@pytest.mark.parametrize("key", ["1996174", "/home/dev/a b", 'q"uote', "back\\slash", "é",
                                 "\x7f", "tab\t", "\u2028", ""])
def test_a_shared_lines_key_is_written_as_json_writes_it(key: str) -> None:
    assert hot._key(key) == json.dumps(key).encode() + b":"


def test_no_part_of_a_view_file_is_read_as_the_view(tmp_path: Path) -> None:
    # The view's files are written in place: a reader may meet one half written.
    store = JsonFileStore(tmp_path / "ledger.json")
    with store.transaction() as ledger:
        ledger["sessions"]["a"] = _session("a", ("p1", "/test", 5.0))
        ledger["hours"]["4"] = {"/p": [1, 0.25, 3600, 3660]}
        ledger["hours"]["8"] = {"/p": [2, 0.5, 7200, 7260], "/q": [3, 0.75, 7300, 7360]}
        ledger["warned"]["w"] = 1.0
    shared = Path(hot.paths(store.file)[0])
    mine = Path(hot.session_file(hot.paths(store.file)[1], "a"))
    for path in (shared, mine):
        whole = path.read_bytes()
        for n in range(len(whole.rstrip(b"\n"))):  # (all but the newline: all of it)
            path.write_bytes(whole[:n])
            assert hot.read(store.file, store.journal, "a") is None, (path.name, n)
        path.write_bytes(b"\0")  # a new file cut to its first byte (Writer._put)
        assert hot.read(store.file, store.journal, "a") is None, path.name
        path.write_bytes(whole)
        assert hot.read(store.file, store.journal, "a") is not None


def test_a_commit_never_empties_a_view_file_it_rewrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On ext4 a file cut to nothing is written out to disk at its close (auto_da_alloc):
    # 2-3 ms a file measured here, with the ledger's lock held.
    store = JsonFileStore(tmp_path / "ledger.json")
    for n in range(2):
        with store.transaction() as ledger:
            ledger["sessions"]["a"] = _session("a", ("p1", "/test", 5.0 + n))
    folder = os.path.dirname(hot.paths(store.file)[0])
    emptied: list[str] = []
    real_open, real_truncate = os.open, os.ftruncate

    def opened(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, *args, **kwargs)
        if flags & os.O_TRUNC and str(path).startswith(folder) and os.fstat(fd).st_size == 0:
            emptied.append(f"{path} (O_TRUNC)")
        return fd

    def truncated(fd: int, length: int) -> None:
        if length == 0:
            emptied.append(f"fd {fd}")
        real_truncate(fd, length)

    monkeypatch.setattr(os, "open", opened)
    monkeypatch.setattr(os, "ftruncate", truncated)
    with store.transaction() as ledger:
        ledger["sessions"]["a"] = _session("a", ("p1", "/test", 9.0))
        ledger["warned"]["w"] = 1.0
    monkeypatch.undo()
    assert emptied == []
    part = hot.read(store.file, store.journal, "a")
    assert part is not None and part["warned"] == {"w": 1.0}


def test_a_view_in_another_schemas_layout_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JsonFileStore(tmp_path / "ledger.json")
    with store.transaction() as ledger:
        ledger["sessions"]["a"] = _session("a")
    assert hot.read(store.file, store.journal, "a") is not None
    monkeypatch.setattr(hot, "SCHEMA", hot.SCHEMA + 1)  # as a newer version reads it
    assert hot.read(store.file, store.journal, "a") is None


def test_two_sessions_whose_file_names_meet_never_read_each_others_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a case-insensitive file system (macOS's default) "S-a" and "s-A" name one file.
    named = hot.session_file
    monkeypatch.setattr(hot, "session_file", lambda folder, sid: named(folder, sid.lower()))
    store = JsonFileStore(tmp_path / "ledger.json")
    upper, lower = str(tmp_path / "upper.jsonl"), str(tmp_path / "lower.jsonl")
    with store.transaction() as ledger:
        ledger["sessions"]["S-a"] = _session("S-a", ("p1", "/test", 5.0))
        ledger["sessions"]["s-A"] = _session("s-A")
        ledger["files"][upper] = ["1:2", "head", 10, "S-a", None]
        ledger["files"][lower] = ["1:3", "head", 30, "s-A", None]
    for step in range(3):
        for sid, path in (("S-a", upper), ("s-A", lower)):
            part = hot.read(store.file, store.journal, sid)
            # its own record and read positions, or none (the ledger then decides): never
            # the other session's
            assert part is None or (part["sessions"] == {sid: store.snapshot()["sessions"][sid]}
                                    and part["files"] == {path: ledger["files"][path]})
        with store.transaction() as ledger:  # one session moves: its file is written again
            ledger["files"][upper if step % 2 else lower][2] += 5
            ledger["sessions"]["S-a" if step % 2 else "s-A"]["l"] += 1.0


# --- a call with nothing new, decided without the engine (hot.quiet) ------------------------------


def _calendar(cfg: Any, now: float) -> dict[str, tuple[float, float]]:
    """The calendar windows holding `now`, as the engine computes them."""
    tz = cfg.tz()
    at = datetime.fromtimestamp(now, tz)
    out = {}
    for kind in hot.CALENDAR:
        start, end = window(kind, at, tz, cfg.week_start)
        assert start is not None and end is not None
        out[kind] = (start.timestamp(), end.timestamp())
    return out


def lean_says(ev: hook.Event, cfg: Any, budgets: list[Budget], ledger: Any, now: float) -> bool:
    """hot.quiet on the event; where it says quiet, the engine must allow it with nothing to
    record and no blocking budget within one response of its limit."""
    for most in (None, hook._most(cfg)):
        try:
            lean = hot.quiet(ev.name, budgets, ledger, now, _calendar(cfg, now),
                             session_id=ev.session_id, cwd=ev.cwd, prompt=ev.prompt,
                             prompt_id=ev.prompt_id, most=most)
        except Exception:
            continue  # the engine meets whatever this was
        if lean:
            judged = hook._judge(ev, cfg, budgets, ledger, now)
            assert judged is not None
            _ctx, checks, decision = judged
            assert decision.action == "allow" and not decision.records, ev.name
            assert all(c.state == "ok" for c in checks)
            assert most is None or not hook._could_cross(checks, cfg)
    return bool(lean)


def test_what_the_quick_check_finds_quiet_the_engine_finds_quiet(
    private_home: Path, recorded_day: float
) -> None:
    for case in ALL_CASES:
        install_fixture(case, private_home / ".claude", unique_ids=True)
    _history(private_home, recorded_day)
    store = _store(private_home)
    sync.sync_all(store, now=recorded_day)
    cfg = config_mod.load_config()
    ledger = store.snapshot()
    seen = {True: 0, False: 0}
    # The tests' budgets (some warn, some block), the same a thousand times higher (most
    # quiet), and with them command budgets that a run of the command would pass.
    high = [b.replace(limit=b.limit * 1000) for b in map(Budget.from_json, BUDGETS)]
    tight = [Budget("command", 2000, name="/test"), Budget("command", 0.001, "usd", name="/review")]
    for budgets in ([Budget.from_json(b) for b in BUDGETS], high, high + tight):
        for now in [recorded_day + d for d in (-3 * 3600, 0, 2 * 3600, 5 * 3600, 26 * 3600)]:
            for name, payload in _events(store, private_home, now):
                ev = hook.parse_event(name, json.dumps(payload).encode())
                seen[lean_says(ev, cfg, budgets, ledger, now)] += 1
    assert seen[True] > 200 and seen[False] > 200, seen


def test_a_five_hour_bound_is_never_below_the_blocks_usage() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tests.test_enforce_5h import BUDGETS as BLOCK_BUDGETS
    from tests.test_enforce_5h import ZONES, histories
    from tokenbudget import enforce

    @settings(max_examples=400, deadline=None)
    @given(histories(), st.sampled_from(ZONES))
    def check(history: tuple[dict[str, Any], float], zone: Any) -> None:
        ledger, now = history
        ctx = enforce.Context(session_id=None, project="/p/a",
                              now=datetime.fromtimestamp(now, zone), tz=zone)
        for b in BLOCK_BUDGETS:
            assert hot._block_bound(ledger, b, now) >= enforce.measure(b, ledger, ctx)[0]

    check()


def test_a_five_hour_bound_is_the_blocks_usage_when_all_is_in_one_block() -> None:
    from tests.test_enforce_5h import BASE, _ledger
    from tokenbudget import enforce

    b = Budget("5h", 10**9)
    now = BASE + 1800
    # A block from BASE - 2h (its first request) to BASE + 3h; earlier activity ended 6h before.
    ledger = _ledger([(BASE - 9 * 3600, "/p", 70), (BASE - 2 * 3600 + 5, "/p", 500),
                      (BASE - 3600, "/q", 20), (BASE + 1000, "/p", 3)])
    ctx = enforce.Context(session_id=None, project="/p", now=datetime.fromtimestamp(now, UTC),
                          tz=UTC)
    assert hot._block_bound(ledger, b, now) == enforce.measure(b, ledger, ctx)[0] == 523
    # A block that starts this hour, with activity stamped later than now (a clock ahead):
    # only the window from this hour holds all of it.
    ledger = _ledger([(BASE + 10, "/p", 5), (BASE + 4.5 * 3600, "/p", 40)])
    assert hot._block_bound(ledger, b, now) == enforce.measure(b, ledger, ctx)[0] == 45
    # The same an hour later, seen 0.3 us before that hour: the engine rounds now into it.
    ledger = _ledger([(BASE + 3600 + 10, "/p", 5), (BASE + 5.5 * 3600, "/p", 40)])
    now = BASE + 3600 - 3e-7
    ctx = ctx.replace(now=datetime.fromtimestamp(now, UTC))
    assert hot._block_bound(ledger, b, now) == enforce.measure(b, ledger, ctx)[0] == 45


def test_a_five_hour_bound_leaves_out_a_block_that_ended_over_a_second_before_now() -> None:
    """The bound takes `now` a second wider (the engine rounds it to the microsecond), no
    more: 1.5 s after a block ended, no window that could hold `now` holds that block's first
    hour, and the bound is the new block's usage, so the quick check answers from then on."""
    from tests.test_enforce_5h import BASE, _ledger
    from tokenbudget import enforce

    b = Budget("5h", 10**9)
    # A block from BASE (70 tokens in its first minute) to BASE + 5h; the next from BASE + 5h.
    ledger = _ledger([(BASE + 10, "/p", 70), (BASE + 5 * 3600 + 1, "/p", 3)])
    now = BASE + 5 * 3600 + 1.5
    ctx = enforce.Context(session_id=None, project="/p", now=datetime.fromtimestamp(now, UTC),
                          tz=UTC)
    assert hot._block_bound(ledger, b, now) == enforce.measure(b, ledger, ctx)[0] == 3


def test_a_calendar_windows_sum_holds_its_first_and_last_buckets_and_nothing_outside() -> None:
    """hot._hours over a day adds every 15-minute bucket of it, the first two and the last
    included, and none of the day before or after, as the engine measures the day: on days
    whose first buckets' numbers differ in their bits (a sum is no place for bit tricks)."""
    from tests.test_enforce_5h import _ledger
    from tokenbudget import enforce

    b = Budget("daily", 10**9)
    for day in range(1, 5):
        lo = datetime(2027, 3, day, tzinfo=UTC).timestamp()
        hi = lo + 86400
        ledger = _ledger([(lo - 1, "/p", 1), (lo, "/p", 10), (lo + 900, "/p", 100),
                          (lo + 43200, "/p", 1000), (hi - 1, "/p", 10000), (hi, "/p", 100000)])
        ctx = enforce.Context(session_id=None, project="/p",
                              now=datetime.fromtimestamp(lo + 43200, UTC), tz=UTC)
        assert hot._hours(ledger, b, lo, hi) == enforce.measure(b, ledger, ctx)[0] == 11110, day


def test_the_window_cache_holds_the_engines_windows_for_its_zone_and_week(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger_file = str(tmp_path / "a 'quoted' dir" / "ledger.json")
    os.makedirs(os.path.dirname(ledger_file))
    zone = ZoneInfo("America/New_York")
    cfg = config_mod.Config(timezone="America/New_York", week_start=6)
    now = datetime(2024, 3, 10, 12, tzinfo=zone).timestamp()  # a day of 23 hours
    key = hot.zone_key(cfg.timezone, "/nonexistent")
    assert hot.windows(ledger_file, key, 6, now) is None  # none kept yet
    hot.keep_windows(ledger_file, key, 6, zone, now)
    assert stat.S_IMODE(os.stat(hot.windows_file(ledger_file)).st_mode) == 0o600
    wins = hot.windows(ledger_file, key, 6, now)
    assert wins == _calendar(cfg, now)
    assert wins["daily"][1] - wins["daily"][0] == 23 * 3600
    assert hot.windows(ledger_file, key, 0, now) is None  # another week
    assert hot.windows(ledger_file, ["name", "UTC"], 6, now) is None  # another zone
    assert hot.windows(ledger_file, key, 6, wins["daily"][1]) is None  # the next day
    assert hot.windows(ledger_file, key, 6, wins["daily"][1] - 1e-6) is None  # the engine's
    assert hot.windows(ledger_file, key, 6, wins["daily"][0] - 1) is None
    assert hot.windows(ledger_file, key, 6, wins["daily"][1] - 1) == wins
    Path(hot.windows_file(ledger_file)).write_text("{not json")
    assert hot.windows(ledger_file, key, 6, now) is None


def test_a_window_cache_write_stopped_before_its_rename_does_not_spoil_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache's temporary file is named after the process, which writes it again later
    (the resident answerer keeps its pid for hours; a pid comes round again): what a write
    that stopped before its rename left there is replaced whole by the next, shorter one."""
    ledger_file = str(tmp_path / "ledger.json")
    now = datetime(2027, 3, 2, 12, tzinfo=UTC).timestamp()
    far = ZoneInfo("America/Argentina/Buenos_Aires")

    def stopped(src: str, dst: str) -> None:
        raise OSError("stopped before the rename")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", stopped)
        hot.keep_windows(ledger_file, ["name", far.key], 0, far, now)  # what fails is left
    [left] = tmp_path.glob(".budget-windows.json.*")
    longer = left.stat().st_size
    key = ["name", "UTC"]
    hot.keep_windows(ledger_file, key, 0, ZoneInfo("UTC"), now)
    cfg = config_mod.Config(timezone="UTC", week_start=0)
    assert hot.windows(ledger_file, key, 0, now) == _calendar(cfg, now)
    assert not left.exists()
    assert os.path.getsize(hot.windows_file(ledger_file)) < longer  # what was left is gone


def test_the_zone_key_follows_the_config_then_tz_then_the_system_zone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zones = tmp_path / "zoneinfo"
    (zones / "Europe").mkdir(parents=True)
    (zones / "A").write_bytes(b"a zone")
    (zones / "B").write_bytes(b"another zone")
    (zones / "Europe" / "Paris").write_bytes(b"Paris")
    monkeypatch.setenv("PYTHONTZPATH", str(zones))
    monkeypatch.setenv("TZ", "Europe/Paris")
    assert hot.zone_key("Asia/Tokyo", "/x") == ["name", "Asia/Tokyo"]
    paris = hot.zone_key(None, "/x")
    assert paris is not None and paris[:2] == ["TZ", "Europe/Paris"]
    (zones / "Europe" / "Paris").write_bytes(b"Paris, tzdata updated")
    assert hot.zone_key(None, "/x") not in (None, paris)
    # A zone file named by path: a new file there is a new key.
    monkeypatch.setenv("TZ", f":{zones / 'A'}")
    by_path = hot.zone_key(None, "/x")
    (zones / "A").unlink()
    (zones / "A").write_bytes(b"a zone, replaced")
    assert hot.zone_key(None, "/x") not in (None, by_path)
    # A POSIX rule string (the engine takes the C library's offset of the moment, which a DST
    # change moves) and a name no zone file holds: no windows kept.
    for rule in ("CET-1CEST,M3.5.0,M10.5.0/3", "Nowhere/Zone", "../A", ":/nonexistent"):
        monkeypatch.setenv("TZ", rule)
        assert hot.zone_key(None, "/x") is None, rule
    monkeypatch.setenv("TZ", "")
    assert hot.zone_key(None, "/x") == ["TZ", ""]  # UTC
    monkeypatch.delenv("TZ")
    link = tmp_path / "localtime"
    link.symlink_to(zones / "A")
    first = hot.zone_key(None, str(link))
    link.unlink()
    link.symlink_to(zones / "B")
    assert first is not None and hot.zone_key(None, str(link)) != first
    assert hot.zone_key(None, str(tmp_path / "none")) is None


def test_a_quick_call_keeps_the_windows_and_then_decides_without_the_engine(
    private_home: Path, recorded_day: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    set_budgets(private_home, {"kind": "daily", "limit": "900M"},
                {"kind": "monthly", "limit": "900M"}, {"kind": "5h", "limit": "900M"})
    alpha = Session(private_home, "syn-alpha", "/home/dev/alpha")
    alpha.turn("p1", "go on", recorded_day - 60, 900)
    alpha.event("Stop", recorded_day, prompt_id="p1")  # news: read, then decided
    wins = hot.windows_file(_store(private_home).file)
    assert os.path.exists(wins)  # kept by the decision, which needed them
    os.unlink(wins)
    assert alpha.tool("p1", recorded_day + 1) == {}  # nothing new: it keeps them again
    assert os.path.exists(wins)
    from tokenbudget import engine

    monkeypatch.setattr(engine, "judge", lambda *a, **k: pytest.fail("the engine was asked"))
    assert alpha.tool("p1", recorded_day + 2) == {}
    assert alpha.event("PostToolBatch", recorded_day + 3, prompt_id="p1") == {}
    # A call with news far from every limit is recorded, then answered without the engine too.
    alpha.turn("p2", "go on", recorded_day + 60, 700)
    assert alpha.event("Stop", recorded_day + 70, prompt_id="p2") == {}
    session = _store(private_home).snapshot()["sessions"][alpha.sid]
    assert "p2" in session["t"]
    assert "tokenbudget.engine" in sys.modules  # (imported by the first call)


def test_the_quick_paths_constants_and_journal_are_the_stores() -> None:
    from tokenbudget import ledger as ledger_mod
    from tokenbudget.budgets import BLOCK_LENGTH
    from tokenbudget.engine import OWN_COMMANDS

    assert hot.BUCKET == ledger_mod.BUCKET
    assert hot.OWN_COMMANDS == OWN_COMMANDS
    assert BLOCK_LENGTH.total_seconds() == hot.BLOCK
    for name in ("/a b/ledger.json", "/x/other"):
        assert hot.journal_path(name) == JsonFileStore(name).journal


def test_a_ledger_of_an_odd_shape_is_left_to_the_engine(private_home: Path) -> None:
    cfg = config_mod.Config(budgets=(Budget("session", 10**9),))
    ledger = {"sessions": {"s-1": {"p": "/p"}}, "hours": {}, "projects": {}, "commands": {}}
    ev = hook.parse_event("PreToolUse", json.dumps({"session_id": "s-1", "cwd": "/p"}).encode())
    assert hook._far(ev, cfg, list(cfg.budgets), ledger, 1e9, None) is False


def _engine_finds_quiet(ev: hook.Event, cfg: Any, budgets: list[Budget], ledger: Any,
                        now: float, most: dict[str, float] | None) -> bool:
    """The engine allows the event with nothing to record, every check ok (and, with `most`,
    no blocking budget within one response of its limit)."""
    judged = hook._judge(ev, cfg, budgets, ledger, now)
    if judged is None:
        return True
    _ctx, checks, decision = judged
    return (decision.action == "allow" and not decision.records
            and all(c.state == "ok" for c in checks)
            and (most is None or not hook._could_cross(checks, cfg)))


def _quiet_as_the_engine(ev: hook.Event, cfg: Any, budgets: list[Budget], ledger: Any,
                         now: float) -> bool:
    """hot.quiet on the event, asserted equal to the engine's judgement, with and without
    `most` (the first returned)."""
    return _both_as_the_engine(ev, cfg, budgets, ledger, now)[0]


def _both_as_the_engine(ev: hook.Event, cfg: Any, budgets: list[Budget], ledger: Any,
                        now: float) -> tuple[bool, bool]:
    """hot.quiet on the event without and with `most`, each asserted equal to the engine's
    judgement."""
    said = []
    for most in (None, hook._most(cfg)):
        lean = hot.quiet(ev.name, budgets, ledger, now, _calendar(cfg, now),
                         session_id=ev.session_id, cwd=ev.cwd, prompt=ev.prompt,
                         prompt_id=ev.prompt_id, most=most)
        assert lean == _engine_finds_quiet(ev, cfg, budgets, ledger, now, most), (
            ev.name, ev.session_id, ev.cwd, budgets, most)
        said.append(lean)
    return said[0], said[1]


def _alpha_synced(private_home: Path, recorded_day: float) -> tuple[Session, Any, Any]:
    """One session, "syn-alpha", of one 500-token turn 10 minutes before `recorded_day`,
    synced: (the session, the store, the config)."""
    alpha = Session(private_home, "syn-alpha", "/home/dev/alpha")
    alpha.turn("p1", "go on", recorded_day - 600, 500)
    store = _store(private_home)
    sync.sync_all(store, now=recorded_day)
    return alpha, store, config_mod.load_config()


def test_the_quick_check_is_the_engines_judgement_where_the_history_has_no_example(
    private_home: Path, recorded_day: float
) -> None:
    """States the built history lacks: an event with no session id or no cwd, a dollar
    session budget with the cost a resumed session had before it was folded, a session
    budget whose usage is exactly at its warning threshold. The quick check says quiet
    exactly where the engine has nothing to say."""
    from tokenbudget.schema import S_PRE

    alpha, store, cfg = _alpha_synced(private_home, recorded_day)
    now = recorded_day

    def event(**fields: Any) -> hook.Event:
        payload = {"hook_event_name": "PreToolUse", "prompt_id": "p1", **fields}
        return hook.parse_event("PreToolUse", json.dumps(payload).encode())

    in_alpha = event(session_id=alpha.sid, cwd=alpha.cwd)
    no_session = event(cwd=alpha.cwd)
    no_cwd = event(session_id=alpha.sid)
    assert no_session.session_id is None and no_cwd.cwd is None
    daily = Budget("daily", 800, warn_at=0.5)  # 500 of 800 tokens used today: a warning
    scoped = Budget("daily", 800, warn_at=0.5, project="/home/dev/alpha")
    session_usd = Budget("session", 1.0, "usd", warn_at=0.7)
    at_threshold = Budget("session", 1000, warn_at=0.5)  # 500 of 1,000: warned at 50%
    ledger = store.snapshot()
    cases = [
        (no_session, [daily], False),  # a day's budget applies to an event of no session
        (no_session, [Budget("daily", 10**6)], True),
        (no_cwd, [scoped], False),  # no cwd: the session's own project is where it counts
        (no_cwd, [Budget("daily", 800, project="/home/dev/beta")], True),
        (in_alpha, [at_threshold], False),
        (in_alpha, [Budget("session", 1001, warn_at=0.5)], True),
        (in_alpha, [session_usd], True),  # a few cents used: far from $1
    ]
    for ev, budgets, quiet in cases:
        assert _quiet_as_the_engine(ev, cfg, budgets, ledger, now) is quiet, budgets
    # The session resumed after it was folded: $0.75 before, so over 70% of $1 with its own.
    ledger["sessions"][alpha.sid][S_PRE] = [0, 0.75]
    assert _quiet_as_the_engine(in_alpha, cfg, [session_usd], ledger, now) is False
    assert _quiet_as_the_engine(in_alpha, cfg, [Budget("session", 10.0, "usd")], ledger, now)


def test_the_quick_check_leaves_a_blocking_budget_within_one_response_of_its_limit_to_the_engine(
    private_home: Path, recorded_day: float
) -> None:
    """A blocking budget that one more response (2M tokens at most) could carry past its limit
    is the engine's to decide, however little of it is used; one further from it is quiet.
    A session the ledger has no record of has used nothing of its session budget."""
    alpha, store, cfg = _alpha_synced(private_home, recorded_day)
    ledger = store.snapshot()
    most = hook._most(cfg)["tokens"]
    assert most == 2_000_000

    def event(sid: str) -> hook.Event:
        payload = {"hook_event_name": "PreToolUse", "prompt_id": "p1", "session_id": sid,
                   "cwd": alpha.cwd}
        return hook.parse_event("PreToolUse", json.dumps(payload).encode())

    # 500 tokens used: quiet without `most`; with it, quiet only past 2M + 500.
    cases = [
        (event(alpha.sid), Budget("session", most + 500), (True, False)),
        (event(alpha.sid), Budget("session", most + 501), (True, True)),
        (event(alpha.sid), Budget("session", most + 501, mode="warn"), (True, True)),
        # Nothing used in a session the ledger does not know: 0 of 1 token is quiet.
        (event("syn-unknown"), Budget("session", 1), (True, False)),
        (event("syn-unknown"), Budget("session", most + 1), (True, True)),
    ]
    assert "syn-unknown" not in ledger["sessions"]
    for ev, budget, quiet in cases:
        assert _both_as_the_engine(ev, cfg, [budget], ledger, recorded_day) == quiet, budget


def test_a_slash_commands_expected_cost_is_of_its_20_latest_runs_as_the_engines(
    private_home: Path, recorded_day: float
) -> None:
    """A prompt of a slash command is expected to cost the 90th percentile of the command's
    20 latest runs, as the engine expects it: a 21st, older and costlier, changes nothing, and
    the prompt is quiet where the engine has nothing to say."""
    from tokenbudget import enforce

    alpha, store, cfg = _alpha_synced(private_home, recorded_day)
    ledger = store.snapshot()
    # The 20 latest: 18 of 100 tokens and 2 of 5,000 (the 18th of them sorted is 100); with
    # the older one of 5,000, the 19th of 21 would be 5,000.
    sizes = [5000, *[100] * 9, 5000, *[100] * 9, 5000]
    start = recorded_day - 30 * 86400
    ledger["commands"]["/deploy"] = [[start + 3600 * k, n, n / 1000]
                                     for k, n in enumerate(sizes)]
    assert hot._expected(ledger, "/deploy", None) == enforce.expected(ledger, "/deploy") == (
        100.0, 0.1)
    payload = {"hook_event_name": "UserPromptSubmit", "session_id": alpha.sid,
               "cwd": alpha.cwd, "prompt_id": "p2", "prompt": "/deploy now"}
    ev = hook.parse_event("UserPromptSubmit", json.dumps(payload).encode())
    # 500 of 3,000 tokens used today: room for 100 more, not for 5,000.
    assert _both_as_the_engine(ev, cfg, [Budget("daily", 3000)], ledger, recorded_day) == (
        True, False)


def test_the_window_cache_leaves_the_last_10_microseconds_of_a_window_to_the_engine(
    tmp_path: Path,
) -> None:
    """The engine rounds `now` to the microsecond, so within 10 us of a window's end (that
    bound included) the cache is not trusted; just before it, it is."""
    ledger_file = str(tmp_path / "ledger.json")
    zone = ZoneInfo("UTC")
    now = datetime(2027, 12, 31, 12, tzinfo=zone).timestamp()
    key = ["name", "UTC"]
    hot.keep_windows(ledger_file, key, 0, zone, now)
    wins = hot.windows(ledger_file, key, 0, now)
    assert wins is not None
    end = wins["daily"][1]
    assert end == datetime(2028, 1, 1, tzinfo=zone).timestamp()
    assert hot.windows(ledger_file, key, 0, end - 1e-5) is None
    assert hot.windows(ledger_file, key, 0, end - 2e-5) == wins


def test_a_snapshot_the_view_names_is_not_checked_again_and_any_other_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full read checks every record's shape (hand edits, foreign writers); a snapshot
    that the view names was checked by the code that wrote it or wrote the view, and is read
    without that check (it grows with the ledger). A file changed in any way is checked."""
    from tokenbudget import ledger as ledger_mod
    from tokenbudget.ledger import CorruptLedger

    store = JsonFileStore(tmp_path / "ledger.json")
    with store.transaction() as data:
        data["sessions"]["s-1"] = {**_session_record(), "p": "/home/dev/alpha"}
    with store.transaction() as data:
        data["events"]["fp"] = 1.0  # a journal line: its records are still checked
    checked: list[int] = []
    real = ledger_mod._check_records
    monkeypatch.setattr(ledger_mod, "_check_records",
                        lambda d: checked.append(len(d["sessions"])) or real(d))
    assert store.read()[0]["sessions"]["s-1"]["p"] == "/home/dev/alpha"
    assert checked == []
    shared, _ = hot.paths(store.file)
    os.unlink(shared)  # no view: nothing vouches for the snapshot
    store.read()
    assert checked == [1]
    with store.transaction() as data:
        data["events"]["fp2"] = 2.0
    raw = json.loads(Path(store.file).read_bytes())
    assert hot.names_snapshot(store.file, _stamp_of(store.file), raw["updated"])
    # The same inode, size and mtime (a coarse clock, a file put back with its time) with
    # another commit time: not the snapshot the view names.
    was, text = os.stat(store.file), Path(store.file).read_bytes()
    at = text.index(b'"updated":') + len(b'"updated":') + 1
    Path(store.file).write_bytes(text[:at] + (b"1" if text[at:at + 1] != b"1" else b"2")
                                 + text[at + 1:])
    os.utime(store.file, ns=(was.st_atime_ns, was.st_mtime_ns))
    now = os.stat(store.file)  # all but the change time, which the stamp holds too
    assert (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) == (
        was.st_dev, was.st_ino, was.st_size, was.st_mtime_ns)
    so_far = len(checked)
    store.read()
    assert len(checked) == so_far + 1
    Path(store.file).write_bytes(text)
    os.utime(store.file, ns=(was.st_atime_ns, was.st_mtime_ns))
    raw["sessions"]["s-1"]["t"] = 5  # a hand edit: another stamp, checked, caught
    Path(store.file).write_text(json.dumps(raw))
    with pytest.raises(CorruptLedger, match="sessions have the wrong shape"):
        store.read()
    assert not hot.names_snapshot(store.file, _stamp_of(store.file), raw["updated"])


def _stamp_of(path: str) -> tuple[int, ...]:
    from tokenbudget.fileio import stamp

    return stamp(os.stat(path))


def _session_record() -> dict[str, Any]:
    from tokenbudget.ingest import Ingestor
    from tokenbudget.ledger import new_ledger

    return Ingestor(new_ledger()).session("s-1", "/home/dev/alpha", 1.0)


def test_a_snapshot_changed_in_place_with_its_mtime_put_back_is_still_checked(
    tmp_path: Path,
) -> None:
    """A file written in place keeps its inode; `cp -p`, `rsync -t --inplace`, `touch -r`
    or a hand edit followed by one put its mtime back; a size kept and "updated" untouched,
    the view still names it. Its records must be checked all the same: a damaged record is
    kept aside, not read as the ledger."""
    from tokenbudget.ledger import CorruptLedger

    store = JsonFileStore(tmp_path / "ledger.json")
    with store.transaction() as data:
        data["sessions"]["s-1"] = _session_record()
    with store.transaction(checkpoint=True) as data:
        data["events"]["fp"] = 1.0
    was, text = os.stat(store.file), Path(store.file).read_bytes()
    at = text.index(b'"f":1.0')
    edited = text[:at] + b'"f":"1"' + text[at + 7:]  # a number made a string, same size
    assert len(edited) == len(text)
    with open(store.file, "r+b") as f:  # in place: the same inode
        f.write(edited)
    os.utime(store.file, ns=(was.st_atime_ns, was.st_mtime_ns))
    now = os.stat(store.file)
    assert [(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) for st in (now, was)] == [
        (was.st_dev, was.st_ino, was.st_size, was.st_mtime_ns)] * 2
    with pytest.raises(CorruptLedger, match="sessions have the wrong shape"):
        store.read()


def test_the_suite_s_check_of_a_commit_still_checks_the_records_this_code_wrote(
    tmp_path: Path,
) -> None:
    """A snapshot the view names is read without checking its records, the one a commit
    just wrote too: the suite's check of every commit (CHECK_ENV) checks them itself, so that
    code writing a record of the wrong shape fails the tests, as every read made it before."""
    from tokenbudget.ledger import CorruptLedger
    from tokenbudget.store import CHECK_ENV

    assert os.environ.get(CHECK_ENV)  # set for every test (conftest)
    store = JsonFileStore(tmp_path / "ledger.json")
    with store.transaction() as data:
        data["sessions"]["s-1"] = _session_record()
    with (pytest.raises(CorruptLedger, match="sessions have the wrong shape"),
          store.transaction(checkpoint=True) as data):
        data["sessions"]["s-1"]["f"] = "1"
