"""The hooks/ script, run as Claude Code runs it: JSON on stdin, JSON on stdout, exit 0."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import install_fixture, stored_ledger, truth, truth_usage

REPO = Path(__file__).resolve().parent.parent
SHIM = REPO / "hooks" / "tokenbudget-hook"
USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
EVENTS = [
    "SessionStart",
    "UserPromptSubmit",
    "PreToolUse",
    "PostToolUse",
    "Stop",
    "SubagentStop",
    "SessionEnd",
]


def run_hook(
    event: str, payload: Any, *, env: dict[str, str] | None = None, timeout: float = 20
) -> tuple[int, dict[str, Any], str]:
    full_env = dict(os.environ, TOKENBUDGET_PYTHON=sys.executable)
    full_env.update(env or {})
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    proc = subprocess.run(
        [str(SHIM), event],
        input=raw,
        capture_output=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )
    out = proc.stdout.decode()
    return proc.returncode, json.loads(out) if out.strip() else {}, proc.stderr.decode()


def session(private_home: Path, case: str = "loop") -> dict[str, str]:
    install_fixture(case, private_home / ".claude")
    transcript = next((private_home / ".claude" / "projects").glob("*/*.jsonl"))
    return {
        "session_id": transcript.stem,
        "transcript_path": str(transcript),
        "cwd": "/home/dev/project",
        "prompt_id": "p-1",
    }


def set_budgets(private_home: Path, *budgets: dict[str, Any], **extra: Any) -> None:
    cfg = private_home / "tb state" / "config.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps({"version": 1, "budgets": list(budgets), **extra}))


@contextlib.contextmanager
def written_later(path: str, text: str, after: float = 0.2) -> Iterator[None]:
    """`text` appended to the transcript `path` `after` seconds into the block, as Claude Code
    writes a response after the hook that follows it has started."""

    def write() -> None:
        time.sleep(after)
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        yield
    finally:
        writer.join()


def ledger(private_home: Path) -> dict[str, Any]:
    return stored_ledger(private_home / "tb state")


def session_tokens(private_home: Path, sid: str) -> int:
    s = ledger(private_home)["sessions"][sid]
    return sum(sum(m[:5]) for m in s["m"].values())


@pytest.mark.parametrize("event", EVENTS)
def test_each_event_records_the_session_and_allows(private_home: Path, event: str) -> None:
    base = session(private_home)
    rc, out, _ = run_hook(event, {**base, "hook_event_name": event, "prompt": "hi"})
    assert rc == 0
    assert out == {}
    assert session_tokens(private_home, base["session_id"]) == truth_usage("loop").total


# The hook's process as the commands run it (hook.run, or relay_hook.run), with main wrapped
# to say, after it, whether the cyclic GC is on and how many things the call keeps; a handler
# at exit that would say it ran.
ENDED = ("import atexit, gc, sys; import tokenbudget.hook as h; "
         "atexit.register(print, 'finalized', file=sys.stderr); main = h.main; "
         "h.main = lambda *a, **k: (main(*a, **k), "
         "print(gc.isenabled(), len(h._kept), file=sys.stderr)); ")


@pytest.mark.parametrize("entry", ["from tokenbudget.hook import run; run()",
                                   "from tokenbudget.relay_hook import run; run()"])
def test_the_hook_process_ends_once_its_answer_is_out_with_its_commit_on_disk(
    private_home: Path, entry: str
) -> None:
    base = session(private_home)
    transcript = Path(base["transcript_path"])
    whole = transcript.read_bytes()
    lines = whole.splitlines(keepends=True)
    transcript.write_bytes(b"".join(lines[: len(lines) // 2]))
    # The first call reads half the transcript (under the lock), the second the rest (news,
    # worked out before the lock); no answerer: relay_hook's full hook decides in its process.
    for n, event in enumerate(("UserPromptSubmit", "SessionEnd")):
        if n:
            transcript.write_bytes(whole)
        done = subprocess.run([sys.executable, "-P", "-c", ENDED + entry, event],
                              input=json.dumps({**base, "prompt": "go"}).encode(),
                              capture_output=True, timeout=20, check=False)
        said = done.stderr.decode().split()
        # The answer whole, exit 0; the collector was off; the ledger read was kept, and the
        # process ended without running the handler at exit.
        assert (done.returncode, done.stdout, said[0]) == (0, b"{}\n", "False"), done.stderr
        assert int(said[1]) > 0 and said[2:] == []
    # Both commits are on disk: the whole transcript counted, once.
    assert session_tokens(private_home, base["session_id"]) == truth_usage("loop").total


def test_the_shim_runs_an_older_environment_through_main(tmp_path: Path) -> None:
    # A plugin's environment is set up again in the background after an upgrade; meanwhile
    # the new shim runs the old package, which has main() and no run().
    old = tmp_path / "old env" / "tokenbudget"
    old.mkdir(parents=True)
    (old / "__init__.py").write_text("")
    (old / "hook.py").write_text(
        "import sys\ndef main():\n    print('{\"older\": \"' + sys.argv[1] + '\"}')\n")
    rc, out, err = run_hook("Stop", {}, env={"PYTHONPATH": str(old.parent)})
    assert (rc, out, err) == (0, {"older": "Stop"}, "")


def test_main_in_process_returns_and_leaves_the_collector_as_it_was(
    private_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import gc

    from tokenbudget import hook

    base = session(private_home)
    assert gc.isenabled()
    hook.main(["Stop"], json.dumps(base).encode())  # no os._exit: the test goes on
    assert json.loads(capsys.readouterr().out) == {}
    assert gc.isenabled() and hook._kept is None
    assert session_tokens(private_home, base["session_id"]) == truth_usage("loop").total


def test_prompt_refused_when_session_budget_is_used_up(private_home: Path) -> None:
    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "10k"})
    rc, out, _ = run_hook("UserPromptSubmit", {**base, "prompt": "go on"})
    assert rc == 0
    assert out["decision"] == "block"
    reason = out["reason"]
    assert "session budget" in reason and "18.5k" in reason and "10k" in reason
    assert "tokenbudget budget set session" in reason and "tokenbudget allow" in reason


def test_tool_call_stops_the_turn_once_over(private_home: Path) -> None:
    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "10k"})
    rc, out, _ = run_hook("PreToolUse", {**base, "tool_name": "Bash", "tool_input": {}})
    assert rc == 0
    assert out["continue"] is False and "session budget" in out["stopReason"]
    assert out["hookSpecificOutput"]["permissionDecision"] == "deny"


def test_under_budget_passes(private_home: Path) -> None:
    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "1M"}, {"kind": "daily", "limit": "$50"})
    for event in ("UserPromptSubmit", "PreToolUse"):
        rc, out, _ = run_hook(event, {**base, "prompt": "x", "tool_name": "Bash"})
        assert rc == 0 and out == {}


def test_warn_mode_never_blocks_and_says_so_once(private_home: Path) -> None:
    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "10k", "mode": "warn"})
    rc, out, _ = run_hook("UserPromptSubmit", {**base, "prompt": "go"})
    assert rc == 0 and "decision" not in out
    assert "session budget is used up" in out["systemMessage"]
    rc, out, _ = run_hook("UserPromptSubmit", {**base, "prompt": "again", "prompt_id": "p-2"})
    assert rc == 0 and out == {}  # told once per budget and window


def test_command_budget_uses_past_runs(private_home: Path) -> None:
    base = session(private_home, "slash")
    set_budgets(private_home, {"kind": "command", "name": "/test", "limit": "5k"})
    # /test ran once for 9.2k tokens: its next run is expected to take as much.
    _, out, _ = run_hook("UserPromptSubmit", {**base, "prompt": "/test --fast", "prompt_id": "n"})
    assert out["decision"] == "block"
    assert out["reason"].startswith(
        "tokenbudget: /test usually takes 9.2k, more than its 5k budget: raise it to at least 9.2k"
    )
    _rc, out, _ = run_hook("UserPromptSubmit", {**base, "prompt": "plain words", "prompt_id": "m"})
    assert out == {}


def test_allow_lets_one_prompt_through(private_home: Path) -> None:
    from click.testing import CliRunner

    from tokenbudget.cli import main

    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "10k"})
    assert run_hook("UserPromptSubmit", {**base, "prompt": "a"})[1]["decision"] == "block"
    assert CliRunner().invoke(main, ["allow"]).exit_code == 0
    _, out, _ = run_hook("UserPromptSubmit", {**base, "prompt": "b", "prompt_id": "p-9"})
    assert "decision" not in out and "once" in out.get("systemMessage", "")
    # That turn's tool calls go on; the next prompt is refused again.
    _, out, _ = run_hook("PreToolUse", {**base, "prompt_id": "p-9", "tool_name": "Bash"})
    assert out.get("continue") is not False
    _rc, out, _ = run_hook("UserPromptSubmit", {**base, "prompt": "c", "prompt_id": "p-10"})
    assert out["decision"] == "block"


def test_a_second_registration_answers_once(private_home: Path) -> None:
    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "10k"})
    payload = {**base, "prompt": "a", "hook_event_name": "UserPromptSubmit"}
    first = run_hook("UserPromptSubmit", payload)[1]
    second = run_hook("UserPromptSubmit", payload)[1]
    assert first["decision"] == "block" and second == {}


def test_broken_config_allows_and_says_why(private_home: Path) -> None:
    base = session(private_home)
    cfg = private_home / "tb state" / "config.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("{oops")
    rc, out, err = run_hook("UserPromptSubmit", {**base, "prompt": "x"})
    assert rc == 0 and "decision" not in out
    assert "config is broken" in out["systemMessage"] and "config is broken" in err
    assert "config is broken" in (private_home / "tb state" / "tokenbudget.log").read_text()


def test_held_lock_answers_within_bound(private_home: Path) -> None:
    from filelock import FileLock

    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "10k"}, lock_timeout_seconds=0.5)
    state = private_home / "tb state"
    state.mkdir(parents=True, exist_ok=True)
    with FileLock(str(state / "ledger.json.lock")):
        start = time.monotonic()
        rc, out, err = run_hook("UserPromptSubmit", {**base, "prompt": "x"})
        elapsed = time.monotonic() - start
    # Decided all the same, from the session's transcript read in memory: it is over 10k.
    assert rc == 0 and out["decision"] == "block" and "lock" in err
    assert elapsed < 5


def test_a_busy_lock_still_enforces_from_the_ledger_as_committed(private_home: Path) -> None:
    """Many sessions committing at once may keep the lock past its bound: the hook then decides
    from the committed ledger plus this session's news read in memory, rather than letting
    everything through, and the next call that gets the lock records the news."""
    from filelock import FileLock

    base = session(private_home)
    total = truth_usage("loop").total
    set_budgets(private_home, {"kind": "session", "limit": str(total + 5000)},
                lock_timeout_seconds=0.3)
    run_hook("SessionStart", base)
    _append_request(base["transcript_path"], 1, 6000)  # crosses the limit
    with FileLock(str(private_home / "tb state" / "ledger.json.lock")):
        rc, out, err = run_hook("PostToolBatch", base)
        assert rc == 0 and out["continue"] is False, (out, err)
        assert "session budget" in out["stopReason"] and "not obtained" in err
        rc, out, _ = run_hook("UserPromptSubmit", {**base, "prompt": "go on", "prompt_id": "p-2"})
        assert rc == 0 and out["decision"] == "block"
    assert session_tokens(private_home, base["session_id"]) == total  # nothing written busy
    run_hook("Stop", base)
    assert session_tokens(private_home, base["session_id"]) == total + 6000


def test_a_busy_lock_keeps_a_pending_allow_for_a_prompt_that_can_spend_it(
    private_home: Path,
) -> None:
    from filelock import FileLock

    from tests.test_cli import run

    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "10k"}, lock_timeout_seconds=0.3)
    run_hook("SessionStart", base)
    assert run("allow", home=private_home).returncode == 0
    with FileLock(str(private_home / "tb state" / "ledger.json.lock")):
        for n in range(2):  # spending it needs a commit: refused, and the allow kept
            out = run_hook("UserPromptSubmit", {**base, "prompt": "go", "prompt_id": f"b{n}"})[1]
            assert out["decision"] == "block", out
    out = run_hook("UserPromptSubmit", {**base, "prompt": "go", "prompt_id": "free"})[1]
    assert "decision" not in out and "letting this prompt through once" in out["systemMessage"]
    out = run_hook("UserPromptSubmit", {**base, "prompt": "go", "prompt_id": "next"})[1]
    assert out["decision"] == "block"


def test_fail_closed_blocks_on_our_failure(private_home: Path) -> None:
    from filelock import FileLock

    base = session(private_home)
    set_budgets(
        private_home, {"kind": "session", "limit": "1M"}, lock_timeout_seconds=0.3, fail_closed=True
    )
    state = private_home / "tb state"
    run_hook("SessionStart", base)
    # The lock stays busy and the ledger cannot be read either: nothing to decide from.
    (state / "ledger.json").write_text("{broken")
    with FileLock(str(state / "ledger.json.lock")):
        rc, out, _ = run_hook("UserPromptSubmit", {**base, "prompt": "x"})
        assert rc == 0 and out["decision"] == "block" and "fail_closed" in out["reason"]
        # Mid-turn, the first hook after a batch of tools stops the turn (no PreToolUse is
        # registered any more); after the tools there is none left to deny.
        rc, out, _ = run_hook("PostToolBatch", {**base, "prompt_id": "p-1"})
    assert rc == 0 and out["continue"] is False and "fail_closed" in out["stopReason"]
    assert "hookSpecificOutput" not in out


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[]",
        b'{"session_id": 5}',
        b'{"session_id": "../../etc", "transcript_path": "/etc/passwd"}',
    ],
)
def test_odd_input_allows(private_home: Path, payload: bytes) -> None:
    rc, out, _ = run_hook("UserPromptSubmit", payload)
    assert rc == 0 and "decision" not in out


def test_transcript_outside_claude_dirs_is_not_read(private_home: Path, tmp_path: Path) -> None:
    base = session(private_home)
    outside = tmp_path / f"{base['session_id']}.jsonl"
    outside.write_bytes(Path(base["transcript_path"]).read_bytes())
    for event in ("SessionStart", "Stop"):  # the first always writes the ledger
        rc, _out, _ = run_hook(event, {**base, "transcript_path": str(outside)})
        assert rc == 0
    assert ledger(private_home)["files"] == {}


def test_unknown_event_is_ignored(private_home: Path) -> None:
    rc, out, _ = run_hook("SomeFutureEvent", {"session_id": "x"})
    assert rc == 0 and out == {}


def test_session_start_can_tell_the_model_its_budget(private_home: Path) -> None:
    base = session(private_home)
    set_budgets(private_home, {"kind": "daily", "limit": "1M"}, context_hint=True)
    _rc, out, _ = run_hook("SessionStart", {**base, "source": "startup"})
    ctx = out["hookSpecificOutput"]["additionalContext"]
    assert out["hookSpecificOutput"]["hookEventName"] == "SessionStart"
    assert "daily budget" in ctx and "left" in ctx


def test_an_async_session_start_leaves_its_notes_warnings_and_hint_to_the_prompt(
    private_home: Path, recorded_day: float
) -> None:
    # install --resident registers SessionStart async: nobody reads its answer.
    from tokenbudget import hook
    from tokenbudget.store import open_store

    base = session(private_home)
    hook.handle("Stop", json.dumps(base).encode(), now=recorded_day)
    used = session_tokens(private_home, base["session_id"])
    set_budgets(private_home, {"kind": "session", "limit": str(int(used / 0.9))},
                {"kind": "daily", "limit": "100M"}, context_hint=True)
    with open_store().transaction() as held:
        held["notices"].append("tokenbudget: a note for the next hook")
    start = json.dumps({**base, "source": "startup"}).encode()
    assert hook.handle("SessionStart", start, now=recorded_day, async_start=True) == {}
    assert ledger(private_home)["notices"] == ["tokenbudget: a note for the next hook"]
    assert ledger(private_home)["warned"] == {}
    assert base["session_id"] in ledger(private_home)["sessions"]  # its start duties done

    def prompt(n: int) -> dict[str, Any]:
        payload = {**base, "prompt": "go", "prompt_id": f"p-{n}"}
        return hook.handle("UserPromptSubmit", json.dumps(payload).encode(), now=recorded_day,
                           async_start=True)

    out = prompt(2)
    said = out["systemMessage"].split("\n")
    assert "tokenbudget: a note for the next hook" in said
    assert sum("session budget is at 90%" in line for line in said) == 1
    assert out["hookSpecificOutput"]["hookEventName"] == "UserPromptSubmit"
    assert "daily budget" in out["hookSpecificOutput"]["additionalContext"]
    # Every prompt gets the hint, with the figures as they are now, and nothing said twice:
    # with news to record (read before the lock, far from the limits)...
    _append_request(base["transcript_path"], 1, 1000)
    again = prompt(3)
    assert session_tokens(private_home, base["session_id"]) == used + 1000
    assert "systemMessage" not in again
    assert again["hookSpecificOutput"]["additionalContext"] != out["hookSpecificOutput"][
        "additionalContext"]
    # What the command hook's SessionStart says (a new event: the same one is answered once).
    resumed = json.dumps({**base, "source": "resume"}).encode()
    fresh = hook.handle("SessionStart", resumed, now=recorded_day)
    assert again["hookSpecificOutput"]["additionalContext"] == fresh["hookSpecificOutput"][
        "additionalContext"]
    assert prompt(5) == again  # ...and with none (the quick way)
    # The command hooks' layout: SessionStart says all, the prompt carries no hint.
    assert "hookSpecificOutput" not in hook.handle(
        "UserPromptSubmit", json.dumps({**base, "prompt": "go", "prompt_id": "p-4"}).encode(),
        now=recorded_day)


def test_the_lean_hook_without_its_answerer_decides_session_start_as_async(
    private_home: Path,
) -> None:
    # relay_hook is registered by install --resident alone: there SessionStart is async.
    from tokenbudget import claude_settings
    from tokenbudget.store import open_store

    base = session(private_home)
    set_budgets(private_home, {"kind": "daily", "limit": "100M"}, context_hint=True)
    run_hook("Stop", base)
    with open_store().transaction() as held:
        held["notices"].append("tokenbudget: a note for the next hook")
    code = claude_settings.fast_code([str(REPO)], claude_settings.RELAY_CODE)

    def lean(event: str, payload: dict[str, Any]) -> Any:
        done = subprocess.run([sys.executable, "-I", "-S", "-c", code, event],
                              input=json.dumps(payload).encode(), capture_output=True,
                              timeout=30, check=True)
        return json.loads(done.stdout)

    assert lean("SessionStart", {**base, "source": "startup"}) == {}
    out = lean("UserPromptSubmit", {**base, "prompt": "go", "prompt_id": "p-2"})
    assert out["systemMessage"] == "tokenbudget: a note for the next hook"
    assert "daily budget" in out["hookSpecificOutput"]["additionalContext"]


def _append_request(transcript: str, n: int, tokens: int) -> None:
    """One more API response of `tokens` input tokens in the session's transcript."""
    lines = Path(transcript).read_text().splitlines()
    template = next(json.loads(line) for line in lines if '"type":"assistant"' in line)
    template["message"]["id"] = f"msg_extra_{n}"
    template["requestId"] = f"req_extra_{n}"
    template["uuid"] = f"uuid-extra-{n}"
    template["message"]["usage"] = {"input_tokens": tokens, "output_tokens": 0}
    with open(transcript, "a") as f:
        f.write(json.dumps(template, separators=(",", ":")) + "\n")


