#!/usr/bin/env python3
"""What a whole turn pays for tokenbudget's hooks: the real Claude Code, `claude -p "please LOOP
10"` (11 API requests, 10 Bash calls) against the instant fake API of the end-to-end tests, with
each set of hooks and without any, interleaved; (time with - time without) / requests served.

    python bench/turn.py [--rounds 15] [--variants none,main,...] [--loop 10]

Needs the pinned Claude Code (`bash scripts/install-claude-code.sh` prints its path; or set
TOKENBUDGET_CLAUDE_BIN). tokenbudget is installed non-editable and compiled into a venv under
$TB_BENCH_DIR (default: a folder of this checkout's own in the temp folder), as a real install
is. Every run starts from the same tokenbudget state: the config with five budgets none of which
is near (bench/common.py), an empty ledger (pass --ledger FILE to start every run from a copy of
that ledger instead).

Variants (each a settings file passed with --settings):
- none: no hooks at all (the baseline).
- true: every event of `main` registered as `true`: what Claude Code itself pays per hook.
- http-noop: every event of `main` as an http hook to a local answerer that says `{}`.
- installed-noop, resident-noop: the hooks of `installed` and `resident`, each doing nothing
  (`true`, or the `{}` answerer): Claude Code's own cost of those hooks.
- main: the hooks as 0.1.x registered them (SessionStart, UserPromptSubmit, PreToolUse,
  PostToolBatch, Stop, SubagentStop, SessionEnd, all waited for), `python -P -c ...`.
- nopre: main without PreToolUse (lever 1).
- pre-true: main with PreToolUse as `true`: the best a shell pre-filter could do (lever 1).
- async: main with SubagentStop and SessionEnd async (lever 2).
- fast: main started with `python -I -S` and the package's folder on sys.path (lever 3).
- installed: what this tree's `tokenbudget install` writes (levers 1-3 together).
- resident-nopre: a prototype of lever 4, hook.handle in one warm process behind http hooks
  (no PreToolUse); not something tokenbudget ships.
- resident: what `tokenbudget install --resident` writes (PostToolBatch and Stop as http hooks
  to the resident answerer, started on demand by the SessionStart hook, which Claude Code does
  not wait for, and checked by each UserPromptSubmit); the answerer stays up from run to run,
  as it does between turns.
- resident-stopcmd: resident with Stop a command hook again (the choice it made).
- resident-base: resident as written by the package at git `--base REF` (installed into a
  venv of its own): a change against what came before, in the same run.
- resident-base-noop: the hooks of resident-base, each doing nothing: the floor of that layout.
- resident-noop-batch, resident-noop-turn, resident-noop-prompt: resident-noop's PostToolBatch
  alone (once a request but the last), everything but it (once a turn or session),
  UserPromptSubmit alone; resident-noop-stop: the Stop http hook alone (one http hook a
  process): which events the floor is spent on.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

sys.path.insert(0, str(common.REPO))
from tests.e2e.fake_api import FakeAnthropic

HOOK_CODE = "from tokenbudget.hook import main; main()"
# The events and timeouts of 0.1.x (claude_settings.OUR_EVENTS before this work), spelled out
# so that the baseline does not move when the package changes.
MAIN_EVENTS: dict[str, tuple[int, str | None]] = {
    "SessionStart": (10, ""),
    "UserPromptSubmit": (10, None),
    "PreToolUse": (10, "*"),
    "PostToolBatch": (10, None),
    "Stop": (10, None),
    "SubagentStop": (10, ""),
    "SessionEnd": (2, ""),
}

Settings = dict[str, Any]


def _settings(entries: dict[str, tuple[int, str | None, str, bool]]) -> Settings:
    """{"Event": (timeout, matcher, command, async)} as a settings file's `hooks`."""
    hooks: dict[str, Any] = {}
    for event, (timeout, matcher, command, is_async) in entries.items():
        hook: dict[str, Any] = {"type": "command", "command": command, "timeout": timeout}
        if is_async:
            hook["async"] = True
        group: dict[str, Any] = {} if matcher is None else {"matcher": matcher}
        group["hooks"] = [hook]
        hooks[event] = [group]
    return {"hooks": hooks}


