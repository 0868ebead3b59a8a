#!/usr/bin/env python3
"""Where a request's time goes with `install --resident`, by timestamps (no profiler): the real
Claude Code runs `claude -p "please LOOP N"` against the end-to-end tests' fake API, with the
resident hooks and without any, alternately; every API request's arrival, every command hook's
start and end, and every answerer event's phases are stamped, then summed per turn.

    python bench/resident_timeline.py [--loop 10] [--runs 5]

Prints, per turn (medians over the runs): the turn's wall time with and without hooks, the
time between one request's arrival and the next (what Claude Code, its tools and the hooks take
between two requests), the command hooks' wall time, and the answerer's time per event split
into its phases: the quick read, the locked transaction (reading the transcript's news,
deciding, the journal line and its fsync), the rest; for an answerer that replies before its
commit, also the time until its reply ("replied") and the commit after it. What is left of the
difference per request once those are taken away is Claude Code's own cost of calling the hooks.

Needs the pinned Claude Code (TOKENBUDGET_CLAUDE_BIN, or `bash scripts/install-claude-code.sh`).
Uses this checkout's tokenbudget (the interpreter running this script), five budgets none of
which is near (bench/common.py), in a temporary home.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

sys.path.insert(0, str(common.REPO))
from tests.e2e.conftest import claude_env
from tests.e2e.fake_api import FakeAnthropic

# The answerer with its phases stamped: (phase, event, start, end) lines in argv[1].
SERVE = """
import contextlib, json, sys, time
from tokenbudget import hook, store, sync
try:
    from tokenbudget import answerer as server
except ImportError:
    from tokenbudget import resident as server
out = open(sys.argv[1], "a", buffering=1)
current = [""]

def stamp(phase, t0):
    out.write(json.dumps([phase, current[0], t0, time.time()]) + "\\n")

def timed(owner, name, phase):
    real = getattr(owner, name)
    def wrapper(*args, **kwargs):
        t0 = time.time()
        try:
            return real(*args, **kwargs)
        finally:
            stamp(phase, t0)
    setattr(owner, name, wrapper)

def timed_cm(owner, name, phase):
    real = getattr(owner, name)
    @contextlib.contextmanager
    def wrapper(*args, **kwargs):
        t0 = time.time()
        try:
            with real(*args, **kwargs) as value:
                yield value
        finally:
            stamp(phase, t0)
    setattr(owner, name, wrapper)

# Each event's answer (http or, when the answerer has one, its socket), and when an http
# event had been read (its key is checked first thing).
name = "_answer" if hasattr(server.Answerer, "_answer") else "answer"
answer = getattr(server.Answerer, name)
def timed_answer(self, event, *args, **kwargs):
    current[0] = event
    t0 = time.time()
    send = kwargs.get("send")
    if send is not None:  # an http event of an answerer that replies before its commit
        def stamped_send(reply):
            send(reply)
            stamp("replied", t0)
        kwargs["send"] = stamped_send
    try:
        return answer(self, event, *args, **kwargs)
    finally:
        stamp("answer", t0)
setattr(server.Answerer, name, timed_answer)
authorized = server.Answerer.authorized
def timed_authorized(self, header):
    out.write(json.dumps(["received", "", time.time(), time.time()]) + "\\n")
    return authorized(self, header)
server.Answerer.authorized = timed_authorized
if hasattr(server.Answerer, "_commit"):
    timed(server.Answerer, "_commit", "commit after the reply")
