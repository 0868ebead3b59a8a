"""Reliability: concurrent writers, corrupt state, file permissions and a hung lock holder.

Crashes, hostile hook input and settings races have their own tests/test_reliability_*.py
files, hostile transcripts tests/test_transcripts.py; bench/stress_reliability.py runs the
heavier variants.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests import reliability_fixtures
from tests.helpers import install_fixture, stored_ledger, truth_usage
from tests.reliability_fixtures import REPO, run_shim, start_workers, write_config
from tests.reliability_workers import T0, ledger_usage, session_usage
from tokenbudget import hook, lockinfo, sync
from tokenbudget.cli import main
from tokenbudget.ledger import CorruptLedger
from tokenbudget.usage import Usage

fast_state = reliability_fixtures.fast_state  # a fixture: TOKENBUDGET_HOME on tmpfs

NOW = 1795887600.0  # 2026-11-28 17:40 UTC, the day the fixtures were recorded
LOOP_SID = "85b37d12-d6e6-4358-8473-92d2406f53a7"
PLAIN_SID = "1c990dcd-31c2-4790-9439-44f4a5ce8413"


def state_dir() -> Path:
    return Path(os.environ["TOKENBUDGET_HOME"])


def transcript(home: Path, sid: str) -> Path:
    return next((home / ".claude" / "projects").glob(f"*/{sid}.jsonl"))


def event(home: Path, sid: str, **extra: Any) -> bytes:
    return json.dumps({
        "session_id": sid,
        "transcript_path": str(transcript(home, sid)),
        "cwd": "/home/dev/project",
        "prompt_id": extra.pop("prompt_id", "p-1"),
        "prompt": "go on",
        **extra,
    }).encode()


# --- 1. concurrent writers ---------------------------------------------------------------------

WRITERS = 16
UPDATES = 100


def test_concurrent_transactions_lose_nothing(fast_state: Path) -> None:
    go = fast_state.parent / "go"
    store = sync.open_store()
    reads = {"n": 0, "torn": 0}
    done = threading.Event()

    def reader() -> None:
        # Readers take no lock: every snapshot must still be a whole ledger, old or new.
        while not done.is_set():
            try:
                store.snapshot()
                reads["n"] += 1
            except CorruptLedger:
                reads["torn"] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        reports = start_workers(
            [["counter", str(w), str(UPDATES), str(1000 + w), str(go)] for w in range(WRITERS)],
            go,
        )
    finally:
        done.set()
        thread.join()
    ledger = store.snapshot()
    sent = {str(r["wid"]): r["sent"] for r in reports}
    assert sum(len(v) for v in sent.values()) == WRITERS * UPDATES
    assert ledger["stress_counter"] == sum(sum(v) for v in sent.values())
    # Each writer's additions all arrived, in the order it made them.
    assert ledger["stress_lists"] == sent
    assert reads["torn"] == 0 and reads["n"] > 0


def test_concurrent_hooks_on_growing_transcripts_count_exactly(
    fast_state: Path, private_home: Path
) -> None:
    # Budgets far from their limits: every decision is made, none may refuse.
    write_config(fast_state, {"kind": "session", "limit": "1000M"},
                 {"kind": "daily", "limit": "$1000000"})
    go = fast_state.parent / "go"
    # Every worker appends to its own session and runs the hook on it; half of them also
    # read any other session, which its owner may be writing (a half-written line) right then.
    reports = start_workers(
        [["hooks", str(w), "25", str(2000 + w), str(go), json.dumps([]), "1"]
         for w in range(WRITERS // 2)]
        + [["hooks", str(w), "25", str(2000 + w), str(go), json.dumps(["*"]), "1"]
           for w in range(WRITERS // 2, WRITERS)],
        go,
    )
    _assert_exact(reports)
    assert sum(r["shim_calls"] for r in reports) >= 1


def _assert_exact(reports: list[Any]) -> None:
    """No hook worker met a failure, and after a last sync every session and the total
    count exactly what the workers wrote."""
    for r in reports:
        assert r["bad"] == [], r["bad"]
    sync.sync_all(sync.open_store())
    per_session = session_usage()
    for r in reports:
        assert per_session[r["sid"]] == Usage(*r["truth"]), r["sid"]
    assert ledger_usage() == sum((Usage(*r["truth"]) for r in reports), start=Usage())


def test_hooks_and_syncs_folding_the_sessions_they_write_count_exactly(
    fast_state: Path, private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The clock 10 days past the transcripts: every sync folds every session it has read
    # (idle past retention by their own times) while its hooks go on reading it, as for a
    # session resumed after idling that long.
    monkeypatch.setenv("TOKENBUDGET_NOW", repr(T0 + 10 * 86400))
    write_config(fast_state, {"kind": "session", "limit": "1000M"},
                 {"kind": "daily", "limit": "$1000000"})
    go, stop = fast_state.parent / "go", fast_state.parent / "stop"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    syncs = [subprocess.Popen([sys.executable, "-m", "tests.reliability_workers", "syncs",
                               str(go), str(stop)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(2)]
    try:
        for p in syncs:
            assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
        reports = start_workers(
            [["hooks", str(w), "25", str(3000 + w), str(go), json.dumps([]), "0"]
             for w in range(4)],
            go,
        )
        stop.touch()
        done = [p.communicate(timeout=120) for p in syncs]
    finally:
        for p in syncs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in syncs] == [0, 0], [err.decode()[-2000:] for _, err in done]
    assert all(json.loads(out.splitlines()[-1])["syncs"] > 0 for out, _ in done)
    _assert_exact(reports)


# --- 3. corrupt state ----------------------------------------------------------------------------


def synced_ledger(home: Path) -> bytes:
    install_fixture("loop", home / ".claude")
    install_fixture("plain", home / ".claude", unique_ids=True)
    store = sync.open_store()
    sync.sync_all(store, now=NOW)
    store.checkpoint()  # all of it in the snapshot (a sync leaves a short journal as it is)
    return (state_dir() / "ledger.json").read_bytes()


def _truncated(good: bytes) -> bytes:
    return good[: len(good) // 2]


CORRUPT: dict[str, Any] = {
    "truncated": _truncated,
    "empty": b"",
    "whitespace": b" \n\t\n",
    "garbage": b"\x00\xff\xfe garbage \x01",
    "a list": b"[1, 2, 3]",
    "null": b"null",
    "sessions is a string": b'{"schema": 1, "sessions": "oops"}',
    "files is a list": b'{"schema": 1, "files": []}',
    "schema is a string": b'{"schema": "1"}',
    "schema from the future": b'{"schema": 99, "sessions": {}}',
    "deep nesting": b"[" * 200_000,
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_hook_keeps_a_corrupt_ledger_and_rebuilds(name: str, private_home: Path) -> None:
    good = synced_ledger(private_home)
    content = CORRUPT[name](good) if callable(CORRUPT[name]) else CORRUPT[name]
    write_config(state_dir(), {"kind": "total", "limit": "10k"})
    ledger = state_dir() / "ledger.json"
    ledger.write_bytes(content)
    first = hook.handle("UserPromptSubmit", event(private_home, PLAIN_SID), now=NOW)
    # Told, once, what happened and where the bad file went; rebuilt within the call, so
    # this prompt is decided on the rebuilt ledger: refused, as the budget is used up.
    message = first.get("systemMessage", "")
    assert first.get("decision") == "block", first
    assert message.count("kept it as ledger.json.corrupt-") == 1, message
    assert "not enforced" not in message
    kept = list(ledger.parent.glob("ledger.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == content
    # Rebuilt from the transcripts, the other session's usage included: nothing reads as zero.
    assert ledger_usage() == truth_usage("loop") + truth_usage("plain")
    second = hook.handle("UserPromptSubmit", event(private_home, PLAIN_SID, prompt_id="p-2"),
                         now=NOW)
    assert second.get("decision") == "block", second
    assert "corrupt" not in json.dumps(second)


@pytest.mark.parametrize("name", ["truncated", "sessions is a string", "schema is a string",
                                  "files is a list", "null", "deep nesting"])
def test_cli_says_one_line_about_a_corrupt_ledger(name: str, private_home: Path) -> None:
    # tests/test_cli.py covers bad JSON, empty, a list, a future schema and binary junk.
    good = synced_ledger(private_home)
    content = CORRUPT[name](good) if callable(CORRUPT[name]) else CORRUPT[name]
    (state_dir() / "ledger.json").write_bytes(content)
    result = CliRunner().invoke(main, ["report", "--json"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "corrupt-" in lines[0] and "rebuilt" in lines[0], lines
    assert json.loads(result.stdout)["totals"]["totalTokens"] == (
        truth_usage("loop").total + truth_usage("plain").total
    )
    kept = list(state_dir().glob("ledger.json.corrupt-*"))
    assert [p.read_bytes() for p in kept] == [content]


# Records inside the ledger of the wrong shape: the top-level check passes them.
WRONG_INSIDE = {
    "a session record is a number": lambda d: d["sessions"].update({LOOP_SID: 5}),
    "an hour bucket is a string": lambda d: d["hours"].update({"x": "y"}),
    "folded lost its fields": lambda d: d.update({"folded": {}}),
    "a notice is a number": lambda d: d.update({"notices": [1]}),
    "an event time is a string": lambda d: d["events"].update({"a": "b"}),
    "a request record is short": lambda d: d["keys"].update(
        {k: v[:3] for k, v in list(d["keys"].items())[:1]}),
    "a resumed session's earlier use is text": lambda d: d["sessions"][LOOP_SID].update(
        {"pre": "xx"}),
    "a session's open requests are a list": lambda d: d["sessions"][LOOP_SID].update(
        {"rq": ["r-1"]}),
    "an open request's mark is neither 0 nor 1": lambda d: d["sessions"][LOOP_SID].update(
        {"rq": {"r-1": "in"}}),
}


@pytest.mark.parametrize("name", list(WRONG_INSIDE))
def test_wrong_shape_inside_the_ledger_is_kept_and_rebuilt(name: str, private_home: Path) -> None:
    synced_ledger(private_home)
    path = state_dir() / "ledger.json"
    data = json.loads(path.read_bytes())
    WRONG_INSIDE[name](data)
    bad = json.dumps(data).encode()
    path.write_bytes(bad)
    answer = hook.handle("UserPromptSubmit", event(private_home, LOOP_SID), now=NOW)
    assert "internal error" not in json.dumps(answer)
    assert "corrupt-" in answer.get("systemMessage", "")
    path.write_bytes(bad)
    result = CliRunner().invoke(main, ["report", "--json"])
    assert result.exit_code == 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "corrupt-" in lines[0], lines
    assert json.loads(result.stdout)["totals"]["totalTokens"] == (
        truth_usage("loop").total + truth_usage("plain").total
    )


def test_rebuild_after_corruption_keeps_folded_sessions(private_home: Path) -> None:
    install_fixture("loop", private_home / ".claude")
    later = NOW + 30 * 86400
    report = sync.sync_all(sync.open_store(), now=later, retention_days=2)
    assert report.folded == 1  # the session now lives in history.jsonl, not the ledger
    write_config(state_dir(), {"kind": "total", "limit": "10k"})
    (state_dir() / "ledger.json").write_bytes(b"{")
    first = hook.handle("UserPromptSubmit", event(private_home, LOOP_SID), now=later)
    assert "corrupt-" in first["systemMessage"]
    # The all-time total still holds the folded session, so the budget is still used up.
    second = hook.handle("UserPromptSubmit", event(private_home, LOOP_SID, prompt_id="p-2"),
                         now=later)
    assert second.get("decision") == "block", second
    assert ledger_usage() == truth_usage("loop")


def test_lock_file_left_by_a_dead_process(private_home: Path) -> None:
    synced_ledger(private_home)
    lock = state_dir() / "ledger.json.lock"
    holder = _hold_lock(lock)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
    assert lock.exists()  # the file stays; the lock itself died with its holder
    assert lockinfo.holder(lock) is None
    write_config(state_dir(), {"kind": "total", "limit": "10k"})
    start = time.monotonic()
    answer = hook.handle("UserPromptSubmit", event(private_home, PLAIN_SID), now=NOW)
    assert time.monotonic() - start < 1.0  # not the 2 s lock timeout: nobody holds it
    assert answer.get("decision") == "block"


def test_lock_file_with_junk_in_it(private_home: Path) -> None:
    synced_ledger(private_home)
    lock = state_dir() / "ledger.json.lock"
    lock.write_bytes(b"\x00 pid 12345 was here \xff")
    with sync.open_store().transaction() as ledger:
        ledger["notices"].append("still works")
    assert sync.open_store().snapshot()["notices"] == ["still works"]


def _hold_lock(lock: Path) -> subprocess.Popen[bytes]:
    """Another process holding the ledger's lock until killed."""
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability_workers", "hold", str(lock)], cwd=REPO,
        stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    return holder