def test_a_broken_project_file_keeps_the_users_budgets(private_home: Path, tmp_path: Path) -> None:
    base = session(private_home)
    project = tmp_path / "their repo"
    (project / ".claude").mkdir(parents=True)
    (project / ".claude" / "tokenbudget.json").write_text("not json")
    set_budgets(private_home, {"kind": "session", "limit": "10k"})
    payload = {**base, "cwd": str(project), "prompt": "go"}
    rc, out, _ = run_hook("UserPromptSubmit", payload)
    assert rc == 0 and out["decision"] == "block"
    assert "tokenbudget.json" in out["systemMessage"] and "yours are" in out["systemMessage"]
    set_budgets(private_home, fail_closed=True)
    rc, out, _ = run_hook("UserPromptSubmit", {**payload, "prompt_id": "p-2"})
    assert out["decision"] == "block" and "fail_closed" in out["reason"]


def test_the_turn_let_through_is_bounded_too(private_home: Path) -> None:
    from click.testing import CliRunner

    from tokenbudget.cli import main

    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "10k"})
    assert CliRunner().invoke(main, ["allow"]).exit_code == 0
    allowed = {**base, "prompt_id": "p-ok"}
    assert "decision" not in run_hook("UserPromptSubmit", {**allowed, "prompt": "go"})[1]
    _append_request(base["transcript_path"], 1, 9_000)  # less than one more budget's worth
    t1 = run_hook("PreToolUse", {**allowed, "tool_input": {"command": "t1"}})[1]
    assert t1.get("continue") is not False
    _append_request(base["transcript_path"], 2, 2_000)  # now past it: a runaway is stopped
    out = run_hook("PreToolUse", {**allowed, "tool_input": {"command": "t2"}})[1]
    assert out["continue"] is False and "session budget" in out["stopReason"]


