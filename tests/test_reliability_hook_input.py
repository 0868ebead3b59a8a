"""Hostile hook input: whatever arrives on stdin, the hook answers in time, allows, and writes
only inside its own data dir.

Hypothesis drives `tokenbudget.hook` in-process (fast); a handful of the nastiest inputs also
go through the real hooks/ shim in a subprocess, with a timeout, as Claude Code runs it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import install_fixture, stored_ledger
from tests.reliability_fixtures import run_shim, tree, write_config
from tokenbudget import hook

SID = "85b37d12-d6e6-4358-8473-92d2406f53a7"  # the `loop` fixture's session
HUGE = "x" * (4 * 1024 * 1024)
BOUND = 10.0  # seconds: far above any honest hook call here, far below "hung"
STATE_FILES = ("ledger.json", "ledger.json.lock", "tokenbudget.log", "tokenbudget.log.1",
               "history.jsonl", "config.json", "ledger.hot.json", "ledger.hot",
               "budget-windows.json", "ledger.journal.jsonl", "ledger.index")


class Hung(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Turn a hang (a blocking open of a FIFO, an endless read) into a test failure."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise Hung(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def make_world(home: Path, outside: Path) -> dict[str, str]:
    """A Claude Code data dir holding one real session and traps named like it."""
    install_fixture("loop", home / ".claude")
    projects = home / ".claude" / "projects"
    real = next(projects.glob(f"*/{SID}.jsonl"))

    def trap(name: str) -> Path:
        folder = projects / name
        folder.mkdir()
        return folder / f"{SID}.jsonl"

    fifo = trap("-fifo")
    os.mkfifo(fifo)
    trap("-folder").mkdir()
    unreadable = trap("-unreadable")
    unreadable.write_bytes(real.read_bytes())
    unreadable.chmod(0)  # stops anyone but root; see the shim test for what stops root
    trap("-link-to-fifo").symlink_to(fifo)
    trap("-link-to-zero").symlink_to("/dev/zero")
    sparse = trap("-sparse")
    with open(sparse, "wb") as f:
        f.truncate(200 * 1024 * 1024)  # 200 MB of zero bytes, no newline, no disk used
    outside.mkdir()
    (outside / f"{SID}.jsonl").write_bytes(real.read_bytes())
    trap("-link-outside").symlink_to(outside / f"{SID}.jsonl")
    # The real session with a FIFO where a subagent's transcript should be.
    agents = real.parent / SID / "subagents"
    agents.mkdir(parents=True)
    os.mkfifo(agents / "agent-a1.jsonl")
    # Project folders (the event's cwd) whose budget file is a trap.
    def big(path: Path) -> None:
        with open(path, "wb") as f:
            f.truncate(50 * 1024 * 1024)

    for name, make in (("cwd-fifo", os.mkfifo),
                       ("cwd-zero", lambda p: os.symlink("/dev/zero", p)),
                       ("cwd-folder", os.mkdir),
                       ("cwd-big", big)):
        (outside / name / ".claude").mkdir(parents=True)
        make(outside / name / ".claude" / "tokenbudget.json")
    return {
        "@real": str(real),
        "@missing": str(projects / "-home-dev-project" / f"no-such-{SID}.jsonl"),
        "@missing-same-name": str(projects / "-gone" / f"{SID}.jsonl"),
        "@fifo": str(fifo),
        "@folder": str(projects / "-folder" / f"{SID}.jsonl"),
        "@unreadable": str(unreadable),
        "@link-fifo": str(projects / "-link-to-fifo" / f"{SID}.jsonl"),
        "@link-zero": str(projects / "-link-to-zero" / f"{SID}.jsonl"),
        "@sparse": str(sparse),
        "@outside": str(outside / f"{SID}.jsonl"),
        "@link-outside": str(projects / "-link-outside" / f"{SID}.jsonl"),
        "@dotdot": str(projects / "-folder" / ".." / ".." / ".." / ".." / f"{SID}.jsonl"),
        "@relative": f"{SID}.jsonl",
        "@nul": str(real) + "\x00.jsonl",
        "@etc": "/etc/passwd",
        "@devzero": "/dev/zero",
        "@cwd-fifo": str(outside / "cwd-fifo"),
        "@cwd-zero": str(outside / "cwd-zero"),
        "@cwd-folder": str(outside / "cwd-folder"),
        "@cwd-big": str(outside / "cwd-big"),
        "@cwd-file": str(real),
    }


PLACES = ["@real", "@missing", "@missing-same-name", "@fifo", "@folder", "@unreadable",
          "@link-fifo", "@link-zero", "@sparse", "@outside", "@link-outside", "@dotdot",
          "@relative", "@nul", "@etc", "@devzero"]
CWDS = ["@cwd-fifo", "@cwd-zero", "@cwd-folder", "@cwd-big", "@cwd-file", "/", "/proc",
        "relative/dir", ""]
SIDS = [SID, "../../etc/passwd", "../" + SID, SID + "/../x", "..", ".", "a/b", "", " ",
        "-rf", SID.upper(), "é" * 40, "x" * 129, SID + "\x00", "@huge"]
NAMES = [*hook._EVENTS, "SubagentStart", "Notification", "", "Stop\x00", "../x",
         "UserPromptExpansion"]

scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
           | st.sampled_from(["@huge", "@real"]))
junk = st.recursive(scalars, lambda c: st.lists(c, max_size=3)
                    | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8)
FIELDS = {
    "session_id": st.sampled_from(SIDS) | junk,
    "transcript_path": st.sampled_from(PLACES) | junk,
    "agent_transcript_path": st.sampled_from(PLACES) | junk,
    "cwd": st.sampled_from(CWDS) | junk,
    "hook_event_name": st.sampled_from(NAMES) | junk,
    "prompt": st.text(max_size=200) | st.sampled_from(["@huge", "/test --fast", "/"]) | junk,
    "prompt_id": st.text(max_size=20) | junk,
    "tool_name": st.sampled_from(["Bash", "Agent"]) | junk,
    "tool_input": junk,
    "stop_hook_active": junk,
    "source": junk,
}
events = st.fixed_dictionaries({}, optional=FIELDS)
payloads = st.one_of(
    events.map(lambda e: ("event", e)),
    st.binary(max_size=300).map(lambda b: ("raw", b)),
    # Big inputs are named here and built in encode(): their repr would flood the report.
    st.sampled_from([b"", b"null", b"[]", b'"text"', b"{", b"1e999999", b"@deep",
                     b"\xff\xfe{}", b"@huge-id", b"{}" * 1000]).map(lambda b: ("raw", b)),
)


def substitute(value: Any, world: dict[str, str]) -> Any:
    if isinstance(value, str):
        return HUGE if value == "@huge" else world.get(value, value)
    if isinstance(value, list):
        return [substitute(v, world) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, world) for k, v in value.items()}
    return value


def encode(kind: str, value: Any, world: dict[str, str]) -> bytes:
    if kind == "raw":
        assert isinstance(value, bytes)
        big = {b"@deep": b"[" * 100_000,
               b"@huge-id": b'{"session_id": "' + HUGE.encode() + b'"}'}
        return big.get(value, value)
    return json.dumps(substitute(value, world)).encode("utf-8", "surrogatepass")


def run_main(name: str, raw: bytes) -> tuple[dict[str, Any], str]:
    """`python -m tokenbudget.hook NAME` in-process: (parsed stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    real_read = hook.read_stdin
    hook.read_stdin = lambda: raw[: hook.MAX_STDIN]  # what the real read would return
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            hook.main([name])
    finally:
        hook.read_stdin = real_read
    answer = json.loads(out.getvalue())
    assert isinstance(answer, dict)
    return answer, err.getvalue()


def assert_allows(answer: dict[str, Any]) -> None:
    """No budget is anywhere near its limit: nothing may refuse or stop."""
    assert answer.get("decision") != "block", answer
    assert answer.get("continue") is not False, answer
    specific = answer.get("hookSpecificOutput") or {}
    assert specific.get("permissionDecision") != "deny", answer


@pytest.fixture
def world(private_home: Path, tmp_path: Path) -> dict[str, str]:
    w = make_world(private_home, tmp_path / "outside")
    # Budgets far from their limits, so every decision is made and none may block.
    write_config(Path(os.environ["TOKENBUDGET_HOME"]), {"kind": "session", "limit": "1000M"},
                 {"kind": "daily", "limit": "$1000000"}, {"kind": "command", "name": "/test",
                                                           "limit": "1000M"})
    return w


# bench/stress_reliability.py raises the count and lets Hypothesis pick new inputs each run;
# the suite runs the same 250 every time.
EXAMPLES = int(os.environ.get("TOKENBUDGET_HYPOTHESIS_EXAMPLES", "250"))


@settings(max_examples=EXAMPLES, deadline=None,
          derandomize="TOKENBUDGET_HYPOTHESIS_EXAMPLES" not in os.environ,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(payload=payloads, name=st.sampled_from(NAMES))
def test_hostile_input_never_crashes_blocks_hangs_or_writes_elsewhere(
    world: dict[str, str], tmp_path: Path, payload: tuple[str, Any], name: str
) -> None:
    state = Path(os.environ["TOKENBUDGET_HOME"])
    raw = encode(*payload, world)
    before = tree(tmp_path, skip=state)
    with time_limit(BOUND):
        if name in hook._EVENTS:
            # handle() is what main() guards: an exception here is a bug main() only hides.
            answer = hook.handle(name, raw)
            assert isinstance(answer, dict)
            json.dumps(answer)
            assert_allows(answer)
        answer, _ = run_main(name, raw)
    assert_allows(answer)
    assert "internal error" not in json.dumps(answer), answer
    assert tree(tmp_path, skip=state) == before
    unexpected = [p.name for p in state.iterdir()
                  if p.name not in STATE_FILES and not p.name.startswith("ledger.json.corrupt-")]
    assert unexpected == []


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("name", ["UserPromptSubmit", "PreToolUse", "Stop"])
def test_every_trap_as_transcript(world: dict[str, str], tmp_path: Path, place: str,
                                  name: str) -> None:
    state = Path(os.environ["TOKENBUDGET_HOME"])
    before = tree(tmp_path, skip=state)
    raw = json.dumps({"session_id": SID, "transcript_path": world[place], "prompt": "x",
                      "prompt_id": "p", "cwd": "/home/dev/project"}).encode()
    with time_limit(BOUND):
        answer = hook.handle(name, raw)
    assert_allows(answer)
    assert "internal error" not in json.dumps(answer)
    assert tree(tmp_path, skip=state) == before
    # With nothing to read the hook answers from the ledger as it is, and writes none.
    written = (state / "ledger.json").exists()
    read = set(stored_ledger(state)["files"]) if written else set()
    # Only regular files inside Claude Code's projects folder, named after the session, are
    # read (the chmod-000 copy too when we are root, whom modes do not stop).
    assert read <= {world["@real"], world["@unreadable"], world["@sparse"]}, read
    if place in ("@outside", "@link-outside", "@etc", "@devzero", "@relative", "@nul"):
        assert read == set()


@pytest.mark.parametrize("cwd", [c for c in CWDS if c.startswith("@")])
def test_every_trap_as_project_folder(world: dict[str, str], cwd: str) -> None:
    raw = json.dumps({"session_id": SID, "transcript_path": world["@real"], "prompt": "x",
                      "cwd": world[cwd]}).encode()
    with time_limit(BOUND):
        answer = hook.handle("UserPromptSubmit", raw)
    assert_allows(answer)
    assert "internal error" not in json.dumps(answer)


# The real shim, in a subprocess with a timeout: the inputs most likely to hang or crash.
SHIM_CASES = [
    ("empty stdin", b"", "UserPromptSubmit"),
    ("not JSON", b"\xff\x00 not json {", "PreToolUse"),
    ("wrong types", b'{"session_id": [1], "transcript_path": {}, "cwd": 5, "prompt": null}',
     "Stop"),
    ("huge stdin", b'{"prompt": "' + b"y" * (12 * 1024 * 1024) + b'"}', "UserPromptSubmit"),
    ("deep nesting", b"[" * 500_000, "PreToolUse"),
    # No event argument: the name is read from the JSON itself (found by Hypothesis).
    ("deep nesting, no event name", b"[" * 500_000, ""),
    ("event name only in the JSON", b'{"hook_event_name": "Stop", "session_id": 1}', ""),
    ("FIFO transcript", "@fifo", "UserPromptSubmit"),
    ("link to FIFO", "@link-fifo", "Stop"),
    ("folder transcript", "@folder", "PreToolUse"),
    ("200 MB sparse transcript", "@sparse", "UserPromptSubmit"),
    ("session id ../", "../../etc/passwd", "UserPromptSubmit"),
    ("project budget file is a FIFO", "@cwd-fifo", "UserPromptSubmit"),
    ("project budget file is /dev/zero", "@cwd-zero", "UserPromptSubmit"),
]


@pytest.mark.parametrize("label,spec,name", SHIM_CASES, ids=[c[0] for c in SHIM_CASES])
def test_shim_with_hostile_input(world: dict[str, str], tmp_path: Path, label: str,
                                 spec: bytes | str, name: str) -> None:
    state = Path(os.environ["TOKENBUDGET_HOME"])
    if isinstance(spec, bytes):
        raw = spec
    elif spec.startswith("@cwd"):
        raw = json.dumps({"session_id": SID, "transcript_path": world["@real"],
                          "cwd": world[spec], "prompt": "x"}).encode()
    elif spec.startswith("@"):
        raw = json.dumps({"session_id": SID, "transcript_path": world[spec],
                          "prompt": "x"}).encode()
    else:
        raw = json.dumps({"session_id": spec, "transcript_path": world["@real"],
                          "prompt": "x"}).encode()
    before = tree(tmp_path, skip=state)
    rc, answer, err, elapsed = run_shim(name, raw, timeout=BOUND + 5)
    assert rc == 0, err
    assert elapsed < BOUND
    assert_allows(answer)
    assert "internal error" not in json.dumps(answer) and "Traceback" not in err
    assert tree(tmp_path, skip=state) == before


def test_unreadable_transcript_even_for_root(private_home: Path) -> None:
    """chmod 000 stops no one when CI runs as root, so then the hook runs in a child process
    that dropped root for `nobody`, over a world nobody owns but for the transcript."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="tokenbudget-nobody-"))  # /tmp: nobody can reach it
    try:
        home = base / "home"
        home.mkdir()
        install_fixture("loop", home / ".claude")
        transcript = next((home / ".claude" / "projects").glob(f"*/{SID}.jsonl"))
        state = home / "tb"
        nobody = 65534 if os.geteuid() == 0 else None
        if nobody is not None:
            base.chmod(0o755)
            for dirpath, dirnames, filenames in os.walk(base):
                for n in dirnames + filenames:
                    os.chown(os.path.join(dirpath, n), nobody, nobody)
            os.chown(transcript, 0, 0)
        transcript.chmod(0)
        payload = json.dumps({"session_id": SID, "transcript_path": str(transcript),
                              "prompt": "x"}).encode()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            code = 1
            try:
                os.environ.update(HOME=str(home), TOKENBUDGET_HOME=str(state))
                if nobody is not None:
                    os.setgroups([])
                    os.setgid(nobody)
                    os.setuid(nobody)
                answer, _ = run_main("UserPromptSubmit", payload)
                os.write(w, json.dumps(answer).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            out = f.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        answer = json.loads(out)
        assert_allows(answer)
        ledger = stored_ledger(state)
        assert ledger["files"] == {}  # nothing read, no position recorded
        # The session's own transcript could not be read, so its budget cannot be measured:
        # the answer must say so rather than allow in silence.
        assert "could not read" in answer.get("systemMessage", ""), answer
    finally:
        shutil.rmtree(base, ignore_errors=True)
