#!/usr/bin/env python3
"""`tokenbudget status --json` and `report --json` with nothing new, at 10 and 2,000 live
sessions, before and after: wall time, whether the ledger's files were written, and how long
the command held the ledger's lock.

    TB_BENCH_DIR=/tmp/tb-bench-quiet python bench/quiet_command.py --before main \
        [--live 10,2000] [--rounds 20] [--lock-runs 5]

Each size is bench/hot_view.py's state (synthetic history of that many sessions within 10
days, retention 14 days so all stay live, synced by this tree's code). Both commands bring the
ledger up to date first (sync.sync_all); with nothing new, the code before rewrote the whole
snapshot there (temp file, fsync, rename, folder fsync) and the hot view. Every case runs once
per round in a shuffled order with `python -c "import json"` in the same rounds (whole
processes, `common.run`: spawn to exit). Before timing, each code's command is run once and
the ledger's files compared (inode, mtime, size) to say whether it writes. The lock: in a
child process per run, `tokenbudget.lock._flock` wrapped to take the wall and CPU time
(`time.thread_time`) between taking and releasing it, summed over the command's
transactions, and the command run through `tokenbudget.cli.main`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import hot_view

COMMANDS = {"status": ["status", "--json"], "report": ["report", "--json"]}

LOCK_CHILD = """
import json, sys, time
from tokenbudget import lock
held = []
real = lock._flock
def timed(path, timeout):
    release = real(path, timeout)
    if release is None:
        return None
    w0, c0 = time.perf_counter(), time.thread_time()
    def done():
        held.append((time.perf_counter() - w0, time.thread_time() - c0))
        release()
    return done
lock._flock = timed
from tokenbudget.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    sys.stdout.flush()
    sys.stderr.write("\\nLOCK " + json.dumps(held) + "\\n")
"""


def files(tb: Path) -> list[tuple[str, int, int, int]]:
    """The ledger's files as (name, inode, mtime, size)."""
    return sorted((p.name, p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
                  for p in tb.iterdir() if p.name.startswith("ledger") and p.is_file())


def writes(py: Path, s: dict[str, Any], argv: list[str]) -> list[str]:
    """Which of the ledger's files one run of the command changed."""
    before = {f[0]: f[1:] for f in files(s["tb"])}
    r = common.run([str(py.parent / "tokenbudget"), *argv], env=s["env"])
    assert r.returncode == 0, r
    after = {f[0]: f[1:] for f in files(s["tb"])}
    return sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n))


def lock_held(py: Path, s: dict[str, Any], argv: list[str]) -> tuple[float, float, int]:
    """One run in a child: (wall, CPU) the lock was held in all, and how many times taken."""
    import subprocess

    p = subprocess.run([str(py), "-c", LOCK_CHILD, *argv], env=s["env"], cwd=str(common.WORK),
                       capture_output=True, text=True, check=True)
    line = [x for x in p.stderr.splitlines() if x.startswith("LOCK ")][-1]
    held = json.loads(line[5:])
    return sum(h[0] for h in held), sum(h[1] for h in held), len(held)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--live", default="10,2000")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--lock-runs", type=int, default=5)
    ap.add_argument("--before", default="main", help="git ref of the code before")
    ap.add_argument("--name", default="quiet_command")
    a = ap.parse_args()
    after = common.bench_python(reinstall=True)
    before = common.bench_python_at(a.before)
    codes = {"after": after, "before": before}
    out: dict[str, Any] = {"rounds": a.rounds,
                           "after": common.installed(after.parent.parent),
                           "before": common.installed(before.parent.parent), "sizes": []}
    for n in [int(x) for x in a.live.split(",")]:
        s = hot_view.prepare(after, n)
        row: dict[str, Any] = {"sessions": n, "live": s["live"],
                               "ledger_bytes": s["ledger_bytes"], "writes": {}, "lock": {},
                               "cases": {}}
        cases: dict[str, Any] = {}
        for code, py in codes.items():
            for cmd, argv in COMMANDS.items():
                row["writes"][f"{code} {cmd}"] = writes(py, s, argv)
                cases[f"{code} {cmd}"] = hot_view.timer([str(py.parent / "tokenbudget"), *argv],
                                                        b"", s["env"])
        cases["baseline"] = hot_view.timer([str(after), "-c", "import json"], b"", s["env"])
        load0 = common.machine()["loadavg"]
        times = common.interleave(cases, a.rounds)
        row["loadavg"] = [load0, common.machine()["loadavg"]]
        base = common.stats(times["baseline"])["median"]
        for case, xs in times.items():
            st = common.stats(xs)
            row["cases"][case] = {"median_s": st["median"], "p95_s": st["p95"],
                                  "ratio": st["median"] / base}
        for _ in range(a.lock_runs):  # paired: each code in turn
            for code, py in codes.items():
                for cmd, argv in COMMANDS.items():
                    got = lock_held(py, s, argv)
                    row["lock"].setdefault(f"{code} {cmd}", []).append(got)
        for case in row["cases"]:
            if case in row["lock"]:
                runs = row["lock"][case]
                row["cases"][case]["lock_wall_s"] = statistics.median(r[0] for r in runs)
                row["cases"][case]["lock_cpu_s"] = statistics.median(r[1] for r in runs)
                row["cases"][case]["locks_taken"] = runs[0][2]
        out["sizes"].append(row)
        common.log(f"{n} live: writes {row['writes']}")
    common.save(a.name, out)
    print("\nlive | case | median wall | ratio to import json | after/before | lock held wall"
          " (CPU), median | locks | files written")
    for row in out["sizes"]:
        c = row["cases"]
        for case, e in c.items():
            code, _, cmd = case.partition(" ")
            pair = (f"{e['median_s'] / c['before ' + cmd]['median_s']:.2f}x"
                    if code == "after" else "")
            lock = (f"{e['lock_wall_s'] * 1000:7.1f} ms ({e['lock_cpu_s'] * 1000:6.1f})"
                    if "lock_wall_s" in e else "")
            print(f"{row['live']:5d} {case:16s} {e['median_s'] * 1000:8.1f} ms "
                  f"{e['ratio']:6.2f}x {pair:7s} {lock} {e.get('locks_taken', '')} "
                  f"{row['writes'].get(case, '')}")
        print(f"      load average {row['loadavg']}")


if __name__ == "__main__":
    main()