def test_allow_is_spent_only_on_a_prompt_it_lets_through(private_home: Path) -> None:
    from click.testing import CliRunner

    from tokenbudget.cli import main

    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "1M"})
    assert CliRunner().invoke(main, ["allow"]).exit_code == 0
    assert run_hook("UserPromptSubmit", {**base, "prompt": "fine", "prompt_id": "a"})[1] == {}
    set_budgets(private_home, {"kind": "session", "limit": "10k"})
    out = run_hook("UserPromptSubmit", {**base, "prompt": "blocked?", "prompt_id": "b"})[1]
    assert "decision" not in out, "the allow was spent on a prompt that needed none"


def test_the_raise_hint_keeps_warn_mode(private_home: Path) -> None:
    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "10k", "mode": "warn", "warn_at": 0.5})
    out = run_hook("UserPromptSubmit", {**base, "prompt": "go"})[1]
    assert "tokenbudget budget set session 20k --mode warn --warn-at 50%" in out["systemMessage"]


@pytest.mark.parametrize(
    ("prompt", "command"),
    [
        ("/test --fast", "/test"),
        ("/plug:run x", "/plug:run"),
        ("/etc/passwd what is it", "prompt"),
        ("/", "prompt"),
        ("  /deploy", "/deploy"),
        ("hello /test", "prompt"),
    ],
)
def test_what_counts_as_a_slash_command(prompt: str, command: str) -> None:
    from tokenbudget.engine import command_of_prompt
    from tokenbudget.transcripts import command_of

    assert command_of_prompt(prompt) == command
    assert command_of(prompt) == command  # the ledger names the turn the same way


def _ledger_stamp(private_home: Path) -> tuple[int, int, bytes]:
    path = private_home / "tb state" / "ledger.json"
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, path.read_bytes()


def test_a_call_with_nothing_new_neither_locks_nor_writes(private_home: Path) -> None:
    from filelock import FileLock

    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "10M"}, lock_timeout_seconds=0.3)
    assert run_hook("SessionStart", base)[1] == {}
    assert run_hook("Stop", base)[1] == {}  # reads the whole transcript
    before = _ledger_stamp(private_home)
    with FileLock(str(private_home / "tb state" / "ledger.json.lock")):
        for event in ("PreToolUse", "PostToolUse", "Stop", "SubagentStop", "SessionEnd"):
            rc, out, err = run_hook(event, {**base, "tool_input": {"command": event}})
            assert (rc, out, err) == (0, {}, ""), event  # answered, not failed open
    assert _ledger_stamp(private_home) == before


def test_anything_new_takes_the_locked_way(private_home: Path) -> None:
    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "10M"})
    run_hook("Stop", base)
    total = session_tokens(private_home, base["session_id"])
    # A new line in the session's transcript: counted by the next call.
    _append_request(base["transcript_path"], 1, 1000)
    assert run_hook("PreToolUse", {**base, "tool_input": {"command": "a"}})[1] == {}
    assert session_tokens(private_home, base["session_id"]) == total + 1000
    # A new subagent transcript is new too, though the session's own file did not change.
    sub = Path(base["transcript_path"]).with_suffix("") / "subagents"
    sub.mkdir(parents=True, exist_ok=True)
    agent = sub / "agent-extra.jsonl"
    _append_request(base["transcript_path"], 2, 500)  # made there, moved to the subagent
    lines = Path(base["transcript_path"]).read_text().splitlines(keepends=True)
    Path(base["transcript_path"]).write_text("".join(lines[:-1]))
    agent.write_text(lines[-1].replace('"isSidechain":false', '"isSidechain":true'))
    assert run_hook("PreToolUse", {**base, "tool_input": {"command": "b"}})[1] == {}
    assert session_tokens(private_home, base["session_id"]) == total + 1500


