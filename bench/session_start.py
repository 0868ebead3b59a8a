#!/usr/bin/env python3
"""A session's start, run exactly as `tokenbudget install` registers its SessionStart hook,
before and after, against `python -c "import json"`. Every `claude -p` run starts a session.

    TB_BENCH_DIR=/tmp/tb-bench-start python bench/session_start.py --before REF [--rounds 20]
                                                                    [--live 10,2000]

The state is hot_view.py's (bench/synth.py, seed 11, --lean, `--live` sessions within 10 days,
retention 14 days, the five budgets no history reaches), then `--lines` calls with news of the
latest session (a response each, PostToolUse) so that the journal holds what a few turns leave
in it. Each timed call is the installed quick start (quick_call.py) answering SessionStart for
a new session in the latest session's project. Before each call the state is put back
(untimed): its files by hard links, the journal's bytes written back into the same file, so
the hot view stays trusted as it is on a real machine. Interleaved and shuffled rounds; medians
of wall and of the child's CPU, each as a ratio to the baseline's in the same rounds, and the
time each call held the ledger's lock (logged as contention.py logs it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import contention
import hot_view
import quick_call


def start_event(s: dict[str, Any], n: int) -> bytes:
    latest = s["latest"]
    sid = f"bbbbbbbb-0000-4000-8000-{n:012d}"
    transcript = os.path.join(os.path.dirname(latest["transcript"]), f"{sid}.jsonl")
    raw = json.loads(common.hook_event("SessionStart", sid, transcript, latest["cwd"], n))
    raw["source"] = "startup"
    return json.dumps(raw).encode()


def prepare(py: Path, live: int, lines: int) -> dict[str, Any]:
    """hot_view.py's state synced anew, then `lines` responses recorded by PostToolUse."""
    # The same starting point every run: the cached history's latest transcript cut back to
    # its generated length (the calls below append to it), the state synced from nothing.
    hist = common.WORK / f"hist-{live}-live"
    if (hist / "truth.json").exists():
        latest = json.loads((hist / "truth.json").read_text())["latest"]
        mark = hist / "session_start.size"
        if mark.exists():
            os.truncate(latest["transcript"], int(mark.read_text()))
        else:
            mark.write_text(str(os.path.getsize(latest["transcript"])))
    shutil.rmtree(common.WORK / f"state-hot-{live}", ignore_errors=True)
    s = hot_view.prepare(py, live)
    latest = s["latest"]
    mark = hist / "session_start.size"
    if not mark.exists():
        mark.write_text(str(os.path.getsize(latest["transcript"])))
    for k in range(lines):  # a few turns' commits in the journal
        with open(latest["transcript"], "ab") as f:
            f.write(quick_call.a_turn(s, 1, 500 + k))
        ev = common.hook_event("PostToolUse", latest["session"], latest["transcript"],
                               latest["cwd"], 900 + k, f"bench-start-{k}")
        quick_call.run([*quick_call.quick_start(py), "PostToolUse"], ev, s["env"])
    return s


