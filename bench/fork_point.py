"""What finding a fork's point in its parent costs: the fork and parent read whole (before)
against the fork read to its first own response and the parent from its end (now).

Three shapes, each a parent of about --mb MB: a fork of a compacted parent made at its end
(it copies from the last compact_boundary: a few lines); a fork of an uncompacted parent (it
copies every line); a fork made early in a parent that went on for the rest of its size.
"Before" is `inherited_totals` from --before REF's tokenbudget/transcripts.py; both are timed
in this process, interleaved and shuffled per round, and must find the same totals.

    python bench/fork_point.py [--mb 150] [--rounds 7] [--before REF]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tokenbudget import transcripts  # noqa: E402

PAD = "x" * 2000  # a tool output's worth, so that a line is about as long as a real one


def line(kind: str, sid: str, uid: str | None = None, **extra: Any) -> str:
    d: dict[str, Any] = {"type": kind, "sessionId": sid, **extra}
    if uid is not None:
        d["uuid"] = uid
        d["timestamp"] = "2026-11-28T16:00:00.000Z"
    return json.dumps(d, separators=(",", ":")) + "\n"


def cost_state(sid: str, n: int) -> str:
    usage = {"inputTokens": n, "outputTokens": n, "cacheReadInputTokens": 0,
             "cacheCreationInputTokens": 0}
    return line("cost-state", sid, modelUsage={"claude-opus-5-5": usage})


def assistant(sid: str, uid: str, n: int, origin: str | None = None) -> str:
    extra: dict[str, Any] = {"requestId": f"req_{n}", "message": {
        "id": f"msg_{n}", "model": "claude-opus-5-5",
        "usage": {"input_tokens": 1, "output_tokens": 1}, "content": PAD}}
    if origin is not None:
        extra["requestSessionId"] = origin
    return line("assistant", sid, uid, **extra)


def build(folder: Path, shape: str, mb: int) -> tuple[Path, Path]:
    parent_id, fork_id = str(uuid.uuid4()), str(uuid.uuid4())
    turns = mb * 1024 * 1024 // (2 * len(assistant(parent_id, str(uuid.uuid4()), 0)))
    parent: list[str] = []
    chain: list[tuple[str, str]] = []  # (uuid, kind) of the lines a fork copies
    fork_at = turns if shape != "moved-on" else turns // 15
    copied: list[tuple[str, str]] = []
    for n in range(turns):
        u, a = str(uuid.uuid4()), str(uuid.uuid4())
        parent.append(line("user", parent_id, u, message={"content": PAD}))
        parent.append(assistant(parent_id, a, n))
        chain += [(u, "user"), (a, "assistant")]
        if shape == "compacted" and n == turns - 3:
            b = str(uuid.uuid4())
            parent.append(line("system", parent_id, b, subtype="compact_boundary"))
            chain = [(b, "system")]
        if n % 50 == 49:
            parent.append(cost_state(parent_id, n))
        if n == fork_at - 1:
            parent.append(cost_state(parent_id, n))
            copied = list(chain)
    fork = [
        assistant(fork_id, uid, i, origin=parent_id) if kind == "assistant"
        else line(kind, fork_id, uid)
        for i, (uid, kind) in enumerate(copied)
    ]
    fork += [line("user", fork_id, str(uuid.uuid4()), message={"content": "hello"}),
             assistant(fork_id, str(uuid.uuid4()), 10**6), cost_state(fork_id, 10**6)]
    p, f = folder / f"{parent_id}.jsonl", folder / f"{fork_id}.jsonl"
    p.write_text("".join(parent))
    f.write_text("".join(fork))
    return p, f


def before_module(ref: str) -> ModuleType:
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:tokenbudget/transcripts.py"],
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "transcripts_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("transcripts_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--before", default="56b644d", help="the commit to compare with")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "fork_point.json")
    a = ap.parse_args()
    old = before_module(a.before)

    def now(fork: Path, parent: Path) -> Any:
        fp = transcripts.fork_point(transcripts.copied_uuids(fork)[0], parent)
        return None if fp is None else fp.totals

    results: dict[str, Any] = {"mb": a.mb, "rounds": a.rounds, "before": a.before, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for shape in ("compacted", "whole", "moved-on"):
            folder = Path(tmp) / shape
            folder.mkdir()
            parent, fork = build(folder, shape, a.mb)
            runs: dict[str, Any] = {
                "before": lambda f=fork, p=parent: old.inherited_totals(f, p),
                "now": lambda f=fork, p=parent: now(f, p),
            }
            assert runs["before"]() == runs["now"](), shape
            times: dict[str, list[float]] = {"before": [], "now": []}
            for _ in range(a.rounds):
                for name in random.sample(list(runs), 2):
                    t = time.perf_counter()
                    runs[name]()
                    times[name].append(time.perf_counter() - t)
            b, n = statistics.median(times["before"]), statistics.median(times["now"])
            results["cases"][shape] = {
                "parent_mb": round(parent.stat().st_size / 2**20, 1),
                "fork_mb": round(fork.stat().st_size / 2**20, 1),
                "times": times, "ratio": n / b,
            }
            print(f"{shape:10} parent {parent.stat().st_size / 2**20:6.1f} MB, fork "
                  f"{fork.stat().st_size / 2**20:6.1f} MB: now {n * 1000:8.1f} ms, before "
                  f"{b * 1000:8.1f} ms, ratio {n / b:.3f}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
