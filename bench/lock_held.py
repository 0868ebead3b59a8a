#!/usr/bin/env python3
"""What a hook call with news does while it holds the ledger's lock, in-process, before and after.

    python bench/lock_held.py [--procs 1,16] [--calls 10] [--before main]

Each process plays one session (as bench/contention.py's do): it appends one response to its
transcript and answers PostToolUse with `tokenbudget.hook.handle`, `--calls` times, against
the realistic ledger of bench/hook_overhead.py (5,000 sessions seen, five budgets). The lock's
`_flock` is wrapped to take, for every call that got the lock, the CPU time of the holding
thread (`time.thread_time`) and the wall time between taking and releasing it; with the code
of `--before` (a git ref) and of the working tree in turn, each side from the same ledger.
CPU held is what the lock costs every other session; wall held adds the time the holder waited
for a core, which on a loaded machine is most of it. Also: how each commit of the working tree
went (`merged` with others' commits, `alone`, `again`: worked out again under the lock).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

WORKER = """
import json, os, sys, time
sys.path.insert(0, sys.argv[1])  # bench/, for synth and common; tokenbudget is the venv's
import common, synth
from tokenbudget import hook, lock, store
import tokenbudget.hot, tokenbudget.journal
STEPS = [
    (store.JsonFileStore, "_sweep_temps", "sweep temp files"),
    (store.JsonFileStore, "_committed_at", "snapshot head"),
    (store.JsonFileStore, "_since", "read journal since"),
    (tokenbudget.journal, "parse", "read journal since"),
    (store, "_merge", "merge sums"),
    (store, "_replay", "replay others' lines"),
    (tokenbudget.journal, "encode", "encode line"),
    (store.JsonFileStore, "_append", "append line"),
    (tokenbudget.hot.Writer, "in_step", "view: in step"),
    (tokenbudget.hot.Writer, "_sessions", "view: session file"),
    (tokenbudget.hot.Writer, "_shared", "view: shared file"),
    (tokenbudget.hot.Writer, "rebuild", "view: rebuilt whole"),
]
i, calls, start, out = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
rec = {}
if hasattr(store.JsonFileStore, "_rebase"):
    real = store.JsonFileStore._rebase
    def spy(self, prep):
        try:
            size = os.stat(self.journal).st_size
        except FileNotFoundError:
            size = 0
        judge = prep.holds
        def timed_judge(current):
            c0 = time.thread_time()
            try:
                return judge(current)
            finally:
                steps = rec.setdefault("steps", {})
                steps["judge again"] = steps.get("judge again", 0.0) + time.thread_time() - c0
        prep.holds = timed_judge
        got = real(self, prep)
        rec["how"] = ("again" if got is store._STALE else
                      "merged" if size > prep.pos.end else "alone")
        return got
    store.JsonFileStore._rebase = spy
flock = lock._flock
def timed(path, timeout):
    release = flock(path, timeout)
    if release is None:
        return None
    c0, w0 = time.thread_time(), time.perf_counter()
    rec["held"] = True
    def timed_release():
        rec["cpu"], rec["wall"] = time.thread_time() - c0, time.perf_counter() - w0
        rec["held"] = False
        release()
    return timed_release
lock._flock = timed
def step(owner, name, label):
    # The CPU of one step while the lock is held (the outermost of nested steps counts).
    real = getattr(owner, name)
    def spy(*args, **kwargs):
        if not rec.get("held") or rec.get("in_step"):
            return real(*args, **kwargs)
        rec["in_step"] = True
        c0 = time.thread_time()
        try:
            return real(*args, **kwargs)
        finally:
            steps = rec.setdefault("steps", {})
            steps[label] = steps.get(label, 0.0) + time.thread_time() - c0
            rec["in_step"] = False
    setattr(owner, name, spy)
from tokenbudget import hot, journal
for owner, name, label in STEPS:
    if hasattr(owner, name):
        step(owner, name, label)
g = synth.Synth(1000 + i)
rec.pop("held", None)
sid = f"{i:08d}-0000-4000-8000-{i:012d}"
cwd = f"/home/dev/load-{i:02d}"
c = synth.Ctx(sid, cwd, f"load-{i}", "claude-sonnet-4-5-20250929")
folder = os.path.join(os.environ["HOME"], ".claude", "projects", synth.project_dirname(cwd))
os.makedirs(folder, exist_ok=True)
path = os.path.join(folder, sid + ".jsonl")
ts = time.time() - 3600
pid = g.prompt(c, ts, "prompt")
with open(path, "w") as f:
    f.write("\\n".join(c.lines) + "\\n")