def measure(after: Path, before: Path, live: int, lines: int, rounds: int) -> dict[str, Any]:
    """One size: its state prepared, then `rounds` interleaved, shuffled rounds; the figures."""
    s = prepare(after, live, lines)
    tb: Path = s["tb"]
    kept = common.Kept(tb)  # put back before each call
    journal, saved, reset = kept.journal, kept.journal_bytes, kept.reset

    counter = [0]
    cases: dict[str, Any] = {}
    held: dict[str, list[float]] = {"after": [], "before": []}
    lock_log = tb.parent / "lock.log"
    env = {**s["env"], "TB_LOCK_LOG": str(lock_log)}
    for code, py in (("after", after), ("before", before)):
        argv = quick_call.quick_start(py)
        # The lock's hold logged as contention.py logs it (the same wrapper both sides), then
        # the entry the version's install writes (`main()` before, `run()` now).
        entry = re.search(r"from tokenbudget\.hook import (main|run); \1\(\)\Z", argv[-1])
        assert entry is not None, argv[-1]
        timed = contention.TIMED_HOOK.replace("from tokenbudget.hook import main\nmain()",
                                              f"from tokenbudget.hook import {entry[1]}\n"
                                              f"{entry[1]}()")
        argv = [*argv[:-1], argv[-1][:entry.start()] + timed, "SessionStart"]

        def case(argv: list[str] = argv, code: str = code, py: Path = py
                 ) -> tuple[float, float]:
            reset([str(py)], env)  # the view restamped by the code measured next
            lock_log.unlink(missing_ok=True)
            counter[0] += 1
            wall, cpu, out = quick_call.run(argv, start_event(s, counter[0]), env)
            assert json.loads(out) == {} or "hookSpecificOutput" in json.loads(out), out
            held[code].append(sum(float(x) for x in lock_log.read_text().split()))
            return wall, cpu
        cases[code] = case
    base = [str(after), "-c", "import json"]
    cases["baseline"] = lambda: quick_call.run(base, b"", s["env"])[:2]
    # Untimed: what each does to the journal (after: a line added; before: folded).
    for code in ("after", "before"):
        cases[code]()
        common.log(f"{live} live, {code}: journal {len(saved)} -> "
                   f"{journal.stat().st_size} bytes")
    # Untimed: put back, the hot view is trusted again (the state a start meets on a machine).
    sys.path.insert(0, str(common.REPO))
    from tokenbudget import hot

    reset([str(after)], env)
    assert hot.read(str(tb / "ledger.json"), str(journal), s["latest"]["session"]) is not None
    times: dict[str, list[tuple[float, float]]] = {n: [] for n in cases}
    names = list(cases)
    rng = random.Random(0)
    for r in range(rounds + 2):
        rng.shuffle(names)
        for n in names:
            got = cases[n]()
            if r >= 2:
                times[n].append(got)
    reset()
    bw = statistics.median(w for w, _ in times["baseline"])
    bc = statistics.median(c for _, c in times["baseline"])
    rows = {}
    for n, xs in times.items():
        w = statistics.median(x for x, _ in xs)
        c = statistics.median(y for _, y in xs)
        rows[n] = {"wall_s": w, "cpu_s": c, "wall_ratio": w / bw, "cpu_ratio": c / bc,
                   "raw": xs}
    for code in held:
        xs = held[code][3:]  # the untimed call and the two warm-up rounds left out
        rows[code]["lock_held_median_s"] = statistics.median(xs)
        rows[code]["lock_held_max_s"] = max(xs)
    result = {"live": s["live"], "ledger_bytes": s["ledger_bytes"],
                          "journal_bytes": len(saved), "cases": rows}
    print(f"\n{s['live']} live sessions, ledger {s['ledger_bytes'] / 1e6:.2f} MB, journal "
          f"{len(saved)} bytes, {rounds} rounds")
    for n, e in rows.items():
        hold = (f"; lock held median {e['lock_held_median_s'] * 1000:.1f} ms, max "
                f"{e['lock_held_max_s'] * 1000:.1f} ms" if "lock_held_max_s" in e else "")
        print(f"{n}: wall {e['wall_s'] * 1000:.1f} ms ({e['wall_ratio']:.2f}x), CPU "
              f"{e['cpu_s'] * 1000:.1f} ms ({e['cpu_ratio']:.2f}x){hold}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="git ref of the code before (e.g. main)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--live", default="10,2000")
    ap.add_argument("--lines", type=int, default=20, help="journal lines before each start")
    ap.add_argument("--name", default="session_start")
    a = ap.parse_args()
    after = common.bench_python(reinstall=True)
    before = common.bench_python_at(a.before)
    results: dict[str, Any] = {}
    for live in [int(n) for n in a.live.split(",")]:
        results[str(live)] = measure(after, before, live, a.lines, a.rounds)
    common.save(a.name, {"machine": common.machine(), "rounds": a.rounds,
                         "after": common.installed(after.parent.parent),
                         "before": common.installed(before.parent.parent), "runs": results})


if __name__ == "__main__":
    main()
