#!/usr/bin/env python3
"""The ledger lock on a hook call's path: filelock's own API against the direct flock.

    python bench/lock_cost.py [--rounds 40] [--calls 2000]

1. Import: `python -c "import json, filelock"` against `python -c "import json"` (what a hook
   call pays before it can take the lock), interleaved, wall time of the whole process.
2. One uncontended acquire + release in-process: filelock.FileLock against
   tokenbudget.lock._flock, on the same lock file, median of `--calls`.
Run with the bench venv's Python (common.bench_python) so that both are compiled to bytecode.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--calls", type=int, default=2000)
    a = ap.parse_args()
    py = common.bench_python()
    env = common.clean_env()
    with_fl: list[float] = []
    plain: list[float] = []
    for _ in range(a.rounds):
        plain.append(common.run([str(py), "-c", "import json"], env=env).seconds)
        with_fl.append(common.run([str(py), "-c", "import json, filelock"], env=env).seconds)
    code = f"""
import statistics, sys, tempfile, time
from filelock import FileLock
try:
    from tokenbudget.lock import _flock
except ImportError:
    from tokenbudget.ledger import _flock
path = tempfile.mkdtemp() + "/ledger.json.lock"
fl, fd = [], []
lock = FileLock(path, timeout=2, mode=0o600)
for _ in range({a.calls}):
    t = time.perf_counter(); lock.acquire(); lock.release(); fl.append(time.perf_counter() - t)
    t = time.perf_counter(); _flock(path, 2)(); fd.append(time.perf_counter() - t)
print(statistics.median(fl), statistics.median(fd))
"""
    out = common.run([str(py), "-c", code], env=env)
    fl_call, flock_call = (float(x) for x in out.stdout.split())
    res = {
        "import_json": common.stats(plain), "import_json_filelock": common.stats(with_fl),
        "import_ratio_median": statistics.median(with_fl) / statistics.median(plain),
        "import_extra_median_s": statistics.median(with_fl) - statistics.median(plain),
        "acquire_release_filelock_s": fl_call, "acquire_release_flock_s": flock_call,
    }
    common.save("lock_cost", res)
    print(f"import json: median {common.ms(statistics.median(plain))}; with filelock:"
          f" {common.ms(statistics.median(with_fl))} ({res['import_ratio_median']:.2f}x)")
    print(f"acquire+release: filelock {fl_call * 1e6:.0f} us, direct flock"
          f" {flock_call * 1e6:.0f} us")


if __name__ == "__main__":
    main()