def test_a_warning_or_block_found_without_news_is_still_given_and_kept(
    private_home: Path,
) -> None:
    base = session(private_home)
    run_hook("Stop", base)  # everything read, no budget yet
    used = session_tokens(private_home, base["session_id"])
    set_budgets(private_home, {"kind": "session", "limit": str(int(used / 0.9)), "mode": "warn"})
    first = run_hook("PreToolUse", {**base, "tool_input": {"command": "a"}})[1]
    assert "session budget" in first["systemMessage"]
    assert ledger(private_home)["warned"]  # remembered: said once
    assert run_hook("PreToolUse", {**base, "tool_input": {"command": "b"}})[1] == {}
    set_budgets(private_home, {"kind": "session", "limit": str(used // 2)})
    out = run_hook("PreToolUse", {**base, "tool_input": {"command": "c"}})[1]
    assert out["continue"] is False and "session budget" in out["stopReason"]


def test_a_tokenbudget_folder_in_the_project_does_not_shadow_the_package(
    private_home: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    (project / "tokenbudget").mkdir(parents=True)
    (project / "tokenbudget" / "__init__.py").write_text("")
    (project / "tokenbudget" / "hook.py").write_text("def main():\n    print('{\"shadow\": 1}')\n")
    proc = subprocess.run(
        [str(SHIM), "SessionEnd"],
        input=b"{}",
        capture_output=True,
        cwd=project,  # Claude Code runs hooks in the project's folder
        env=dict(os.environ, TOKENBUDGET_PYTHON=sys.executable),
        timeout=20,
        check=False,
    )
    assert (proc.returncode, json.loads(proc.stdout)) == (0, {})


def test_a_session_start_reads_the_ledger_before_the_lock(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session's start always commits, but under the lock it reads only the journal written
    since its read: the whole ledger's read (the costly part, hundreds of milliseconds at
    thousands of live sessions) waits for nobody's lock, and nobody waits for it."""
    from tokenbudget import hook
    from tokenbudget.store import JsonFileStore

    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "10M"})
    hook.handle("Stop", json.dumps(base).encode())
    reloads: list[str] = []
    real_reload = JsonFileStore._reload

    def counted(self: JsonFileStore) -> Any:
        reloads.append("x")
        return real_reload(self)

    monkeypatch.setattr(JsonFileStore, "_reload", counted)
    other = {**base, "session_id": "a-new-session", "source": "startup"}
    hook.handle("SessionStart", json.dumps(other).encode())
    assert reloads == []
    assert "a-new-session" in JsonFileStore(private_home / "tb state" / "ledger.json"
                                           ).snapshot()["sessions"]


@pytest.mark.parametrize("fold", [False, True])
@pytest.mark.parametrize("between", ["commits", "a checkpoint", "a checkpoint, then commits"])
def test_a_session_start_keeps_what_others_commit_between_its_read_and_its_lock(
    private_home: Path, recorded_day: float, monkeypatch: pytest.MonkeyPatch, between: str,
    fold: bool,
) -> None:
    """The ledger a start read before the lock is brought up to date under it: other
    sessions' commits in between are kept, whether the journal still holds them or a
    checkpoint folded them, and whether the start folds the journal itself or appends."""
    from tokenbudget import hook, hot
    from tokenbudget.store import JsonFileStore

    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "10M"})
    hook.handle("Stop", json.dumps(base).encode())
    path = private_home / "tb state" / "ledger.json"

    def commit(tag: str) -> None:
        with JsonFileStore(path).transaction() as other:
            other["warned"][tag] = recorded_day

    commit("before")
    monkeypatch.setattr(JsonFileStore, "fold_due", lambda self: fold)  # the journal grown?
    steps = {"commits": ["one", "two"], "a checkpoint": ["one", None],
             "a checkpoint, then commits": ["one", None, "two", "three"]}[between]
    real_lock = JsonFileStore._lock
    raced: list[str | None] = []

    def others_first(self: JsonFileStore) -> Any:
        if not raced:  # the start's own lock: others commit just before it gets it
            for step in steps:
                raced.append(step)
                if step is None:
                    JsonFileStore(path).checkpoint()
                else:
                    commit(step)
        return real_lock(self)

    monkeypatch.setattr(JsonFileStore, "_lock", others_first)
    start = {**base, "session_id": "a-new-session", "source": "startup"}
    assert hook.handle("SessionStart", json.dumps(start).encode()) == {}
    assert raced == steps
    store = JsonFileStore(path)
    ledger = store.snapshot()
    assert set(ledger["warned"]) == {"before", *(s for s in steps if s)}
    assert {base["session_id"], "a-new-session"} <= set(ledger["sessions"])
    assert (os.path.getsize(store.journal) == 0) == fold
    assert hot.differences(store.file, store.journal, ledger) == []


def test_the_locked_way_reads_the_ledger_again_only_if_it_changed(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenbudget import hook
    from tokenbudget.store import JsonFileStore

    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "10M"})
    raw = json.dumps(base).encode()
    hook.handle("Stop", raw)
    loads: list[str] = []
    real_load = JsonFileStore._reload
    other_store = JsonFileStore(private_home / "tb state" / "ledger.json")

    def counted(self: JsonFileStore) -> Any:
        if self is not other_store:
            loads.append("x")
        return real_load(self)

    monkeypatch.setattr(JsonFileStore, "_reload", counted)
    _append_request(base["transcript_path"], 1, 1000)
    total = session_tokens(private_home, base["session_id"])
    hook.handle("PostToolUse", json.dumps({**base, "tool_input": {"command": "a"}}).encode())
    assert loads == []  # read once (without the lock), used under the lock as read
    assert session_tokens(private_home, base["session_id"]) == total + 1000
    # Another process commits between that read and the lock: its commit is read, not lost;
    # from the journal alone while no checkpoint replaced the snapshot, else all again.
    real_unread = hook._unread
    checkpoint = False

    def unread_while_another_commits(*args: Any) -> bool:
        with other_store.transaction(checkpoint=checkpoint) as other:
            other["notices"].append("from another process")
        return real_unread(*args)

    monkeypatch.setattr(hook, "_unread", unread_while_another_commits)
    # The whole ledger's read alone, for a commit between it and the lock (the hot view's
    # read, before it, takes no part in the locked way).
    monkeypatch.setattr(hook, "_hot", lambda ev, store: None)
    _append_request(base["transcript_path"], 2, 500)
    out = hook.handle("PostToolUse", json.dumps({**base, "tool_input": {"command": "b"}}).encode())
    assert loads == [] and "from another process" in out["systemMessage"]
    assert session_tokens(private_home, base["session_id"]) == total + 1500
    checkpoint = True
    _append_request(base["transcript_path"], 3, 250)
    out = hook.handle("PostToolUse", json.dumps({**base, "tool_input": {"command": "c"}}).encode())
    assert loads and "from another process" in out["systemMessage"]
    assert session_tokens(private_home, base["session_id"]) == total + 1750
    # Even where a file's stamp cannot tell (coarse mtimes, an inode used again), the commit
    # time at the head of the file does.
    from tokenbudget import fileio
    from tokenbudget import store as store_mod

    monkeypatch.setattr(store_mod, "_stamp", lambda st: (0,))
    monkeypatch.setattr(fileio, "stamp", lambda st: (0,))  # the hot view's, the same stamp
    _append_request(base["transcript_path"], 4, 125)
    out = hook.handle("PostToolUse", json.dumps({**base, "tool_input": {"command": "d"}}).encode())
    assert "from another process" in out["systemMessage"]
    assert session_tokens(private_home, base["session_id"]) == total + 1875


def test_session_end_gives_up_on_the_lock_well_inside_its_timeout(private_home: Path) -> None:
    from filelock import FileLock

    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "10M"}, lock_timeout_seconds=5)
    run_hook("SessionStart", base)
    _append_request(base["transcript_path"], 1, 1000)  # news: the locked way
    with FileLock(str(private_home / "tb state" / "ledger.json.lock")):
        rc, _out, err = run_hook("SessionEnd", {**base, "reason": "exit"})
    # Not the 5 s configured, which would overrun Claude Code's 2 s for SessionEnd hooks.
    assert rc == 0 and "not obtained within 0.5 s" in err, err
    run_hook("Stop", base)  # the next call records what SessionEnd could not
    assert session_tokens(private_home, base["session_id"]) == truth_usage("loop").total + 1000


# --- the first hook that knows stops the turn; what was stopped is kept -------------------------


def test_post_tool_use_stops_the_turn_once_over(private_home: Path) -> None:
    base = session(private_home)
    run_hook("Stop", base)  # everything read: 18.5k
    used = session_tokens(private_home, base["session_id"])
    set_budgets(private_home, {"kind": "session", "limit": str(2 * used)})
    event = {**base, "tool_name": "Bash", "tool_input": {}, "tool_response": {}}
    assert run_hook("PostToolUse", {**event, "tool_input": {"command": "a"}})[1] == {}
    # The response that crosses the limit is in the transcript when its tool has run: the turn
    # ends there, before its next request, with nothing to deny (the tool ran already).
    _append_request(base["transcript_path"], 1, used)
    rc, out, _ = run_hook("PostToolUse", {**event, "tool_input": {"command": "b"}})
    assert rc == 0
    assert set(out) == {"continue", "stopReason"} and out["continue"] is False
    assert "session budget is used up" in out["stopReason"]


