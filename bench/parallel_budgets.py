"""Budgets under parallel load: many real `claude -p` sessions at once cross a budget.

    TOKENBUDGET_CLAUDE_BIN=... python bench/parallel_budgets.py resident|command|mixed OUT \
        --budget-mode session|daily|agents --budgets '[{"kind": "daily", "limit": 150000}]' \
        [--no-resume] [--extra-settings FILE]

OUT (a new folder) is used as HOME; `mixed` installs --resident in two project folders and
the command hooks in a third. Writes runs.jsonl (each run's output), truth.jsonl and times.json
(each request's arrival), stops.json (every refusal and stop kept), and compares the ledger with
the truth after the hooks alone, `sync` and `rebuild`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(WT))

from parallel_common import finish, sessions, stages, start  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--budget-mode", default="session")
ap.add_argument("--no-resume", action="store_true")
ap.add_argument("--extra-settings", default="")
args, OUT, HOME, STATE, TB, fake, runner = start(ap)
run, runs = runner.run, runner.runs
from tokenbudget import stops  # noqa: E402


class Stamped(list):
    def append(self, x):
        TIMES[x.n] = time.time()
        super().append(x)


TIMES: dict[int, float] = {}
fake.max_requests = 400
fake._served = Stamped()
MODE = args.budget_mode  # "session" or "daily"
if MODE == "session":
    KINDS = [
        ("loop", "please LOOP forever", "Bash"),
        ("agent", "AGENT SUBLOOP 8 please", "Bash,Agent"),
        ("parallel", "PARALLEL 4 please", "Bash"),
        ("huge", "HUGE please LOOP 3", "Bash"),
    ]
elif MODE == "agents":
    KINDS = [("agent", "AGENT SUBLOOP 8 please", "Bash,Agent")] * 4
else:
    KINDS = [
        ("loop", "please LOOP forever", "Bash"),
        ("agent", "AGENT SUBLOOP 30 please", "Bash,Agent"),
        ("parallel", "PARALLEL 4 please LOOP forever", "Bash"),
        ("loop2", "please LOOP forever", "Bash"),
    ]
first = sessions(KINDS, args.sessions, OUT)
t0 = time.monotonic()
with ThreadPoolExecutor(args.workers) as ex:
    phase1 = list(ex.map(lambda a: run(*a), first))
print(
    f"phase 1: {len(phase1)} runs, {len(fake.requests)} requests, {time.monotonic() - t0:.1f}s",
    flush=True,
)
n1 = len(fake.requests)
second = (
    []
    if args.no_resume
    else [
        (label + "-resumed", "more: " + prompt, cwd, ["--resume", extra[1]], tools)
        for (label, prompt, cwd, extra, tools) in first
    ]
)
with ThreadPoolExecutor(args.workers) as ex:
    phase2 = list(ex.map(lambda a: run(*a), second))
print(
    f"phase 2: {len(phase2)} runs, {len(fake.requests)} requests, {time.monotonic() - t0:.1f}s",
    flush=True,
)
(OUT / "times.json").write_text(json.dumps({str(k): v for k, v in TIMES.items()}))
fake.write_truth(OUT / "truth.jsonl")


stages(OUT, STATE, fake, runs, TB)
(OUT / "stops.json").write_text(json.dumps(stops.read(), indent=1))
print("stops:", len(stops.read()))
finish(runs, args.route, fake)