def _site(py: Path) -> str:
    code = "import os, tokenbudget; print(os.path.dirname(os.path.dirname(tokenbudget.__file__)))"
    return subprocess.run([str(py), "-P", "-c", code], check=True, capture_output=True, text=True,
                          env=common.clean_env(), cwd=str(common.WORK)).stdout.strip()


def main_hooks(py: Path, *, without: tuple[str, ...] = (), is_async: tuple[str, ...] = (),
               fast: bool = False, pre: str | None = None) -> Settings:
    """0.1.x's hooks, less the events `without`, `is_async` ones async, `fast`: started with
    `-I -S` and the package's folder on sys.path; `pre`: PreToolUse's command instead."""
    q = shlex.quote
    if fast:
        code = f"import sys; sys.path.append({_site(py)!r}); {HOOK_CODE}"
        start = f"{q(str(py))} -I -S -c {q(code)}"
    else:
        start = f"{q(str(py))} -P -c {q(HOOK_CODE)}"
    return _settings({
        e: (t, m, pre if e == "PreToolUse" and pre else f"{start} {e}", e in is_async)
        for e, (t, m) in MAIN_EVENTS.items() if e not in without
    })


def true_hooks(py: Path) -> Settings:
    return _settings({e: (t, m, "true", False) for e, (t, m) in MAIN_EVENTS.items()})


class NoopAnswerer:
    """A local HTTP answerer that says `{}` to every hook: what an http hook costs Claude Code."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            # As the resident answerer serves (tokenbudget/answerer.py): connections kept
            # alive, the body not held back by Nagle's algorithm. Before, a new connection a
            # hook and the reply's two writes added up to milliseconds a call to the floor.
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        import threading

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


_NOOP: list[NoopAnswerer] = []


def http_noop_hooks(py: Path) -> Settings:
    if not _NOOP:
        _NOOP.append(NoopAnswerer())
    hooks: dict[str, Any] = {}
    for e, (t, m) in MAIN_EVENTS.items():
        group: dict[str, Any] = {} if m is None else {"matcher": m}
        group["hooks"] = [{"type": "http", "url": _NOOP[0].url, "timeout": t}]
        hooks[e] = [group]
    return {"hooks": hooks}


# A resident answerer as a prototype: the same hook.handle, in one warm process, behind http.
_RESIDENT_CODE = """
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from tokenbudget import hook

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        event = self.path.rsplit("/", 1)[-1]
        try:
            answer = hook.handle(event, raw)
        except Exception as e:
            answer = {"systemMessage": f"tokenbudget: {e}"}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

server = HTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""

_RESIDENTS: list[subprocess.Popen[str]] = []


def resident_hooks(py: Path, state: Path) -> Settings:
    # The variant's HOME: a hook reads only transcripts inside Claude Code's folders there.
    env = common.clean_env(HOME=str(state.parent / "home"), XDG_DATA_HOME=str(state / "data"),
                           XDG_CONFIG_HOME=str(state / "config"))
    proc = subprocess.Popen([str(py), "-P", "-c", _RESIDENT_CODE], stdout=subprocess.PIPE,
                            text=True, env=env, cwd=str(common.WORK))
    _RESIDENTS.append(proc)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    hooks: dict[str, Any] = {}
    for e, (t, m) in MAIN_EVENTS.items():
        if e == "PreToolUse":
            continue
        group: dict[str, Any] = {} if m is None else {"matcher": m}
        group["hooks"] = [{"type": "http", "url": f"http://127.0.0.1:{port}/hook/{e}",
                           "timeout": t}]
        hooks[e] = [group]
    return {"hooks": hooks}


def installed_hooks(py: Path) -> Settings:
    """What this tree's `tokenbudget install` writes (claude_settings.desired_hooks, with the
    quick start when the interpreter allows it)."""
    code = (
        "import json, sys; from tokenbudget import claude_settings as c; "
        "print(json.dumps(c.desired_hooks(sys.argv[1], c.site_paths(sys.argv[1]))))"
    )
    out = subprocess.run([str(py), "-P", "-c", code, str(py)], check=True, capture_output=True,
                         text=True, env=common.clean_env(), cwd=str(common.WORK)).stdout
    return {"hooks": json.loads(out)}


