#!/usr/bin/env python3
"""Print the key figures of bench/results/*.json as Markdown (the material of RESULTS.md).

    python bench/summary.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def ms(x: float) -> str:
    return f"{x * 1000:.1f}"


def where(d: dict[str, Any]) -> str:
    m = d["machine"]
    code = m.get("measured_code") or {}
    return (f"_{m['date']}, {m['cpu']} x{m['cpus']}, {m['memory']}, Linux {m['kernel']}, "
            f"Python {m['python']}, code {code.get('commit', m.get('git', '?'))}"
            + (" + uncommitted changes" if code.get("uncommitted_changes_in_tokenbudget") else "")
            + f", load average {m['loadavg'][0]}_")


def hook() -> None:
    d = load("hook_overhead")
    if not d:
        return
    print("## Hook overhead\n")
    print(where(d) + "\n")
    for case in ("realistic", "default", "worst"):
        if case not in d:
            continue
        r = d[case]
        s = r["setup"]
        print(f"### {case}: {s['live_sessions']} live + {s['folded_sessions']} folded sessions, "
              f"ledger {s['ledger_bytes'] / 1e6:.2f} MB, {s['keys']} request records\n")
        print("| case | median ms | p05 | p95 | min | max | n | ratio to baseline |")
        print("|---|---|---|---|---|---|---|---|")
        for k, v in r["stats"].items():
            print(f"| {k} | {ms(v['median'])} | {ms(v['p05'])} | {ms(v['p95'])} | {ms(v['min'])} "
                  f"| {ms(v['max'])} | {v['n']} | {r['ratio'][k]:.2f}x |")
        print(f"\npeak RSS: hook {r['rss']['pretool_kb'] / 1024:.1f} MB, baseline "
              f"{r['rss']['baseline_kb'] / 1024:.1f} MB\n")


def imports() -> None:
    for name in ("imports_before", "imports"):
        d = load(name)
        if not d:
            continue
        extra = d["extra_us"]
        groups: dict[str, float] = {}
        for m, us in extra.items():
            top = d["top_of"].get(m, m)
            groups[top] = groups.get(top, 0) + us
        top = sorted(groups.items(), key=lambda kv: -kv[1])[:10]
        print(f"{name} ({d.get('ref', 'working tree')}): {sum(extra.values()) / 1000:.1f} ms beyond"
              " the baseline's imports; " + ", ".join(f"{k} {v / 1000:.1f}" for k, v in top))
    print()


def incremental() -> None:
    d = load("incremental")
    if not d:
        return
    st = d["stats"]
    print("## Incremental\n")
    print(where(d) + "\n")
    for k in ("baseline", "small", "big"):
        v = st[k]
        print(f"- {k}: median {ms(v['median'])} ms, p95 {ms(v['p95'])}, min {ms(v['min'])}, "
              f"max {ms(v['max'])}, n {v['n']}")
    print(f"- big/small: {d['ratio_big_over_small']:.3f}; transcripts {d['transcripts']}; "
          f"ledger {d['ledger_bytes'] / 1e6:.2f} MB\n")


def backfill() -> None:
    d = load("backfill")
    if not d:
        return
    print("## Backfill\n")
    print(where(d) + "\n")
    for k, v in d["stats"].items():
        print(f"- {k}: median {v['median']:.2f} s (min {v['min']:.2f}, max {v['max']:.2f}, "
              f"n {v['n']}), peak RSS {d['peak_rss_kb'][k] / 1024:.0f} MB")
    print(f"- ratios: {json.dumps({k: round(v, 3) for k, v in d['ratios'].items()})}")
    for k in ("daily_tokenbudget_vs_ccusage", "daily_tokenbudget_vs_truth",
              "daily_ccusage_vs_truth"):
        print(f"- {k}: {d[k]['days_differing']} of {d[k]['days']} days differ")
    print(f"- totals: {d['totals']}")
    print(f"- sessions wrong: {d['sessions_wrong']['count']} of {d['sessions_wrong']['of']}; "
          f"commands wrong: {d['commands_wrong']}")
    print(f"- state: {d['state_bytes']}\n")


def ledger() -> None:
    d = load("ledger_size_after")  # the default retention; ledger_size.json is the round before
    if not d:
        return
    print("## Ledger size\n")
    print(where(d) + "\n")
    print("| sessions | ledger MB | live | request records | largest parts | hook peak RSS MB "
          "| hook/baseline |")
    print("|---|---|---|---|---|---|---|")
    rows = list(d["steps"])
    if d.get("worst_5000_all_live"):
        rows.append({**d["worst_5000_all_live"], "sessions": "5000 all live"})
    for s in rows:
        b, h = s["ledger"], s.get("hook")
        parts = ", ".join(f"{k} {v:.0%}" for k, v in sorted(b["share"].items(),
                                                           key=lambda kv: -kv[1])[:4])
        print(f"| {s['sessions']} | {b['bytes'] / 1e6:.2f} | {b['live_sessions']} | "
              f"{b['request_records']} | {parts} | "
              + (f"{h['peak_rss_kb'] / 1024:.1f} | {h['ratio']:.2f}x |" if h else " | |"))
    print()


def contention() -> None:
    d = load("contention")
    if not d:
        return
    print("## Contention\n")
    print(where(d) + "\n")
    la, al = d["latency"], d["latency_alone"]
    print(f"- {d['calls']} calls by {d['procs']} processes in {d['wall_seconds']:.0f} s")
    print(f"- under load: median {ms(la['median'])} ms, p95 {ms(la['p95'])}, max {ms(la['max'])}")
    print(f"- alone: median {ms(al['median'])} ms; p95 under load / alone median: "
          f"{d['p95_over_alone_median']:.1f}x")
    bl = d.get("baseline_under_load")
    if bl:
        print(f"- python -c 'import json' under the same load: median {ms(bl['median'])}, "
              f"p95 {ms(bl['p95'])}; alone {ms(d['baseline_alone']['median'])}")
    print(f"- lock timeouts: {d['lock_timeouts']}; lost updates: {d['lost_updates']} "
          f"(fingerprints {d['fingerprints']} of {d['fingerprints_expected']}); sessions wrong: "
          f"{len(d['sessions_wrong'])}; other errors: {len(d['other_errors'])}\n")


if __name__ == "__main__":
    hook()
    imports()
    incremental()
    ledger()
    backfill()
    contention()
