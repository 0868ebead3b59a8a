#!/usr/bin/env python3
"""Contention: 16, 32 and 64 processes making hook calls against one ledger, before and after.

    python bench/contention.py [--procs 16,32,64] [--calls 40] [--before main|none]

Each process plays one Claude Code session: it appends one API request to its transcript (as
Claude Code writes it), then runs the PostToolUse hook, `--calls` times. All start together
against the ledger of bench/hook_overhead.py's realistic case (5,000 sessions seen, five
budgets). Each size runs with the code at `--before` (a git ref) and then the working tree,
each from the same starting ledger, in the same run.

Hooks run as installed hooks run them (`python -P -c ...`), with two additions (the same
wrappers both sides): the lock's `_flock` is wrapped to log how long each holder kept the lock,
and `hook._commit_later` to log each commit made after its answer, and whether it was made or
gave up. A command hook calls it only in a detached child (tokenbudget/detached.py: the lock
busy, the call answered `{}` first); those children may outlive the load, and are waited for
(their markers let go) before the ledger is checked.

Lost updates are looked for three ways, with no sync afterwards:
- every call leaves its event fingerprint in the ledger (kept 600 s): all must be there, less
  the calls that answered "lock not obtained" and those whose detached commit gave up (those
  wrote nothing, by design);
- each session's tokens and request count in the ledger equal what its process had appended
  when its last call whose commit landed ran, itself or in its child (the calls after it
  read nothing: their requests are counted as left unread at the end);
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
import tokenbudget.hook as H
def _note(what):
    with open(os.environ["TB_DETACH_LOG"], "a") as f:
        f.write(f"{os.environ['TB_CALL']} {what}\\n")
def _counted(commit, said):
    def counted(*args, **kwargs):
        try:
            commit(*args, **kwargs)
        except BaseException as e:
            _note(f"{said}gave-up {type(e).__name__}")
            raise
        _note(f"{said}committed")
    return counted
H._commit_later = _counted(H._commit_later, "")
_quick = H._quick
def _counted_quick(*args, **kwargs):
    answer, known = _quick(*args, **kwargs)
    if answer is not None:
        _note("quick")  # nothing left to read: its news was read by a commit before it
    return answer, known
H._quick = _counted_quick
if hasattr(H, "_commit_news"):  # a detached child recording what later calls handed on
    H._commit_news = _counted(H._commit_news, "again-")
    import tokenbudget.detached as D
    _start = D.start
    def _counted_start(*args, **kwargs):
        how = _start(*args, **kwargs)
        if how is not None:
            _note(how.replace(" ", "-"))  # "started" or "handed-on"
        return how
    D.start = _counted_start
H.main()
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
        env["TB_CALL"] = f"{i}:{k}"
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
    detach_log = outs / "detached.log"
    env = {**common.state_env(data, state), "TB_LOCK_LOG": str(lock_log),
           "TB_DETACH_LOG": str(detach_log), "TB_CALL": "alone"}
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
    detach_log.unlink(missing_ok=True)
    shutil.rmtree(tb / "pending", ignore_errors=True)

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
    waited_at = time.monotonic()
    still_pending = wait_pending(tb / "pending", 120.0)
    waited = time.monotonic() - waited_at

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
    # Calls answered before their commit: each that started a detached child, and how its
    # commit ended; each that handed its news on to its session's pending child; and what
    # those children recorded after their own commit.
    said: dict[str, list[str]] = {}
    if detach_log.exists():
        for line in detach_log.read_text().splitlines():
            call, what = line.split(" ", 1)
            said.setdefault(call, []).append(what)
    started = {c for c, w in said.items() if "started" in w}
    handed = {c for c, w in said.items() if "handed-on" in w}
    gave_up = {c for c, w in said.items() if any(x.startswith("gave-up") for x in w)}
    again = [x for w in said.values() for x in w if x.startswith("again")]
    quick = {c for c, w in said.items() if "quick" in w}
    other_errors = [r[3] for r in rows if r[2] != 0 or (r[3] not in ("{}", "")
                    and not timed_out(r))]
    fingerprints = len(ledger["events"])
    wrong = {}
    unread_tail = 0
    for n, w in enumerate(results):
        s = ledger["sessions"].get(w["sid"])
        tokens = sum(sum(m[:5]) for m in s["m"].values()) if s else 0
        requests = sum(m[6] for m in s["m"].values()) if s else 0
        # What the session's last call whose commit is known to have landed (made by the call
        # itself, or by the child it started) had appended: at least that must be in the
        # ledger, and exactly what the session had appended by one of its later calls (those
        # that timed out read nothing; those handed on may have been recorded by the pending
        # child); their requests otherwise wait, unread, for the session's next call.
        landed = [k for k, r in enumerate(w["rows"]) if not timed_out(r)
                  and f"{n}:{k}" not in handed and f"{n}:{k}" not in gave_up]
        first = landed[-1] if landed else -1
        allowed = [(r[4], r[5]) for r in w["rows"][max(first, 0):]]
        if first < 0:
            allowed.append((0, 0))
        unread_tail += w["requests"] - requests
        if (tokens, requests) not in allowed:
            wrong[w["sid"]] = {"ledger": [tokens, requests],
                               "at_least": list(allowed[0]) if first >= 0 else [0, 0],
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
        "answered_before_commit": len(started) + len(handed),
        "detached_started": len(started), "detached_committed": len(started - gave_up),
        "detached_gave_up": len(gave_up),
        "handed_on_to_pending_child": len(handed),
        "recorded_again_by_child": sum(1 for x in again if x == "again-committed"),
        "again_gave_up": sum(1 for x in again if x.startswith("again-gave-up")),
        "gave_up_why": sorted({x for w in said.values() for x in w if "gave-up" in x}),
        "seconds_waited_for_pending_commits": waited, "still_pending": still_pending,
        "fingerprints": fingerprints,
        # Each call that committed itself or whose child did. Not recorded: a handed-on call's
        # event (its news is, by the child's next commit), nor that of a call that found its
        # news read already (by a detached commit worked out again, or one recording what
        # was handed on), which answers on the quick path and writes nothing.
        "quick_calls": len(quick),
        "fingerprints_expected": len(rows) - timeouts - len(gave_up | handed | quick),
        "lost_updates": len(rows) - timeouts - len(gave_up | handed | quick) - fingerprints,
        "sessions_wrong": wrong, "requests_unread_at_end": unread_tail,
        "raw_latency": lat,
    }
    print(f"{label} x{procs}: {len(rows)} calls in {wall:.0f} s; p95 {common.ms(st['p95'])}"
          f" ({out['p95_over_baseline_p95_under_load']:.2f}x import json's p95 under load);"
          f" lock held median {common.ms(out['lock_held']['median'])}, p95"
          f" {common.ms(out['lock_held']['p95'])}, p99 {common.ms(out['lock_held_p99'])};"
          f" load average {out['load_average']}; lock missed {timeouts}, of which"
          f" decided unlocked {unlocked}, failed open {timeouts - unlocked};"
          f" answered before commit {len(started) + len(handed)} (started a child"
          f" {len(started)}, of which gave up {len(gave_up)}; handed on {len(handed)})"
          f" (pending waited for {waited:.1f} s, {len(still_pending)} still pending);"
          f" requests unread at the end {unread_tail};"
          f" other errors {len(other_errors)}; lost updates {out['lost_updates']};"
          f" sessions wrong {len(wrong)}", flush=True)
    shutil.rmtree(data)
    return out


def wait_pending(folder: Path, timeout: float) -> list[str]:
    """Wait until no detached commit holds its marker in `folder` (tokenbudget/detached.py),
    `timeout` seconds at most; the sessions still pending then."""
    import fcntl

    deadline = time.monotonic() + timeout
    settled = False
    while True:
        held = []
        for marker in folder.glob("*") if folder.is_dir() else []:
            try:
                fd = os.open(marker, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                held.append(marker.name)
            finally:
                os.close(fd)
        if not held and not settled:
            settled = True  # a child lets its marker go before its last look: look again
        elif not held or time.monotonic() >= deadline:
            return held
        else:
            settled = False
        time.sleep(0.05)


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
