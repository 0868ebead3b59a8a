#!/usr/bin/env python3
"""What a Stop's look for the turn's last response (hook._response_on_disk) costs, in process,
against `python -c "import json"` (a subprocess, measured in the same rounds).

    python bench/stop_look.py --before REF [--rounds 30]

REF's hook.py (e.g. the commit that added the look) is loaded from `git show REF:...` beside
this tree's. Transcripts are the `loop` fixture's lines repeated (fresh message ids) to 0.2,
5 and 40 MB, ending either with the turn's last response (found) or with its tool results
(not written yet: the race), or with a 1 MB tool result before the response (big) or
without it (bigrace). The
look before REF's parent cost nothing for a Stop: it had no needle.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = next((ROOT / "tests/fixtures/claude-code-2.1.328/loop/projects").glob("*/*.jsonl"))
SAID = "All five steps ran; the output is in step-5.txt."


def _lines() -> list[dict[str, Any]]:
    return [json.loads(x) for x in FIXTURE.read_text(encoding="utf-8").splitlines()]


def _dump(e: dict[str, Any]) -> str:
    return json.dumps(e, separators=(",", ":"), ensure_ascii=False) + "\n"


def transcript(folder: Path, sid: str, mb: float, end: str) -> Path:
    """A transcript of about `mb` MB whose last turn ends as `end` says."""
    lines = _lines()
    path = folder / "projects" / "-p" / f"{sid}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    user = next(e for e in lines if e.get("type") == "user" and
                isinstance(e["message"]["content"], list))
    last = next(e for e in reversed(lines) if e.get("type") == "assistant")
    with open(path, "w", encoding="utf-8") as f:
        n = 0
        while f.tell() < mb * 1e6:
            n += 1
            for e in lines:
                if e.get("type") == "assistant":
                    e = json.loads(json.dumps(e))
                    e["message"]["id"] += f"_{n}"
                f.write(_dump(e))
        tool = json.loads(json.dumps(user))
        if end in ("big", "bigrace"):
            tool["message"]["content"][0]["content"] = "x" * 1_000_000
        f.write(_dump(tool))
        if end in ("found", "big"):
            resp = json.loads(json.dumps(last))
            resp["message"]["content"] = [{"type": "text", "text": SAID}]
            f.write(_dump(resp))
    return path


def load_hook(ref: str) -> Any:
    code = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:tokenbudget/hook.py"],
                          check=True, capture_output=True, text=True).stdout
    tmp = Path(tempfile.mkdtemp()) / "hook_before.py"
    tmp.write_text(code)
    spec = importlib.util.spec_from_file_location("tokenbudget.hook_before", tmp)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from tokenbudget import hook

    before = load_hook(args.before)
    folder = Path(tempfile.mkdtemp())
    cases: dict[str, Any] = {}

    def baseline() -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import json"], check=True)
        return time.perf_counter() - t

    cases["import json"] = baseline
    i = 0
    for mb in (0.2, 5, 40):
        for end in ("found", "race", "big", "bigrace"):
            i += 1
            sid = f"5e55a7e2-0000-4000-8000-{i:012d}"
            path = transcript(folder, sid, mb, end)
            raw = json.dumps({"session_id": sid, "transcript_path": str(path),
                              "last_assistant_message": SAID}).encode()
            for name, mod in (("before", before), ("now", hook)):
                ev = mod.parse_event("Stop", raw, claude_dirs=[str(folder)])
                assert ev.transcript is not None
                want = end in ("found", "big")
                assert mod._response_on_disk(ev) is want, (name, mb, end)

                def look(mod: Any = mod, ev: Any = ev) -> float:
                    t = time.perf_counter()
                    mod._response_on_disk(ev)
                    return time.perf_counter() - t

                cases[f"{name} {mb:g} MB {end}"] = look
    out = common.interleave(cases, args.rounds)
    base = statistics.median(out["import json"])
    print(f"import json: {base * 1000:.1f} ms (median of {args.rounds})")
    for name, xs in out.items():
        if name != "import json":
            m = statistics.median(xs)
            print(f"{name:24} {m * 1000:8.3f} ms  {m / base:7.4f}x")


if __name__ == "__main__":
    main()
