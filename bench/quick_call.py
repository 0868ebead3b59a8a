#!/usr/bin/env python3
"""One hook call at 10 live sessions, run exactly as `tokenbudget install` registers it, against
`python -c "import json"`: with nothing new, and with news.

    TB_BENCH_DIR=/tmp/tb-bench-quick python bench/quick_call.py --before REF [--rounds 30]

The state is hot_view.py's at 10 live sessions (`--live N`: at N; bench/synth.py, seed 11,
--lean, within 10 days; retention 14 days; the five budgets no history reaches). Each call is
the installed quick start, `python -I -S -c 'import sys; sys.path[:0] = [...]; from
tokenbudget.hook import run; run()' EVENT` (claude_settings.hook_command; each version's own
code: `main` before `run`), of this tree's code and of REF's, each installed non-editable and
compiled. The events, for the latest session:

- PreToolUse, PostToolBatch (naming its last tool call) and UserPromptSubmit with nothing new;
- PostToolUse after one more response appended to its transcript (news: read, recorded);
- Stop after a turn of 10 more requests appended (news).

Before each call the state is put back as synced (the data folder copied back, the transcript
cut to its length), untimed, so every call of a case does the same work. Every case runs once
per round, in shuffled order, with the baseline in the same rounds; the figures are medians of
wall time and of the child's CPU time (user + sys, from the kernel's accounting), each as a
ratio to the baseline's median of the same rounds.

`--rss N`: afterwards, each call with news run N more times (REF's and this tree's) under
`/usr/bin/time`: the largest peak RSS of each.

`--importtime N`: afterwards, each call with news run N more times (in turn, REF's and this
tree's) under `python -X importtime`, and `import json` too: the median self time of each
module the call imports beyond what `import json` does, and their sum (importtime's own
bookkeeping inflates them; compare the two codes' figures, not these with the CPU times).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import hot_view
import synth

QUIET = ("PreToolUse", "PostToolBatch", "UserPromptSubmit")


def quick_start(py: Path) -> list[str]:
    """The installed hook's argv (without the event) for interpreter `py`: the `-c` code its
    own version's install writes (claude_settings.fast_code), so that each code is measured
    with its own entry."""
    probe = ("import json, sys; from tokenbudget import claude_settings as c; "
             "print(json.dumps(c.fast_code(c.site_paths(sys.executable))))")
    code = json.loads(common.run([str(py), "-P", "-c", probe]).stdout)
    assert code.startswith("import sys; sys.path[:0] = [\""), \
        "the bench interpreter cannot start the hooks without site"
    return [str(py), "-I", "-S", "-c", code]


def run(argv: list[str], stdin: bytes, env: dict[str, str]) -> tuple[float, float, bytes]:
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=env, cwd=str(common.WORK))
    t0 = time.perf_counter()
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(stdin)
    p.stdin.close()
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    p.stdout.close()
    assert p.returncode == 0, (argv, p.returncode)
    return wall, ru.ru_utime + ru.ru_stime, out


def a_turn(s: dict[str, Any], n_requests: int, seed: int) -> bytes:
    """The transcript lines of one more turn of the latest session."""
    latest = s["latest"]
    g = synth.Synth(seed)
    c = synth.Ctx(latest["session"], latest["cwd"], f"bench-turn-{n_requests}",
                  "claude-opus-4-5-20251101")
    c.context = 60_000
    g.turn(c, latest["last_ts"] + 120, n_requests)
    return ("\n".join(c.lines) + "\n").encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="git ref of the code before (e.g. main)")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--live", type=int, default=10, help="live sessions in the state")
    ap.add_argument("--name", default="quick_call")
    ap.add_argument("--importtime", type=int, default=0, metavar="N",
                    help="then N runs of each call with news under -X importtime")
    ap.add_argument("--rss", type=int, default=0, metavar="N",
                    help="then N runs of each call with news under /usr/bin/time: peak RSS")
    a = ap.parse_args()
    after = common.bench_python(reinstall=True)
    before = common.bench_python_at(a.before)
    s = hot_view.prepare(after, a.live)
    tb: Path = s["tb"]
    # A call with nothing new keeps the calendar windows (hot.py): kept in the pristine copy,
    # as on any machine after the day's first such call.
    run([*quick_start(after), "PreToolUse"], hot_view.event(s, "PreToolUse"), s["env"])
    # The state as synced, put back before each call (common.Kept).
    kept = common.Kept(tb)
    journal = kept.journal
    transcript = Path(s["latest"]["transcript"])
    size = transcript.stat().st_size
    news = {"PostToolUse": a_turn(s, 1, 98), "Stop": a_turn(s, 10, 99)}
    env = s["env"]
    counter = [0]

    def reset(lines: bytes = b"", py: Path | None = None) -> None:
        """The state put back; with `py`, made as that version of the package keeps it: its
        hot view and its calendar windows' cache (each version trusts only its own; untimed)."""
        with open(transcript, "r+b") as f:
            f.truncate(size)
        kept.reset([str(py)] if py else [], env)
        if py is not None:
            run([*quick_start(py), "PreToolUse"], hot_view.event(s, "PreToolUse"), env)
        with open(transcript, "r+b") as f:
            f.truncate(size)
            f.seek(size)
            f.write(lines)

    def event(name: str) -> bytes:
        if name in QUIET:
            return hot_view.event(s, name)
        counter[0] += 1
        latest = s["latest"]
        return common.hook_event(name, latest["session"], latest["transcript"], latest["cwd"],
                                 counter[0], f"bench-turn-{counter[0]}")

    cases: dict[str, Any] = {}
    for code, py in (("after", after), ("before", before)):
        argv = quick_start(py)
        for name in (*QUIET, *news):
            def case(argv: list[str] = argv, name: str = name, py: Path = py
                     ) -> tuple[float, float]:
                reset(news.get(name, b""), py)
                wall, cpu, out = run([*argv, name], event(name), env)
                assert out == b"{}\n", (name, out)
                return wall, cpu
            cases[f"{code} {name}"] = case
    base = [str(after), "-c", "import json"]
    cases["baseline"] = lambda: run(base, b"", env)[:2]
    # Sanity, untimed: a call with news records it (the ledger's files change), one with
    # nothing new writes nothing; after a reset, the hot view is trusted again.
    sys.path.insert(0, str(common.REPO))
    from tokenbudget import hot

    for code, py in (("after", after), ("before", before)):
        for name in (*QUIET, *news):
            reset(news.get(name, b""), py)
            was = hot_view.files(tb)
            run([*quick_start(py), name], event(name), env)
            assert (hot_view.files(tb) != was) == (name in news), (code, name)
            reset(py=after)  # this checkout's hot.read, below
            assert hot.read(str(tb / "ledger.json"), str(journal), s["latest"]["session"])
    times: dict[str, list[tuple[float, float]]] = {n: [] for n in cases}
    names = list(cases)
    import random

    rng = random.Random(0)
    for r in range(a.rounds + 2):  # interleaved, shuffled: the machine's noise falls on all
        rng.shuffle(names)
        for n in names:
            got = cases[n]()
            if r >= 2:  # two rounds of warm-up
                times[n].append(got)
    imports: dict[str, dict[str, Any]] = {}
    if a.importtime:
        def imported(argv: list[str], stdin: bytes, lines: bytes = b"",
                     py: Path | None = None) -> dict[str, int]:
            reset(lines, py)
            p = subprocess.run(argv, input=stdin, capture_output=True, env=env,
                               cwd=str(common.WORK), check=True)
            found = {}
            for line in p.stderr.decode().splitlines():
                parts = line.split("|")
                if line.startswith("import time:") and len(parts) == 3 and "self" not in line:
                    found[parts[2].strip()] = int(parts[0].split(":")[1])
            return found

        runs: dict[str, list[dict[str, int]]] = {}
        for _ in range(a.importtime):
            runs.setdefault("baseline", []).append(
                imported([str(after), "-X", "importtime", "-c", "import json"], b""))
            for code, py in (("before", before), ("after", after)):
                argv = quick_start(py)
                for name in news:
                    runs.setdefault(f"{code} {name}", []).append(imported(
                        [argv[0], "-X", "importtime", *argv[1:], name], event(name), news[name],
                        py))
        base_mods = set().union(*runs.pop("baseline"))
        for label, found in runs.items():
            mods = sorted(set().union(*found) - base_mods)
            med = {m: statistics.median(f.get(m, 0) for f in found) / 1000 for m in mods}
            imports[label] = {"self_ms": med, "sum_ms": sum(med.values())}
    rss: dict[str, float] = {}
    for _ in range(a.rss):
        for code, py in (("before", before), ("after", after)):
            for name in news:
                reset(news[name], py)
                kb = common.peak_rss_kb([*quick_start(py), name], stdin=event(name), env=env)
                rss[f"{code} {name}"] = max(rss.get(f"{code} {name}", 0), kb / 1024)
    reset()
    base_wall = statistics.median(w for w, _ in times["baseline"])
    base_cpu = statistics.median(c for _, c in times["baseline"])
    rows = {}
    for n, xs in times.items():
        wall = statistics.median(w for w, _ in xs)
        cpu = statistics.median(c for _, c in xs)
        rows[n] = {"wall_s": wall, "cpu_s": cpu, "wall_ratio": wall / base_wall,
                   "cpu_ratio": cpu / base_cpu, "raw": xs}
    out = {"machine": common.machine(), "rounds": a.rounds, "live": s["live"],
           "after": common.installed(after.parent.parent),
           "before": common.installed(before.parent.parent), "cases": rows,
           "imports_beyond_json": imports, "peak_rss_mb": rss}
    common.save(a.name, out)
    print(f"\n{s['live']} live sessions, {a.rounds} rounds; baseline `import json`: wall "
          f"{base_wall * 1000:.1f} ms, CPU {base_cpu * 1000:.1f} ms")
    print("case | wall median | ratio | CPU median | ratio")
    for n, e in sorted(rows.items()):
        print(f"{n:24s} {e['wall_s'] * 1000:7.1f} ms {e['wall_ratio']:5.2f}x "
              f"{e['cpu_s'] * 1000:7.1f} ms {e['cpu_ratio']:5.2f}x")
    for label, mb in sorted(rss.items()):
        print(f"peak RSS, {label}: {mb:.1f} MB (the largest of {a.rss})")
    for label, got in imports.items():
        top = sorted(got["self_ms"].items(), key=lambda kv: -kv[1])
        print(f"\n{label}: imports beyond `import json`, {len(top)} modules, median self "
              f"{got['sum_ms']:.1f} ms in all (importtime):")
        print(", ".join(f"{m} {t:.2f}" for m, t in top))


if __name__ == "__main__":
    main()
