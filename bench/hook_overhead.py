#!/usr/bin/env python3
"""Hook overhead: one PreToolUse call, and one Stop call after a turn of 10 API requests,
against `python -c "import json"` on the same interpreter, interleaved.

    python bench/hook_overhead.py [--sessions 5000] [--rounds 80] [--case realistic,worst]

Setup (cached under $TB_BENCH_DIR, default a folder of this checkout's own in the temp folder):
synthetic history of N sessions (bench/synth.py), `tokenbudget sync` with five budgets
configured, in a venv where tokenbudget is installed non-editable and compiled to bytecode.

- realistic: sessions spread over a year, retention 14 days: most are folded into history.
- default: the same history with tokenbudget's default retention (2 days).
- worst: every session in the last 10 days: none is folded, all hour buckets are kept.

The measured session is the latest one, fully ingested: PreToolUse has nothing new to read.
Each call gets a distinct tool_use_id (a repeated event is answered early, see hook.py) and the
ledger is put back to the same bytes before every call, so every call does the same work.
`--profile` also writes `python -X importtime` and cProfile output for one call.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import synth

# case -> (history spread, retention_days in the config; None: tokenbudget's default)
CASES: dict[str, tuple[list[str], int | None]] = {
    "realistic": (["--days", "365"], 14),
    "default": (["--days", "365"], None),
    "worst": (["--days", "10"], 14),
}


def prepare(py: Path, n: int, case: str, resync: bool) -> dict[str, Any]:
    """History, synced state and the pristine ledger for one case."""
    spread, retention = CASES[case]
    data = common.WORK / f"hist-{n}-{'worst' if case == 'worst' else 'realistic'}"
    truth = common.synth(data, "--sessions", str(n), "--seed", "11", "--lean", *spread)
    state = common.WORK / f"state-{n}-{case}"
    env = common.state_env(data, state)
    tb = common.data_dir(state)
    pristine = tb / "ledger.pristine.json"
    if resync or not pristine.exists():
        if state.exists():
            shutil.rmtree(state)
        common.write_config(state, retention_days=retention)
        r = common.run([str(py.parent / "tokenbudget"), "sync", "--json"], env=env)
        common.log(f"sync {case}: {r.seconds:.1f} s")
        shutil.copyfile(tb / "ledger.json", pristine)
    ledger = json.loads(pristine.read_text())
    latest = truth["latest"]
    transcript = Path(latest["transcript"])
    prompt_id = None
    with open(transcript, "rb") as f:
        for line in f:
            if b'"promptId"' in line and b'"isSidechain":false' in line:
                prompt_id = json.loads(line).get("promptId")
    return {
        "case": case, "data": data, "state": state, "tb": tb, "env": env, "pristine": pristine,
        "truth": truth, "transcript": transcript, "session": latest["session"],
        "cwd": latest["cwd"], "prompt_id": prompt_id, "last_ts": latest["last_ts"],
        "ledger_bytes": pristine.stat().st_size,
        "live_sessions": len(ledger["sessions"]), "folded_sessions": ledger["folded"]["sessions"],
        "keys": len(ledger["keys"]), "hours": len(ledger["hours"]),
    }


def stored(path: Path) -> dict[str, Any]:
    """The ledger committed at `path`: its snapshot and journal (this tree's reader)."""
    sys.path.insert(0, str(common.REPO))
    from tokenbudget.store import JsonFileStore

    return JsonFileStore(path).snapshot()


def restore(s: dict[str, Any]) -> None:
    tmp = s["tb"] / "ledger.json.bench"
    shutil.copyfile(s["pristine"], tmp)
    os.replace(tmp, s["tb"] / "ledger.json")
    # The journal of the last call's commit (where there is one) goes too: same work each call.
    (s["tb"] / "ledger.journal.jsonl").unlink(missing_ok=True)


def a_turn(s: dict[str, Any], n_requests: int = 10) -> tuple[bytes, int]:
    """The lines of one more turn of the session (10 requests), and its tokens."""
    g = synth.Synth(99)
    c = synth.Ctx(s["session"], s["cwd"], "bench-turn", "claude-opus-4-5-20251101")
    c.context = 60_000
    g.turn(c, s["last_ts"] + 120, n_requests)
    return ("\n".join(c.lines) + "\n").encode(), g.truth.totals.to_json()["totalTokens"]


def nokeys_state(s: dict[str, Any]) -> dict[str, Any]:
    """A copy of the state whose ledger lacks its per-request records ("keys"): what-if only."""
    state = common.WORK / f"{s['state'].name}-nokeys"
    tb = common.data_dir(state)
    tb.mkdir(parents=True, exist_ok=True)
    common.write_config(state)
    ledger = json.loads(s["pristine"].read_text())
    ledger["keys"] = {}
    (tb / "ledger.pristine.json").write_text(json.dumps(ledger, separators=(",", ":")))
    return {**s, "state": state, "tb": tb, "pristine": tb / "ledger.pristine.json",
            "env": common.state_env(s["data"], state)}


def measure(py: Path, s: dict[str, Any], rounds: int, before: Path | None = None,
            whatif: bool = False) -> dict[str, Any]:
    env = s["env"]
    hook = [str(py), *common.HOOK_ARGS]
    counter = [0]
    size = s["transcript"].stat().st_size
    turn, turn_tokens = a_turn(s)

    def reset(state: dict[str, Any] = s, turn_too: bool = False) -> None:
        """The ledger as synced, the transcript as generated (plus the turn, for Stop)."""
        restore(state)
        with open(s["transcript"], "r+b") as f:
            f.truncate(size)
            if turn_too:
                f.seek(size)
                f.write(turn)

    def event(name: str) -> bytes:
        counter[0] += 1
        return common.hook_event(name, s["session"], str(s["transcript"]), s["cwd"], counter[0],
                                 s["prompt_id"])

    def baseline() -> float:
        return common.run([str(py), "-c", "import json"], stdin=event("PreToolUse"),
                          env=env).seconds

    def pretool() -> float:
        reset()
        r = common.run([*hook, "PreToolUse"], stdin=event("PreToolUse"), env=env)
        assert r.stdout.strip() == b"{}", r.stdout
        return r.seconds

    def pretool_sh() -> float:
        reset()
        r = common.run(["/bin/sh", str(common.HOOK_SCRIPT), "PreToolUse"],
                       stdin=event("PreToolUse"), env={**env, "TOKENBUDGET_PYTHON": str(py)})
        assert r.stdout.strip() == b"{}", r.stdout
        return r.seconds

    def stop() -> float:
        reset(turn_too=True)
        r = common.run([*hook, "Stop"], stdin=event("Stop"), env=env)
        return r.seconds

    # Sanity, untimed: the Stop call counts the new turn exactly.
    was = json.loads(s["pristine"].read_text())["sessions"][s["session"]]
    stop()
    now = stored(s["tb"] / "ledger.json")["sessions"][s["session"]]
    got = sum(sum(m[:5]) for m in now["m"].values()) - sum(sum(m[:5]) for m in was["m"].values())
    assert got == turn_tokens, (got, turn_tokens)
    reset()
    rss = {
        "pretool_kb": common.peak_rss_kb([*hook, "PreToolUse"], stdin=event("PreToolUse"), env=env),
        "baseline_kb": common.peak_rss_kb([str(py), "-c", "import json"], env=env),
    }
    # The quick start `tokenbudget install` now writes: `-I -S`, tokenbudget's folders given.
    probe = ("import json, sys; from tokenbudget import claude_settings as c; "
             "print(json.dumps(c.site_paths(sys.executable)))")
    folders = json.loads(common.run([str(py), "-P", "-c", probe], env=env).stdout)
    assert folders, "the bench interpreter cannot start the hooks without site"
    quick = [str(py), "-I", "-S", "-c",
             "import sys; sys.path[:0] = " + json.dumps(folders) + "; " + common.HOOK_ARGS[-1]]

    def pretool_quick() -> float:
        reset()
        r = common.run([*quick, "PreToolUse"], stdin=event("PreToolUse"), env=env)
        assert r.stdout.strip() == b"{}", r.stdout
        return r.seconds

    def stop_quick() -> float:
        reset(turn_too=True)
        return common.run([*quick, "Stop"], stdin=event("Stop"), env=env).seconds

    cases = {"baseline": baseline, "pretool": pretool, "pretool_sh": pretool_sh, "stop": stop,
             "pretool_quick": pretool_quick, "stop_quick": stop_quick}
    if before is not None:
        def pretool_before() -> float:
            reset()
            r = common.run([str(before), "-m", "tokenbudget.hook", "PreToolUse"],
                           stdin=event("PreToolUse"), env=env)
            assert r.stdout.strip() == b"{}", r.stdout
            return r.seconds

        def stop_before() -> float:
            reset(turn_too=True)
            return common.run([str(before), "-m", "tokenbudget.hook", "Stop"], stdin=event("Stop"),
                              env=env).seconds

        cases.update(pretool_before=pretool_before, stop_before=stop_before)
    if whatif:
        nk = nokeys_state(s)

        def pretool_nokeys() -> float:
            reset(nk)
            r = common.run([*hook, "PreToolUse"], stdin=event("PreToolUse"), env=nk["env"])
            assert r.stdout.strip() == b"{}", r.stdout
            return r.seconds

        def imports_only() -> float:
            return common.run([str(py), "-c", "import tokenbudget.hook, tokenbudget.config, "
                               "tokenbudget.enforce, tokenbudget.sync, tokenbudget.burn"],
                              env=env).seconds

        def disabled() -> float:
            return common.run([*hook, "PreToolUse"], stdin=event("PreToolUse"),
                              env={**env, "TOKENBUDGET_DISABLE": "1"}).seconds

        cases.update(pretool_nokeys=pretool_nokeys, imports_only=imports_only, disabled=disabled)
    try:
        times = common.interleave(cases, rounds)
    finally:
        with open(s["transcript"], "r+b") as f:
            f.truncate(size)  # the history stays as generated, whatever happens
        restore(s)
    st = {k: common.stats(v) for k, v in times.items()}
    base = st["baseline"]["median"]
    return {
        "setup": {k: (str(v) if isinstance(v, Path) else v) for k, v in s.items()
                  if k not in ("env", "truth")},
        "turn_bytes": len(turn), "turn_tokens": turn_tokens,
        "stats": st, "raw": times, "rss": rss,
        "ratio": {k: st[k]["median"] / base for k in st},
    }


def profile(py: Path, s: dict[str, Any]) -> dict[str, str]:
    """`-X importtime` and cProfile of one PreToolUse call; written under bench/results/."""
    env = s["env"]
    ev = common.hook_event("PreToolUse", s["session"], str(s["transcript"]), s["cwd"], 10**7,
                           s["prompt_id"])
    restore(s)
    p = subprocess.run([str(py), "-X", "importtime", *common.HOOK_ARGS, "PreToolUse"],
                       input=ev, env=env, capture_output=True, cwd=common.WORK)
    rows = []
    for line in p.stderr.decode().splitlines():
        parts = line.removeprefix("import time:").split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        rows.append((int(parts[1]), int(parts[0]), parts[2].rstrip()))
    top = sorted(rows, reverse=True)[:30]
    imp = "\n".join(f"{c / 1000:7.1f} ms cum {sf / 1000:6.1f} ms self {n}" for c, sf, n in top)
    common.RESULTS.mkdir(exist_ok=True)
    (common.RESULTS / f"importtime-{s['case']}.txt").write_text(p.stderr.decode())
    restore(s)
    prof = common.WORK / "hook.prof"
    code = ("import cProfile, sys; sys.argv = ['hook', 'PreToolUse']; "
            f"cProfile.run('from tokenbudget.hook import main; main()', {str(prof)!r})")
    subprocess.run([str(py), "-c", code], input=ev, env=env, capture_output=True, check=True,
                   cwd=common.WORK)
    st = subprocess.run([str(py), "-c", f"import pstats; pstats.Stats({str(prof)!r})"
                         ".sort_stats('cumulative').print_stats(35)"],
                        capture_output=True, text=True, env=env).stdout
    # Folders of this machine say nothing about the code: name them by what they are.
    st = re.sub(r"/\S*/lib/python3\.\d+/site-packages/", "<site-packages>/", st)
    st = re.sub(r"/\S*/lib/python3\.\d+/", "<stdlib>/", st)
    (common.RESULTS / f"cprofile-{s['case']}.txt").write_text(st)
    restore(s)
    return {"importtime_top": imp, "cprofile": st}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=80)
    ap.add_argument("--case", default="realistic,worst")
    ap.add_argument("--reinstall", action="store_true", help="reinstall the working tree first")
    ap.add_argument("--resync", action="store_true", help="sync the ledger again")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--name", default="hook_overhead")
    ap.add_argument("--before", metavar="REF",
                    help="also time the package as committed at this git ref (e.g. HEAD)")
    ap.add_argument("--whatif", action="store_true",
                    help="also time: a ledger without request records, imports alone, "
                         "TOKENBUDGET_DISABLE=1")
    a = ap.parse_args()
    py = common.bench_python(reinstall=a.reinstall)
    before = common.bench_python_at(a.before) if a.before else None
    out: dict[str, Any] = {"sessions": a.sessions, "rounds": a.rounds, "python": str(py),
                           "bytecode": True, "install": "non-editable venv"}
    for case in a.case.split(","):
        s = prepare(py, a.sessions, case, a.resync)
        r = measure(py, s, a.rounds, before, a.whatif)
        if a.profile:
            r["profile"] = profile(py, s)
            print(r["profile"]["importtime_top"])
        out[case] = r
        st = r["stats"]
        print(f"\n## {case}: {s['live_sessions']} live + {s['folded_sessions']} folded sessions, "
              f"ledger {s['ledger_bytes'] / 1e6:.2f} MB, {s['keys']} request keys, "
              f"{s['hours']} hour buckets")
        for k in st:
            print(f"{k:14s} median {common.ms(st[k]['median']):>9}  "
                  f"p95 {common.ms(st[k]['p95']):>9}"
                  f"  ratio {r['ratio'][k]:.2f}x")
        print(f"peak RSS: hook {r['rss']['pretool_kb'] / 1024:.1f} MB, "
              f"baseline {r['rss']['baseline_kb'] / 1024:.1f} MB")
    common.save(a.name, out)


if __name__ == "__main__":
    main()
