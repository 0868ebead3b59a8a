#!/usr/bin/env python3
"""What a whole turn pays for tokenbudget's hooks: the real Claude Code, `claude -p "please LOOP
10"` (11 API requests, 10 Bash calls) against the instant fake API of the end-to-end tests, with
each set of hooks and without any, interleaved; (time with - time without) / requests served.

    python bench/turn.py [--rounds 15] [--variants none,main,...] [--loop 10] [--turns N[,M]]

`--turns N`: a session of N turns in one Claude Code process instead of one `claude -p` turn a
process: `claude -p --input-format stream-json --output-format stream-json` reading the N
prompts from its stdin, each sent once the turn before has its result (as a user at the prompt
of an interactive session would); the process started and ended once. Each turn must be served
in full (LOOP + 1 requests, a `success` result that `completed`), and the hooks' ledger must
hold every request of all N turns. (time with - time without) / requests served, as for one turn.
`--turns N,M`: sessions of N and of M turns, interleaved in the same rounds, each reported, and
each variant's cost split round by round into what it pays once a process and once a turn.

Besides the whole run, each run's time is cut at the fake's request arrivals: `start` (spawn to
the first request: the process's start-up, SessionStart, the first UserPromptSubmit), `turn 1`
(its first request to its last), `turn k` (the last request of turn k-1 to the last of turn k:
that Stop, the result, the next prompt's UserPromptSubmit, its tool batches) and `end` (the last
request to the process's exit: the last Stop, the result, SessionEnd, the teardown); each
reported minus `none`'s in the same round (median of the pairs).

Needs the pinned Claude Code (`bash scripts/install-claude-code.sh` prints its path; or set
TOKENBUDGET_CLAUDE_BIN). tokenbudget is installed non-editable and compiled into a venv under
$TB_BENCH_DIR (default: a folder of this checkout's own in the temp folder), as a real install
is. Every run starts from the same tokenbudget state: the config with five budgets none of which
is near (bench/common.py), an empty ledger (pass --ledger FILE to start every run from a copy of
that ledger instead).

Variants (each a settings file passed with --settings):
- none: no hooks at all (the baseline).
- true: every event of `main` registered as `true`: what Claude Code itself pays per hook.
- http-noop: every event of `main` as an http hook to a local answerer that says `{}`.
- installed-noop, resident-noop: the hooks of `installed` and `resident`, each doing nothing
  (`true`, or the `{}` answerer): Claude Code's own cost of those hooks.
- main: the hooks as 0.1.x registered them (SessionStart, UserPromptSubmit, PreToolUse,
  PostToolBatch, Stop, SubagentStop, SessionEnd, all waited for), `python -P -c ...`.
- nopre: main without PreToolUse (lever 1).
- pre-true: main with PreToolUse as `true`: the best a shell pre-filter could do (lever 1).
- async: main with SubagentStop and SessionEnd async (lever 2).
- fast: main started with `python -I -S` and the package's folder on sys.path (lever 3).
- installed: what this tree's `tokenbudget install` writes (levers 1-3 together).
- resident-nopre: a prototype of lever 4, hook.handle in one warm process behind http hooks
  (no PreToolUse); not something tokenbudget ships.
- resident: what `tokenbudget install --resident` writes (PostToolBatch and Stop as http hooks
  to the resident answerer, started on demand by the SessionStart hook, which Claude Code does
  not wait for, and checked by each UserPromptSubmit); the answerer stays up from run to run,
  as it does between turns.
- resident-stopcmd: resident with Stop a command hook again (the choice it made).
- resident-base: resident as written by the package at git `--base REF` (installed into a
  venv of its own): a change against what came before, in the same run.
- resident-base-noop: the hooks of resident-base, each doing nothing: the floor of that layout.
- resident-noop-batch, resident-noop-turn, resident-noop-prompt: resident-noop's PostToolBatch
  alone (once a request but the last), everything but it (once a turn or session),
  UserPromptSubmit alone; resident-noop-stop: the Stop http hook alone (one http hook a
  process): which events the floor is spent on.
- The parts of `install --resident`'s cost: resident-noop-http (its two http hooks alone,
  PostToolBatch and Stop, doing nothing; real ones alone would find no answerer started nor the
  session noted by a command hook), resident-prompt (its UserPromptSubmit relay alone: a Python
  start, the answerer checked, the session's first event read there), resident-prompt-off (the
  same command with TOKENBUDGET_DISABLE=1: the Python start alone, no answerer asked),
  resident-nosession (all but the async SessionStart and SessionEnd hooks).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

sys.path.insert(0, str(common.REPO))
from tests.e2e.fake_api import FakeAnthropic

HOOK_CODE = "from tokenbudget.hook import main; main()"


class StampedFake(FakeAnthropic):
    """The fake API, the arrival of each Messages request stamped (time.perf_counter)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrivals: list[float] = []

    def _record_call(self, call: Any) -> None:
        if call.method == "POST" and call.path.split("?")[0] == "/v1/messages":
            self.arrivals.append(time.perf_counter())
        super()._record_call(call)
