#!/usr/bin/env python3
"""What the rows kept in the index (tokenbudget/index.py, format 2) save a read and cost a
checkpoint, on hot_view.py's state at `--live N` sessions: CPU medians in this process (this
tree's code), the cases interleaved per round.

    TB_BENCH_DIR=/tmp/tb-bench-rows python bench/row_cut.py [--live 2000] [--rounds 21]

A read: `lazy.decode` of the snapshot searched for its rows, and cut where its index says
(its rows read from the index included), the two checked to give the same entries first. A
checkpoint: `lazy.row_spans` of the snapshot (the pass added to each checkpoint of a large
ledger), beside `lazy.encode` and `index.encode` that it already did.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common
import hot_view

from tokenbudget import index, lazy
from tokenbudget.fileio import stamp


def cpu_ms(fn: Any) -> float:
    t = time.process_time()
    fn()
    return (time.process_time() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--live", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=21)
    a = ap.parse_args()
    s = hot_view.prepare(common.bench_python(reinstall=True), a.live)
    f = s["tb"] / "ledger.json"
    raw = f.read_bytes()
    ix = index.open_for(str(s["tb"] / "ledger.index"), stamp(os.stat(f)))
    assert ix is not None and ix.rows() is not None, "the state's index has no rows"
    cut, searched = lazy.decode(raw, ix.rows()), lazy.decode(raw)
    assert cut is not None and searched is not None
    for name in lazy.TABLES:
        assert list(dict.items(cut[name])) == list(dict.items(searched[name])), name
    data = json.loads(raw)
    cases = {
        "read: rows searched": lambda: lazy.decode(raw),
        "read: rows cut where the index says": lambda: lazy.decode(raw, ix.rows()),
        "checkpoint: row_spans (added)": lambda: lazy.row_spans(raw),
        "checkpoint: lazy.encode": lambda: lazy.encode(data),
        "checkpoint: index.encode": lambda: index.encode((0,) * 5, 0.0, data["sessions"],
                                                         data["files"]),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(a.rounds):
        for name, fn in cases.items():
            times[name].append(cpu_ms(fn))
    print(f"{s['live']} live sessions, ledger {len(raw) / 1e6:.2f} MB, "
          f"load {os.getloadavg()[0]:.2f}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, m in med.items():
        print(f"  {name:40} {m:7.2f} ms")
    cut_ms, searched_ms = med["read: rows cut where the index says"], med["read: rows searched"]
    print(f"  cut / searched: {cut_ms / searched_ms:.2f}x")
    base = med["checkpoint: lazy.encode"] + med["checkpoint: index.encode"]
    added = med["checkpoint: row_spans (added)"]
    print(f"  row_spans / (lazy.encode + index.encode): {added / base:.2f}")


if __name__ == "__main__":
    main()
