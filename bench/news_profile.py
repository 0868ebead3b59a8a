#!/usr/bin/env python3
"""Where a hook call with news spends its time: cProfile of one call, in its own process, on
quick_call.py's state at `--live N` sessions (this tree's code).

    TB_BENCH_DIR=/tmp/tb-bench-quick python bench/news_profile.py --live 2000 [--event Stop]

The call is the installed hook's `main()` for the latest session after one more response
(PostToolUse) or a 10-request turn (Stop) appended to its transcript, the state put back
before each run (common.Kept), as quick_call.py times it. `--runs N` profiles N calls and
prints the functions by cumulative and own time, summed over the runs.

`--parts`: then, in this process (this tree's code, CPU medians of 11), what each step that
handles the whole ledger costs on the state's ledger: parsing the snapshot, checking its
records, the copy taken before the news is read (of the whole ledger, and as a call takes it
now), the diff of the two after it, and finding a new request's key among the compacted ones
(the first question of a pass); then the parse and the copy with the cyclic garbage collector
on and off, and what freeing a parse and a copy costs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import hot_view
import quick_call

PROFILE = """
import cProfile, pstats, sys
sys.argv = ["hook", sys.argv[1]]
from tokenbudget.hook import main
p = cProfile.Profile()
p.enable()
try:
    main()
except SystemExit:
    pass
p.disable()
p.dump_stats(OUT)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--live", type=int, default=2000)
    ap.add_argument("--event", default="PostToolUse", choices=("PostToolUse", "Stop"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--parts", action="store_true", help="then time the whole-ledger steps")
    a = ap.parse_args()
    py = common.bench_python(reinstall=True)
    s = hot_view.prepare(py, a.live)
    kept = common.Kept(s["tb"])
    transcript = Path(s["latest"]["transcript"])
    size = transcript.stat().st_size
    lines = quick_call.a_turn(s, 1 if a.event == "PostToolUse" else 10, 98)
    latest = s["latest"]
    stats = []
    import pstats
    import subprocess

    argv = quick_call.quick_start(py)
    for n in range(a.runs):
        kept.reset([str(py)], s["env"])  # restamped: the hot view names the files, as in a call
        with open(transcript, "r+b") as f:
            f.truncate(size)
            f.seek(size)
            f.write(lines)
        out = common.WORK / f"news_profile-{n}.prof"
        code = argv[-1].split("; from tokenbudget")[0] + "; OUT = " + repr(str(out)) + PROFILE
        ev = common.hook_event(a.event, latest["session"], latest["transcript"], latest["cwd"],
                               1000 + n, f"bench-turn-{n}")
        p = subprocess.run([*argv[:-1], code, a.event], input=ev, capture_output=True,
                           env=s["env"], cwd=str(common.WORK), check=True)
        assert p.stdout == b"{}\n", p.stdout
        stats.append(str(out))
    kept.reset()
    with open(transcript, "r+b") as f:
        f.truncate(size)
    st = pstats.Stats(*stats)
    print(f"{a.live} live sessions, {a.event}, {a.runs} calls (totals over all of them)")
    st.sort_stats("cumulative").print_stats(a.top)
    st.sort_stats("tottime").print_stats(a.top)
    if a.parts:
        parts(s["tb"] / "ledger.json")


def parts(path: Path) -> None:
    import json
    import statistics
    import time

    sys.path.insert(0, str(common.REPO))
    from tokenbudget import ingest, journal, ledger, store

    raw = path.read_bytes()
    data = json.loads(raw)
    data.pop("journal", None)

    def cpu(step: Any) -> float:
        times = []
        for _ in range(11):
            t = time.process_time()
            step()
            times.append(time.process_time() - t)
        return statistics.median(times) * 1000

    copy = journal.copy(data)
    sid = max(data["sessions"], key=lambda k: data["sessions"][k]["l"])  # the latest session
    key = "0" * ingest.KEY_LEN  # in no session: every slot is looked at
    steps = {
        "parse the snapshot (json.loads)": lambda: json.loads(raw),
        "check its records (ledger._check_records)": lambda: ledger._check_records(data),
        "copy it (journal.copy)": lambda: journal.copy(data),
        "the copy before the news, nothing of others changed (store.copy_before_news)":
            lambda: store.copy_before_news(data, sid)(),
        "diff the copy and the ledger (journal.changes)": lambda: journal.changes(copy, data),
        "a new key among the compacted ones, by search": lambda: ingest.Ingestor(
            data)._compacted_owner(key),
        "the same, building the index first": lambda: _indexed(data, key),
    }
    print(f"\nthe ledger: {len(raw) / 1e6:.2f} MB, {len(data['sessions'])} sessions; "
          "CPU medians of 11, in this process")
    for name, step in steps.items():
        print(f"{name:76s} {cpu(step):6.1f} ms")
    _collector(raw, data, cpu)


def _collector(raw: bytes, data: Any, cpu: Any) -> None:
    """The parse and the copy with the cyclic garbage collector on and off (a command hook's
    own process runs without it: hook.run), and what freeing a parse and a copy costs (that
    process ends without freeing them)."""
    import gc
    import json
    import statistics
    import time

    from tokenbudget import journal

    def freed() -> float:
        times = []
        for _ in range(11):
            held = [json.loads(raw), journal.copy(data)]
            t = time.process_time()
            held.clear()
            times.append(time.process_time() - t)
        return statistics.median(times) * 1000

    try:
        for on in (True, False):
            gc.enable() if on else gc.disable()
            print(f"collector {'on ' if on else 'off'}: parse {cpu(lambda: json.loads(raw)):.1f}"
                  f" ms, copy {cpu(lambda: journal.copy(data)):.1f} ms, freeing a parse and a"
                  f" copy {freed():.1f} ms")
    finally:
        gc.enable()


def _indexed(data: Any, key: str) -> Any:
    from tokenbudget import ingest

    ing = ingest.Ingestor(data)
    ing._compacted_asked = ingest.COMPACTED_SEARCHES
    return ing._compacted_owner(key)


if __name__ == "__main__":
    main()