# The events and timeouts of 0.1.x (claude_settings.OUR_EVENTS before this work), spelled out
# so that the baseline does not move when the package changes.
MAIN_EVENTS: dict[str, tuple[int, str | None]] = {
    "SessionStart": (10, ""),
    "UserPromptSubmit": (10, None),
    "PreToolUse": (10, "*"),
    "PostToolBatch": (10, None),
    "Stop": (10, None),
    "SubagentStop": (10, ""),
    "SessionEnd": (2, ""),
}

Settings = dict[str, Any]


def _settings(entries: dict[str, tuple[int, str | None, str, bool]]) -> Settings:
    """{"Event": (timeout, matcher, command, async)} as a settings file's `hooks`."""
    hooks: dict[str, Any] = {}
    for event, (timeout, matcher, command, is_async) in entries.items():
        hook: dict[str, Any] = {"type": "command", "command": command, "timeout": timeout}
        if is_async:
            hook["async"] = True
        group: dict[str, Any] = {} if matcher is None else {"matcher": matcher}
        group["hooks"] = [hook]
        hooks[event] = [group]
    return {"hooks": hooks}


def _site(py: Path) -> str:
    code = "import os, tokenbudget; print(os.path.dirname(os.path.dirname(tokenbudget.__file__)))"
    return subprocess.run([str(py), "-P", "-c", code], check=True, capture_output=True, text=True,
                          env=common.clean_env(), cwd=str(common.WORK)).stdout.strip()


def main_hooks(py: Path, *, without: tuple[str, ...] = (), is_async: tuple[str, ...] = (),
               fast: bool = False, pre: str | None = None) -> Settings:
    """0.1.x's hooks, less the events `without`, `is_async` ones async, `fast`: started with
    `-I -S` and the package's folder on sys.path; `pre`: PreToolUse's command instead."""
    q = shlex.quote
    if fast:
        code = f"import sys; sys.path.append({_site(py)!r}); {HOOK_CODE}"
        start = f"{q(str(py))} -I -S -c {q(code)}"
    else:
        start = f"{q(str(py))} -P -c {q(HOOK_CODE)}"
    return _settings({
        e: (t, m, pre if e == "PreToolUse" and pre else f"{start} {e}", e in is_async)
        for e, (t, m) in MAIN_EVENTS.items() if e not in without
    })


def true_hooks(py: Path) -> Settings:
    return _settings({e: (t, m, "true", False) for e, (t, m) in MAIN_EVENTS.items()})


class NoopAnswerer:
    """A local HTTP answerer that says `{}` to every hook: what an http hook costs Claude Code."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            # As the resident answerer serves (tokenbudget/answerer.py): connections kept
            # alive, the body not held back by Nagle's algorithm. Before, a new connection a
            # hook and the reply's two writes added up to milliseconds a call to the floor.
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        import threading

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


_NOOP: list[NoopAnswerer] = []


def http_noop_hooks(py: Path) -> Settings:
    if not _NOOP:
        _NOOP.append(NoopAnswerer())
    hooks: dict[str, Any] = {}
    for e, (t, m) in MAIN_EVENTS.items():
        group: dict[str, Any] = {} if m is None else {"matcher": m}
        group["hooks"] = [{"type": "http", "url": _NOOP[0].url, "timeout": t}]
        hooks[e] = [group]
    return {"hooks": hooks}


# A resident answerer as a prototype: the same hook.handle, in one warm process, behind http.
_RESIDENT_CODE = """
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from tokenbudget import hook

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        event = self.path.rsplit("/", 1)[-1]
        try:
            answer = hook.handle(event, raw)
        except Exception as e:
            answer = {"systemMessage": f"tokenbudget: {e}"}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

server = HTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""

_RESIDENTS: list[subprocess.Popen[str]] = []


