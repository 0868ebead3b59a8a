#!/usr/bin/env python3
"""A hook call with nothing new, at 10, 2,000 and 5,000 live sessions, before and after the hot
view: wall time against `python -c "import json"` in the same run, and peak RSS.

    TB_BENCH_DIR=/tmp/tb-bench-hot python bench/hot_view.py --before main [--live 10,2000,5000]
                                                            [--rounds 30]

For each size: synthetic history of that many sessions within the last 10 days (bench/synth.py,
seed 11, --lean), retention 14 days so every session stays live, `tokenbudget sync` by this
tree's code (which writes the hot view beside the ledger), the five budgets no history reaches
(bench/common.py). The measured session is the latest one, fully read: each event below has
nothing new to read and nothing to say, so it is answered without the lock and writes nothing
(checked: `{}` and the ledger's files unchanged). The events are the ones the hooks now use
for that: PreToolUse and PostToolBatch (naming the session's last tool call, which is in the
transcript) and UserPromptSubmit.
Every case runs once per round, in shuffled order, with the baseline in the same rounds; the
"before" code (`--before REF`) reads the same state, which it ignores the view of.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

EVENTS = ("PreToolUse", "PostToolBatch", "UserPromptSubmit")


def prepare(py: Path, n: int) -> dict[str, Any]:
    """History of `n` sessions, all live, synced by `py`'s tokenbudget."""
    data = common.WORK / f"hist-{n}-live"
    truth = common.synth(data, "--sessions", str(n), "--seed", "11", "--lean", "--days", "10")
    state = common.WORK / f"state-hot-{n}"
    env = common.state_env(data, state)
    common.write_config(state, retention_days=14)
    r = common.run([str(py.parent / "tokenbudget"), "sync", "--json"], env=env)
    assert r.returncode == 0, r
    latest = truth["latest"]
    tb = common.data_dir(state)
    ledger = json.loads((tb / "ledger.json").read_text())
    common.log(f"{n}: sync {r.seconds:.1f} s, {len(ledger['sessions'])} live sessions, "
               f"ledger {(tb / 'ledger.json').stat().st_size / 1e6:.2f} MB")
    return {"n": n, "env": env, "tb": tb, "latest": latest,
            "live": len(ledger["sessions"]),
            "ledger_bytes": (tb / "ledger.json").stat().st_size,
            "hot_bytes": (tb / "ledger.hot.json").stat().st_size}


def last_tool(transcript: str) -> str:
    """The id of the session's last tool call: tool events name a call in the transcript
    (the hook waits, up to a second, for the response that asked for it)."""
    text = Path(transcript).read_text()
    return re.findall(r'"type":"tool_use","id":"([^"]+)"', text)[-1]


def event(s: dict[str, Any], name: str) -> bytes:
    latest = s["latest"]
    raw = json.loads(common.hook_event(name, latest["session"], latest["transcript"],
                                       latest["cwd"], 1, "bench-prompt"))
    tool = last_tool(latest["transcript"])
    if name == "PreToolUse":
        raw["tool_use_id"] = tool
    elif name == "PostToolBatch":
        raw["tool_calls"] = [{"tool_use_id": tool, "tool_name": "Bash"}]
    elif name == "UserPromptSubmit":
        raw["prompt"] = "go on with the tests"
    return json.dumps(raw).encode()


def files(tb: Path) -> list[tuple[str, int, int]]:
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in tb.iterdir()
                  if p.name.startswith("ledger") and p.is_file())


def check_quiet(py: Path, s: dict[str, Any], name: str) -> None:
    """The call answers `{}` and commits nothing: it is the call with nothing new."""
    before = files(s["tb"])
    r = common.run([str(py), *common.HOOK_ARGS, name], stdin=event(s, name), env=s["env"])
    assert r.stdout == b"{}\n", (name, r.stdout)
    assert files(s["tb"]) == before, f"{name} wrote to the ledger"


def write_commands(folder: Path, label: str, py: Path, s: dict[str, Any]) -> None:
    """Each measured call as a script of its own (event on stdin from a file), for timing
    whole processes with any outside tool, paired against `baseline.sh`."""
    folder.mkdir(parents=True, exist_ok=True)
    env = "".join(f"export {k}='{s['env'][k]}'\n" for k in
                  ("HOME", "CLAUDE_CONFIG_DIR", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "TZ"))
    hook = " ".join(f"'{a}'" for a in common.HOOK_ARGS)
    for name in EVENTS:
        ev = folder / f"event-{s['n']}-{name}.json"
        ev.write_bytes(event(s, name))
        script = folder / f"{label}-{s['n']}-{name}.sh"
        script.write_text(f"#!/bin/sh\n{env}exec '{py}' {hook} {name} < '{ev}'\n")
        script.chmod(0o755)
    base = folder / "baseline.sh"
    base.write_text(f"#!/bin/sh\n{env}exec '{py}' -c 'import json' < '{ev}'\n")
    base.chmod(0o755)


def timer(argv: list[str], stdin: bytes, env: dict[str, str]) -> Any:
    return lambda: common.run(argv, stdin=stdin, env=env).seconds


