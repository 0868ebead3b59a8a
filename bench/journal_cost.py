#!/usr/bin/env python3
"""What finding a commit's changes costs, against what rewriting the ledger cost.

    python bench/journal_cost.py [--sessions 5000] [--case realistic] [--rounds 30]

On the ledger of bench/hook_overhead.py's case (synced once, cached), in one process, median
of `--rounds`: parsing it (every hook call did and does), three ways to copy it (the copy a
commit compares against), comparing it with its copy when nothing changed and after a change
like one call with news (one session's record, one event), the journal line that change
makes, and serialising the whole ledger (what every commit with news did before the journal).
"""

from __future__ import annotations

import argparse
import copy
import json
import pickle
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

sys.path.insert(0, str(common.REPO))
from tokenbudget import journal


def median_s(fn: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=5000)
    ap.add_argument("--case", default="realistic")
    ap.add_argument("--rounds", type=int, default=30)
    a = ap.parse_args()
    import hook_overhead

    s = hook_overhead.prepare(common.bench_python(), a.sessions, a.case, False)
    raw = s["pristine"].read_bytes()
    ledger = json.loads(raw)
    ledger.pop("journal", None)
    changed = journal.copy(ledger)
    sid = max(changed["sessions"], key=lambda k: changed["sessions"][k]["l"])
    rec = changed["sessions"][sid]
    rec["l"] += 1.0
    rec["t"][f"bench-turn-{len(rec['t'])}"] = [1, 2, 3.0, 4.0]
    changed["events"]["bench-event"] = 1.0
    sets, dels = journal.changes(ledger, changed)
    line = journal.encode(1, sets, dels)
    r = a.rounds
    res = {
        "ledger_bytes": len(raw), "live_sessions": len(ledger["sessions"]),
        "keys": len(ledger["keys"]), "journal_line_bytes": len(line),
        "parse_json": median_s(lambda: json.loads(raw), r),
        "copy_marshal": median_s(lambda: journal.copy(ledger), r),
        "copy_pickle": median_s(lambda: pickle.loads(pickle.dumps(ledger, 5)), r),
        "copy_json": median_s(lambda: json.loads(json.dumps(ledger)), r),
        "copy_deepcopy": median_s(lambda: copy.deepcopy(ledger), max(3, r // 10)),
        "changes_none": median_s(lambda: journal.changes(ledger, journal.copy(ledger)), r)
        - median_s(lambda: journal.copy(ledger), r),
        "changes_one_call": median_s(lambda: journal.changes(ledger, changed), r),
        "dumps_whole": median_s(
            lambda: json.dumps(ledger, separators=(",", ":"), allow_nan=False).encode(), r),
    }
    common.save(f"journal_cost-{a.case}", res)
    print(f"ledger {len(raw) / 1e6:.2f} MB, {res['live_sessions']} live sessions; a call's"
          f" journal line {len(line)} bytes")
    for k in ("parse_json", "copy_marshal", "copy_pickle", "copy_json", "copy_deepcopy",
              "changes_none", "changes_one_call", "dumps_whole"):
        print(f"{k:18} {common.ms(res[k])}")


if __name__ == "__main__":
    main()