def resident_hooks(py: Path, state: Path) -> Settings:
    # The variant's HOME: a hook reads only transcripts inside Claude Code's folders there.
    env = common.clean_env(HOME=str(state.parent / "home"), XDG_DATA_HOME=str(state / "data"),
                           XDG_CONFIG_HOME=str(state / "config"))
    proc = subprocess.Popen([str(py), "-P", "-c", _RESIDENT_CODE], stdout=subprocess.PIPE,
                            text=True, env=env, cwd=str(common.WORK))
    _RESIDENTS.append(proc)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    hooks: dict[str, Any] = {}
    for e, (t, m) in MAIN_EVENTS.items():
        if e == "PreToolUse":
            continue
        group: dict[str, Any] = {} if m is None else {"matcher": m}
        group["hooks"] = [{"type": "http", "url": f"http://127.0.0.1:{port}/hook/{e}",
                           "timeout": t}]
        hooks[e] = [group]
    return {"hooks": hooks}


def installed_hooks(py: Path) -> Settings:
    """What this tree's `tokenbudget install` writes (claude_settings.desired_hooks, with the
    quick start when the interpreter allows it)."""
    code = (
        "import json, sys; from tokenbudget import claude_settings as c; "
        "print(json.dumps(c.desired_hooks(sys.argv[1], c.site_paths(sys.argv[1]))))"
    )
    out = subprocess.run([str(py), "-P", "-c", code, str(py)], check=True, capture_output=True,
                         text=True, env=common.clean_env(), cwd=str(common.WORK)).stdout
    return {"hooks": json.loads(out)}


def resident_installed_hooks(py: Path, state: Path, stop_command: bool = False) -> Settings:
    """What `tokenbudget install --resident` writes, its key kept in the variant's state."""
    code = (
        "import json, sys; from tokenbudget import claude_settings as c, resident as r; "
        "s = r.create(); r.save(s); p = c.site_paths(sys.argv[1]); "
        "print(json.dumps([c.desired_hooks(sys.argv[1], p, s), c.desired_hooks(sys.argv[1], p)]))"
    )
    env = common.clean_env(XDG_DATA_HOME=str(state / "data"),
                           XDG_CONFIG_HOME=str(state / "config"))
    out = subprocess.run([str(py), "-P", "-c", code, str(py)], check=True, capture_output=True,
                         text=True, env=env, cwd=str(common.WORK)).stdout
    hooks, commands = json.loads(out)
    if stop_command:
        hooks["Stop"] = commands["Stop"]
    return {"hooks": hooks}


def as_noop(settings: Settings) -> Settings:
    """The same events, matchers and async flags, each hook doing nothing: a command hook
    `true`, an http hook the `{}` answerer. What Claude Code's side of a set of hooks costs,
    the floor under anything the hooks could do."""
    if not _NOOP:
        _NOOP.append(NoopAnswerer())
    hooks: dict[str, Any] = json.loads(json.dumps(settings["hooks"]))
    for groups in hooks.values():
        for group in groups:
            for hook in group["hooks"]:
                if hook["type"] == "http":
                    hook["url"] = _NOOP[0].url
                    hook.pop("headers", None)
                else:
                    hook["command"] = "true"
    return {"hooks": hooks}


def only(settings: Settings, keep: tuple[str, ...] | None,
         drop: tuple[str, ...] = ()) -> Settings:
    """`settings` with only the events in `keep` (all if None), less those in `drop`: which
    part of a floor Claude Code spends on which events."""
    return {"hooks": {event: groups for event, groups in settings["hooks"].items()
                      if (keep is None or event in keep) and event not in drop}}


def disabled(settings: Settings) -> Settings:
    """`settings` with each command hook run with TOKENBUDGET_DISABLE=1: the hook's process
    starts and answers `{}` without asking anyone (what its start alone costs)."""
    hooks: dict[str, Any] = json.loads(json.dumps(settings["hooks"]))
    for groups in hooks.values():
        for group in groups:
            for hook in group["hooks"]:
                if hook["type"] == "command":
                    hook["command"] = "TOKENBUDGET_DISABLE=1 " + hook["command"]
    return {"hooks": hooks}


