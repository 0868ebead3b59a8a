#!/usr/bin/env python3
"""One pass's questions for compacted keys' owners on a large ledger read a record at a time
with its index (tokenbudget/index.py): CPU of REF's code and this tree's, paired.

    TB_BENCH_DIR=/tmp/tb-bench-owner python bench/compacted_owner.py --before REF
                                         [--live 2000] [--asks 10,32,100,256,1000] [--runs 5]

The state is hot_view.py's at `--live N` sessions (bench/synth.py, seed 11, --lean), synced and
its index written by this tree's code. Each run is a fresh process of one code (installed
non-editable, compiled): it reads the ledger as a hook call with news does (`read(lazy=True)`,
the index beside it used), leaves every session's record a text or decodes them all first (as
a pass that walked them does), then asks `Ingestor._compacted_owner` for N keys, half of them
compacted keys of the ledger and half held by none (seeded): the figure is its CPU time for
those N questions. Each case runs `--runs` times per code, in alternating order; medians, and
this tree's over REF's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import hot_view

ONE = r"""
import json, random, sys, time
from tokenbudget import ingest
from tokenbudget.store import open_store
st = open_store()
n, decode_all = int(sys.argv[1]), sys.argv[2] == "1"
with open(st.file, "rb") as f:
    plain = json.loads(f.read())
keys = []
for s in plain["sessions"].values():
    k = str(s.get("k", ""))
    keys += [k[i:i + 16] for i in range(0, len(k), 16)]
data = st.read(lazy=True)[0]
assert data["sessions"].index is not None, "the index is not used"
if decode_all:
    data["sessions"].decode_all()
rng = random.Random(n)
ask = rng.sample(keys, n // 2) + [f"{rng.getrandbits(64):016x}" for _ in range(n - n // 2)]
ing = ingest.Ingestor(data)
t = time.process_time()
for k in ask:
    ing._compacted_owner(k)
print((time.process_time() - t) * 1000)
"""

# A commit that changes nothing writes the hot view for the files as they are; then the index.
INDEX = """import json
from tokenbudget.store import open_store
st = open_store()
with st.transaction():
    pass
with open(st.file, "rb") as f:
    raw = f.read()
st._index(json.loads(raw), raw)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--live", type=int, default=2000)
    ap.add_argument("--asks", default="10,32,100,256,1000")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    py = common.bench_python(reinstall=True)
    ref = common.bench_python_at(a.before)
    s = hot_view.prepare(py, a.live)
    common.run([str(py), "-c", INDEX], env=s["env"])
    size = os.path.getsize(s["tb"] / "ledger.json")
    common.log(f"ledger {size / 1e6:.2f} MB, index {os.path.getsize(s['tb'] / 'ledger.index')} B")
    codes = {a.before: ref, "this tree": py}
    print(f"{a.live} live sessions; CPU ms of N questions, medians of {a.runs}; load before:"
          f" {os.getloadavg()[0]:.2f}")
    for n in [int(x) for x in a.asks.split(",")]:
        for decoded in ("0", "1"):
            got: dict[str, list[float]] = {name: [] for name in codes}
            for r in range(a.runs):
                for name in (list(codes) if r % 2 else list(codes)[::-1]):
                    out = subprocess.run([str(codes[name]), "-c", ONE, str(n), decoded],
                                         env=s["env"], cwd=str(common.WORK), check=True,
                                         capture_output=True, text=True).stdout
                    got[name].append(float(out))
            before, after = (statistics.median(got[name]) for name in codes)
            how = "every record decoded" if decoded == "1" else "records texts"
            print(f"{n:5d} questions, {how:20s}"
                  f" {a.before} {before:7.1f}  this tree {after:7.1f}  ratio {after / before:.2f}",
                  flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
