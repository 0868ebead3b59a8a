"""Wall time of one status line call against one hook call, as Claude Code makes them.

Usage: .venv/bin/python bench/statusline_vs_hook.py [--runs 30] [--sessions 200]

Builds a throw-away HOME with `--sessions` copies of the `loop` fixture (each with its own ids,
so the ledger holds that many sessions), then times, each in a fresh process:

  hook        python -m tokenbudget.hook PreToolUse     (lock, sync the session, decide, write)
  statusline  python -m tokenbudget.statusline          (snapshot + this session's new lines)
  snapshot    the status line reading the snapshot only (no transcript read)
  cli         the status line behind `import tokenbudget.cli` (what `tokenbudget statusline` adds)
  python      the interpreter starting and doing nothing, for scale

in two states: "current" (the ledger holds everything) and "behind" (the ledger misses the
session's whole transcript, as when the status line runs before the Stop hook has recorded the
turn). The ledger is restored before every call, so each call sees the same state.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "claude-code-2.1.328" / "loop" / "projects"
PY = sys.executable

SNAPSHOT_ONLY = (
    "import sys, time; from tokenbudget import statusline, hook; "
    "print(statusline.status_line(hook.read_stdin(), time.time(), color=True, ingest=False))"
)
VIA_CLI = "import tokenbudget.cli; from tokenbudget.statusline import main; main()"


def build_home(root: Path, sessions: int) -> tuple[dict[str, str], dict[str, object]]:
    home, state = root / "home", root / "state"
    project = home / ".claude" / "projects" / "-home-dev-project"
    project.mkdir(parents=True)
    source = next(FIXTURE.glob("*/*.jsonl"))
    text = source.read_text()
    old_sid = source.stem
    active = ""
    for i in range(sessions):
        sid = f"{i:08d}-0000-4000-8000-000000000000"
        copy = text.replace(old_sid, sid).replace("msg_fake_", f"msg_{i}_")
        (project / f"{sid}.jsonl").write_text(copy.replace("req_fake_", f"req_{i}_"))
        active = active or sid
    state.mkdir()
    (state / "config.json").write_text(
        json.dumps(
            {
                "version": 1,
                "budgets": [
                    {"kind": "session", "limit": "400k"},
                    {"kind": "daily", "limit": "5M"},
                    {"kind": "weekly", "limit": "$50"},
                ],
            }
        )
    )
    env = dict(os.environ, HOME=str(home), TOKENBUDGET_HOME=str(state))
    env.pop("CLAUDE_CONFIG_DIR", None)
    payload = {
        "session_id": active,
        "transcript_path": str(project / f"{active}.jsonl"),
        "cwd": "/home/dev/project",
        "hook_event_name": "PreToolUse",
        "prompt_id": "p-1",
        "tool_name": "Bash",
        "tool_input": {"command": "true"},
        "workspace": {"current_dir": "/home/dev/project", "project_dir": "/home/dev/project"},
        "model": {"id": "claude-opus-5-5", "display_name": "Opus"},
    }
    return env, payload


def run(cmd: list[str], env: dict[str, str], stdin: bytes) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, input=stdin, env=env, capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--sessions", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env, payload = build_home(Path(tmp), args.sessions)
        stdin = json.dumps(payload).encode()
        state = Path(env["TOKENBUDGET_HOME"])
        ledger = state / "ledger.json"
        subprocess.run(
            [PY, "-m", "tokenbudget.cli", "sync"], env=env, check=True, capture_output=True
        )
        saved = {"current": ledger.read_bytes()}
        data = json.loads(saved["current"])
        sid = str(payload["session_id"])
        data["sessions"].pop(sid)
        data["files"] = {k: v for k, v in data["files"].items() if v[3] != sid}
        data["keys"] = {k: v for k, v in data["keys"].items() if v[0] != sid}
        saved["behind"] = json.dumps(data).encode()
        print(
            f"ledger: {len(saved['current']) / 1024:.0f} KiB, {args.sessions} sessions, "
            f"{len(data['keys'])} requests; {args.runs} runs each, wall time in ms"
        )
        commands = {
            "python": [PY, "-c", "pass"],
            "hook": [PY, "-P", "-c", "from tokenbudget.hook import main; main()", "PreToolUse"],
            "statusline": [PY, "-m", "tokenbudget.statusline"],
            "snapshot": [PY, "-c", SNAPSHOT_ONLY],
            "cli": [PY, "-c", VIA_CLI],
        }
        print(f"{'':<12}{'state':<9}{'median':>8}{'p90':>8}{'min':>8}")
        for name, cmd in commands.items():
            for label, content in saved.items():
                times = []
                for _ in range(args.runs + 2):
                    ledger.write_bytes(content)
                    times.append(run(cmd, env, stdin) * 1000)
                times = sorted(times[2:])  # the first two warm the disk cache
                p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
                print(
                    f"{name:<12}{label:<9}{statistics.median(times):8.1f}{p90:8.1f}{times[0]:8.1f}"
                )


if __name__ == "__main__":
    main()