VARIANTS: dict[str, Callable[..., Settings | None]] = {
    "none": lambda py: None,
    "true": true_hooks,
    "http-noop": http_noop_hooks,
    "main": main_hooks,
    "nopre": lambda py: main_hooks(py, without=("PreToolUse",)),
    "pre-true": lambda py: main_hooks(py, pre="true"),
    "async": lambda py: main_hooks(py, is_async=("SessionEnd", "SubagentStop")),
    "fast": lambda py: main_hooks(py, fast=True),
    "installed": installed_hooks,
    "resident-nopre": resident_hooks,  # called with the variant's state folder too
    "resident": resident_installed_hooks,  # these three too
    "resident-stopcmd": lambda py, state: resident_installed_hooks(py, state, stop_command=True),
    "resident-base": lambda py, state: resident_installed_hooks(_BASE[0], state),
    "installed-noop": lambda py: as_noop(installed_hooks(py)),
    "resident-noop": lambda py, state: as_noop(resident_installed_hooks(py, state)),
    "resident-base-noop": lambda py, state: as_noop(resident_installed_hooks(_BASE[0], state)),
    "resident-noop-batch": lambda py, state: only(
        as_noop(resident_installed_hooks(py, state)), ("PostToolBatch",)),
    "resident-noop-turn": lambda py, state: only(
        as_noop(resident_installed_hooks(py, state)), None, ("PostToolBatch",)),
    "resident-noop-prompt": lambda py, state: only(
        as_noop(resident_installed_hooks(py, state)), ("UserPromptSubmit",)),
    "resident-noop-stop": lambda py, state: only(
        as_noop(resident_installed_hooks(py, state)), ("Stop",)),
    "resident-noop-http": lambda py, state: only(
        as_noop(resident_installed_hooks(py, state)), ("PostToolBatch", "Stop")),
    "resident-prompt": lambda py, state: only(
        resident_installed_hooks(py, state), ("UserPromptSubmit",)),
    "resident-prompt-off": lambda py, state: disabled(only(
        resident_installed_hooks(py, state), ("UserPromptSubmit",))),
    "resident-nosession": lambda py, state: only(
        resident_installed_hooks(py, state), None, ("SessionStart", "SessionEnd")),
}
_WITH_STATE = ("resident-nopre", "resident", "resident-stopcmd", "resident-base",
               "resident-noop", "resident-base-noop", "resident-noop-batch",
               "resident-noop-turn", "resident-noop-prompt", "resident-noop-stop",
               "resident-noop-http", "resident-prompt", "resident-prompt-off",
               "resident-nosession")
_BASE: list[Path] = []  # the interpreter of --base


# Variants whose hooks record nothing.
_RECORDS_NOTHING = ("none", "true", "http-noop", "installed-noop", "resident-noop",
                    "resident-base-noop", "resident-noop-batch", "resident-noop-turn",
                    "resident-noop-prompt", "resident-noop-stop", "resident-noop-http",
                    # Real hooks, but none that records a turn's requests:
                    "resident-prompt", "resident-prompt-off",
                    # A Stop far from every limit does not wait for the turn's last response
                    # to be written (hook._handle): the next prompt's hook or SessionEnd records
                    # it, so without SessionEnd a process's last response may go unrecorded.
                    "resident-nosession")