def test_a_waiter_gets_the_lock_when_it_is_released_and_gives_up_at_its_bound(
    private_home: Path,
) -> None:
    import fcntl

    from tokenbudget import lock as lock_mod

    synced_ledger(private_home)
    lock = state_dir() / "ledger.json.lock"
    holder = _hold_lock(lock)
    mine = signal.signal(signal.SIGALRM, signal.SIG_IGN)
    fd = os.open(lock, os.O_RDWR)
    try:
        # Waiting in the kernel: the timer ends a wait that gets nothing...
        assert lock_mod._wait_in_kernel(fcntl, fd, 0.2) is None
        assert signal.getsignal(signal.SIGALRM) is signal.SIG_IGN  # ours put back
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        # ...and, however long the bound (time_t cannot hold this one), the lock is ours the
        # moment it is released.
        threading.Timer(0.5, holder.kill).start()
        assert lock_mod._wait_in_kernel(fcntl, fd, 1e12) is True
    finally:
        os.close(fd)
        signal.signal(signal.SIGALRM, mine)
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    with sync.open_store(lock_timeout=20).transaction() as ledger:
        ledger["notices"].append("got it")
    assert sync.open_store().snapshot()["notices"] == ["got it"]


def test_with_sigalrm_blocked_the_lock_wait_polls_and_keeps_its_bound(private_home: Path) -> None:
    synced_ledger(private_home)
    holder = _hold_lock(state_dir() / "ledger.json.lock")
    threading.Timer(10, holder.kill).start()  # a wait without its bound fails, never hangs
    old = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
    try:
        # Gives up at its bound: the holder's watchdog would end the wait only after 10 s,
        # which would let the transaction through instead of raising.
        with pytest.raises(hook.LockTimeout), sync.open_store(lock_timeout=0.3).transaction():
            pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()


