#!/usr/bin/env python3
"""A hook call before and after a change, paired: PreToolUse with nothing new, and Stop after a
turn of 10 API requests, each run by the package as committed at `--before` and by the working
tree, in turn, on the same ledger.

    python bench/store_ops.py --before cb80be4 [--sessions 295] [--rounds 30]

Setup as bench/hook_overhead.py's `worst` case (every session live), cached under
$TB_BENCH_DIR; before each PreToolUse the hot view is written again (untimed), so it is read as
in most calls. Both packages are installed non-editable and compiled, and started the same way
(`python -P -c 'from tokenbudget.hook import main; main()' EVENT`). Each round runs the four
calls in a shuffled order; a Stop starts from the ledger as synced and the transcript with the
turn appended, so every Stop records the same turn. Per call: wall time and CPU time (user +
system, from the kernel's accounting of the finished child); the ratios after/before are taken
round by round, and their median is quoted.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import hook_overhead as ho


def run_once(py: Path, event: str, stdin: bytes, env: dict[str, str]
             ) -> tuple[float, float, bytes]:
    """(wall seconds, CPU seconds, stdout) of one hook call; its CPU time from this process's
    totals for reaped children, read around it."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run([str(py), *common.HOOK_ARGS, event], input=stdin, capture_output=True,
                       env=env, cwd=str(common.WORK), check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, p.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, metavar="REF")
    ap.add_argument("--sessions", type=int, default=295)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--reinstall", action="store_true", help="reinstall the working tree first")
    a = ap.parse_args()
    pys = {"after": common.bench_python(reinstall=a.reinstall),
           "before": common.bench_python_at(a.before)}
    s = ho.prepare(pys["after"], a.sessions, "worst", False)
    env = s["env"]
    size = s["transcript"].stat().st_size
    turn, _tokens = ho.a_turn(s)
    n = [0]

    def event(name: str) -> bytes:
        n[0] += 1
        return common.hook_event(name, s["session"], str(s["transcript"]), s["cwd"], n[0],
                                 s["prompt_id"])

    def reset(with_turn: bool) -> None:
        ho.restore(s)
        with open(s["transcript"], "r+b") as f:
            f.truncate(size)
            if with_turn:
                f.seek(size)
                f.write(turn)

    view = [str(pys["after"]), "-c", "import sys; from tokenbudget.store import JsonFileStore;"
            " JsonFileStore(sys.argv[1]).checkpoint()", str(s["tb"] / "ledger.json")]

    def pretool(which: str) -> tuple[float, float]:
        reset(False)
        # A checkpoint writes the hot view again (the restored snapshot is a new file, which
        # the view's stamps do not name): the call reads the view, as most calls do.
        subprocess.run(view, env=env, check=True, cwd=str(common.WORK))
        wall, cpu, out = run_once(pys[which], "PreToolUse", event("PreToolUse"), env)
        assert out.strip() == b"{}", out
        return wall, cpu

    def stop(which: str) -> tuple[float, float]:
        reset(True)
        wall, cpu, _out = run_once(pys[which], "Stop", event("Stop"), env)
        return wall, cpu

    cases = {f"{kind}_{which}": (lambda f=f, w=which: f(w))
             for kind, f in (("pretool", pretool), ("stop", stop)) for which in pys}
    rng = random.Random(0)
    names = list(cases)
    for _ in range(2):
        for name in names:
            cases[name]()
    got: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    try:
        for _ in range(a.rounds):
            rng.shuffle(names)
            for name in names:
                got[name].append(cases[name]())
    finally:
        reset(False)
    out: dict[str, Any] = {"sessions": a.sessions, "rounds": a.rounds, "before": a.before,
                           "installed": {k: common.installed(v.parent.parent)
                                         for k, v in pys.items()}}
    print(f"{a.sessions} live sessions, {a.rounds} rounds; after = working tree, before ="
          f" {a.before}")
    for kind in ("pretool", "stop"):
        aft, bef = got[f"{kind}_after"], got[f"{kind}_before"]
        row: dict[str, Any] = {}
        for i, what in enumerate(("wall", "cpu")):
            ratios = [x[i] / y[i] for x, y in zip(aft, bef, strict=True) if y[i] > 0]
            q = statistics.quantiles(ratios, n=4)
            row[what] = {"after_median": statistics.median(x[i] for x in aft),
                         "before_median": statistics.median(y[i] for y in bef),
                         "ratio_median": statistics.median(ratios), "ratio_q1": q[0],
                         "ratio_q3": q[2]}
            r = row[what]
            print(f"{kind:8s} {what:4s} after {common.ms(r['after_median']):>9}  before"
                  f" {common.ms(r['before_median']):>9}  after/before median"
                  f" {r['ratio_median']:.3f} (quartiles {r['ratio_q1']:.3f}-{r['ratio_q3']:.3f})")
        out[kind] = row
    common.save("store_ops", out)


if __name__ == "__main__":
    main()
