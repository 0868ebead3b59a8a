"""What parallel_sessions.py and parallel_budgets.py share: the ledger against the fake API's
truth, per session and model, after the hooks alone, `sync` and `rebuild`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC
from pathlib import Path
from typing import Any

from tokenbudget import history, query
from tokenbudget.store import open_store
from tokenbudget.usage import Usage

KINDS = ("text", "bash", "agent", "compact", "max_tokens")


def truth(fake: Any) -> dict[str, dict[str, Usage]]:
    """What the fake API served, per session and model."""
    out: dict[str, dict[str, Usage]] = {}
    for r in fake.requests:
        u = Usage(
            r.input_tokens,
            r.output_tokens,
            r.cache_creation_input_tokens,
            0,
            r.cache_read_input_tokens,
        )
        per = out.setdefault(str(r.session_id), {})
        per[r.model] = per.get(r.model, Usage()) + u
    return out


def ledger_view(state: Path) -> dict[str, dict[str, Usage]]:
    """What the ledger in `state` counts, per session and model (history included)."""
    led = open_store(path=state / "ledger.json").snapshot()
    groups = query.group("session", query.cells(led, history.read_records(led)), UTC)
    return {
        g.key: {m: v[0] for m, v in g.models.items() if v[0].total} for g in groups if g.usage.total
    }


def settle(state: Path, timeout: float = 60) -> None:
    """Until the ledger stops changing for 3 s (the background SessionEnd hooks)."""
    last, since = None, time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = json.dumps(
            {s: {m: list(u) for m, u in d.items()} for s, d in ledger_view(state).items()},
            sort_keys=True,
        )
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 3:
            return
        time.sleep(0.3)


def compare(name: str, fake: Any, state: Path) -> dict[str, Any]:
    """The ledger against the truth; printed, and returned with every difference."""
    want, got = truth(fake), ledger_view(state)
    diffs = []
    for s in sorted(set(want) | set(got)):
        for m in sorted(set(want.get(s, {})) | set(got.get(s, {}))):
            w, g = want.get(s, {}).get(m, Usage()), got.get(s, {}).get(m, Usage())
            if w != g:
                diffs.append(
                    {
                        "session": s,
                        "model": m,
                        "want": list(w),
                        "got": list(g),
                        "delta_total": g.total - w.total,
                    }
                )
    wt = sum(u.total for d in want.values() for u in d.values())
    gt = sum(u.total for d in got.values() for u in d.values())
    res = {
        "stage": name,
        "served_total": wt,
        "ledger_total": gt,
        "sessions_served": len(want),
        "sessions_ledger": len(got),
        "diffs": diffs,
    }
    print(
        json.dumps({k: v for k, v in res.items() if k != "diffs"}), "diffs:", len(diffs), flush=True
    )
    for d in diffs:
        print("   ", json.dumps(d), flush=True)
    return res


def stages(out: Path, state: Path, fake: Any, runs: list[dict[str, Any]], tb: str) -> None:
    """Compare after the hooks alone, after `sync`, after `rebuild`; write summary.json."""
    results = []
    settle(state)
    results.append(compare("hooks", fake, state))
    cc: dict[str, int] = {}
    for r in runs:
        for m, u in (r["modelUsage"] or {}).items():
            cc[m] = cc.get(m, 0) + sum(
                int(u.get(k) or 0)
                for k in (
                    "inputTokens",
                    "outputTokens",
                    "cacheReadInputTokens",
                    "cacheCreationInputTokens",
                )
            )
    served_by_model: dict[str, int] = {}
    for r in fake.requests:
        served_by_model[r.model] = served_by_model.get(r.model, 0) + r.total_tokens()
    print(
        "served by model:",
        served_by_model,
        "claude modelUsage summed over processes:",
        cc,
        flush=True,
    )
    for command in ("sync", "rebuild"):
        p = subprocess.run([tb, command], capture_output=True, text=True)
        print(f"{command}:", p.returncode, p.stdout.strip()[-300:], p.stderr.strip()[-300:])
        results.append(compare(command, fake, state))
    check = out / "journal-check.txt"
    print("journal-check:", check.read_text()[:2000] if check.exists() else "clean")
    p = subprocess.run([tb, "doctor"], capture_output=True, text=True)
    (out / "doctor.txt").write_text(p.stdout + p.stderr)
    kinds = {k: [r.kind for r in fake.requests].count(k) for k in KINDS}
    (out / "summary.json").write_text(
        json.dumps(
            {"results": results, "served_by_model": served_by_model, "cc": cc, "kinds": kinds},
            indent=1,
        )
    )
    print("kinds:", kinds)


def private_home(out: Path) -> tuple[Path, Path]:
    """OUT/"home dir" as HOME, tokenbudget's state in it, for this process and its children:
    (HOME, the state folder). Call before tokenbudget reads any path."""
    out.mkdir(parents=True, exist_ok=True)
    home = out / "home dir"
    home.mkdir(exist_ok=True)
    state = home / "tb state"
    os.environ.update(
        HOME=str(home),
        TOKENBUDGET_HOME=str(state),
        TZ="UTC",
        NO_COLOR="1",
        TOKENBUDGET_STORE_CHECK=str(out / "journal-check.txt"),
    )
    for k in ("CLAUDE_CONFIG_DIR", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "TOKENBUDGET_NOW"):
        os.environ.pop(k, None)
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    return home, state


class Runner:
    """Runs `claude -p` against the fake API and keeps each run's outcome (runs.jsonl)."""

    def __init__(self, home: Path, fake: Any, out: Path, settings: str = "") -> None:
        self.home, self.fake, self.settings = home, fake, settings
        self.claude = os.environ["TOKENBUDGET_CLAUDE_BIN"]
        self.log = out / "runs.jsonl"
        self.lock = threading.Lock()
        self.runs: list[dict[str, Any]] = []

    def run(
        self, label: str, prompt: str, cwd: Path, extra: list[str], tools: str = "Bash"
    ) -> dict[str, Any]:
        from tests.e2e.conftest import claude_env, parse_output

        cwd.mkdir(parents=True, exist_ok=True)
        cmd = [
            self.claude,
            "-p",
            prompt,
            "--output-format",
            "json",
            "--allowedTools",
            tools,
            *extra,
        ]
        if self.settings:
            cmd += ["--settings", self.settings]
        t0 = time.monotonic()
        p = subprocess.run(
            cmd,
            cwd=cwd,
            env=claude_env(self.home, self.fake.base_url),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=600,
        )
        out = parse_output(p.stdout) or {}
        rec = {
            "label": label,
            "prompt": prompt,
            "extra": extra,
            "rc": p.returncode,
            "secs": round(time.monotonic() - t0, 2),
            "session": out.get("session_id"),
            "terminal_reason": out.get("terminal_reason"),
            "result": out.get("result"),
            "is_error": out.get("is_error"),
            "modelUsage": out.get("modelUsage"),
            "stderr": p.stderr[-1500:],
            "stdout_raw": "" if out else p.stdout[-300:],
        }
        with self.lock:
            self.runs.append(rec)
            with self.log.open("a") as f:
                f.write(json.dumps(rec) + "\n")
        return rec


