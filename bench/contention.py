#!/usr/bin/env python3
"""Contention: 16, 32 and 64 processes making hook calls against one ledger, before and after.

    python bench/contention.py [--procs 16,32,64] [--calls 40] [--before main|none]

Each process plays one Claude Code session: it appends one API request to its transcript (as
Claude Code writes it), then runs the PostToolUse hook, `--calls` times. All start together
against the ledger of bench/hook_overhead.py's realistic case (5,000 sessions seen, five
budgets). Each size runs with the code at `--before` (a git ref) and then the working tree,
each from the same starting ledger, in the same run.

Hooks run as installed hooks run them (`python -P -c ...`), with one addition: the lock's
`_flock` is wrapped to log how long each holder kept the lock (the same wrapper both sides).

Lost updates are looked for three ways, with no sync afterwards:
- every call leaves its event fingerprint in the ledger (kept 600 s): all must be there, less
  the calls that answered "lock not obtained" (those wrote nothing, by design);
- each session's tokens and request count in the ledger equal what its process had appended
  when its last call that got the lock ran (later calls timed out and read nothing);
- no call failed otherwise.
Latency is wall time per hook process (spawn to exit) under that load; the same machine's
uncontended median and `python -c "import json"` under the same load are measured alongside.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import synth

sys.path.insert(0, str(common.REPO))  # this tree's store reads either side's ledger
from tokenbudget.store import JsonFileStore

# The hook's entry point, with the lock wrapped to log how long it was held (seconds a line).
TIMED_HOOK = """
import os, time
try:
    import tokenbudget.lock as L  # where the lock lives now
except ImportError:
    import tokenbudget.ledger as L  # before the store had its own modules
_flock = L._flock
def _timed(path, timeout):
    release = _flock(path, timeout)
    if release is None:
        return None
    t0 = time.perf_counter()
    def timed_release():
        held = time.perf_counter() - t0
        release()
        with open(os.environ["TB_LOCK_LOG"], "a") as f:
            f.write(f"{held}\\n")
    return timed_release
