#!/usr/bin/env python3
"""Where one hook call's time goes, phase by phase, measured inside the process.

    python bench/phases.py [--case realistic] [--runs 15]

Each run is a fresh interpreter (the installed, bytecode-compiled package) that times, with
perf_counter: importing the hook module, the other modules a call imports, loading the config,
reading and parsing the ledger, serialising it, writing and fsyncing a copy, the time zone, and
every budget check (each of the five budgets separately). Medians over the runs. Needs the state
of bench/hook_overhead.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import hook_overhead

CHILD = r'''
import json, os, sys, time
t = [time.perf_counter()]
import tokenbudget.hook
t.append(time.perf_counter())
from tokenbudget import config, enforce, ledger, paths
t.append(time.perf_counter())
cfg = config.load_config()
budgets = [b for b in cfg.budgets]
t.append(time.perf_counter())
raw = open(paths.ledger_file(), "rb").read()
t.append(time.perf_counter())
data = ledger.validate(json.loads(raw))
t.append(time.perf_counter())
payload = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
t.append(time.perf_counter())
tmp = paths.ledger_file() + ".phases"
fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, payload)
os.fsync(fd)
os.close(fd)
os.unlink(tmp)
t.append(time.perf_counter())
tz = cfg.tz()
from datetime import datetime
ctx = enforce.Context(session_id=sys.argv[1], project=sys.argv[2], now=datetime.now(tz), tz=tz,
                      week_start=cfg.week_start)
t.append(time.perf_counter())
per = {}
for b in budgets:
    a = time.perf_counter()
    enforce.measure(b, data, ctx)
    per[b.kind] = time.perf_counter() - a
names = ["import tokenbudget.hook", "other modules a call imports", "config", "read ledger",
         "json.loads + validate ledger", "json.dumps ledger (locked calls only)",
         "write + fsync a copy (locked calls only)", "time zone, context"]
out = {n: t[i + 1] - t[i] for i, n in enumerate(names)}
out.update({f"budget {k}": v for k, v in per.items()})
print(json.dumps(out))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", default="realistic")
    ap.add_argument("--sessions", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=15)
    a = ap.parse_args()
    py = common.bench_python()
    s = hook_overhead.prepare(py, a.sessions, a.case, False)
    hook_overhead.restore(s)
    runs = []
    for _ in range(a.runs):
        p = subprocess.run([str(py), "-c", CHILD, s["session"], s["cwd"]], env=s["env"],
                           capture_output=True, text=True, cwd=common.WORK, check=True)
        runs.append(json.loads(p.stdout))
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"{a.case}: ledger {s['ledger_bytes'] / 1e6:.2f} MB, medians of {a.runs} runs")
    for k, v in med.items():
        print(f"{v * 1000:8.1f} ms  {k}")
    common.save(f"phases-{a.case}", {"case": a.case, "runs": a.runs, "median_s": med,
                                     "ledger_bytes": s["ledger_bytes"], "raw": runs})


if __name__ == "__main__":
    main()