def test_every_refusal_and_stop_is_kept(private_home: Path) -> None:
    from tokenbudget import stops

    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "10k"})
    run_hook("UserPromptSubmit", {**base, "prompt": "go on", "prompt_id": "p-2"})
    run_hook("PreToolUse", {**base, "tool_name": "Bash", "tool_input": {"command": "t"}})
    kept = stops.read()
    assert [(b["what"], b["event"], b["prompt_id"]) for b in kept] == [
        ("refused", "UserPromptSubmit", "p-2"),
        ("stopped", "PreToolUse", "p-1"),
    ]
    for b in kept:
        assert b["session"] == base["session_id"] and b["budget"] == "session"
        assert (b["used"], b["limit"], b["unit"]) == (truth_usage("loop").total, 10_000, "tokens")
        assert "session budget is used up" in b["reason"]


def test_a_new_limit_warns_again_when_its_threshold_is_crossed(private_home: Path) -> None:
    base = session(private_home)
    run_hook("Stop", base)
    used = session_tokens(private_home, base["session_id"])
    event = {**base, "tool_name": "Bash"}
    set_budgets(private_home, {"kind": "session", "limit": str(int(used / 0.9))})
    said = run_hook("PreToolUse", {**event, "tool_input": {"command": "a"}})[1]
    assert "is at 90%" in said["systemMessage"]
    assert run_hook("PreToolUse", {**event, "tool_input": {"command": "b"}})[1] == {}  # said once
    # Raised, and crossed again in the same session: the user hears of it again.
    set_budgets(private_home, {"kind": "session", "limit": str(int(used / 0.85))})
    said = run_hook("PreToolUse", {**event, "tool_input": {"command": "c"}})[1]
    assert "is at 85%" in said["systemMessage"]
    assert run_hook("PreToolUse", {**event, "tool_input": {"command": "d"}})[1] == {}


@pytest.mark.parametrize("unheard", ["SessionEnd", "SubagentStop"])
def test_a_hook_nobody_waits_for_leaves_the_warning_to_the_next(
    private_home: Path, unheard: str
) -> None:
    base = session(private_home)
    run_hook("Stop", base)
    used = session_tokens(private_home, base["session_id"])
    set_budgets(private_home, {"kind": "session", "limit": str(int(used / 0.9))})
    # Registered async: its answer is read by no one, so it must not spend the warning.
    assert run_hook(unheard, {**base, "agent_id": "a1"})[1] == {}
    out = run_hook("UserPromptSubmit", {**base, "prompt": "go", "prompt_id": "p-2"})[1]
    assert "is at 90%" in out["systemMessage"]


def test_a_fail_closed_refusal_is_kept_too(private_home: Path) -> None:
    from tokenbudget import stops

    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "1M"}, fail_closed=True,
                lock_timeout_seconds=0.2)
    lock = private_home / "tb state" / "ledger.json.lock"
    # The lock busy and the ledger unreadable: nothing to decide from.
    lock.parent.mkdir(parents=True, exist_ok=True)
    (lock.parent / "ledger.json").write_text("{broken")
    with subprocess.Popen(
        [sys.executable, "-m", "tests.reliability_workers", "hold", str(lock)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline()  # it holds the lock
            _, out, _ = run_hook("UserPromptSubmit", {**base, "prompt": "go", "prompt_id": "p-9"})
        finally:
            holder.kill()
    assert out["decision"] == "block" and "fail_closed is on" in out["reason"]
    (kept,) = stops.read(base["session_id"])
    assert (kept["what"], kept["prompt_id"], kept["budget"]) == ("refused", "p-9", None)
    assert kept["reason"] == out["reason"]


def test_a_warning_is_given_when_the_warned_table_is_full(private_home: Path) -> None:
    from tokenbudget import sync

    base = session(private_home)
    run_hook("Stop", base)
    used = session_tokens(private_home, base["session_id"])
    with sync.open_store().transaction() as led:
        led["warned"] = {f"old|{i}": float(i) for i in range(500)}
    set_budgets(private_home, {"kind": "session", "limit": str(int(used / 0.9))})
    # Nothing new to read: the quick path decides, and adding a key drops the oldest.
    out = run_hook("PreToolUse", {**base, "tool_name": "Bash", "tool_input": {"command": "w"}})[1]
    assert "session budget is at 90%" in out.get("systemMessage", ""), out


@pytest.mark.parametrize("session_end", ["first", "racing the next SessionStart"])
def test_a_session_ended_by_clear_gets_its_last_total_from_the_next_sessions_hook(
    private_home: Path, recorded_day: float, monkeypatch: pytest.MonkeyPatch, session_end: str
) -> None:
    # After /clear, Claude Code writes the ended session's last cost-state (here holding the
    # /compact that ended it) after that session's SessionEnd, while the new session starts:
    # the new session's next hook reads it, without a sync.
    from tokenbudget import hook

    old, new, last_total = _ended_by_clear(private_home)
    end = json.dumps({**old, "hook_event_name": "SessionEnd", "reason": "clear"}).encode()
    if session_end == "first":
        hook.handle("SessionEnd", end)
        run_hook("SessionStart", {**new, "source": "clear"})
    else:
        # SessionEnd runs in the background: on a loaded machine (seen with 2.1.328) it read
        # its news before the new session's SessionStart recorded them and marked the session
        # ended, and took the lock after it. It is no sign that the session goes on, as a
        # resumed session's own hooks are.
        quick = hook._quick

        def then_the_next_session_starts(ev: Any, *args: Any) -> Any:
            answer = quick(ev, *args)
            run_hook("SessionStart", {**new, "source": "clear"})
            return answer

        with monkeypatch.context() as patch:
            patch.setattr(hook, "_quick", then_the_next_session_starts)
            hook.handle("SessionEnd", end)
    _counts_the_last_total(private_home, old, new, last_total)


def _ended_by_clear(private_home: Path) -> tuple[dict[str, str], dict[str, str], bytes]:
    """A session (the fixture `compacted`) whose turn ended and which /clear then ended: its
    transcript without the last total Claude Code writes after its hooks (returned, to be
    appended), and the next session's hook input (its SessionStart not run yet)."""
    old = session(private_home, "compacted")
    transcript = Path(old["transcript_path"])
    lines = transcript.read_bytes().splitlines(keepends=True)
    compacted = next(i for i, line in enumerate(lines) if b"compact_boundary" in line)
    total = next(i for i in range(compacted, len(lines)) if b'"cost-state"' in lines[i])
    transcript.write_bytes(b"".join(lines[:compacted]))
    run_hook("Stop", old)  # its last turn's end
    transcript.write_bytes(b"".join(lines[:total]))  # the /compact: no hook of its own
    new_id = "0f0f0f0f-0000-4000-8000-00000000c1ea"
    new = {**old, "session_id": new_id, "transcript_path": str(transcript.parent / new_id)}
    new["transcript_path"] += ".jsonl"
    return old, new, lines[total]


def _counts_the_last_total(private_home: Path, old: dict[str, str], new: dict[str, str],
                           last_total: bytes) -> None:
    """The ended session's last total, written now, is counted by the new session's next hook."""
    transcript = Path(old["transcript_path"])
    lines_only = session_tokens(private_home, old["session_id"])
    with open(transcript, "ab") as f:
        f.write(last_total)
    run_hook("UserPromptSubmit", {**new, "prompt": "hello again", "prompt_id": "p-2"})
    # The two compaction requests: in no transcript line, only in that last total.
    compactions = [t for t in truth("compacted") if t["id"] in ("msg_fake_00005", "msg_fake_00006")]
    hidden = sum(int(t[k]) for t in compactions for k in USAGE_KEYS)
    assert session_tokens(private_home, old["session_id"]) == lines_only + hidden
    # Read once: later hooks find nothing new there.
    assert ledger(private_home)["files"][str(transcript)][2] == transcript.stat().st_size


@pytest.mark.parametrize(
    ("late", "goes_on"),
    [
        ("SubagentStop", False),  # its background subagent finishing after /clear
        ("PostToolBatch", False),  # a tool batch of that subagent (it names its agent_id)
        ("SessionEnd", False),  # its own SessionEnd, run in the background
        ("SessionStart", True),  # resumed (`claude --resume`)
        ("its own PostToolBatch", True),  # a tool batch of its main agent, resumed
    ],
)
def test_only_the_ended_sessions_own_going_on_stops_the_reading_of_its_last_total(
    private_home: Path, recorded_day: float, late: str, goes_on: bool
) -> None:
    """After /clear, the new session's hooks read what the ended session still writes (its
    last total) until that session goes on. A late event of the ended session's subagent, or
    its own late SessionEnd, carries its transcript_path but is no sign that it goes on: the
    new session's next hook still reads that last total. Its main agent's own hook is: its
    own hooks read it from then on."""
    old, new, last_total = _ended_by_clear(private_home)
    run_hook("SessionEnd", {**old, "reason": "clear"})
    run_hook("SessionStart", {**new, "source": "clear"})
    transcript = old["transcript_path"]
    assert transcript in ledger(private_home)["ended"]
    agent = "af447d35b9eb8ad94"
    subagent = str(Path(transcript).with_suffix("") / "subagents" / f"agent-{agent}.jsonl")
    payload: dict[str, Any] = {
        "SubagentStop": {**old, "agent_id": agent, "agent_type": "general-purpose",
                         "agent_transcript_path": subagent, "stop_hook_active": False,
                         "last_assistant_message": "Done."},
        "PostToolBatch": {**old, "agent_id": agent, "tool_calls": []},
        "SessionEnd": {**old, "reason": "clear"},
        "SessionStart": {**old, "source": "resume"},
        "its own PostToolBatch": {**old, "tool_calls": []},
    }[late]
    if late == "its own PostToolBatch":
        _append_request(transcript, 1, 1000)  # the response that asked for its tools
    elif late in ("SubagentStop", "PostToolBatch"):
        # What the subagent wrote before its hook, news that takes the hook the locked way:
        # its prompt (no response: the fixture's last total holds none of a subagent).
        line = {"type": "user", "isSidechain": True, "agentId": agent, "uuid": "uuid-sub",
                "sessionId": old["session_id"], "message": {"role": "user", "content": "Go."}}
        Path(subagent).parent.mkdir(parents=True)
        Path(subagent).write_text(json.dumps(line, separators=(",", ":")) + "\n")
    run_hook(late.split()[-1], payload)
    assert (transcript in ledger(private_home)["ended"]) is not goes_on
    if not goes_on:
        _counts_the_last_total(private_home, old, new, last_total)


def test_fail_closed_answers_even_when_the_clock_cannot_be_read(private_home: Path) -> None:
    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "1M"}, fail_closed=True)
    rc, out, err = run_hook("UserPromptSubmit", {**base, "prompt": "go"},
                            env={"TOKENBUDGET_NOW": "tomorrow"})
    assert rc == 0 and out["decision"] == "block" and "TOKENBUDGET_NOW" in out["reason"]
    assert "Traceback" not in err