def resident_installed_hooks(py: Path, state: Path, stop_command: bool = False) -> Settings:
    """What `tokenbudget install --resident` writes, its key kept in the variant's state."""
    code = (
        "import json, sys; from tokenbudget import claude_settings as c, resident as r; "
        "s = r.create(); r.save(s); p = c.site_paths(sys.argv[1]); "
        "print(json.dumps([c.desired_hooks(sys.argv[1], p, s), c.desired_hooks(sys.argv[1], p)]))"
    )
    env = common.clean_env(XDG_DATA_HOME=str(state / "data"),
                           XDG_CONFIG_HOME=str(state / "config"))
    out = subprocess.run([str(py), "-P", "-c", code, str(py)], check=True, capture_output=True,
                         text=True, env=env, cwd=str(common.WORK)).stdout
    hooks, commands = json.loads(out)
    if stop_command:
        hooks["Stop"] = commands["Stop"]
    return {"hooks": hooks}


def as_noop(settings: Settings) -> Settings:
    """The same events, matchers and async flags, each hook doing nothing: a command hook
    `true`, an http hook the `{}` answerer. What Claude Code's side of a set of hooks costs,
    the floor under anything the hooks could do."""
    if not _NOOP:
        _NOOP.append(NoopAnswerer())
    hooks: dict[str, Any] = json.loads(json.dumps(settings["hooks"]))
    for groups in hooks.values():
        for group in groups:
            for hook in group["hooks"]:
                if hook["type"] == "http":
                    hook["url"] = _NOOP[0].url
                    hook.pop("headers", None)
                else:
                    hook["command"] = "true"
    return {"hooks": hooks}


def only(settings: Settings, keep: tuple[str, ...] | None,
         drop: tuple[str, ...] = ()) -> Settings:
    """`settings` with only the events in `keep` (all if None), less those in `drop`: which
    part of a floor Claude Code spends on which events."""
    return {"hooks": {event: groups for event, groups in settings["hooks"].items()
                      if (keep is None or event in keep) and event not in drop}}


VARIANTS: dict[str, Callable[..., Settings | None]] = {
    "none": lambda py: None,
    "true": true_hooks,
    "http-noop": http_noop_hooks,
    "main": main_hooks,
    "nopre": lambda py: main_hooks(py, without=("PreToolUse",)),
    "pre-true": lambda py: main_hooks(py, pre="true"),
    "async": lambda py: main_hooks(py, is_async=("SessionEnd", "SubagentStop")),
    "fast": lambda py: main_hooks(py, fast=True),
    "installed": installed_hooks,
    "resident-nopre": resident_hooks,  # called with the variant's state folder too
    "resident": resident_installed_hooks,  # these three too
    "resident-stopcmd": lambda py, state: resident_installed_hooks(py, state, stop_command=True),
    "resident-base": lambda py, state: resident_installed_hooks(_BASE[0], state),
    "installed-noop": lambda py: as_noop(installed_hooks(py)),
    "resident-noop": lambda py, state: as_noop(resident_installed_hooks(py, state)),
    "resident-base-noop": lambda py, state: as_noop(resident_installed_hooks(_BASE[0], state)),
    "resident-noop-batch": lambda py, state: only(
        as_noop(resident_installed_hooks(py, state)), ("PostToolBatch",)),
    "resident-noop-turn": lambda py, state: only(
        as_noop(resident_installed_hooks(py, state)), None, ("PostToolBatch",)),
    "resident-noop-prompt": lambda py, state: only(
        as_noop(resident_installed_hooks(py, state)), ("UserPromptSubmit",)),
    "resident-noop-stop": lambda py, state: only(
        as_noop(resident_installed_hooks(py, state)), ("Stop",)),
}
_WITH_STATE = ("resident-nopre", "resident", "resident-stopcmd", "resident-base",
               "resident-noop", "resident-base-noop", "resident-noop-batch",
               "resident-noop-turn", "resident-noop-prompt", "resident-noop-stop")
_BASE: list[Path] = []  # the interpreter of --base


# Variants whose hooks record nothing.
_RECORDS_NOTHING = ("none", "true", "http-noop", "installed-noop", "resident-noop",
                    "resident-base-noop", "resident-noop-batch", "resident-noop-turn",
                    "resident-noop-prompt", "resident-noop-stop")


