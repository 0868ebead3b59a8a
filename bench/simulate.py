#!/usr/bin/env python3
"""`budget simulate` and `budget suggest` against `report` on the same synthetic year.

    python bench/simulate.py [--sessions 3500 --target-gb 1.2] [--rounds 5]

The history is backfill.py's (a year of sessions, reused when it is there), synced once with
retention 14 days, so that nearly all of it is folded into history.jsonl as a long-time user's
is. Then, interleaved, each `--rounds` times (nothing new to read: each command's own sync
finds nothing):
- `tokenbudget report --by day --json` (the baseline: it reads the same ledger and history),
- `tokenbudget budget simulate daily LIMIT --json` (LIMIT: the p90 day, so it bites),
- `tokenbudget budget simulate command /NAME LIMIT --json` (the most run command),
- `tokenbudget budget suggest --json` (five kinds: ten replays).
Wall time from perf_counter, peak RSS from /usr/bin/time; needs /usr/bin/time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from backfill import timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=3500)
    ap.add_argument("--target-gb", type=float, default=1.2)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--name", default="simulate")
    a = ap.parse_args()
    py = common.bench_python(reinstall=True)
    tb = str(py.parent / "tokenbudget")
    data = common.WORK / f"hist-backfill-{a.sessions}-{a.target_gb:g}-{a.seed}"
    common.synth(data, "--sessions", str(a.sessions), "--target-gb", str(a.target_gb),
                 "--seed", str(a.seed))
    state = common.WORK / "state-simulate"
    shutil.rmtree(state, ignore_errors=True)
    common.write_config(state, budgets=[])
    env = common.state_env(data, state)
    sync_t, _, _ = timed([tb, "sync", "--json"], env)
    common.log(f"first sync: {sync_t:.1f} s")
    history = common.data_dir(state) / "history.jsonl"
    days = json.loads(timed([tb, "report", "--by", "day", "--json"], env)[2])["daily"]
    totals = sorted(d["totalTokens"] for d in days)
    p90_day = totals[int(len(totals) * 0.9)]
    commands = json.loads(timed([tb, "report", "--by", "command", "--json"], env)[2])["commands"]
    slash = [c for c in commands if c["command"].startswith("/")]
    command = slash[0]["command"]
    cases = {
        "report": [tb, "report", "--by", "day", "--json"],
        "simulate daily": [tb, "budget", "simulate", "daily", str(p90_day), "--json"],
        "simulate command": [tb, "budget", "simulate", "command", command, "20k", "--json"],
        "suggest": [tb, "budget", "suggest", "--json"],
    }
    runs: dict[str, list[tuple[float, int]]] = {n: [] for n in cases}

    def case(name: str) -> float:
        t, rss, _ = timed(cases[name], env)
        runs[name].append((t, rss))
        return t

    for name in cases:  # warm-up, not counted
        timed(cases[name], env)
    common.interleave({n: (lambda n=n: case(n)) for n in cases}, a.rounds, warmup=0)
    out = {}
    base = common.stats([t for t, _ in runs["report"]])["median"]
    for name, rs in runs.items():
        s = common.stats([t for t, _ in rs])
        out[name] = {"seconds": s, "peak_rss_kb": max(r for _, r in rs),
                     "vs_report": round(s["median"] / base, 2)}
        common.log(f"{name}: median {s['median']:.3f} s ({s['median'] / base:.2f}x report), "
                   f"peak {max(r for _, r in rs) / 1024:.0f} MB")
    sample = json.loads(timed(cases["simulate daily"], env)[2])["summary"]
    common.save(a.name, {
        "sessions": a.sessions, "target_gb": a.target_gb, "seed": a.seed, "rounds": a.rounds,
        "days": len(days), "history_bytes": history.stat().st_size if history.exists() else 0,
        "first_sync_seconds": sync_t, "p90_day": p90_day, "command": command,
        "daily_summary": sample, "cases": out,
    })


if __name__ == "__main__":
    main()
