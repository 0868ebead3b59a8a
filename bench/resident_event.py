#!/usr/bin/env python3
"""The resident answerer's own work for one http event with news, at N live sessions: the read
to the reply (hook.handle with `later`, as Answerer._answer calls it) and the commit after the
reply, each timed inside one warm process, as the answerer runs them.

    TB_BENCH_DIR=/tmp/tb-bench-event python bench/resident_event.py --before main \\
        [--live 10,2000] [--events 30] [--rounds 4]

The state is hot_view.py's at N live sessions (bench/synth.py, seed 11, --lean, within 10 days;
the five budgets no history reaches). Three codes, each in processes of its own: REF's
(`before`, installed non-editable in a venv of its own), this tree's as the answerer runs it
(`after`: `store.keep_warm()`, as answerer.serve calls it) and this tree's without it
(`after-cold`: every read parses the whole ledger, as before). A process imports what
answerer.serve imports, then answers `--events` PostToolBatch events of the latest session,
each after one more response (bench/synth.py's, one request) is appended to its transcript;
the first event of each process (its imports, a cold read) is left out. Before each process
the state is put back as synced (common.Kept) and the transcript cut to its length. The
processes of the three codes take turns, `--rounds` each; the figures are medians over every
event of a code: wall time and the thread's CPU time, of the read-to-reply and of the commit
(the commit's fsync, after the lock, included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import hot_view
from quick_call import a_turn

DRIVER = r"""
import json, sys, time
from tokenbudget import hook, store
from tokenbudget import config, engine, ingest, pricing, sync  # what answerer.serve imports
if sys.argv[2] == "warm":
    store.keep_warm()
work = json.load(open(sys.argv[1]))
out = []
for lines, raw in zip(work["lines"], work["events"]):
    with open(work["transcript"], "ab") as f:
        f.write(lines.encode())
    later = []
    t0, c0 = time.perf_counter(), time.thread_time()
    answer = hook.handle_safely("PostToolBatch", raw.encode(), later=later)
    t1, c1 = time.perf_counter(), time.thread_time()
    assert answer == {} and len(later) == 1, (answer, later)
    later[0]()
    t2, c2 = time.perf_counter(), time.thread_time()
    out.append([t1 - t0, c1 - c0, t2 - t1, c2 - c1])
print(json.dumps(out[1:]))
"""

PARTS = ("reply wall", "reply CPU", "commit wall", "commit CPU")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="git ref of the code before (e.g. main)")
    ap.add_argument("--live", default="10,2000")
    ap.add_argument("--events", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--name", default="resident_event")
    a = ap.parse_args()
    after = common.bench_python(reinstall=True)
    before = common.bench_python_at(a.before)
    codes = {"before": (before, "cold"), "after-cold": (after, "cold"), "after": (after, "warm")}
    results: dict[str, Any] = {"machine": common.machine(), "before": a.before,
                               "events": a.events, "rounds": a.rounds, "live": {}}
    for n in (int(x) for x in a.live.split(",")):
        s = hot_view.prepare(after, n)
        kept = common.Kept(s["tb"])
        transcript = Path(s["latest"]["transcript"])
        size = transcript.stat().st_size
        latest = s["latest"]
        work = {"transcript": str(transcript),
                "lines": [a_turn(s, 1, 1000 + i).decode() for i in range(a.events + 1)],
                "events": [common.hook_event("PostToolBatch", latest["session"], str(transcript),
                                             latest["cwd"], i, f"bench-turn-{i}").decode()
                           for i in range(a.events + 1)]}
        with tempfile.NamedTemporaryFile("w", suffix=".json", dir=common.WORK,
                                         delete=False) as f:
            json.dump(work, f)
        got: dict[str, list[list[float]]] = {c: [] for c in codes}
        try:
            for _ in range(a.rounds):
                for code, (py, how) in codes.items():
                    kept.reset()
                    with open(transcript, "r+b") as t:
                        t.truncate(size)
                    p = subprocess.run([str(py), "-c", DRIVER, f.name, how], env=s["env"],
                                       capture_output=True, text=True, check=False,
                                       cwd=str(common.WORK))
                    assert p.returncode == 0, p.stderr
                    got[code] += json.loads(p.stdout)
        finally:
            os.unlink(f.name)
            kept.reset()
            with open(transcript, "r+b") as t:
                t.truncate(size)
        med = {c: {part: statistics.median(e[i] for e in rows) for i, part in enumerate(PARTS)}
               for c, rows in got.items()}
        results["live"][n] = {"live": s["live"], "ledger_bytes": s["ledger_bytes"],
                              "medians": med, "timings": got}
        print(f"\n{s['live']} live sessions, ledger {s['ledger_bytes'] / 1e6:.2f} MB;"
              f" {len(got['after'])} events a code; load average {os.getloadavg()[0]:.1f}\n")
        print("| code | " + " | ".join(PARTS) + " |")
        print("|---|" + "---|" * len(PARTS))
        for c in codes:
            cells = [f"{med[c][p] * 1000:.2f} ms ({med[c][p] / med['before'][p]:.2f}x)"
                     for p in PARTS]
            print(f"| {c} | " + " | ".join(cells) + " |")
    common.save(a.name, results)


if __name__ == "__main__":
    main()
