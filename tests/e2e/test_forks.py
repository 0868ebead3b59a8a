"""Each session is charged exactly the requests it sent, whatever Claude Code copies into a fork.

The fake API records the `X-Claude-Code-Session-Id` header of every request: that is the truth
per session. The ledger, built from the transcripts in any order, must equal it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest

from tests.helpers import ORDERS, discover_in, stored_ledger
from tokenbudget import claude_settings, history, query, sync, transcripts
from tokenbudget.usage import Usage

from .conftest import ClaudeRun, RunClaude, claude_env, project_dir_name
from .fake_api import FakeAnthropic
from .test_statusline_tty import Screen

pytestmark = pytest.mark.e2e


def truth_per_session(fake: FakeAnthropic) -> dict[str, Usage]:
    """What each session's requests used, as the fake API served them."""
    sent = [
        {name.lower(): value for name, value in c.headers.items()}
        for c in fake.calls
        if c.method == "POST" and c.path.split("?")[0] == "/v1/messages"
    ]
    assert sent and all("x-claude-code-session-id" in h for h in sent)
    out: dict[str, Usage] = {}
    for r in fake.requests:
        assert r.session_id is not None, r
        u = Usage(
            r.input_tokens,
            r.output_tokens,
            r.cache_creation_input_tokens,
            0,
            r.cache_read_input_tokens,
        )
        out[r.session_id] = out.get(r.session_id, Usage()) + u
    return out


def ledger_per_session(monkeypatch: pytest.MonkeyPatch, order: str) -> dict[str, Usage]:
    """A fresh backfill of every transcript, the sessions read in `order`."""
    monkeypatch.setattr(transcripts, "discover", lambda dirs: discover_in(order, dirs))
    store = sync.open_store()
    Path(store.file).unlink(missing_ok=True)
    history.history_path().unlink(missing_ok=True)
    sync.sync_all(store)
    ledger = store.snapshot()
    groups = query.group("session", query.cells(ledger, history.read_records(ledger)), UTC)
    return {g.key: g.usage for g in groups if g.usage.total}