c.lines.clear()
while time.time() < start:
    time.sleep(0.001)
rows = []
for k in range(calls):
    ts, _ = g.request(c, c.lines, ts + 1, pid, "prompt", last=False)
    with open(path, "a") as f:
        f.write("\\n".join(c.lines) + "\\n")
    c.lines.clear()
    rec.clear()
    ev = common.hook_event("PostToolUse", sid, path, cwd, i * 100_000 + k, pid)
    hook.handle("PostToolUse", ev if isinstance(ev, bytes) else ev.encode())
    rows.append(dict(rec))
with open(out, "w") as f:
    json.dump(rows, f)
"""


def quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def run(py: Path, label: str, procs: int, calls: int, pristine: Path) -> dict[str, Any]:
    """`procs` sessions x `calls` calls with the package of venv `py`; what the lock held."""
    top = common.WORK / f"lock-held-{label}-{procs}"
    shutil.rmtree(top, ignore_errors=True)
    data, state = top / "data", top / "state"
    common.write_config(state)  # the default lock timeout
    tb = common.data_dir(state)
    tb.mkdir(parents=True)
    shutil.copyfile(pristine, tb / "ledger.json")
    env = {**common.state_env(data, state)}
    start = time.time() + 2.0
    bench = str(Path(__file__).resolve().parent)
    workers = [subprocess.Popen([str(py), "-c", WORKER, bench, str(i), str(calls), str(start),
                                 str(top / f"w{i}.json")], env=env, cwd=str(common.WORK))
               for i in range(procs)]
    assert [p.wait() for p in workers] == [0] * procs
    rows = [r for i in range(procs) for r in json.loads((top / f"w{i}.json").read_text())]
    held = [r for r in rows if "cpu" in r]
    out: dict[str, Any] = {"code": label, "procs": procs, "calls": len(rows),
                           "got_the_lock": len(held),
                           "how": {h: sum(1 for r in rows if r.get("how") == h)
                                   for h in ("alone", "merged", "again")},
                           "load_average": os.getloadavg()[0]}
    for key in ("cpu", "wall"):
        xs = [r[key] for r in held]
        out[f"{key}_held"] = {"median": statistics.median(xs), "p95": quantile(xs, 0.95),
                              "p99": quantile(xs, 0.99), "raw": xs}
    labels = sorted({k for r in held for k in r.get("steps", {})})
    # Per call that held the lock: the mean CPU of each step (0 where a call had none of it).
    out["steps"] = {k: {"mean": sum(r.get("steps", {}).get(k, 0.0) for r in held) / len(held),
                        "calls": sum(1 for r in held if k in r.get("steps", {}))}
                    for k in labels}
    out["steps_sum_mean"] = sum(v["mean"] for v in out["steps"].values())
    print(f"{label} x{procs}: {len(held)} of {len(rows)} calls got the lock; CPU held median"
          f" {common.ms(out['cpu_held']['median'])}, p95 {common.ms(out['cpu_held']['p95'])};"
          f" wall held median {common.ms(out['wall_held']['median'])}, p95"
          f" {common.ms(out['wall_held']['p95'])}, p99 {common.ms(out['wall_held']['p99'])};"
          f" {out['how']}; load {out['load_average']:.1f}", flush=True)
    for k, v in out["steps"].items():
        print(f"    {k}: {common.ms(v['mean'])} a call ({v['calls']} calls)", flush=True)
    shutil.rmtree(top)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", default="1,16", help="comma-separated session counts")
    ap.add_argument("--calls", type=int, default=10, help="hook calls per session")
    ap.add_argument("--rounds", type=int, default=1, help="before and after, this many times")
    ap.add_argument("--before", default="main", help="git ref of the code to compare with")
    ap.add_argument("--reinstall", action="store_true", help="reinstall the working tree first")
    ap.add_argument("--name", default="lock_held")
    a = ap.parse_args()
    py = common.bench_python(reinstall=a.reinstall)
    before = common.bench_python_at(a.before)
    import hook_overhead

    base = hook_overhead.prepare(py, 5000, "realistic", False)
    runs = []
    for _ in range(a.rounds):
        for procs in [int(n) for n in a.procs.split(",")]:
            for label, code in (("before", before), ("after", py)):
                runs.append(run(code, label, procs, a.calls, base["pristine"]))
                common.save(a.name, {"before_ref": a.before, "after": common.installed(),
                                     "runs": runs})


if __name__ == "__main__":
    main()