# --- 7. permissions and secrets ------------------------------------------------------------------

BIN = Path(sys.executable).parent / "tokenbudget"


def run_cli(*args: str, home: Path, umask: int = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE")}
    env.update(HOME=str(home), NO_COLOR="1")
    return subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False, umask=umask)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    # The most permissive umask there is: every private mode must come from our own code.
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_state_files_are_private_whatever_the_umask(private_home: Path, open_umask: None) -> None:
    install_fixture("loop", private_home / ".claude")
    state = state_dir()
    state.mkdir(mode=0o755)
    state.chmod(0o755)  # a folder someone made readable: we narrow it
    assert run_cli("sync", home=private_home).returncode == 0
    assert run_cli("budget", "set", "daily", "100k", home=private_home).returncode == 0
    assert mode(state) == 0o700
    for name in ("ledger.json", "ledger.json.lock", "config.json"):
        assert mode(state / name) == 0o600, name
    # Folding writes history.jsonl.
    sync.sync_all(sync.open_store(), now=NOW + 30 * 86400, retention_days=2)
    assert mode(state / "history.jsonl") == 0o600
    # A hook failure writes the log: a broken project budget file makes one.
    project = private_home / "project"
    (project / ".claude").mkdir(parents=True)
    (project / ".claude" / "tokenbudget.json").write_text("{broken")
    rc, answer, _, _ = run_shim("UserPromptSubmit", {
        "session_id": LOOP_SID, "transcript_path": str(transcript(private_home, LOOP_SID)),
        "cwd": str(project), "prompt": "x"}, env={"CLAUDE_PROJECT_DIR": str(project)})
    assert rc == 0 and "broken" in answer["systemMessage"]
    assert mode(state / "tokenbudget.log") == 0o600
    # A corrupt ledger is kept with the ledger's own private mode.
    (state / "ledger.json").write_bytes(b"{")
    assert run_cli("sync", home=private_home).returncode == 0
    (kept,) = state.glob("ledger.json.corrupt-*")
    assert mode(kept) == 0o600
    leftovers = [p for p in state.iterdir() if mode(p) & 0o077]
    assert leftovers == []


