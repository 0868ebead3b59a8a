#!/usr/bin/env python3
"""What a hook call imports beyond `python -c "import json"`, and what each module costs.

    python bench/imports.py [--runs 25] [--event PreToolUse]

Runs the hook (and the baseline) under `python -X importtime` many times, in the bytecode-compiled
non-editable venv, and prints the median self time of every module the hook imports and the
baseline does not, grouped under the top-level package that pulled it in.
Needs the state of bench/hook_overhead.py (realistic case) for a representative call.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import hook_overhead


def importtime(argv: list[str], stdin: bytes, env: dict[str, str]) -> list[tuple[str, int, int]]:
    """[(module, self us, cumulative us)] in import order, nesting kept in the name's indent."""
    p = subprocess.run(argv, input=stdin, env=env, capture_output=True, cwd=common.WORK)
    rows = []
    for line in p.stderr.decode().splitlines():
        parts = line.removeprefix("import time:").split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[0].strip().isdigit():
            rows.append((parts[2].rstrip(), int(parts[0]), int(parts[1])))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=25)
    ap.add_argument("--event", default="PreToolUse")
    ap.add_argument("--sessions", type=int, default=5000)
    ap.add_argument("--ref", help="measure the package as committed at this git ref instead")
    ap.add_argument("--name", default="imports")
    a = ap.parse_args()
    py = common.bench_python_at(a.ref) if a.ref else common.bench_python()
    s = hook_overhead.prepare(py, a.sessions, "realistic", False)
    env = s["env"]
    base: dict[str, list[int]] = defaultdict(list)
    hook: dict[str, list[int]] = defaultdict(list)
    top_of: dict[str, str] = {}
    for i in range(a.runs):
        for name, self_us, _ in importtime([str(py), "-X", "importtime", "-c", "import json"],
                                           b"", env):
            base[name.strip()].append(self_us)
        hook_overhead.restore(s)
        ev = common.hook_event(a.event, s["session"], str(s["transcript"]), s["cwd"], 10**6 + i,
                               s["prompt_id"])
        rows = importtime([str(py), "-X", "importtime", *common.HOOK_ARGS, a.event], ev, env)
        # importtime prints children before their parent; the parent is the next line with less
        # indentation. Attribute each module to its outermost (top-level) importer.
        pending: list[str] = []
        for name, self_us, _ in rows:
            mod = name.strip()
            hook[mod].append(self_us)
            depth = (len(name) - len(name.lstrip())) // 2
            pending.append(mod)
            if depth == 0:
                for m in pending:
                    top_of.setdefault(m, mod)
                pending = []
    hook_overhead.restore(s)
    extra = {m: statistics.median(v) for m, v in hook.items() if m not in base}
    groups: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for m, us in extra.items():
        groups[top_of.get(m, m)].append((us, m))
    total = sum(extra.values())
    base_total = sum(statistics.median(v) for v in base.values())
    print(f"baseline `import json` run: {base_total / 1000:.1f} ms of imports (median self sums)")
    print(f"hook {a.event}: {total / 1000:.1f} ms of imports the baseline does not make\n")
    for top, items in sorted(groups.items(), key=lambda kv: -sum(u for u, _ in kv[1])):
        sub = sum(u for u, _ in items)
        print(f"{sub / 1000:6.1f} ms  {top}")
        for us, m in sorted(items, reverse=True)[:6]:
            if m != top and us >= 300:
                print(f"        {us / 1000:5.1f} ms  {m}")
    common.save(a.name, {"event": a.event, "runs": a.runs, "ref": a.ref or "working tree",
                            "extra_us": extra, "top_of": top_of,
                            "baseline_import_us": base_total})


if __name__ == "__main__":
    main()