def assert_exact(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> None:
    want = truth_per_session(fake)
    for order in ORDERS:
        got = ledger_per_session(monkeypatch, order)
        assert got == want, order


def ok(run: ClaudeRun) -> str:
    assert run.proc.returncode == 0, run.proc.stderr[-3000:]
    return run.session_id


def fork(run_claude: RunClaude, prompt: str, parent: str, cwd: Path | None = None) -> str:
    return ok(run_claude(prompt, cwd=cwd, args=["--resume", parent, "--fork-session"]))


def test_forks_of_compacted_sessions_are_charged_only_their_own_requests(
    run_claude: RunClaude, fake_api: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = ok(run_claude("please LOOP 1"))
    ok(run_claude("/compact", args=["-c"]))
    once = fork(run_claude, "hello from the fork", parent)
    fork(run_claude, "hello from the fork of the fork", once)
    ok(run_claude("more in the parent", args=["--resume", parent]))
    ok(run_claude("/compact", args=["--resume", parent]))
    fork(run_claude, "hello after two compactions", parent)
    assert [r.kind for r in fake_api.requests].count("compact") == 2
    assert len(truth_per_session(fake_api)) == 4
    assert_exact(fake_api, monkeypatch)


def test_a_fork_of_a_fork_whose_only_work_was_compact(
    run_claude: RunClaude, fake_api: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second fork's copies all name the first session (the compacting fork wrote no
    # response of its own), yet its total starts from the compacting fork's.
    parent = ok(run_claude("please LOOP 1"))
    compacting = fork(run_claude, "/compact", parent)
    last = fork(run_claude, "hello from the fork of the compaction", compacting)
    truth = truth_per_session(fake_api)
    assert [r.kind for r in fake_api.requests].count("compact") == 1
    assert set(truth) == {parent, compacting, last}
    assert_exact(fake_api, monkeypatch)


def test_forks_of_sessions_with_subagents_are_charged_only_their_own_requests(
    run_claude: RunClaude, fake_api: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = ok(run_claude("AGENT please", allowed_tools=("Bash", "Agent")))
    once = fork(run_claude, "hello from the fork", parent)
    assert ok(run_claude("more in the fork", args=["-c"])) == once
    twice = ok(
        run_claude(
            "AGENT in the fork of the fork",
            args=["--resume", once, "--fork-session"],
            allowed_tools=("Bash", "Agent"),
        )
    )
    fake_api.wait_for(10)
    assert [r.session_id for r in fake_api.requests if r.sub] == [parent, twice]
    assert_exact(fake_api, monkeypatch)


def test_a_fork_made_from_another_folder_leaves_its_parent_its_requests(
    run_claude: RunClaude,
    fake_api: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    parent = ok(run_claude("please LOOP 1", cwd=tmp_path / "project"))
    # "a" sorts before "project": a backfill reads the fork's folder first.
    fork(run_claude, "hello from elsewhere", parent, cwd=tmp_path / "a elsewhere")
    folders = sorted(p.name for p in (tmp_path / "home dir/.claude/projects").iterdir())
    assert len(folders) == 2
    assert_exact(fake_api, monkeypatch)


class Interactive:
    """Claude Code run interactively in tmux, one prompt a run, then /exit."""

    def __init__(self, claude_bin: Path, home: Path, fake: FakeAnthropic, tmp_path: Path) -> None:
        self.claude_bin, self.home, self.fake = claude_bin, home, fake
        self.screens: list[Screen] = []
        self.cwd = tmp_path / "project"
        self.cwd.mkdir(exist_ok=True)
        self.tmp_path = tmp_path
        claude_json = home / ".claude.json"
        state = json.loads(claude_json.read_text()) if claude_json.exists() else {}
        # Answered in advance: onboarding done, the API key from the environment, this folder
        # trusted.
        state["hasCompletedOnboarding"] = True
        state["customApiKeyResponses"] = {"approved": ["test"], "rejected": []}
        state["projects"] = {str(self.cwd): {"hasTrustDialogAccepted": True}}
        claude_json.write_text(json.dumps(state))
        self.runs = 0

    def start(self, *args: str) -> Screen:
        """Claude Code started with `args` in a tmux server of its own, ready for a prompt."""
        env = claude_env(self.home, self.fake.base_url)
        # What an interactive session sends besides the conversation is part of the point.
        env.pop("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC")
        exports = "".join(
            f"export {k}={shlex.quote(v)}\n" for k, v in env.items() if k.isidentifier()
        )
        self.runs += 1
        script = self.tmp_path / f"interactive-{self.runs}.sh"
        command = shlex.join([str(self.claude_bin), *args])
        script.write_text(f"#!/bin/sh\n{exports}exec {command}\n")
        script.chmod(0o700)
        # A tmux server of its own for each run: one just left may still be shutting down.
        screen = Screen(self.tmp_path / f"tmux-{self.runs}.sock")
        self.screens.append(screen)
        screen.start(script, self.cwd)
        screen.wait_for(r"^❯")
        return screen

    def run(self, prompt: str, *args: str) -> str:
        """Start Claude Code with `args`, send `prompt`, wait for the answer, exit; the session
        id of the transcript written (its last cost-state is there)."""
        folder = self.home / ".claude" / "projects" / project_dir_name(self.cwd)
        before = {p: p.stat().st_size for p in folder.glob("*.jsonl")} if folder.exists() else {}
        served = len(self.fake.requests)
        screen = self.start(*args)
        screen.tmux("send-keys", "-t", "0", prompt, "Enter")
        self.fake.wait_for(served + 1, timeout=60)
        screen.wait_for(r"Answer [0-9]+\.")
        screen.tmux("send-keys", "-t", "0", "/exit", "Enter")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            grown = [
                p
                for p in folder.glob("*.jsonl")
                if p.stat().st_size != before.get(p)
                and b'"cost-state"' in p.read_bytes()[before.get(p, 0) :]
            ]
            if grown and self._exited(screen):
                # An interactive fork writes its total before the lines it copies: its
                # transcript is whole only once Claude Code has exited.
                return grown[0].stem
            time.sleep(0.5)
        pytest.fail(
            f"no transcript got a cost-state, or Claude Code did not exit:\n{screen.text()}"
        )

    @staticmethod
    def _exited(screen: Screen) -> bool:
        """Whether Claude Code has exited: it was exec'd, so its tmux server ends with it."""
        done = subprocess.run(
            ["tmux", "-S", str(screen.socket), "has-session"], capture_output=True, check=False
        )
        return done.returncode != 0


@pytest.fixture
def interactive(
    claude_bin: Path, private_home: Path, fake_api: FakeAnthropic, tmp_path: Path
) -> Iterator[Interactive]:
    if shutil.which("tmux") is None:
        pytest.fail("the interactive fork test needs tmux (apt-get install tmux)")
    claude = Interactive(claude_bin, private_home, fake_api, tmp_path)
    yield claude
    for screen in claude.screens:
        # Only this test's own servers, by their sockets.
        subprocess.run(["tmux", "-S", str(screen.socket), "kill-server"], capture_output=True)


def test_an_interactive_fork_is_charged_only_its_own_requests(
    interactive: Interactive, fake_api: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    claude = interactive
    parent = claude.run("please LOOP 1")
    fork = claude.run("hello from the fork", "--continue", "--fork-session")
    assert fork != parent
    # A new interactive session asks for a title: a request in no transcript line, only in
    # the parent's cost-state, from which the fork's starts.
    [title] = [r for r in fake_api.requests if "Write the title" in r.prompt]
    assert title.session_id == parent
    assert_exact(fake_api, monkeypatch)


def test_a_session_ended_by_clear_is_counted_whole_by_the_next_sessions_hooks(
    interactive: Interactive, fake_api: FakeAnthropic, private_home: Path, tmp_path: Path
) -> None:
    # /compact, then /clear: the compaction is only in the ended session's last cost-state,
    # which Claude Code writes after that session's last hook. With our hooks live, the new
    # session's next hook counts it; no sync is run here.
    settings = tmp_path / "hooks.json"
    settings.write_text(json.dumps({"hooks": claude_settings.desired_hooks(sys.executable)}))
    claude = interactive
    screen = claude.start("--settings", str(settings))
    screen.tmux("send-keys", "-t", "0", "hello", "Enter")
    screen.wait_for(r"Answer [0-9]+\.")
    screen.tmux("send-keys", "-t", "0", "/compact", "Enter")
    fake_api.wait_for(2)  # (the title request may come too)
    deadline = time.monotonic() + 60
    while not any(r.kind == "compact" for r in fake_api.requests):
        assert time.monotonic() < deadline, screen.text()
        time.sleep(0.2)
    screen.wait_for(r"Compacted")
    screen.tmux("send-keys", "-t", "0", "/clear", "Enter")
    time.sleep(2)
    served = len(fake_api.requests)
    screen.tmux("send-keys", "-t", "0", "hello again", "Enter")
    fake_api.wait_for(served + 1)
    screen.wait_for(r"Answer [0-9]+\.")  # the screen was cleared: this turn's answer
    truth = truth_per_session(fake_api)
    [old] = [r.session_id for r in fake_api.requests if r.kind == "compact"]
    assert old is not None and len(truth) == 2
    ledger = stored_ledger(private_home / "tb state")
    s = ledger["sessions"][old]
    assert Usage(*(sum(m[i] for m in s["m"].values()) for i in range(5))) == truth[old]


def _fork_while_it_runs(run_claude: RunClaude, claude_bin: Path, fake_api: FakeAnthropic,
                        private_home: Path, prompt: str, args: list[str], tmp_path: Path,
                        kill: bool = False) -> str:
    """The session `prompt` runs (its tool sleeping), forked once its first response is on
    disk: the fork copies that response while the parent's process has written no total
    since (`kill`: the parent is killed first, and never writes one). Returns the parent's
    session id."""
    from .conftest import parse_output, start_claude

    parent = str(args[1]) if args else str(uuid.uuid4())
    cwd = tmp_path / "project"
    cwd.mkdir(exist_ok=True)
    served = len(fake_api.requests)
    fake_api.bash_command = "sleep 8; echo step {step}"
    cmd = [str(claude_bin), "-p", prompt, "--output-format", "json", "--allowedTools", "Bash",
           *(args or ["--session-id", parent])]
    with start_claude(cmd, cwd, claude_env(private_home, fake_api.base_url)) as running:
        transcript = private_home / ".claude/projects" / project_dir_name(cwd) / f"{parent}.jsonl"
        fake_api.wait_for(served + 1)
        deadline = time.monotonic() + 30
        while b'"tool_use"' not in (transcript.read_bytes() if transcript.exists() else b""):
            assert time.monotonic() < deadline, "the parent's first response never came"
            time.sleep(0.05)
        if kill:
            os.killpg(running.pid, signal.SIGKILL)
            running.communicate(timeout=60)
        fork(run_claude, "hello from the fork", parent)
        if kill:
            return parent
        assert running.poll() is None, "the parent ended before its fork was made"
        out, err = running.communicate(timeout=120)
    assert running.returncode == 0 and parse_output(out), err[-3000:]
    return parent


@pytest.mark.parametrize("parent_is", ["in its first process", "resumed", "killed"])
def test_a_fork_of_a_running_session_is_charged_its_own_compaction(
    run_claude: RunClaude, claude_bin: Path, fake_api: FakeAnthropic, private_home: Path,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, parent_is: str,
) -> None:
    # The fork copies a response of the parent's running process, which no total the parent
    # wrote holds yet: the fork's total starts without it (from the parent's last total, or
    # from nothing in its first process), whatever the parent writes later, or if it is
    # killed and never writes one. The copied context is huge, so the fork compacts before
    # its first request: a request in no transcript line, only in its total.
    args: list[str] = []
    if parent_is == "resumed":
        args = ["--resume", ok(run_claude("please LOOP 1"))]
    parent = _fork_while_it_runs(run_claude, claude_bin, fake_api, private_home,
                                 "HUGE please LOOP 1", args, tmp_path,
                                 kill=parent_is == "killed")
    truth = truth_per_session(fake_api)
    [forked] = [s for s in truth if s != parent]
    assert [r.session_id for r in fake_api.requests if r.kind == "compact"].count(forked) == 1
    assert_exact(fake_api, monkeypatch)


@pytest.mark.parametrize("huge", ["the parent's last response", "the fork's first response"])
@pytest.mark.parametrize("parent_is", ["in its first process", "resumed"])
def test_a_fork_made_while_its_parents_stop_hooks_run_is_charged_its_own_compaction(
    run_claude: RunClaude, claude_bin: Path, fake_api: FakeAnthropic, private_home: Path,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, parent_is: str, huge: str,
) -> None:
    # The parent's last response is on disk, but its process writes the total holding it only
    # after its Stop hooks have run: the fork, made meanwhile, copies that response and starts
    # its total from the parent's total before it (or from nothing), though no request of the
    # parent comes between the fork point and the total written after it. Two things tell:
    # the parent's Stop hook summary, which the fork did not copy, and, where that response
    # reports a huge context, the fork's own total, which does not hold it. The fork compacts
    # the huge context, at once or after its first response: requests in no transcript line,
    # only in its total.
    from .conftest import ClaudeRun, parse_output, start_claude, wait_for_session_end

    ours = claude_settings.desired_hooks(sys.executable)
    settings = tmp_path / "hooks.json"
    settings.write_text(json.dumps({"hooks": ours}))
    started = tmp_path / "stop hook started"
    slow = json.loads(json.dumps(ours))
    slow.setdefault("Stop", []).append({"hooks": [{
        "type": "command", "timeout": 60,
        "command": f"touch {shlex.quote(str(started))}; sleep 10",
    }]})
    slow_settings = tmp_path / "slow stop hooks.json"
    slow_settings.write_text(json.dumps({"hooks": slow}))
    parent = str(uuid.uuid4())
    args = ["--session-id", parent]
    runs: list[ClaudeRun] = []
    if parent_is == "resumed":
        runs.append(run_claude("please LOOP 1", settings=settings))
        parent = ok(runs[-1])
        args = ["--resume", parent]
    cwd = tmp_path / "project"
    cwd.mkdir(exist_ok=True)
    served = len(fake_api.requests)
    last_prompt, fork_prompt = "HUGE hello", "hello from the fork"
    if huge == "the fork's first response":
        last_prompt, fork_prompt = "hello", "HUGE please LOOP 1"
    cmd = [str(claude_bin), "-p", last_prompt, "--output-format", "json", "--allowedTools",
           "Bash", "--settings", str(slow_settings), *args]
    transcript = private_home / ".claude/projects" / project_dir_name(cwd) / f"{parent}.jsonl"
    with start_claude(cmd, cwd, claude_env(private_home, fake_api.base_url)) as running:
        [last] = fake_api.wait_for(served + 1)[served:]
        deadline = time.monotonic() + 30
        while not started.exists() or last.id.encode() not in transcript.read_bytes():
            assert time.monotonic() < deadline, "the parent's Stop hook never ran"
            time.sleep(0.05)
        runs.append(run_claude(fork_prompt, settings=settings,
                               args=["--resume", parent, "--fork-session"]))
        forked = ok(runs[-1])
        assert running.poll() is None, "the parent ended before its fork was made"
        out, err = running.communicate(timeout=120)
    assert running.returncode == 0 and parse_output(out), err[-3000:]
    runs.append(ClaudeRun(subprocess.CompletedProcess(cmd, 0, out, err), parse_output(out),
                          private_home, cwd))
    truth = truth_per_session(fake_api)
    assert set(truth) == {parent, forked}
    assert [r.session_id for r in fake_api.requests if r.kind == "compact"] == [forked]
    # As our hooks counted it, then as a backfill reads it in every order.
    wait_for_session_end(private_home / "tb state" / "ledger.json", *runs)
    sessions = stored_ledger(private_home / "tb state")["sessions"]
    hooked = {sid: Usage(*(sum(m[i] for m in sessions[sid]["m"].values()) for i in range(5)))
              for sid in truth}
    assert hooked == truth
    # In a state folder of its own: a hook may still be checking what it committed.
    monkeypatch.setenv("TOKENBUDGET_HOME", str(tmp_path / "backfill state"))
    assert_exact(fake_api, monkeypatch)


@pytest.mark.parametrize("huge", [
    "the parent's last response",
    pytest.param("the fork's first response", marks=pytest.mark.xfail(strict=True, reason=(
        "the fork's total holds the parent's next one: only the fork's startTime (its own, "
        "not the parent's) and totalDuration (below the parent's) tell, which are not read"))),
])
def test_a_fork_of_an_idle_interactive_session_is_charged_its_own_compaction(
    interactive: Interactive, run_claude: RunClaude, fake_api: FakeAnthropic,
    private_home: Path, monkeypatch: pytest.MonkeyPatch, huge: str,
) -> None:
    # An interactive session writes its total only when it exits. Forked while it waits for
    # its next prompt, the fork copies its last response and starts from nothing; the total
    # the parent writes at its exit comes after the fork point with no line between. Where
    # it holds a huge response, the fork's own total does not hold it: it was written after
    # the fork.
    last_prompt, fork_prompt = "HUGE hello", "hello from the fork"
    if huge == "the fork's first response":
        last_prompt, fork_prompt = "hello", "HUGE please LOOP 1"
    claude = interactive
    screen = claude.start()
    screen.tmux("send-keys", "-t", "0", last_prompt, "Enter")
    screen.wait_for(r"Answer [0-9]+\.")
    folder = private_home / ".claude/projects" / project_dir_name(claude.cwd)
    [transcript] = folder.glob("*.jsonl")
    # (Not the title request, which is in no transcript line.)
    served = [r.id.encode() for r in fake_api.requests if "Write the title" not in r.prompt]
    deadline = time.monotonic() + 30
    while not all(i in transcript.read_bytes() for i in served):
        assert time.monotonic() < deadline, "the parent's response never came to its transcript"
        time.sleep(0.1)
    parent = transcript.stem
    forked = fork(run_claude, fork_prompt, parent, cwd=claude.cwd)
    assert b'"cost-state"' not in transcript.read_bytes()
    screen.tmux("send-keys", "-t", "0", "/exit", "Enter")
    deadline = time.monotonic() + 60
    while b'"cost-state"' not in transcript.read_bytes() or not claude._exited(screen):
        assert time.monotonic() < deadline, screen.text()
        time.sleep(0.2)
    truth = truth_per_session(fake_api)
    assert set(truth) == {parent, forked}
    assert [r.session_id for r in fake_api.requests if r.kind == "compact"] == [forked]
    assert_exact(fake_api, monkeypatch)
