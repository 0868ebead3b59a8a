#!/usr/bin/env python3
"""What the walk back to the activity deciding a 5-hour block (enforce._block_activity) costs,
in process, this tree's against REF's, in the same rounds.

    python bench/block_walk.py --before REF [--rounds 15]

Every 5-hour budget the engine measures walks the 15-minute buckets back from now, at least
two days (a merged day's bucket may hold activity up to then), on to a pause that starts a
new block whatever came before. Three ledgers, kept as the ledger keeps them (15-minute
buckets for two days, older days merged into their midnight's bucket): activity in every 15
minutes of the last 40 days in two projects, so that no pause ends the walk (`busy`); the
same with a pause of 6 hours each night (`nights`); eight buckets 10 hours ago (`idle`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

ROOT = Path(__file__).resolve().parents[1]

# Run in a child whose sys.path starts with the tree to measure: per-call milliseconds.
CHILD = r"""
import json, sys, time
from datetime import UTC, datetime
from tokenbudget import enforce
from tokenbudget.budgets import Budget
now = datetime(2026, 11, 28, 16, 7, 30, tzinfo=UTC)
top = int(now.timestamp() // 900)
def cell(k): return [100, 0.01, k * 900 + 10, k * 900 + 800]
def ledger_of(active):  # 15-minute buckets for two days, each older day merged at midnight
    hours = {}
    for k in (k for k in range(top - 40 * 96, top + 1) if active(k)):
        if k > top - 2 * 96:
            hours[str(k)] = {p: cell(k) for p in ("/a", "/b")}
            continue
        day = hours.setdefault(str(k - k % 96), {p: [0, 0.0, k * 900 + 10, 0] for p in "ab"})
        for c in day.values():
            c[0] += 100
            c[1] += 0.01
            c[3] = k * 900 + 800
    return hours
busy = ledger_of(lambda k: True)
nights = ledger_of(lambda k: (top - k) % 96 not in range(40, 64))
idle = {str(top - 40 - i): {"/a": cell(top - 40 - i)} for i in range(8)}
b = Budget("5h", 30000)
out = {}
for name, hours in (("busy", busy), ("nights", nights), ("idle", idle)):
    ledger = {"hours": hours}
    n = 20 if name == "busy" else 300
    t = time.perf_counter()
    for _ in range(n):
        enforce._block_activity(ledger, b, now)
    out[name] = (time.perf_counter() - t) / n * 1e3
print(json.dumps(out))
"""


def tree_at(ref: str, into: Path) -> Path:
    """The package as it is at `ref`, extracted under `into`."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "tokenbudget"],
                          capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(tree: Path) -> dict[str, float]:
    run = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(tree)!r})\n"
                          + CHILD], capture_output=True, text=True, check=True)
    return json.loads(run.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--save", default="block-walk")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": tree_at(args.before, Path(tmp)), "after": ROOT}
        runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        for _ in range(args.rounds):
            for side, tree in trees.items():
                runs[side].append(measure(tree))
    result = {"machine": common.machine(), "before": args.before, "rounds": args.rounds}
    for name in runs["after"][0]:
        before = statistics.median(r[name] for r in runs["before"])
        after = statistics.median(r[name] for r in runs["after"])
        paired = statistics.median(a[name] / b[name]
                                   for a, b in zip(runs["after"], runs["before"], strict=True))
        result[name] = {"before_ms": before, "after_ms": after, "paired_ratio": paired}
        print(f"{name:7} before {before:8.3f} ms  after {after:8.3f} ms  paired {paired:.2f}x")
    common.save(args.save, result)


if __name__ == "__main__":
    main()