def test_state_created_from_nothing_is_private(private_home: Path, open_umask: None) -> None:
    install_fixture("plain", private_home / ".claude")
    nested = private_home / "deep" / "tb state"
    env_home = {"TOKENBUDGET_HOME": str(nested)}
    proc = subprocess.run([str(BIN), "sync"], env={**os.environ, **env_home}, umask=0,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert mode(nested) == 0o700 and mode(nested / "ledger.json") == 0o600


SECRET = "hunter2-SECRET-5f3a"


def test_prompt_text_never_reaches_the_log_or_the_ledger(private_home: Path) -> None:
    install_fixture("slash", private_home / ".claude")
    sid = "abdd18bf-ed69-4c76-aebe-e5e94fa64756"
    path = transcript(private_home, sid)
    # Claude Code writes the prompt into the transcript; we may keep the command, not the text.
    line = json.dumps({"type": "user", "promptId": "p-s", "message": {
        "role": "user", "content": f"/deploy --token {SECRET}"}, "uuid": "u-s",
        "timestamp": "2026-11-28T17:30:00.000Z", "sessionId": sid, "cwd": "/home/dev/project"})
    with open(path, "a") as f:
        f.write(line + "\n")
    state = state_dir()
    prompts = [SECRET, f"/deploy {SECRET}", f"please use {SECRET}", f"/{SECRET}",
               f"/x:{SECRET} go"]

    def payload(prompt: str, n: int) -> bytes:
        return json.dumps({"session_id": sid, "transcript_path": str(path), "prompt": prompt,
                           "cwd": "/home/dev/project", "prompt_id": f"s{n}",
                           "tool_input": {"command": prompt}, "tool_name": "Bash",
                           "last_assistant_message": prompt}).encode()

    n = 0
    # Normal calls, with budgets that warn and block (their messages are logged nowhere,
    # but the ledger keeps warn-once keys and command names).
    write_config(state, {"kind": "session", "limit": "1k"},
                 {"kind": "command", "name": "/deploy", "limit": "1", "mode": "warn"})
    for prompt in prompts:
        for name in ("UserPromptSubmit", "PreToolUse", "Stop"):
            n += 1
            hook.handle(name, payload(prompt, n), now=NOW)
    # Failures that write the log: a broken config, a held lock, a broken project file.
    (state / "config.json").write_text('{"budgets": 5}')
    for prompt in prompts:
        n += 1
        hook.handle("UserPromptSubmit", payload(prompt, n), now=NOW)
    write_config(state, {"kind": "session", "limit": "1k"}, lock_timeout_seconds=0.05)
    from filelock import FileLock

    with FileLock(str(state / "ledger.json.lock")):
        for prompt in prompts:
            n += 1
            hook.handle("PreToolUse", payload(prompt, n), now=NOW)
    sync.sync_all(sync.open_store(), now=NOW)
    log = (state / "tokenbudget.log").read_text()
    assert "config" in log and "lock" in log  # the failures were logged...
    # ...but no file we write holds the prompt text. (The config file does: the user wrote it.)
    for p in state.rglob("*"):  # the hot view's folder too
        if p.name == "config.json" or p.is_dir():
            continue
        data = p.read_bytes()
        assert SECRET.encode() not in data, p.name
    assert "/deploy" in json.dumps(stored_ledger(state))  # the command name is kept


# --- 8. a hung lock holder -----------------------------------------------------------------------


@pytest.fixture
def lock_holder(private_home: Path) -> Iterator[subprocess.Popen[bytes]]:
    lock = state_dir() / "ledger.json.lock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability_workers", "hold", str(lock)], cwd=REPO,
        stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"held\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_hung_lock_holder_hook_decides_within_the_default_bound(
    private_home: Path, lock_holder: subprocess.Popen[bytes]
) -> None:
    install_fixture("loop", private_home / ".claude")
    # The session is far over its budget: only our own failure can let this prompt through.
    write_config(state_dir(), {"kind": "session", "limit": "1k"})
    payload = {"session_id": LOOP_SID, "prompt": "x",
               "transcript_path": str(transcript(private_home, LOOP_SID))}
    rc, answer, err, elapsed = run_shim("UserPromptSubmit", payload)
    assert rc == 0
    # Decided without the lock, from the ledger as committed and the session's transcript.
    assert answer["decision"] == "block" and "session budget" in answer["reason"]
    assert 2.0 <= elapsed < 2.0 + 3.0  # the default bound of 2 s, plus Python's start-up
    message = answer["systemMessage"]
    assert "lock" in message and "2 s" in message and "last committed" in message
    # ...and who is holding it, so the user can do something about it.
    assert f"pid {lock_holder.pid}" in message, message
    assert "lock" in err