def commit_cost(s: dict[str, Any], commits: int) -> dict[str, float]:
    """In this process (this tree's code), on a copy of the state: what keeping the view
    costs a commit with news (one session's record and a warning changed), under the lock,
    against the whole commit; medians in ms, CPU time (steadier on a shared machine) and wall."""
    import shutil
    import statistics
    import tempfile
    import time

    sys.path.insert(0, str(common.REPO))
    from tokenbudget import store as store_mod

    sid = s["latest"]["session"]
    cpu: list[float] = []
    wall: list[float] = []
    whole: list[float] = []
    real = store_mod.JsonFileStore._keep_view

    def timed(self: Any, *args: Any) -> None:
        t, c = time.perf_counter(), time.process_time()
        try:
            real(self, *args)
        finally:
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)

    with tempfile.TemporaryDirectory(dir=common.WORK) as tmp:
        shutil.copyfile(s["tb"] / "ledger.json", Path(tmp) / "ledger.json")
        st = store_mod.JsonFileStore(Path(tmp) / "ledger.json", lock_timeout=30)
        with st.transaction() as ledger:  # a new file: the first commit writes the whole view
            ledger["warned"]["bench"] = 0.0
        store_mod.JsonFileStore._keep_view = timed  # type: ignore[method-assign]
        try:
            for k in range(commits):
                read, pos = st.read()
                with st.transaction((pos, read)) as ledger:
                    ledger["sessions"][sid]["l"] += 1
                    ledger["warned"][f"bench-{k}"] = float(k)
                    c0 = time.process_time()  # the commit: after the body, under the lock
                whole.append(time.process_time() - c0)
        finally:
            store_mod.JsonFileStore._keep_view = real  # type: ignore[method-assign]
    return {"view_cpu_ms": statistics.median(cpu) * 1000,
            "view_wall_ms": statistics.median(wall) * 1000,
            "commit_cpu_ms": statistics.median(whole) * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--live", default="10,2000,5000")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--before", help="git ref of the code before (e.g. main)")
    ap.add_argument("--rss-runs", type=int, default=3)
    ap.add_argument("--name", default="hot_view")
    ap.add_argument("--commits", type=int, default=30, help="commits timed in-process per size")
    ap.add_argument("--write-commands", type=Path, metavar="DIR",
                    help="also write each measured call as a script in DIR (see write_commands)")
    a = ap.parse_args()
    after = common.bench_python(reinstall=True)
    before = common.bench_python_at(a.before) if a.before else None
    codes = {"after": after, **({"before": before} if before else {})}
    out: dict[str, Any] = {"machine": common.machine(), "rounds": a.rounds,
                           "after": common.installed(after.parent.parent),
                           "before": common.installed(before.parent.parent) if before else None,
                           "sizes": []}
    for n in [int(x) for x in a.live.split(",")]:
        s = prepare(after, n)
        if a.write_commands:
            for code, py in codes.items():
                write_commands(a.write_commands, code, py, s)
        cases: dict[str, Any] = {}
        for code, py in codes.items():
            for name in EVENTS:
                check_quiet(py, s, name)
                cases[f"{code} {name}"] = timer([str(py), *common.HOOK_ARGS, name],
                                                event(s, name), s["env"])
        base = [str(after), "-c", "import json"]
        cases["baseline"] = timer(base, b"", s["env"])
        times = common.interleave(cases, a.rounds)
        base_med = common.stats(times["baseline"])["median"]
        row: dict[str, Any] = {"sessions": n, "live": s["live"], "ledger_bytes": s["ledger_bytes"],
                               "hot_shared_bytes": s["hot_bytes"], "cases": {}}
        for case, xs in times.items():
            st = common.stats(xs)
            entry = {"median_s": st["median"], "p95_s": st["p95"],
                     "ratio": st["median"] / base_med}
            if case != "baseline":
                code, name = case.split()
                argv = [str(codes[code]), *common.HOOK_ARGS, name]
                entry["peak_rss_kb"] = max(
                    common.peak_rss_kb(argv, stdin=event(s, name), env=s["env"])
                    for _ in range(a.rss_runs))
            else:
                entry["peak_rss_kb"] = common.peak_rss_kb(base, env=s["env"])
            row["cases"][case] = entry
        row["commit_ms"] = commit_cost(s, a.commits)
        out["sizes"].append(row)
        common.log(f"{n} live: baseline {common.ms(base_med)}; " + "; ".join(
            f"{c} {e['ratio']:.2f}x {e['peak_rss_kb'] / 1024:.1f} MB"
            for c, e in row["cases"].items() if c != "baseline")
            + f"; a commit with news {row['commit_ms']}")
    common.save(a.name, out)
    print("\nlive sessions | case | median | ratio to import json | peak RSS")
    for row in out["sizes"]:
        for case, e in row["cases"].items():
            print(f"{row['live']:6d} {case:28s} {e['median_s'] * 1000:7.1f} ms "
                  f"{e['ratio']:5.2f}x {e['peak_rss_kb'] / 1024:6.1f} MB")
    print("\nlive sessions | a commit with news: the view's CPU, its wall, the whole commit's CPU")
    for row in out["sizes"]:
        c = row["commit_ms"]
        print(f"{row['live']:6d} {c['view_cpu_ms']:6.2f} ms {c['view_wall_ms']:6.2f} ms "
              f"{c['commit_cpu_ms']:6.2f} ms")


if __name__ == "__main__":
    main()