class Runner:
    """Runs one `claude -p` turn for a variant and times it, from a fresh tokenbudget state."""

    def __init__(self, claude: Path, py: Path, loop: int, ledger: Path | None) -> None:
        self.claude = claude
        self.py = py
        self.prompt = f"please LOOP {loop}"
        self.ledger = ledger
        self.root = Path(tempfile.mkdtemp(prefix="turn-", dir=common.WORK))
        self.fake = FakeAnthropic(max_requests=10**9).start()
        self.settings: dict[str, Path | None] = {}
        self.served: dict[str, list[int]] = {}
        self.home: dict[str, Path] = {}
        # CPU seconds a run took: Claude Code and the hooks it waited for (this process's
        # children), plus the resident answerer's (detached: read from /proc). What the hooks
        # cost whatever the machine's load, which the wall time is not.
        self.cpu: dict[str, list[float]] = {}

    def add(self, name: str, settings: Settings | None) -> None:
        home = self.root / name / "home"
        (home / ".claude").mkdir(parents=True)
        (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
        (self.root / name / "cwd").mkdir()
        self.home[name] = home
        self.served[name] = []
        self.cpu[name] = []
        if settings is None:
            self.settings[name] = None
            return
        path = self.root / name / "settings.json"
        path.write_text(json.dumps(settings, indent=1))
        self.settings[name] = path

    def state(self, name: str) -> Path:
        return self.root / name / "state"

    def _fresh_state(self, name: str) -> Path:
        state = self.state(name)
        # The resident answerer's folder is kept (moved, so its key file stays the same file):
        # a new key would end the answerer, and every run would pay for starting one.
        keep = common.data_dir(state) / "resident"
        kept = self.root / name / "resident-kept"
        if keep.exists():
            keep.rename(kept)
        for _ in range(50):
            # The previous run's SessionEnd, which nobody waits for, may still be writing there.
            shutil.rmtree(state, ignore_errors=True)
            if not state.exists():
                break
            time.sleep(0.1)
        common.write_config(state, retention_days=None)
        if kept.exists():
            keep.parent.mkdir(parents=True, mode=0o700)
            kept.rename(keep)
        if self.ledger is not None:
            data = common.data_dir(state)
            data.mkdir(parents=True, mode=0o700, exist_ok=True)
            shutil.copyfile(self.ledger, data / "ledger.json")
        return state

    def run(self, name: str) -> float:
        state = self._fresh_state(name)
        home = self.home[name]
        env = common.clean_env(
            HOME=str(home), XDG_DATA_HOME=str(state / "data"),
            XDG_CONFIG_HOME=str(state / "config"), ANTHROPIC_BASE_URL=self.fake.base_url,
            ANTHROPIC_API_KEY="bench", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            DISABLE_AUTOUPDATER="1", DISABLE_TELEMETRY="1", DISABLE_ERROR_REPORTING="1",
            IS_SANDBOX="1",
        )
        for k in list(env):
            if k.startswith(("ANTHROPIC_AUTH", "CLAUDE_CODE_SESSION", "CLAUDECODE")):
                del env[k]
        cmd = [str(self.claude), "-p", self.prompt, "--output-format", "json",
               "--allowedTools", "Bash"]
        settings = self.settings[name]
        if settings is not None:
            cmd += ["--settings", str(settings)]
        before = len(self.fake.requests)
        cpu0 = _children_cpu() + _answerer_cpu(state)
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=self.root / name / "cwd", env=env, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=300, check=False)
        seconds = time.perf_counter() - t0
        self.cpu[name].append(_children_cpu() + _answerer_cpu(state) - cpu0)
        out = json.loads(done.stdout.strip().splitlines()[-1])
        if done.returncode != 0 or out.get("terminal_reason") != "completed":
            raise SystemExit(f"{name}: claude failed ({done.returncode}): {done.stdout[-500:]}"
                             f"{done.stderr[-2000:]}")
        served = self.fake.requests[before:]
        self.served[name].append(len(served))
        if name not in _RECORDS_NOTHING:
            self._check_ledger(name, state, out["session_id"],
                               sum(r.total_tokens() for r in served))
        return seconds

    def _check_ledger(self, name: str, state: Path, session: str, truth: int) -> None:
        """Untimed: the hooks recorded exactly what was served to this run's session. (The
        previous run's SessionEnd, which nobody waits for, may still record its own session
        in this fresh state: a real ledger has it already.)"""
        from tokenbudget.errors import TokenbudgetError
        from tokenbudget.store import open_store

        ledger = common.data_dir(state) / "ledger.json"
        deadline = time.monotonic() + 30
        got = None
        while time.monotonic() < deadline:
            try:
                # The snapshot and its journal: a hook's commit is a journal line.
                s = open_store(path=ledger).snapshot()["sessions"][session]
                got = sum(sum(m[:5]) for m in s["m"].values())
            except (OSError, TokenbudgetError, KeyError):
                got = None
            if got == truth:
                return
            time.sleep(0.05)
        raise SystemExit(f"{name}: the ledger holds {got} tokens, the fake served {truth}")

    def close(self) -> None:
        self.fake.stop()
        for name in self.settings:
            # A resident answerer ends within a second of its key file going.
            (common.data_dir(self.state(name)) / "resident" / "key.json").unlink(missing_ok=True)
        time.sleep(1.5)
        for proc in _RESIDENTS:
            proc.terminate()
            proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _answerer_cpu(state: Path) -> float:
    """CPU seconds the variant's resident answerer has used so far (0 when none runs)."""
    try:
        pid = json.loads((common.data_dir(state) / "resident" / "state.json").read_text())["pid"]
        with open(f"/proc/{int(pid)}/stat", encoding="utf-8") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def claude_binary() -> Path:
    env = os.environ.get("TOKENBUDGET_CLAUDE_BIN")
    if env:
        return Path(env)
    out = subprocess.run(["bash", str(common.REPO / "scripts" / "install-claude-code.sh")],
                         check=True, capture_output=True, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--loop", type=int, default=10)
    ap.add_argument("--variants", default="none,main,installed")
    ap.add_argument("--ledger", type=Path, help="start every run from a copy of this ledger")
    ap.add_argument("--reinstall", action="store_true", help="install the working tree again")
    ap.add_argument("--save", default="turn", help="results/NAME.json")
    ap.add_argument("--base", default="main", help="the git ref of resident-base")
    args = ap.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or "none" not in names:
        raise SystemExit(f"variants: {unknown or 'none is the baseline'}; known: {list(VARIANTS)}")
    common.WORK.mkdir(parents=True, exist_ok=True)
    py = common.bench_python(reinstall=args.reinstall)
    if "resident-base" in names or "resident-base-noop" in names:
        _BASE.append(common.bench_python_at(args.base))
    runner = Runner(claude_binary(), py, args.loop, args.ledger)
    try:
        for n in names:
            make = VARIANTS[n]
            runner.add(n, make(py, runner.state(n)) if n in _WITH_STATE else make(py))
        times = common.interleave({n: (lambda n=n: runner.run(n)) for n in names}, args.rounds,
                                  warmup=args.warmup)
    finally:
        runner.close()
    cpu = {n: c[len(c) - len(times[n]):] for n, c in runner.cpu.items()}  # no warm-ups
    report(names, times, runner.served, cpu, args)


def report(names: list[str], times: dict[str, list[float]], served: dict[str, list[int]],
           cpu: dict[str, list[float]], args: argparse.Namespace) -> None:
    base = times["none"]
    requests = statistics.median(served["none"])
    rows = []
    print("| variant | turn (median) | minus none | per request | pairs with > none |"
          " CPU per request, minus none |")
    print("|---|---|---|---|---|---|")
    for n in names:
        # Pair round by round: the machine's drift falls on both.
        diffs = [a - b for a, b in zip(times[n], base, strict=True)]
        extra = statistics.median(diffs)
        cpu_extra = statistics.median(cpu[n]) - statistics.median(cpu["none"])
        rows.append({"variant": n, "turn": common.stats(times[n]), "diff": common.stats(diffs),
                     "per_request_ms": extra * 1000 / requests,
                     "cpu": common.stats(cpu[n]),
                     "cpu_per_request_ms": cpu_extra * 1000 / requests,
                     "requests": served[n]})
        print(f"| {n} | {statistics.median(times[n]):.3f} s | {extra * 1000:+.0f} ms | "
              f"{extra * 1000 / requests:+.1f} ms | {sum(d > 0 for d in diffs)}/{len(diffs)} |"
              f" {cpu_extra * 1000 / requests:+.1f} ms |")
    print(f"\n{len(base)} rounds; {requests:g} requests a turn; load average"
          f" {os.getloadavg()[0]:.1f} at the end")
    common.save(args.save, {"args": vars(args) | {"ledger": str(args.ledger)}, "rows": rows,
                            "times": times, "cpu": cpu})


if __name__ == "__main__":
    main()