def test_a_batch_whose_response_is_not_written_yet_waits_for_it(private_home: Path) -> None:
    """Claude Code writes transcripts asynchronously: PostToolBatch can come before the response
    that asked for the tools. The hook waits for that response (its tool_use id) and stops the
    turn it used up, instead of letting the next request go."""
    from tokenbudget import hook

    base = session(private_home)
    total = truth_usage("loop").total
    set_budgets(private_home, {"kind": "session", "limit": str(total + 5000)})
    hook.handle("SessionStart", json.dumps(base).encode())
    path = base["transcript_path"]
    lines = Path(path).read_text().splitlines()
    late = next(json.loads(line) for line in lines if '"type":"assistant"' in line)
    late["message"].update(id="msg_late", usage={"input_tokens": 6000, "output_tokens": 0},
                           content=[{"type": "tool_use", "id": "toolu_late", "name": "Bash",
                                     "input": {"command": "true"}}])
    late.update(requestId="req_late", uuid="uuid-late")

    payload = {**base, "tool_calls": [{"tool_name": "Bash", "tool_use_id": "toolu_late"}]}
    with written_later(path, json.dumps(late, separators=(",", ":")) + "\n"):
        out = hook.handle("PostToolBatch", json.dumps(payload).encode())
    assert out.get("continue") is False and "session budget" in out["stopReason"], out
    # A response that never comes holds the hook for a second at most.
    start = time.monotonic()
    gone = {**base, "tool_calls": [{"tool_name": "Bash", "tool_use_id": "toolu_never"}]}
    hook.handle("PostToolBatch", json.dumps(gone).encode())
    assert time.monotonic() - start < hook.TOOL_LINE_WAIT + 1.0



# A turn's last text as a model may write it: quotes, a backslash, a newline, a control
# character, letters beyond ASCII, an emoji, and a trailing newline the hook's input may lack.
LAST_TEXT = 'Done: "x" \\ y\n\tz\x01 über — café 😀 ' + "w" * 80 + "\n"


def _last_response(path: str, tokens: int) -> str:
    """A turn's last response (text LAST_TEXT, `tokens` input tokens) as one transcript line,
    written the way Claude Code writes it (JSON.stringify: compact, non-ASCII as is)."""
    line = next(json.loads(x) for x in Path(path).read_text().splitlines()
                if '"type":"assistant"' in x)
    line["message"].update(id="msg_last", usage={"input_tokens": tokens, "output_tokens": 0},
                           content=[{"type": "text", "text": LAST_TEXT}], stop_reason="end_turn")
    line.update(requestId="req_last", uuid="uuid-last")
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n"