def test_hung_lock_holder_every_event_within_the_configured_bound(
    private_home: Path, lock_holder: subprocess.Popen[bytes]
) -> None:
    install_fixture("loop", private_home / ".claude")
    write_config(state_dir(), {"kind": "session", "limit": "1k"}, lock_timeout_seconds=0.2)
    for name in hook._EVENTS:
        start = time.monotonic()
        answer = hook.handle(name, event(private_home, LOOP_SID, hook_event_name=name), now=NOW)
        assert time.monotonic() - start < 0.2 + 0.5, name
        assert "0.2 s" in answer["systemMessage"]
        # Far over its budget: refused and stopped all the same, wherever an answer can.
        assert (answer.get("decision") == "block") == (name == "UserPromptSubmit"), answer
        stops = name in ("PreToolUse", "PostToolUse", "PostToolBatch")
        assert (answer.get("continue") is False) == stops, (name, answer)


def test_lockinfo_names_the_holder(private_home: Path,
                                   lock_holder: subprocess.Popen[bytes]) -> None:
    lock = state_dir() / "ledger.json.lock"
    named = lockinfo.holder(lock)
    assert named is not None
    assert named.startswith(f"pid {lock_holder.pid}: ")
    assert "tests.reliability_workers hold" in named
    lock_holder.kill()
    lock_holder.wait()
    script = "import sys, time\nsys.stdout.write('held\\n')\nsys.stdout.flush()\ntime.sleep(60)"
    multi = subprocess.Popen([sys.executable, "-c", f"import fcntl; f = open({str(lock)!r}, 'a');"
                              f" fcntl.flock(f, fcntl.LOCK_EX)\n{script}"], stdout=subprocess.PIPE)
    try:
        assert multi.stdout is not None and multi.stdout.readline() == b"held\n"
        named = lockinfo.holder(lock)
        assert named is not None and "\n" not in named and "fcntl.flock" in named  # one line
    finally:
        multi.kill()
        multi.wait()
        assert multi.stdout is not None
        multi.stdout.close()
    lock_holder.wait()
    assert lockinfo.holder(lock) is None