def install(out: Path, state: Path, route: str, budgets: str) -> str:
    """The budgets (JSON) in the config, and `tokenbudget install` for `route`: resident,
    command, or mixed (--resident in the project folders "proj 0" and "proj 1", the command
    hooks in "proj 2", each with --scope local). Returns the tokenbudget command."""
    tb = str(Path(sys.executable).parent / "tokenbudget")  # this interpreter's tokenbudget
    if budgets:
        state.mkdir(parents=True, exist_ok=True)
        config = state / "config.json"
        config.write_text(json.dumps({"version": 1, "budgets": json.loads(budgets)}))
        config.chmod(0o600)
    plan: list[tuple[Path | None, list[str]]] = [
        (None, ["--resident"] if route == "resident" else [])
    ]
    if route == "mixed":
        plan = [
            (out / "projects" / f"proj {k}", ["--scope", "local", *extra])
            for k, extra in ((0, ["--resident"]), (1, ["--resident"]), (2, []))
        ]
    for folder, extra in plan:
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [tb, "install", "--no-sync", *extra], capture_output=True, text=True, cwd=folder
        )
        print("install:", done.returncode, done.stdout.strip()[-400:], done.stderr.strip()[-400:])
    return tb


def start(ap: Any) -> tuple[Any, Path, Path, Path, str, Any, Runner]:
    """The arguments both scripts take (route, out, --budgets, --workers, --sessions) added to
    `ap` and parsed; HOME set up, tokenbudget installed, the fake API started: (args, OUT,
    HOME, the state folder, the tokenbudget command, the fake, a Runner)."""
    ap.add_argument("route", help="resident, command (or, in parallel_budgets.py, mixed)")
    ap.add_argument("out", help="a new folder, used as HOME")
    ap.add_argument("--budgets", default="", help="a JSON list of budgets to set")
    ap.add_argument("--workers", type=int, default=8, help="claude -p processes at a time")
    ap.add_argument("--sessions", type=int, default=12)
    args = ap.parse_args()
    out = Path(args.out)
    home, state = private_home(out)
    tb = install(out, state, args.route, args.budgets)
    from tests.e2e.fake_api import FakeAnthropic

    fake = FakeAnthropic().start()
    fake.max_requests = 1000
    return (
        args,
        out,
        home,
        state,
        tb,
        fake,
        Runner(home, fake, out, getattr(args, "extra_settings", "")),
    )


def sessions(kinds: list[tuple[str, str, str]], n: int, out: Path) -> list[tuple[Any, ...]]:
    """`n` first runs (label, prompt, cwd, args, tools), the kinds in turn, in three project
    folders they share, each with its session id given."""
    made = []
    for i in range(n):
        name, prompt, tools = kinds[i % len(kinds)]
        cwd = out / "projects" / f"proj {i % 3}"
        made.append((f"{name}{i}", prompt, cwd, ["--session-id", str(uuid.uuid4())], tools))
    return made


def finish(runs: list[dict[str, Any]], route: str, fake: Any) -> None:
    """Print the runs that did not complete; end the answerer (if ours) and the fake API."""
    from tokenbudget import resident

    for r in runs:
        if r["rc"] != 0 or r["terminal_reason"] != "completed":
            print(
                "run:",
                r["label"],
                r["rc"],
                r["terminal_reason"],
                (r["result"] or "")[:300],
                r["stderr"][-300:],
            )
    if route in ("resident", "mixed"):
        resident.remove()  # it exits within a second of its key going
    fake.stop()