class Runner:
    """Runs one `claude -p` turn for a variant and times it, from a fresh tokenbudget state."""

    def __init__(self, claude: Path, py: Path, loop: int, ledger: Path | None,
                 turns: int | None = None) -> None:
        self.claude = claude
        self.py = py
        self.prompt = f"please LOOP {loop}"
        self.expected = loop + 1  # requests a turn: LOOP tool calls, then the text answer
        self.turns = turns  # None: one `claude -p PROMPT` a run; N: a session of N turns
        self.ledger = ledger
        self.root = Path(tempfile.mkdtemp(prefix="turn-", dir=common.WORK))
        self.fake = StampedFake(max_requests=10**9)
        self.fake.start()
        # A run's time cut at the requests' arrivals (_parts), per variant.
        self.parts: dict[str, list[dict[str, float]]] = {}
        self.loads: list[float] = []  # the 1-minute load average before each run
        self.settings: dict[str, Path | None] = {}
        self.served: dict[str, list[int]] = {}
        self.home: dict[str, Path] = {}
        # CPU seconds a run took: Claude Code and the hooks it waited for (this process's
        # children), plus the resident answerer's (detached: read from /proc). What the hooks
        # cost whatever the machine's load, which the wall time is not.
        self.cpu: dict[str, list[float]] = {}

    def add(self, name: str, settings: Settings | None) -> None:
        home = self.root / name / "home"
        (home / ".claude").mkdir(parents=True)
        (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
        (self.root / name / "cwd").mkdir()
        self.home[name] = home
        self.served[name] = []
        self.cpu[name] = []
        self.parts[name] = []
        if settings is None:
            self.settings[name] = None
            return
        path = self.root / name / "settings.json"
        path.write_text(json.dumps(settings, indent=1))
        self.settings[name] = path

    def state(self, name: str) -> Path:
        return self.root / name / "state"

    def _fresh_state(self, name: str) -> Path:
        state = self.state(name)
        # The resident answerer's folder is kept (moved, so its key file stays the same file):
        # a new key would end the answerer, and every run would pay for starting one.
        keep = common.data_dir(state) / "resident"
        kept = self.root / name / "resident-kept"
        if keep.exists():
            keep.rename(kept)
        for _ in range(50):
            # The previous run's SessionEnd, which nobody waits for, may still be writing there.
            shutil.rmtree(state, ignore_errors=True)
            if not state.exists():
                break
            time.sleep(0.1)
        common.write_config(state, retention_days=None)
        if kept.exists():
            # A late hook of the previous run may have made the folder again meanwhile.
            keep.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
            kept.rename(keep)
        if self.ledger is not None:
            data = common.data_dir(state)
            data.mkdir(parents=True, mode=0o700, exist_ok=True)
            shutil.copyfile(self.ledger, data / "ledger.json")
        return state

    def run(self, name: str) -> float:
        self.loads.append(os.getloadavg()[0])
        state = self._fresh_state(name)
        home = self.home[name]
        env = common.clean_env(
            HOME=str(home), XDG_DATA_HOME=str(state / "data"),
            XDG_CONFIG_HOME=str(state / "config"), ANTHROPIC_BASE_URL=self.fake.base_url,
            ANTHROPIC_API_KEY="bench", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            DISABLE_AUTOUPDATER="1", DISABLE_TELEMETRY="1", DISABLE_ERROR_REPORTING="1",
            IS_SANDBOX="1",
        )
        for k in list(env):
            if k.startswith(("ANTHROPIC_AUTH", "CLAUDE_CODE_SESSION", "CLAUDECODE")):
                del env[k]
        settings = self.settings[name]
        extra = ["--settings", str(settings)] if settings is not None else []
        before = len(self.fake.requests)
        arrived = len(self.fake.arrivals)
        cpu0 = _children_cpu() + _answerer_cpu(state)
        t0 = time.perf_counter()
        if self.turns is None:
            cmd = [str(self.claude), "-p", self.prompt, "--output-format", "json",
                   "--allowedTools", "Bash", *extra]
            done = subprocess.run(cmd, cwd=self.root / name / "cwd", env=env,
                                  capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                  timeout=300, check=False)
            t1 = time.perf_counter()
            out = json.loads(done.stdout.strip().splitlines()[-1])
            if done.returncode != 0 or out.get("terminal_reason") != "completed":
                raise SystemExit(f"{name}: claude failed ({done.returncode}):"
                                 f" {done.stdout[-500:]}{done.stderr[-2000:]}")
            session = out["session_id"]
            ends = [len(self.fake.requests)]
        else:
            session, ends, t1 = self._session(name, env, extra, before)
        seconds = t1 - t0
        self.cpu[name].append(_children_cpu() + _answerer_cpu(state) - cpu0)
        served = self.fake.requests[before:]
        self.served[name].append(len(served))
        self.parts[name].append(_parts(t0, self.fake.arrivals[arrived:],
                                       [e - before for e in ends], t1))
        if name not in _RECORDS_NOTHING:
            self._check_ledger(name, state, session, sum(r.total_tokens() for r in served))
        return seconds

    def _session(self, name: str, env: dict[str, str], extra: list[str],
                 before: int) -> tuple[str, list[int], float]:
        """One Claude Code process serving `self.turns` prompts in a row, each sent once the
        turn before has its result: (the session, the fake's request count at each result, the
        time the process ended). Each turn must be served in full, all in one session."""
        cmd = [str(self.claude), "-p", "--input-format", "stream-json", "--output-format",
               "stream-json", "--verbose", "--allowedTools", "Bash", *extra]
        prompt = json.dumps({"type": "user", "message": {"role": "user",
                                                         "content": self.prompt}}) + "\n"
        assert self.turns is not None
        with tempfile.TemporaryFile(mode="w+") as err:
            proc = subprocess.Popen(cmd, cwd=self.root / name / "cwd", env=env, text=True,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
            assert proc.stdin is not None and proc.stdout is not None
            killer = threading.Timer(300, proc.kill)
            killer.start()
            sessions: set[str] = set()
            ends: list[int] = []
            bad: dict[str, Any] | None = None
            try:
                proc.stdin.write(prompt)
                proc.stdin.flush()
                for line in proc.stdout:
                    out = json.loads(line)
                    if out.get("type") != "result":
                        continue
                    ends.append(len(self.fake.requests))
                    sessions.add(out.get("session_id"))
                    if out.get("subtype") != "success" or out.get("terminal_reason") != "completed":
                        bad = out
                    if len(ends) < self.turns and bad is None:
                        proc.stdin.write(prompt)
                        proc.stdin.flush()
                    else:
                        proc.stdin.close()
                code = proc.wait()
                t1 = time.perf_counter()
            finally:
                killer.cancel()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            err.seek(0)
            why = err.read()[-2000:]
        per_turn = [b - a for a, b in zip([before, *ends[:-1]], ends, strict=True)]
        if code != 0 or bad is not None or len(ends) != self.turns or len(sessions) != 1 or \
                any(n != self.expected for n in per_turn):
            raise SystemExit(f"{name}: the session failed (exit {code}, {len(ends)} of"
                             f" {self.turns} turns, requests a turn {per_turn}, sessions"
                             f" {sessions}): {bad}{why}")
        return sessions.pop(), ends, t1

    def _check_ledger(self, name: str, state: Path, session: str, truth: int) -> None:
        """Untimed: the hooks recorded exactly what was served to this run's session. (The
        previous run's SessionEnd, which nobody waits for, may still record its own session
        in this fresh state: a real ledger has it already.)"""
        from tokenbudget.errors import TokenbudgetError
        from tokenbudget.store import open_store

        ledger = common.data_dir(state) / "ledger.json"
        deadline = time.monotonic() + 30
        got = None
        while time.monotonic() < deadline:
            try:
                # The snapshot and its journal: a hook's commit is a journal line.
                s = open_store(path=ledger).snapshot()["sessions"][session]
                got = sum(sum(m[:5]) for m in s["m"].values())
            except (OSError, TokenbudgetError, KeyError):
                got = None
            if got == truth:
                return
            time.sleep(0.05)
        raise SystemExit(f"{name}: the ledger holds {got} tokens, the fake served {truth}")

    def close(self) -> None:
        self.fake.stop()
        for name in self.settings:
            # A resident answerer ends within a second of its key file going.
            (common.data_dir(self.state(name)) / "resident" / "key.json").unlink(missing_ok=True)
        time.sleep(1.5)
        for proc in _RESIDENTS:
            proc.terminate()
            proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _parts(t0: float, arrivals: list[float], ends: list[int], t1: float) -> dict[str, float]:
    """A run's seconds cut at its requests' arrivals: `start` (to the first request), `turn 1`
    (its first request to its last), `turn k` (the last request of turn k-1 to turn k's last),
    `end` (the last request to the process's exit). `ends`: the requests served at each turn's
    end, counted from the run's first."""
    if len(arrivals) != ends[-1]:
        raise SystemExit(f"{len(arrivals)} requests arrived, {ends[-1]} served")
    last = [arrivals[e - 1] for e in ends]
    parts = {"start": arrivals[0] - t0, "turn 1": last[0] - arrivals[0]}
    for k in range(1, len(last)):
        parts[f"turn {k + 1}"] = last[k] - last[k - 1]
    parts["end"] = t1 - last[-1]
    return parts


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _answerer_cpu(state: Path) -> float:
    """CPU seconds the variant's resident answerer has used so far (0 when none runs)."""
    try:
        pid = json.loads((common.data_dir(state) / "resident" / "state.json").read_text())["pid"]
        with open(f"/proc/{int(pid)}/stat", encoding="utf-8") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def claude_binary() -> Path:
    env = os.environ.get("TOKENBUDGET_CLAUDE_BIN")
    if env:
        return Path(env)
    out = subprocess.run(["bash", str(common.REPO / "scripts" / "install-claude-code.sh")],
                         check=True, capture_output=True, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def _names(value: str) -> list[str]:
    return value.split(",")


def _counts(value: str) -> list[int]:
    counts = sorted({int(v) for v in value.split(",")})
    if counts[0] < 1:
        raise argparse.ArgumentTypeError("at least 1 turn")
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--loop", type=int, default=10)
    ap.add_argument("--turns", type=_counts, default=None,
                    help="N: a session of N turns in one Claude Code process (stream-json"
                         " input); N,M: both, interleaved in the same rounds, and split into"
                         " what is paid once a process and once a turn")
    ap.add_argument("--variants", default="none,main,installed")
    ap.add_argument("--ledger", type=Path, help="start every run from a copy of this ledger")
    ap.add_argument("--reinstall", action="store_true", help="install the working tree again")
    ap.add_argument("--save", default="turn", help="results/NAME.json")
    ap.add_argument("--base", default="main", help="the git ref of resident-base")
    ap.add_argument("--pairs", type=_names, default=None,
                    help="A:B,...: A's run minus B's in the same round, also reported")
    args = ap.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    unknown += [p for p in args.pairs or [] if not set(p.split(":")) <= set(names)
                or p.count(":") != 1]
    if unknown or "none" not in names:
        raise SystemExit(f"variants: {unknown or 'none is the baseline'}; known: {list(VARIANTS)}")
    common.WORK.mkdir(parents=True, exist_ok=True)
    py = common.bench_python(reinstall=args.reinstall)
    if "resident-base" in names or "resident-base-noop" in names:
        _BASE.append(common.bench_python_at(args.base))
    claude = claude_binary()
    runners = {t: Runner(claude, py, args.loop, args.ledger, t) for t in args.turns or [None]}
    try:
        cases: dict[str, Callable[[], float]] = {}
        for t, runner in runners.items():
            for n in names:
                make = VARIANTS[n]
                runner.add(n, make(py, runner.state(n)) if n in _WITH_STATE else make(py))
                cases[_key(n, t)] = lambda n=n, runner=runner: runner.run(n)  # type: ignore[misc]
        got = common.interleave(cases, args.rounds, warmup=args.warmup)
    finally:
        for runner in runners.values():
            runner.close()
    loads = sorted(x for r in runners.values() for x in r.loads)
    saved: dict[str, Any] = {"args": vars(args) | {"ledger": str(args.ledger)}}
    for t, runner in runners.items():
        times = {n: got[_key(n, t)] for n in names}
        # No warm-ups:
        cpu = {n: c[len(c) - len(times[n]):] for n, c in runner.cpu.items()}
        parts = {n: c[len(c) - len(times[n]):] for n, c in runner.parts.items()}
        served = {n: c[len(c) - len(times[n]):] for n, c in runner.served.items()}
        saved[_key("runs", t)] = report(names, times, served, cpu, args, parts, t)
    if len(runners) > 1:
        saved["split"] = split(names, saved, args.turns)
    load = os.getloadavg()
    print(f"\n{args.rounds} rounds; load average {_LOAD0[0]:.1f} {_LOAD0[1]:.1f} {_LOAD0[2]:.1f}"
          f" at the start, {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the end; 1-minute load"
          f" before each run: {loads[0]:.1f} to {loads[-1]:.1f}, median"
          f" {statistics.median(loads):.1f}")
    saved["load"] = {"start": _LOAD0, "end": list(load), "runs": loads}
    common.save(args.save, saved)


def _key(name: str, turns: int | None) -> str:
    return name if turns is None else f"{name}@{turns}"


def report(names: list[str], times: dict[str, list[float]], served: dict[str, list[int]],
           cpu: dict[str, list[float]], args: argparse.Namespace,
           parts: dict[str, list[dict[str, float]]], turns: int | None) -> dict[str, Any]:
    base = times["none"]
    requests = statistics.median(served["none"])
    what = "turn" if turns is None else f"session of {turns} turns"
    rows = []
    print(f"\n| variant | {what} (median) | minus none | per request | pairs with > none |"
          " CPU per request, minus none |")
    print("|---|---|---|---|---|---|")
    for n in names:
        # Pair round by round: the machine's drift falls on both.
        diffs = [a - b for a, b in zip(times[n], base, strict=True)]
        extra = statistics.median(diffs)
        cpu_extra = statistics.median(cpu[n]) - statistics.median(cpu["none"])
        rows.append({"variant": n, "turn": common.stats(times[n]), "diff": common.stats(diffs),
                     "per_request_ms": extra * 1000 / requests,
                     "cpu": common.stats(cpu[n]),
                     "cpu_per_request_ms": cpu_extra * 1000 / requests,
                     "requests": served[n],
                     "parts_minus_none_ms": _parts_minus(parts[n], parts["none"])})
        print(f"| {n} | {statistics.median(times[n]):.3f} s | {extra * 1000:+.0f} ms | "
              f"{extra * 1000 / requests:+.1f} ms | {sum(d > 0 for d in diffs)}/{len(diffs)} |"
              f" {cpu_extra * 1000 / requests:+.1f} ms |")
    keys = list(parts["none"][0])
    print("\nWhere the time went, minus none (ms, median of the pairs; none's own in brackets):\n")
    print("| variant | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    print("| none | " + " | ".join(
        f"({statistics.median(p[k] for p in parts['none']) * 1000:.0f})" for k in keys) + " |")
    for n in [m for m in names if m != "none"]:
        minus = _parts_minus(parts[n], parts["none"])
        print(f"| {n} | " + " | ".join(f"{minus[k]:+.0f}" for k in keys) + " |")
    pairs = []
    for pair in args.pairs or []:
        a, b = pair.split(":")
        diffs = [x - y for x, y in zip(times[a], times[b], strict=True)]
        cdiffs = [x - y for x, y in zip(cpu[a], cpu[b], strict=True)]
        pairs.append({"a": a, "b": b, "diff": common.stats(diffs),
                      "per_request_ms": statistics.median(diffs) * 1000 / requests,
                      "cpu_per_request_ms": statistics.median(cdiffs) * 1000 / requests,
                      "higher": sum(d > 0 for d in diffs),
                      "parts_ms": _parts_minus(parts[a], parts[b])})
    if pairs:
        print("\n| paired, round by round | a run | per request | rounds a > b |"
              " CPU per request |")
        print("|---|---|---|---|---|")
        for row in pairs:
            print(f"| {row['a']} - {row['b']} | {row['diff']['median'] * 1000:+.0f} ms |"
                  f" {row['per_request_ms']:+.1f} ms | {row['higher']}/{len(base)} |"
                  f" {row['cpu_per_request_ms']:+.1f} ms |")
    return {"turns": turns, "requests": requests, "rows": rows, "pairs": pairs, "times": times,
            "cpu": cpu, "parts": parts}


def split(names: list[str], saved: dict[str, Any], counts: list[int]) -> list[dict[str, Any]]:
    """What each variant pays once a process and once a turn, from the sessions of the fewest
    and the most turns, round by round: with d(N) a session of N turns minus none's in the
    same round, a turn costs (d(b) - d(a)) / (b - a) and the process d(a) - a x that."""
    a, b = counts[0], counts[-1]
    ra, rb = saved[_key("runs", a)], saved[_key("runs", b)]
    per_turn = float(ra["requests"]) / a
    out = []
    print(f"\nOnce a process and once a turn, from the sessions of {a} and {b} turns (median over"
          f" the rounds; {per_turn:g} requests a turn):\n")
    print("| variant | once a process | once a turn | per request: 1 turn a process |"
          f" {b} turns | 10 turns | CPU once a process | CPU once a turn |")
    print("|---|---|---|---|---|---|---|---|")
    for n in [m for m in names if m != "none"]:
        row: dict[str, Any] = {"variant": n}
        for what in ("times", "cpu"):
            da = [x - y for x, y in zip(ra[what][n], ra[what]["none"], strict=True)]
            db = [x - y for x, y in zip(rb[what][n], rb[what]["none"], strict=True)]
            turn = [(y - x) / (b - a) for x, y in zip(da, db, strict=True)]
            process = [x - a * t for x, t in zip(da, turn, strict=True)]
            row[what] = {"process_ms": statistics.median(process) * 1000,
                         "turn_ms": statistics.median(turn) * 1000,
                         "turn_above_zero": sum(t > 0 for t in turn),
                         "process_above_zero": sum(p > 0 for p in process)}
        w = row["times"]

        def per_request(k: int, w: dict[str, float] = w) -> float:
            return (float(w["process_ms"]) + k * float(w["turn_ms"])) / (k * per_turn)

        print(f"| {n} | {w['process_ms']:+.0f} ms ({w['process_above_zero']}/{len(da)} > 0) |"
              f" {w['turn_ms']:+.0f} ms ({w['turn_above_zero']}/{len(da)} > 0) |"
              f" {per_request(1):+.1f} ms | {per_request(b):+.1f} ms | {per_request(10):+.1f} ms |"
              f" {row['cpu']['process_ms']:+.0f} ms | {row['cpu']['turn_ms']:+.0f} ms |")
        out.append(row)
    return out


def _parts_minus(a: list[dict[str, float]], b: list[dict[str, float]]) -> dict[str, float]:
    """Each part of a run, `a`'s minus `b`'s in the same round, median, in ms."""
    return {k: statistics.median(x[k] - y[k] for x, y in zip(a, b, strict=True)) * 1000
            for k in a[0]}


_LOAD0 = list(os.getloadavg())


if __name__ == "__main__":
    main()