def test_lockinfo_without_a_holder(tmp_path: Path) -> None:
    assert lockinfo.holder(tmp_path / "missing.lock") is None
    free = tmp_path / "free.lock"
    free.touch()
    assert lockinfo.holder(free) is None
    # A lock on another file with the same name elsewhere is not this one.
    from filelock import FileLock

    other = tmp_path / "other"
    other.mkdir()
    with FileLock(str(other / "free.lock")):
        assert lockinfo.holder(free) is None


HOLD_THEN_ORPHAN = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
if sys.argv[2] == "ofd":
    import struct
    # An open file description lock: /proc/locks shows it with pid -1.
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
else:
    fcntl.flock(fd, fcntl.LOCK_EX)
if os.fork():
    os._exit(0)  # the locker exits; its child keeps the descriptor, so the lock lives on
print(os.getpid(), flush=True)
time.sleep(3600)
"""


@pytest.mark.parametrize("kind", ["flock", "ofd"])
def test_lockinfo_finds_a_holder_the_lock_table_cannot_name(tmp_path: Path, kind: str) -> None:
    lock = tmp_path / "ledger.json.lock"
    proc = subprocess.Popen([sys.executable, "-c", HOLD_THEN_ORPHAN, str(lock), kind],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    try:
        # The locker has exited (it is `proc`): until then the lock table may still name it.
        proc.wait(timeout=10)
        named = lockinfo.holder(lock)
        assert named is not None and named.startswith(f"pid {child}: "), named
    finally:
        os.kill(child, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    deadline = time.monotonic() + 5
    while lockinfo.holder(lock) is not None and time.monotonic() < deadline:
        time.sleep(0.01)  # the child is reaped by init, not by us
    assert lockinfo.holder(lock) is None