L._flock = _timed
from tokenbudget.hook import main
main()
"""


def worker(args: list[str]) -> None:
    """`contention.py --worker PY DATA IDX CALLS START OUT`: one session's calls."""
    py, data, idx, calls, start, out = args
    i, n = int(idx), int(calls)
    env = {k: v for k, v in os.environ.items()}
    g = synth.Synth(1000 + i)
    sid = f"{i:08d}-0000-4000-8000-{i:012d}"
    cwd = f"/home/dev/load-{i:02d}"
    c = synth.Ctx(sid, cwd, f"load-{i}", "claude-sonnet-4-5-20250929")
    pdir = Path(data) / ".claude" / "projects" / synth.project_dirname(cwd)
    pdir.mkdir(parents=True, exist_ok=True)
    path = pdir / f"{sid}.jsonl"
    ts = time.time() - 3600
    pid = g.prompt(c, ts, "prompt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(c.lines) + "\n")
    c.lines.clear()
    while time.time() < float(start):
        time.sleep(0.001)
    rows = []
    for k in range(n):
        ts, _ = g.request(c, c.lines, ts + 1, pid, "prompt", last=False)
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n".join(c.lines) + "\n")
        c.lines.clear()
        ev = common.hook_event("PostToolUse", sid, str(path), cwd, i * 100_000 + k, pid)
        t0 = time.perf_counter()
        p = subprocess.run([py, "-P", "-c", TIMED_HOOK, "PostToolUse"], input=ev, env=env,
                           capture_output=True, cwd=str(common.WORK))
        t = time.perf_counter() - t0
        rows.append([time.time(), t, p.returncode, p.stdout.decode(errors="replace").strip(),
                     g.truth.totals.to_json()["totalTokens"], g.truth.totals.requests])
    Path(out).write_text(json.dumps({
        "sid": sid, "rows": rows, "tokens": g.truth.totals.to_json()["totalTokens"],
        "requests": g.truth.totals.requests}))


def prober(args: list[str]) -> None:
    """`contention.py --prober PY STOPFILE OUT`: `python -c "import json"` until told to stop."""
    py, stop, out = args
    times = []
    load = []  # the 1-minute load average, sampled as the probe goes
    while not os.path.exists(stop):
        t0 = time.perf_counter()
        subprocess.run([py, "-c", "import json"], cwd=str(common.WORK))
        times.append(time.perf_counter() - t0)
        load.append(os.getloadavg()[0])
        time.sleep(0.05)
    Path(out).write_text(json.dumps({"times": times, "load": load}))


def run(py: Path, label: str, procs: int, calls: int, base: dict[str, Any]) -> dict[str, Any]:
    """One load: `procs` sessions x `calls` PostToolUse calls with code `py`; its figures."""
    data = common.WORK / f"hist-contention-{label}-{procs}"
    state = common.WORK / f"state-contention-{label}-{procs}"
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)
    common.write_config(state)  # the default lock timeout
    tb = common.data_dir(state)
    tb.mkdir(parents=True)
    outs = common.WORK / f"contention-out-{label}-{procs}"
    shutil.rmtree(outs, ignore_errors=True)
    outs.mkdir()
    lock_log = outs / "lock.log"
    env = {**common.state_env(data, state), "TB_LOCK_LOG": str(lock_log)}
    me = str(Path(__file__).resolve())

    # Uncontended, same machine, same ledger: one session alone, then the baseline.
    shutil.copyfile(base["pristine"], tb / "ledger.json")
    subprocess.run([sys.executable, me, "--worker", str(py), str(data), "99", "15",
                    str(time.time()), str(outs / "alone.json")], env=env, check=True)
    alone = [r[1] for r in json.loads((outs / "alone.json").read_text())["rows"]]
    base_alone = [common.run([str(py), "-c", "import json"], env=env).seconds for _ in range(15)]
    shutil.copyfile(base["pristine"], tb / "ledger.json")  # start the load from the same ledger
    (tb / "ledger.journal.jsonl").unlink(missing_ok=True)
    lock_log.unlink(missing_ok=True)

    start = time.time() + 3.0
    stop = outs / "stop"
    probe = subprocess.Popen([sys.executable, me, "--prober", str(py), str(stop),
                              str(outs / "probe.json")], env=env)
    workers = [subprocess.Popen([sys.executable, me, "--worker", str(py), str(data), str(i),
                                 str(calls), str(start), str(outs / f"w{i}.json")], env=env)
               for i in range(procs)]
    for p in workers:
        p.wait()
    wall = time.time() - start
    stop.write_text("")
    probe.wait()

    ledger = JsonFileStore(tb / "ledger.json").snapshot()  # the snapshot and any journal
    results = [json.loads((outs / f"w{i}.json").read_text()) for i in range(procs)]
    rows = [r for w in results for r in w["rows"]]
    lat = [r[1] for r in rows]

    def timed_out(r: list[Any]) -> bool:
        return "not obtained" in r[3] or "not checked" in r[3]

    timeouts = sum(1 for r in rows if timed_out(r))
    # Since 0.1.0's last round a call that misses the lock still decides, from the ledger as
    # last committed plus its session's news: enforced, only not recorded by that call.
    unlocked = sum(1 for r in rows if "last committed" in r[3])
    other_errors = [r[3] for r in rows if r[2] != 0 or (r[3] not in ("{}", "")
                    and not timed_out(r))]
    fingerprints = len(ledger["events"])
    wrong = {}
    unread_tail = 0
    for w in results:
        s = ledger["sessions"].get(w["sid"])
        tokens = sum(sum(m[:5]) for m in s["m"].values()) if s else 0
        requests = sum(m[6] for m in s["m"].values()) if s else 0
        # What the session's last call that got the lock had appended: calls after it timed
        # out and wrote nothing, so their requests wait, unread, for the session's next call.
        done = [r for r in w["rows"] if not timed_out(r)]
        expected = (done[-1][4], done[-1][5]) if done else (0, 0)
        unread_tail += w["requests"] - expected[1]
        if (tokens, requests) != expected:
            wrong[w["sid"]] = {"ledger": [tokens, requests], "expected": list(expected),
                               "appended": [w["tokens"], w["requests"]]}
    probe = json.loads((outs / "probe.json").read_text())
    probe_times, load = probe["times"], probe["load"]
    held = [float(x) for x in lock_log.read_text().split()] if lock_log.exists() else [0.0]
    st = common.stats(lat)
    probe_st = common.stats(probe_times) if probe_times else None
    held_sorted = sorted(held)
    out: dict[str, Any] = {
        "code": label, "procs": procs, "calls_each": calls, "calls": len(rows),
        "wall_seconds": wall,
        "starting_ledger_bytes": base["pristine"].stat().st_size,
        "final_ledger_bytes": (tb / "ledger.json").stat().st_size,
        "latency": st, "latency_alone": common.stats(alone),
        "baseline_alone": common.stats(base_alone),
        "baseline_under_load": probe_st,
        "p95_over_baseline_p95_under_load": st["p95"] / probe_st["p95"] if probe_st else None,
        "lock_held": common.stats(held),
        "lock_held_p99": held_sorted[min(len(held) - 1, int(0.99 * len(held)))],
        "load_average": {"median": sorted(load)[len(load) // 2], "max": max(load)} if load
        else None,
        "lock_timeouts": timeouts, "decided_unlocked": unlocked,
        "failed_open": timeouts - unlocked, "other_errors": other_errors[:5],
        "fingerprints": fingerprints, "fingerprints_expected": len(rows) - timeouts,
        "lost_updates": (len(rows) - timeouts) - fingerprints,
        "sessions_wrong": wrong, "requests_unread_after_trailing_timeouts": unread_tail,
        "raw_latency": lat,
    }
    print(f"{label} x{procs}: {len(rows)} calls in {wall:.0f} s; p95 {common.ms(st['p95'])}"
          f" ({out['p95_over_baseline_p95_under_load']:.2f}x import json's p95 under load);"
          f" lock held median {common.ms(out['lock_held']['median'])}, p95"
          f" {common.ms(out['lock_held']['p95'])}, p99 {common.ms(out['lock_held_p99'])};"
          f" load average {out['load_average']}; lock missed {timeouts}, of which"
          f" decided unlocked {unlocked}, failed open {timeouts - unlocked};"
          f" other errors {len(other_errors)}; lost updates {out['lost_updates']};"
          f" sessions wrong {len(wrong)}", flush=True)
    shutil.rmtree(data)
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "--prober":
        return prober(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", default="16,32,64", help="comma-separated session counts")
    ap.add_argument("--calls", type=int, default=40, help="hook calls per session")
    ap.add_argument("--sessions", type=int, default=5000, help="size of the starting ledger")
    ap.add_argument("--before", default="main",
                    help="git ref of the code to compare with ('none': this tree's alone)")
    ap.add_argument("--reinstall", action="store_true", help="reinstall the working tree first")
    ap.add_argument("--name", default="contention")
    a = ap.parse_args()
    py = common.bench_python(reinstall=a.reinstall)
    before = None if a.before == "none" else common.bench_python_at(a.before)
    import hook_overhead

    base = hook_overhead.prepare(py, a.sessions, "realistic", False)
    runs = []
    for procs in [int(n) for n in a.procs.split(",")]:
        for label, code in (("before", before), ("after", py)):
            if code is not None:
                runs.append(run(code, label, procs, a.calls, base))
            common.save(a.name, {"before_ref": a.before, "after": common.installed(),
                                 "runs": runs})


if __name__ == "__main__":
    main()