timed(hook, "_quick", "quick")
timed(hook, "_await_response", "await")
timed(sync, "sync_session", "transcript")
timed_cm(store.JsonFileStore, "transaction", "transaction")
server.serve()
"""


def _stamped(command: str, event: str, log: Path) -> str:
    """`command`, its wall time appended to `log` (its stdout is the hook's answer)."""
    q = shlex.quote
    return (f"t0=$(date +%s.%N); {command}; "
            f"echo \"{event} $t0 $(date +%s.%N)\" >> {q(str(log))}")


def settings(setup: Any, log: Path) -> dict[str, Any]:
    from tokenbudget import claude_settings

    hooks = claude_settings.desired_hooks(
        sys.executable, claude_settings.site_paths(sys.executable), setup)
    for event, groups in hooks.items():
        for group in groups:
            for hook in group["hooks"]:
                if hook["type"] == "command":
                    hook["command"] = _stamped(hook["command"], event, log)
    return {"hooks": hooks}


class Fake(FakeAnthropic):
    """The fake API, each request's arrival stamped."""

    def __init__(self) -> None:
        super().__init__(max_requests=10**9)
        self.arrivals: list[float] = []

    def _serve(self, body: dict[str, Any], *args: Any) -> Any:
        # The fake's other arguments (the session header, a failure's outcome) passed on.
        self.arrivals.append(time.time())
        return super()._serve(body, *args)


def _intervals(path: Path, since: float, until: float) -> list[list[Any]]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if since <= row[2] <= until:
                rows.append(row)
    return rows


def _hooks(path: Path, since: float, until: float) -> list[tuple[str, float]]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            event, t0, t1 = line.split()
            if since <= float(t0) <= until:
                rows.append((event, float(t1) - float(t0)))
    return rows


def _around(arrivals: list[float], stamps: list[list[Any]]) -> dict[str, float]:
    """Between two requests with an http event: from the first request's arrival to the
    event read by the answerer, and from its answer to the next request's arrival."""
    received = [s[2] for s in stamps if s[0] == "received"]
    replied = "replied" if any(s[0] == "replied" for s in stamps) else "answer"
    answered = [s[3] for s in stamps if s[0] == replied and s[1] == "PostToolBatch"]
    row = {"gap: request to event read": 0.0, "gap: answer to next request": 0.0}
    for a, b in itertools.pairwise(arrivals):
        r = [t for t in received if a < t < b]
        e = [t for t in answered if a < t < b]
        if r and e:
            row["gap: request to event read"] += r[0] - a
            row["gap: answer to next request"] += b - e[-1]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loop", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    claude = os.environ.get("TOKENBUDGET_CLAUDE_BIN") or subprocess.run(
        ["bash", str(common.REPO / "scripts" / "install-claude-code.sh")], check=True,
        capture_output=True, text=True).stdout.strip().splitlines()[-1]
    root = Path(tempfile.mkdtemp(prefix="resident-timeline-"))
    home = root / "home dir"
    (home / ".claude").mkdir(parents=True)
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    state = home / "tb state"
    common.write_config(state, retention_days=None)
    os.environ["TOKENBUDGET_HOME"] = str(state)
    os.environ["HOME"] = str(home)
    from tokenbudget import resident

    setup = resident.create()
    resident.save(setup)
    hook_log, phase_log = root / "hooks.log", root / "phases.jsonl"
    path = home / "settings.json"
    path.write_text(json.dumps(settings(setup, hook_log)))
    answerer = subprocess.Popen([sys.executable, "-c", SERVE, str(phase_log)], cwd=str(home))
    while resident.probe(setup)[0] != "ours":
        time.sleep(0.02)
    cwd = home / "project"
    cwd.mkdir()
    turns: dict[str, list[dict[str, float]]] = {"none": [], "resident": []}
    try:
        with Fake() as fake:
            for run in range(args.runs + 1):  # the first of each is a warm-up
                for name in ("none", "resident"):
                    cmd = [claude, "-p", f"please LOOP {args.loop}", "--output-format", "json",
                           "--allowedTools", "Bash"]
                    if name == "resident":
                        cmd += ["--settings", str(path)]
                    first = len(fake.arrivals)
                    t0 = time.time()
                    done = subprocess.run(cmd, cwd=cwd, env=claude_env(home, fake.base_url),
                                          capture_output=True, text=True, timeout=600,
                                          check=False)
                    t1 = time.time()
                    out = json.loads(done.stdout.splitlines()[-1])
                    assert out["terminal_reason"] == "completed", done.stdout
                    if run == 0:
                        continue
                    arrivals = fake.arrivals[first:]
                    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
                    row = {"turn": t1 - t0, "requests": len(arrivals),
                           "between_requests": sum(gaps),
                           "before_first": arrivals[0] - t0, "after_last": t1 - arrivals[-1]}
                    if name == "resident":
                        time.sleep(1.0)  # SessionEnd, which nobody waits for
                        for event, took in _hooks(hook_log, t0, t1 + 1.0):
                            row[f"cmd {event}"] = row.get(f"cmd {event}", 0.0) + took
                        stamps = _intervals(phase_log, t0, t1)
                        for phase, event, a, b in stamps:
                            if phase == "received":
                                continue
                            key = f"{phase} ({event})" if phase in ("answer", "replied") \
                                else phase
                            row[key] = row.get(key, 0.0) + (b - a)
                        row |= _around(arrivals, stamps)
                    turns[name].append(row)
    finally:
        resident.remove()  # the answerer exits within a second
        answerer.wait(timeout=30)
    report(turns, args)
    shutil.rmtree(root)


def report(turns: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    def med(name: str, key: str) -> float:
        return statistics.median(t.get(key, 0.0) for t in turns[name])

    requests = med("none", "requests")
    print(f"`LOOP {args.loop}`: {requests:g} requests a turn, {args.runs} runs each, medians;"
          f" load average {os.getloadavg()[0]:.1f}\n")
    print("| part of the turn | none | resident | resident - none, per request |")
    print("|---|---|---|---|")
    keys = ["turn", "before_first", "between_requests", "after_last"]
    for key in keys:
        a, b = med("none", key), med("resident", key)
        print(f"| {key} | {a * 1000:.0f} ms | {b * 1000:.0f} ms |"
              f" {(b - a) * 1000 / requests:+.1f} ms |")
    extra = sorted({k for t in turns["resident"] for k in t} - set(keys) - {"requests"})
    for key in extra:
        b = med("resident", key)
        print(f"| {key} | | {b * 1000:.0f} ms | {b * 1000 / requests:.1f} ms |")


if __name__ == "__main__":
    main()