def test_a_stop_before_the_turns_last_response_is_written_waits_for_it(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claude Code writes transcripts asynchronously: on a busy machine its Stop hook can run
    before the turn's last response is on disk (seen with 2.1.328). Within one response of a
    limit, the hook waits for it (its input's last_assistant_message names it), records it and
    says the budget is used up; it does not leave the turn's last response to the next hook."""
    from tokenbudget import hook

    base = session(private_home)
    total = truth_usage("loop").total
    set_budgets(private_home, {"kind": "session", "limit": str(total + 5000)})
    hook.handle("SessionStart", json.dumps(base).encode())
    path = base["transcript_path"]
    late = _last_response(path, 6000)

    payload = {**base, "last_assistant_message": LAST_TEXT.rstrip(), "stop_hook_active": False}
    with written_later(path, late):
        out = hook.handle("Stop", json.dumps(payload).encode())
    assert "session budget is used up" in out.get("systemMessage", ""), out
    assert session_tokens(private_home, base["session_id"]) == total + 6000
    # Once it is on disk, the next Stop finds it in one look: no wait.
    waits: list[str] = []
    wait = hook._await_response
    monkeypatch.setattr(hook, "_await_response", lambda ev: waits.append(ev.name) or True)
    again = {**payload, "stop_hook_active": True}
    hook.handle("Stop", json.dumps(again).encode())
    assert waits == []
    # A response that never comes holds the hook for about a second at most; the log says so.
    monkeypatch.setattr(hook, "_await_response", wait)
    gone = {**payload, "last_assistant_message": "a text that is written nowhere"}
    assert not hook._response_on_disk(hook.parse_event("Stop", json.dumps(gone).encode()))
    assert not hook._await_response(hook.parse_event("Stop", json.dumps(gone).encode()))
    log = (private_home / "tb state" / "tokenbudget.log").read_text()
    assert "the response that ended the turn was not in the transcript" in log


def test_a_stop_far_from_every_limit_does_not_wait_for_the_turns_last_response(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenbudget import hook

    base = session(private_home)
    total = truth_usage("loop").total
    set_budgets(private_home, {"kind": "session", "limit": str(total + hook.MAX_RESPONSE_TOKENS
                                                               + 1)})
    hook.handle("SessionStart", json.dumps(base).encode())
    waits: list[str] = []
    monkeypatch.setattr(hook, "_await_response", lambda ev: waits.append(ev.name) or True)
    payload = {**base, "last_assistant_message": "not written yet"}
    assert hook.handle("Stop", json.dumps(payload).encode()) == {}
    assert waits == []
    # Its response is read by the session's next hook, whatever waits or not.
    with open(base["transcript_path"], "a", encoding="utf-8") as f:
        f.write(_last_response(base["transcript_path"], 6000))
    hook.handle("UserPromptSubmit", json.dumps({**base, "prompt": "go on"}).encode())
    assert session_tokens(private_home, base["session_id"]) == total + 6000


def _user_line(path: str, content: Any) -> str:
    """A user line of the transcript at `path` (a prompt, or tool results) as Claude Code
    writes it, holding `content`."""
    line = next(json.loads(x) for x in Path(path).read_text().splitlines()
                if '"type":"user"' in x)
    line["message"]["content"] = content
    line.update(uuid="uuid-user-late")
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n"


@pytest.mark.parametrize("before", ["an earlier turn", "the prompt", "a tool result"])
def test_a_stop_waits_for_its_response_when_its_text_is_already_in_the_transcript(
    private_home: Path, before: str
) -> None:
    """The turn's last text may already be in the transcript before its response is: an
    earlier turn ended with the same words ("Done."), the prompt asked for them, or the
    answer repeats what a tool printed. Only this turn's response (an assistant line after
    the turn's last user line) counts: the Stop still waits for it near a limit."""
    from tokenbudget import hook

    base = session(private_home)
    total = truth_usage("loop").total
    set_budgets(private_home, {"kind": "session", "limit": str(total + 5000)})
    hook.handle("SessionStart", json.dumps(base).encode())
    path = base["transcript_path"]
    said = LAST_TEXT.rstrip()
    with open(path, "a", encoding="utf-8") as f:
        if before == "an earlier turn":
            earlier = _last_response(path, 10).replace("msg_last", "msg_earlier").replace(
                "req_last", "req_earlier")
            f.write(earlier + _user_line(path, "go on"))
        elif before == "the prompt":
            f.write(_user_line(path, f"Say exactly: {said}"))
        else:
            f.write(_user_line(path, [{"type": "tool_result", "tool_use_id": "toolu_x",
                                       "content": LAST_TEXT}]))
    hook.handle("UserPromptSubmit", json.dumps({**base, "prompt": "go on"}).encode())
    late = _last_response(path, 6000)
    before_late = session_tokens(private_home, base["session_id"])

    payload = {**base, "last_assistant_message": said, "stop_hook_active": False}
    with written_later(path, late):
        out = hook.handle("Stop", json.dumps(payload).encode())
    assert "session budget is used up" in out.get("systemMessage", ""), out
    assert session_tokens(private_home, base["session_id"]) == before_late + 6000


def _written_meanwhile(path: str, name: str, tokens: int, waits: list[str]) -> Any:
    """A stand-in for the hook's wait during which Claude Code writes the response that asked
    for the tool `toolu_<name>` (using `tokens` input tokens); each wait is noted in `waits`."""

    def wait(ev: Any) -> bool:
        waits.append(ev.name)
        late = next(json.loads(line) for line in Path(path).read_text().splitlines()
                    if '"type":"assistant"' in line)
        late["message"].update(id=f"msg_{name}",
                               usage={"input_tokens": tokens, "output_tokens": 0},
                               content=[{"type": "tool_use", "id": f"toolu_{name}",
                                         "name": "Bash", "input": {"command": "true"}}])
        late.update(requestId=f"req_{name}", uuid=f"uuid-{name}")
        with open(path, "a") as f:
            f.write(json.dumps(late, separators=(",", ":")) + "\n")
        return True

    return wait

def test_a_batch_far_from_every_limit_does_not_wait_for_its_response(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No response can use more than MAX_RESPONSE_TOKENS: a budget further than that from its
    limit cannot be crossed by the response not written yet, so the hook answers at once; one
    within it waits, and stops the turn that response used up."""
    from tokenbudget import hook

    base = session(private_home)
    total = truth_usage("loop").total
    far = total + hook.MAX_RESPONSE_TOKENS + 1
    set_budgets(private_home, {"kind": "session", "limit": str(far)})
    hook.handle("SessionStart", json.dumps(base).encode())
    waits: list[str] = []
    monkeypatch.setattr(hook, "_await_response",
                        _written_meanwhile(base["transcript_path"], "late2", 6000, waits))
    payload = {**base, "tool_calls": [{"tool_name": "Bash", "tool_use_id": "toolu_late2"}]}
    assert hook.handle("PostToolBatch", json.dumps(payload).encode()) == {}
    assert waits == []
    # Within one response of the limit: it waits, reads the response again and stops the turn.
    set_budgets(private_home, {"kind": "session", "limit": str(total + 5000)})
    again = {**base, "tool_calls": [{"tool_name": "Bash", "tool_use_id": "toolu_late2"}],
             "n": 2}
    out = hook.handle("PostToolBatch", json.dumps(again).encode())
    assert waits == ["PostToolBatch"]
    assert out.get("continue") is False and "session budget" in out["stopReason"], out


@pytest.mark.parametrize("event", ["Stop", "PostToolBatch"])
def test_a_busy_lock_waits_for_the_response_only_near_a_blocking_limit(
    private_home: Path, monkeypatch: pytest.MonkeyPatch, event: str
) -> None:
    """With the lock busy (many sessions committing at once) the hook decides on the ledger as
    committed and its news read in memory. Like the locked way, it waits for the response not
    written yet only when that response could carry a blocking budget past its limit, and
    then decides on it; far from every limit it answers at once (before, it waited up to
    TOOL_LINE_WAIT on top of the lock's own wait)."""
    from tokenbudget import hook, lock

    base = session(private_home)
    path = base["transcript_path"]
    total = truth_usage("loop").total + 1000
    set_budgets(private_home, {"kind": "session", "limit": str(total + hook.MAX_RESPONSE_TOKENS
                                                               + 1)})
    hook.handle("SessionStart", json.dumps(base).encode())

    def busy(path: str, timeout: float) -> Any:
        raise TimeoutError(path)

    waits: list[str] = []
    if event == "Stop":
        payload = {**base, "last_assistant_message": LAST_TEXT.rstrip()}

        def wait(ev: Any) -> bool:
            waits.append(ev.name)
            with open(path, "a", encoding="utf-8") as f:
                f.write(_last_response(path, 6000))
            return True
    else:
        payload = {**base, "tool_calls": [{"tool_name": "Bash", "tool_use_id": "toolu_busy"}]}
        wait = _written_meanwhile(path, "busy", 6000, waits)
    _append_request(path, 1, 1000)  # news to record: the call goes for the lock
    monkeypatch.setattr(lock, "acquire", busy)
    monkeypatch.setattr(hook, "_await_response", wait)
    out = hook.handle(event, json.dumps(payload).encode())
    assert hook.UNRECORDED in out.get("systemMessage", ""), out  # the busy lock's way
    assert waits == [], out
    assert out.get("continue") is not False and "used up" not in out["systemMessage"], out
    # Within one response of a blocking limit: it waits, reads again and decides on it. The
    # resident answerer's lock (handle's pause) is let go meanwhile, as on the locked way.
    set_budgets(private_home, {"kind": "session", "limit": str(total + 5000)})
    pause = threading.Lock()
    held: list[bool] = []
    monkeypatch.setattr(hook, "_await_response", lambda ev: held.append(pause.locked()) or wait(ev))
    with pause:
        out = hook.handle(event, json.dumps({**payload, "n": 2}).encode(), pause=pause)
    assert hook.UNRECORDED in out.get("systemMessage", ""), out
    assert waits == [event] and held == [False], out
    if event == "Stop":
        assert "session budget is used up" in out["systemMessage"], out
    else:
        assert out.get("continue") is False and "session budget" in out["stopReason"], out
    assert session_tokens(private_home, base["session_id"]) == total - 1000  # nothing written


@pytest.mark.parametrize(
    ("unit", "room", "mode", "overrides", "near"),
    [
        ("tokens", 2_000_000, "block", {}, True),
        ("tokens", 2_000_001, "block", {}, False),
        ("tokens", 10, "warn", {}, False),  # a warning one response late stops nothing
        ("usd", 150.0, "block", {}, True),  # 2M tokens at $75/M
        ("usd", 150.01, "block", {}, False),
        ("usd", 150.01, "block", {"my-model": {"output": 100.0}}, True),  # a dearer override
    ],
)
def test_one_response_could_cross_a_blocking_budget_within_its_most(
    unit: str, room: float, mode: str, overrides: dict[str, dict[str, float]], near: bool
) -> None:
    from datetime import UTC, datetime

    from tokenbudget import hook
    from tokenbudget.budgets import Budget, evaluate
    from tokenbudget.config import Config

    limit = 5_000_000.0 if unit == "tokens" else 500.0
    b = Budget("daily", limit, unit, mode=mode)
    check = evaluate(b, limit - room, 0.0, datetime(2027, 1, 1, tzinfo=UTC), None, "w")
    assert hook._could_cross([check], Config(prices=overrides)) is near


def test_the_dearest_rate_is_the_price_tables() -> None:
    from tokenbudget import hook, pricing

    rates = [
        getattr(p, f)
        for price in pricing._TABLE.values()
        for p in (price, price.long_context)
        if p is not None
        for f in pricing._FIELDS
    ]
    assert max(rates) == hook.MAX_RATE


def test_what_the_first_reading_says_near_a_limit_is_said_after_the_wait(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Near a limit the hook decides, waits for the tools' response and decides again: the
    warning the first reading recorded as given, and a note it took from the ledger, reach the
    user with the second answer."""
    from tokenbudget import hook
    from tokenbudget.store import open_store

    base = session(private_home)
    total = truth_usage("loop").total
    hook.handle("SessionStart", json.dumps(base).encode())
    # Past the warning threshold, and within one response of the limit.
    set_budgets(private_home, {"kind": "session", "limit": str(int(total / 0.85)),
                               "warn_at": 0.8})
    with open_store().transaction() as ledger:
        ledger["notices"].append("tokenbudget: a note waiting for the next hook")
    monkeypatch.setattr(hook, "_await_response",
                        _written_meanwhile(base["transcript_path"], "late3", 10, []))
    payload = {**base, "tool_calls": [{"tool_name": "Bash", "tool_use_id": "toolu_late3"}]}
    out = hook.handle("PostToolBatch", json.dumps(payload).encode())
    assert out.get("continue") is not False, out
    said = out.get("systemMessage", "")
    assert "a note waiting for the next hook" in said
    assert "session budget" in said and "%" in said, said


def test_a_line_both_readings_say_near_a_limit_is_said_once(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenbudget import hook

    base = session(private_home)
    total = truth_usage("loop").total
    hook.handle("SessionStart", json.dumps(base).encode())
    set_budgets(private_home, {"kind": "session", "limit": str(total + 5000)})
    # A subagent transcript that cannot be read: each reading says so.
    sub = Path(base["transcript_path"]).with_suffix("") / "subagents" / "agent-bad.jsonl"
    sub.mkdir(parents=True)
    monkeypatch.setattr(hook, "_await_response",
                        _written_meanwhile(base["transcript_path"], "late4", 10, []))
    payload = {**base, "tool_calls": [{"tool_name": "Bash", "tool_use_id": "toolu_late4"}]}
    said = hook.handle("PostToolBatch", json.dumps(payload).encode()).get("systemMessage", "")
    lines = said.split("\n")
    assert any("agent-bad.jsonl" in line for line in lines), said
    assert len(lines) == len(set(lines)), said


def test_an_event_registered_twice_is_answered_once(private_home: Path, recorded_day: float
                                                    ) -> None:
    # The same hook in two settings files (or plugin and settings) gets each event twice:
    # the copy within the event memory is answered with nothing; the same bytes later are a
    # new event, decided again.
    from tokenbudget import hook
    from tokenbudget.store import EVENT_MEMORY

    set_budgets(private_home, {"kind": "session", "limit": 1})
    raw = json.dumps({**session(private_home), "prompt": "go on"}).encode()
    assert hook.handle("UserPromptSubmit", raw, now=recorded_day)["decision"] == "block"
    assert hook.handle("UserPromptSubmit", raw, now=recorded_day + 1) == {}
    later = hook.handle("UserPromptSubmit", raw, now=recorded_day + EVENT_MEMORY + 1)
    assert later["decision"] == "block"


@pytest.mark.parametrize("mode", ["warn", "block"])
def test_a_commit_after_its_answer_that_meets_a_crossing_leaves_it_to_the_next_hook(
    private_home: Path, mode: str
) -> None:
    # The resident answerer's http events answer `{}` on the news and commit after the answer
    # (handle's `later`). When another session's commit in between brings the budget past its
    # threshold, the commit is worked out again, but its warning or stop can no longer go
    # with the answer: it is neither recorded as given nor kept as a stop, and the session's
    # next hook says it.
    from tokenbudget import hook, stops, sync
    from tokenbudget.store import open_store

    a = session(private_home)
    set_budgets(private_home, {"kind": "total", "limit": "25k", "mode": mode})
    hook.handle("SessionStart", json.dumps({**a, "source": "startup"}).encode())
    _append_request(a["transcript_path"], 1, 1000)  # 19.5k of 25k: nothing to say yet
    later: list[Any] = []
    batch = json.dumps({**a, "hook_event_name": "PostToolBatch"}).encode()
    assert hook.handle("PostToolBatch", batch, later=later) == {}
    assert len(later) == 1
    assert session_tokens(private_home, a["session_id"]) == truth_usage("loop").total
    # Meanwhile another session's 9.2k are committed: 28.7k of 25k.
    install_fixture("slash", private_home / ".claude", unique_ids=True)
    other = next(p for p in (private_home / ".claude" / "projects").glob("*/*.jsonl")
                 if p.stem != a["session_id"])
    sync.sync_session(open_store(), str(other), other.stem)
    with open_store().transaction() as held:
        held["notices"].append("tokenbudget: a note for the next hook")
    later[0]()
    assert session_tokens(private_home, a["session_id"]) == truth_usage("loop").total + 1000
    assert ledger(private_home)["warned"] == {}
    assert ledger(private_home)["notices"] == ["tokenbudget: a note for the next hook"]
    assert stops.read(a["session_id"]) == []
    after = json.dumps({**a, "hook_event_name": "PostToolBatch", "n": 2}).encode()
    answer = hook.handle("PostToolBatch", after)
    assert "tokenbudget: a note for the next hook" in answer["systemMessage"].split("\n")
    if mode == "warn":
        assert "all-time budget is used up" in answer["systemMessage"]
        assert "continue" not in answer and ledger(private_home)["warned"] != {}
    else:
        assert answer["continue"] is False and "all-time budget" in answer["stopReason"]
        assert [s["event"] for s in stops.read(a["session_id"])] == ["PostToolBatch"]


def test_a_commit_after_its_answer_waits_for_the_lock_only_as_long_as_the_next_event_can(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The session's next event waits in the resident answerer for a commit after an answer,
    # then for the lock itself and (near a limit) twice for the transcript: with a long
    # lock_timeout_seconds, the commit's own wait is cut so that the next event still answers
    # within the relay's timeout (Claude Code's is longer). The default 2 s is not cut.
    from tokenbudget import hook, lock, relay
    from tokenbudget.errors import LockTimeout

    for configured in (0.2, 1.0, 2.0, 3.0, 4.0, 5.0):
        wait = hook.later_lock_wait(configured)
        assert wait <= configured
        assert wait + configured + 2 * hook.TOOL_LINE_WAIT < relay.TIMEOUT
    assert hook.later_lock_wait(2.0) == 2.0
    a = session(private_home)
    set_budgets(private_home, {"kind": "total", "limit": "1000M"}, lock_timeout_seconds=5)
    hook.handle("SessionStart", json.dumps({**a, "source": "startup"}).encode())
    _append_request(a["transcript_path"], 1, 1000)
    later: list[Any] = []
    batch = json.dumps({**a, "hook_event_name": "PostToolBatch"}).encode()
    assert hook.handle("PostToolBatch", batch, later=later) == {}
    waits: list[float] = []

    def busy(path: str, timeout: float) -> Any:
        waits.append(timeout)
        raise TimeoutError(path)

    monkeypatch.setattr(lock, "acquire", busy)
    with pytest.raises(LockTimeout):
        later[0]()
    assert waits == [hook.later_lock_wait(5.0)] == [hook.SESSION_END_LOCK_WAIT]


@pytest.mark.parametrize("case", ["fail_closed", "near", "far"])
def test_only_a_call_far_from_limits_and_failing_open_leaves_its_commit_for_later(
    private_home: Path, case: str
) -> None:
    # With the response of its tools not in the transcript yet and a blocking budget within
    # one response of its limit, a second reading follows the first; with fail_closed, a
    # failure to record must stop the turn: neither answers before its commit.
    from tokenbudget import hook

    a = session(private_home)
    limit = "1M" if case == "near" else "1000M"
    set_budgets(private_home, {"kind": "total", "limit": limit},
                fail_closed=case == "fail_closed")
    hook.handle("SessionStart", json.dumps({**a, "source": "startup"}).encode())
    _append_request(a["transcript_path"], 1, 1000)
    later: list[Any] = []
    batch = {**a, "hook_event_name": "PostToolBatch",
             "tool_calls": [{"tool_use_id": "toolu_not_written_yet"}]}
    assert hook.handle("PostToolBatch", json.dumps(batch).encode(), later=later) == {}
    total = truth_usage("loop").total + 1000
    if case == "far":
        assert len(later) == 1
        assert session_tokens(private_home, a["session_id"]) == total - 1000
        later[0]()
    else:
        assert later == []
    assert session_tokens(private_home, a["session_id"]) == total


@pytest.mark.parametrize("event", ["SubagentStop", "SessionEnd"])
def test_a_hook_nobody_hears_leaves_waiting_notes_to_the_next(private_home: Path, event: str
                                                              ) -> None:
    # Nobody reads these events' answers (async command hooks; answered `{}` at once over
    # http): a note taken from the ledger there would be lost. It records the usage all the
    # same.
    from tokenbudget import hook
    from tokenbudget.store import open_store

    base = session(private_home)
    hook.handle("SessionStart", json.dumps(base).encode())
    with open_store().transaction() as held:
        held["notices"].append("tokenbudget: a note for the next hook")
    _append_request(base["transcript_path"], 1, 1000)
    hook.handle(event, json.dumps(base).encode())
    assert session_tokens(private_home, base["session_id"]) == truth_usage("loop").total + 1000
    assert ledger(private_home)["notices"] == ["tokenbudget: a note for the next hook"]
    answer = hook.handle("Stop", json.dumps(base).encode())
    assert "tokenbudget: a note for the next hook" in answer["systemMessage"].split("\n")
    assert ledger(private_home)["notices"] == []
