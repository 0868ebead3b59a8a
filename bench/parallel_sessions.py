"""Many real `claude -p` sessions at once against the fake API: the ledger against what it served.

    TOKENBUDGET_CLAUDE_BIN=... python bench/parallel_sessions.py resident|command OUT \
        [--sessions 12] [--workers 8] [--early-forks] [--kinds2] [--kill-every S] \
        [--kill-answerer-at N] [--hold-lock AT:FOR,...]

OUT (a new folder) is used as HOME. `tokenbudget install [--resident]` there, then the sessions
(LOOP 5, AGENT SUBLOOP 3, PARALLEL 4, HUGE LOOP 2; with --kinds2: a subagent that compacts,
THINK, MAXTOK, THINK PARALLEL 3), `--workers` at a time; --early-forks forks three of them while
they run; then each resumed once and two forked. Per session and model, the ledger is compared
with the fake API's truth after the hooks alone, after `tokenbudget sync` and after
`tokenbudget rebuild`. --kill-every kills the answerer (kill -9) every S seconds;
--hold-lock holds the ledger's lock AT seconds in, FOR seconds.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(WT))

from parallel_common import finish, sessions, stages, start  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--kill-answerer-at", type=int, default=0)
ap.add_argument("--kill-every", type=float, default=0)
ap.add_argument("--kinds2", action="store_true")
ap.add_argument("--hold-lock", default="")
ap.add_argument("--early-forks", action="store_true")
args, OUT, HOME, STATE, TB, fake, runner = start(ap)
run, runs = runner.run, runner.runs
from tokenbudget import resident  # noqa: E402

KINDS = [
    ("loop", "please LOOP 5", "Bash"),
    ("agent", "AGENT SUBLOOP 3 please", "Bash,Agent"),
    ("parallel", "PARALLEL 4 please", "Bash"),
    ("huge", "HUGE please LOOP 2", "Bash"),
]
if args.kinds2:
    KINDS = [
        ("agenthuge", "AGENT SUBLOOP 2 HUGE please", "Bash,Agent"),
        ("think", "THINK please LOOP 3", "Bash"),
        ("maxtok", "MAXTOK please", "Bash"),
        ("parthink", "THINK PARALLEL 3 please", "Bash"),
    ]
first = sessions(KINDS, args.sessions, OUT)

killer_done = threading.Event()


def killer() -> None:
    if args.kill_every:
        kills = 0
        while not killer_done.wait(args.kill_every):
            pid = resident.read_state().get("pid")
            if isinstance(pid, int):
                try:
                    os.kill(pid, signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass
        print(f"killed the answerer {kills} times", flush=True)
        return
    while not killer_done.is_set():
        if len(fake.requests) >= args.kill_answerer_at:
            pid = resident.read_state().get("pid")
            if isinstance(pid, int):
                os.kill(pid, signal.SIGKILL)
                print(f"killed answerer {pid} at request {len(fake.requests)}", flush=True)
                (OUT / "killed.txt").write_text(f"{pid} {len(fake.requests)}\n")
                return
        time.sleep(0.05)


def holder() -> None:
    import fcntl

    t_start = time.monotonic()
    for spec in args.hold_lock.split(","):
        at, dur = map(float, spec.split(":"))
        time.sleep(max(0.0, t_start + at - time.monotonic()))
        fd = os.open(str(STATE / "ledger.json.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print(
            f"holding the ledger lock at {time.monotonic() - t_start:.1f}s for {dur}s", flush=True
        )
        time.sleep(dur)
        os.close(fd)


if args.hold_lock:
    threading.Thread(target=holder, daemon=True).start()
if args.kill_answerer_at or args.kill_every:
    threading.Thread(target=killer, daemon=True).start()


def mangled(cwd: Path) -> str:
    return re.sub(r"[^A-Za-z0-9]", "-", str(cwd))


def early_fork(i: int) -> None:
    """Fork session i while its first process still runs (after its 2nd response)."""
    label, _, cwd, extra, tools = first[i]
    sid = extra[1]
    path = HOME / ".claude" / "projects" / mangled(cwd) / f"{sid}.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            n = path.read_text().count('"type":"assistant"')
        except OSError:
            n = 0
        if n >= 2:
            break
        time.sleep(0.05)
    run(
        label + "-earlyfork",
        "LOOP 2 in an early fork",
        cwd,
        ["--resume", sid, "--fork-session"],
        tools,
    )


t0 = time.monotonic()
early = [threading.Thread(target=early_fork, args=(i,)) for i in (0, 1, 3) if args.early_forks]
for t in early:
    t.start()
with ThreadPoolExecutor(args.workers) as ex:
    phase1 = list(ex.map(lambda a: run(*a), first))
for t in early:
    t.join()
print(
    f"phase 1: {len(phase1)} runs, {len(fake.requests)} requests, {time.monotonic() - t0:.1f}s",
    flush=True,
)
second = []
for rec, (label, prompt, cwd, _, tools) in zip(phase1, first, strict=True):
    if rec["session"]:
        second.append(
            (label + "-resumed", "more: " + prompt, cwd, ["--resume", rec["session"]], tools)
        )
for i, label, prompt in (
    (1, "agent1-fork", "AGENT SUBLOOP 1 in the fork"),
    (3, "huge3-fork", "in the fork LOOP 1"),
):
    if phase1[i]["session"]:
        fork_of = ["--resume", phase1[i]["session"], "--fork-session"]
        second.append((label, prompt, first[i][2], fork_of, first[i][4]))
second = second[-2:] + second[:-2]  # the forks start with their parents' resumes
with ThreadPoolExecutor(args.workers) as ex:
    phase2 = list(ex.map(lambda a: run(*a), second))
killer_done.set()
print(
    f"phase 2: {len(phase2)} runs, {len(fake.requests)} requests, {time.monotonic() - t0:.1f}s",
    flush=True,
)

fake.write_truth(OUT / "truth.jsonl")


stages(OUT, STATE, fake, runs, TB)
finish(runs, args.route, fake)
