"""Workloads for the reliability tests and bench/stress_reliability.py, each run as a process.

    python -m tests.reliability_workers counter WID N SEED GO_FILE
    python -m tests.reliability_workers hooks WID ROUNDS SEED GO_FILE PEERS_JSON SHIM_CALLS
    python -m tests.reliability_workers syncs GO_FILE STOP_FILE
    python -m tests.reliability_workers crash KILLS SEED [--fold] [--rebuild] [--sessions N]
    python -m tests.reliability_workers hold LOCK_PATH

Each prints one JSON line with what it sent or saw; the caller checks it against the ledger.
HOME and TOKENBUDGET_HOME come from the environment, as for the real hook.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tokenbudget.usage import Usage

MODEL = "claude-opus-4-7"
T0 = 1795800000.0  # 2026-11-27 15:20 UTC: the synthetic history starts here
REPO = Path(__file__).resolve().parent.parent
SHIM = REPO / "hooks" / "tokenbudget-hook"


# --- synthetic transcripts ---------------------------------------------------------------------


def iso(ts: float) -> str:
    """Epoch seconds as Claude Code writes timestamps: 2026-11-28T17:14:41.001Z."""
    ms = round(ts * 1000)
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{ms % 1000:03d}Z"
    )


def assistant_line(sid: str, cwd: str, key: str, usage: Usage, ts: float) -> bytes:
    """One assistant line of one API response, as Claude Code writes them."""
    entry = {
        "parentUuid": None,
        "isSidechain": False,
        "type": "assistant",
        "message": {
            "id": f"msg_{key}",
            "model": MODEL,
            "role": "assistant",
            "content": [{"type": "text", "text": "ok"}],
            "usage": {
                "input_tokens": usage.input,
                "output_tokens": usage.output,
                "cache_creation_input_tokens": usage.cache_write_5m,
                "cache_read_input_tokens": usage.cache_read,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": usage.cache_write_5m,
                    "ephemeral_1h_input_tokens": 0,
                },
            },
        },
        "requestId": f"req_{key}",
        "uuid": f"u-{key}-{usage.output}",
        "timestamp": iso(ts),
        "sessionId": sid,
        "cwd": cwd,
    }
    return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


def prompt_line(sid: str, cwd: str, prompt_id: str, text: str, ts: float) -> bytes:
    entry = {
        "type": "user",
        "isSidechain": False,
        "promptId": prompt_id,
        "message": {"role": "user", "content": text},
        "uuid": f"p-{prompt_id}",
        "timestamp": iso(ts),
        "sessionId": sid,
        "cwd": cwd,
    }
    return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


def random_usage(rng: random.Random) -> Usage:
    return Usage(rng.randint(1, 5000), rng.randint(1, 3000), rng.randint(0, 20000), 0,
                 rng.randint(0, 90000))


def request_lines(
    sid: str, cwd: str, key: str, usage: Usage, ts: float, rng: random.Random
) -> list[bytes]:
    """One response as 1-3 lines sharing its key; early lines may carry partial output."""
    copies = rng.randint(1, 3)
    lines = []
    for i in range(copies - 1):
        # Older Claude Code versions wrote a placeholder output count on the early lines:
        # the largest line must win, never the first.
        partial = usage._replace(output=rng.randint(0, usage.output) if i == 0 else usage.output)
        lines.append(assistant_line(sid, cwd, key, partial, ts))
    lines.append(assistant_line(sid, cwd, key, usage, ts))
    return lines


@dataclass
class Session:
    sid: str
    cwd: str
    path: Path
    n: int = 0
    pending: bytes = b""  # the unwritten rest of a line written in two parts
    pending_key: tuple[str, Usage] | None = None  # the response that line completes


@dataclass
class History:
    """Synthetic sessions under a Claude Code data dir, and the truth of what they hold."""

    root: Path
    rng: random.Random
    sessions: list[Session] = field(default_factory=list)
    complete: dict[str, Usage] = field(default_factory=dict)  # key -> usage of complete lines
    owner: dict[str, str] = field(default_factory=dict)  # key -> session id

    def new_session(self, name: str) -> Session:
        project = f"-home-dev-{name}"
        sid = f"{name}-{self.rng.randrange(16**8):08x}"
        path = self.root / "projects" / project / f"{sid}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        s = Session(sid, f"/home/dev/{name}", path)
        self.sessions.append(s)
        return s

    def append(self, s: Session, requests: int, ts: float, *, split_last: bool = False) -> None:
        """Append a prompt and `requests` responses; maybe leave the last line half-written."""
        self.finish(s)
        data = prompt_line(s.sid, s.cwd, f"{s.sid}-p{s.n}", "please go on", ts)
        last = b""
        for i in range(requests):
            s.n += 1
            key = f"{s.sid}-{s.n}"
            usage = random_usage(self.rng)
            lines = request_lines(s.sid, s.cwd, key, usage, ts, self.rng)
            data += b"".join(lines)
            last = lines[-1]
            # Each line counts once complete; the largest line of a response wins.
            for line in lines[:-1]:
                self._record(key, s.sid, _usage_of(line))
            if split_last and i == requests - 1:
                s.pending_key = (key, usage)  # counted once `finish` completes its line
            else:
                self._record(key, s.sid, usage)
        if split_last and requests:
            # Only the very last line is cut; every line before it is complete.
            cut = len(data) - self.rng.randint(1, len(last) - 1)
            s.pending = data[cut:]
            data = data[:cut]
        with open(s.path, "ab") as f:
            f.write(data)

    def finish(self, s: Session) -> None:
        """Write the rest of a half-written line."""
        if s.pending:
            with open(s.path, "ab") as f:
                f.write(s.pending)
            s.pending = b""
        if s.pending_key is not None:
            key, usage = s.pending_key
            self._record(key, s.sid, usage)
            s.pending_key = None

    def _record(self, key: str, sid: str, usage: Usage) -> None:
        old = self.complete.get(key)
        if old is None or usage.total > old.total:
            self.complete[key] = usage
        self.owner[key] = sid

    def truth(self) -> Usage:
        return sum(self.complete.values(), start=Usage())

    def truth_by_session(self) -> dict[str, Usage]:
        out: dict[str, Usage] = {}
        for key, usage in self.complete.items():
            sid = self.owner[key]
            out[sid] = out.get(sid, Usage()) + usage
        return out


def _usage_of(line: bytes) -> Usage:
    u = json.loads(line)["message"]["usage"]
    return Usage(u["input_tokens"], u["output_tokens"], u["cache_creation_input_tokens"], 0,
                 u["cache_read_input_tokens"])


# --- reading the ledger back -------------------------------------------------------------------


def ledger_usage(ledger: dict[str, Any] | None = None) -> Usage:
    """Everything counted: live sessions from the ledger, folded ones from history.jsonl."""
    from tokenbudget import history, query, sync

    if ledger is None:
        ledger = sync.open_store().snapshot()
    total = Usage()
    for cell, _ in query.cells(ledger, history.read_records(ledger)):
        total = total + cell.usage
    return total


def session_usage(ledger: dict[str, Any] | None = None) -> dict[str, Usage]:
    from tokenbudget import history, query, sync

    if ledger is None:
        ledger = sync.open_store().snapshot()
    out: dict[str, Usage] = {}
    for cell, _ in query.cells(ledger, history.read_records(ledger)):
        out[cell.sid] = out.get(cell.sid, Usage()) + cell.usage
    return out


def _wait_for(go: Path, limit: float = 60.0) -> None:
    """Start together: every worker waits for the same file, so their work overlaps."""
    print("ready", flush=True)
    end = time.monotonic() + limit
    while not go.exists():
        if time.monotonic() > end:
            raise SystemExit("never told to start")
        time.sleep(0.002)


# --- 1. concurrent writers through JsonFileStore.transaction ----------------------------------


def counter_worker(wid: int, n: int, seed: int, go: Path) -> dict[str, Any]:
    """`n` transactions adding random amounts to a shared counter and to this worker's list."""
    from tokenbudget.paths import ledger_path
    from tokenbudget.store import JsonFileStore

    rng = random.Random(seed)
    store = JsonFileStore(ledger_path(), lock_timeout=120)
    _wait_for(go)
    sent: list[int] = []
    for _ in range(n):
        amount = rng.randint(1, 10**6)
        # Random write sizes: a torn or interleaved write would show as bad JSON or a lost list.
        pad = "x" * rng.choice((0, 10, 1000, 50_000))
        with store.transaction() as ledger:
            ledger["stress_counter"] = ledger.get("stress_counter", 0) + amount
            ledger.setdefault("stress_lists", {}).setdefault(str(wid), []).append(amount)
            ledger.setdefault("stress_pad", {})[str(wid)] = pad
        sent.append(amount)
    return {"wid": wid, "sent": sent}


# --- 1b. hooks and sync_session on sessions being appended to ----------------------------------


def hook_worker(
    wid: int, rounds: int, seed: int, go: Path, peers: list[str], shim_calls: int
) -> dict[str, Any]:
    """Append to our own session and run the real hook on it; read other sessions too."""
    from tokenbudget import hook, sync
    from tokenbudget.paths import claude_config_dirs, ledger_path
    from tokenbudget.store import JsonFileStore

    rng = random.Random(seed)
    hist = History(claude_config_dirs()[0], rng)
    s = hist.new_session(f"w{wid}")
    _wait_for(go)
    events = ["UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop", "SubagentStop"]
    answers: list[dict[str, Any]] = []
    bad: list[str] = []
    lock_notes = 0
    shim_left = shim_calls
    store = JsonFileStore(ledger_path(), lock_timeout=30)
    for r in range(rounds):
        hist.append(s, rng.randint(1, 4), T0 + r * 60, split_last=rng.random() < 0.3)
        event = rng.choice(events)
        payload = json.dumps({
            "session_id": s.sid,
            "transcript_path": str(s.path),
            "cwd": s.cwd,
            "hook_event_name": event,
            "prompt_id": f"{s.sid}-p{r}",
            "prompt": "please go on",
            "tool_name": "Bash",
        }).encode()
        if shim_left and rng.random() < 0.5:
            shim_left -= 1
            env = dict(os.environ, TOKENBUDGET_PYTHON=sys.executable)
            proc = subprocess.run([str(SHIM), event], input=payload, capture_output=True,
                                  env=env, timeout=60, check=False)
            if proc.returncode != 0:
                bad.append(f"shim exit {proc.returncode}")
            try:
                answer = json.loads(proc.stdout)
            except ValueError:
                bad.append(f"shim printed {proc.stdout[:80]!r}")
                answer = {}
        else:
            try:
                answer = hook.handle(event, payload)
            except Exception as e:  # a crash of the hook is what we look for
                bad.append(f"{type(e).__name__}: {e}")
                answer = {}
        if "lock" in str(answer.get("systemMessage", "")):
            lock_notes += 1
        answers.append(answer)
        if answer.get("decision") == "block" or answer.get("continue") is False:
            bad.append(f"blocked: {answer}")
        if peers and rng.random() < 0.5:
            # Read a session another worker is writing to right now: its last line may be half
            # there; it must wait for the next read, never count twice. ("*": any session.)
            found = [str(p) for p in hist.root.glob("projects/*/*.jsonl") if p != s.path]
            choices = found if peers == ["*"] else peers
            if choices:
                peer = Path(rng.choice(choices))
                sync.sync_session(store, peer, peer.stem)
        if rng.random() < 0.3:
            hist.finish(s)
    hist.finish(s)
    return {
        "wid": wid,
        "sid": s.sid,
        "path": str(s.path),
        "truth": list(hist.truth()),
        "calls": len(answers),
        "shim_calls": shim_calls - shim_left,
        "lock_notes": lock_notes,
        "bad": bad,
    }


def sync_worker(go: Path, stop: Path, limit: float = 120.0) -> dict[str, Any]:
    """`sync_all` again and again (each one folds the sessions idle past retention) until
    `stop` exists."""
    from tokenbudget import sync

    store = sync.open_store(lock_timeout=30)
    _wait_for(go)
    end = time.monotonic() + limit
    n = 0
    while not stop.exists() and time.monotonic() < end:
        sync.sync_all(store)
        n += 1
    return {"syncs": n}


# --- 2. kill -9 during sync_all and transactions -----------------------------------------------


def crash_driver(
    kills: int, seed: int, *, fold: bool, rebuild: bool, sessions: int, max_delay: float,
    grow: int = 2,
) -> dict[str, Any]:
    """Fork a writer, SIGKILL it at a random moment, check the ledger; `kills` times.

    The writer runs sync_all in small batches over a growing synthetic history (and, if asked,
    folds idle sessions and rebuilds), then keeps adding to a counter in a second store until
    it dies. After every kill the ledger must parse (or be absent), must never hold more than
    the transcripts do, and must not go backwards unless it says it is being rebuilt; the
    counter must hold exactly the committed additions, give or take the one in flight.
    """
    from tokenbudget import history, sync
    from tokenbudget.ledger import CorruptLedger
    from tokenbudget.paths import claude_config_dirs, data_dir, ledger_path
    from tokenbudget.store import JsonFileStore

    rng = random.Random(seed)
    hist = History(claude_config_dirs()[0], rng)
    for i in range(sessions):
        s = hist.new_session(f"s{i}")
        hist.append(s, rng.randint(3, 12), T0 + i * 600)
    store = JsonFileStore(ledger_path(), lock_timeout=30)
    counter_store = JsonFileStore(data_dir() / "counter.json", lock_timeout=30)
    clock = T0 + sessions * 600
    counter_expected = 0
    landed = writer_errors = in_sync = in_rebuild = 0
    problems: list[str] = []
    prev_total = Usage()
    durations: list[float] = []
    sync.BATCH_FILES = 2  # many small commits: more moments at which to be killed
    while landed < kills:
        # The history grows between kills: new turns, a half-written line, a new session.
        clock += 1800
        for s in rng.sample(hist.sessions, k=min(grow, len(hist.sessions))):
            hist.append(s, rng.randint(1, 3), clock, split_last=rng.random() < 0.3)
        if rng.random() < 0.05:
            hist.append(hist.new_session(f"n{len(hist.sessions)}"), rng.randint(1, 5), clock)
        r, w = os.pipe()
        child_seed = rng.randrange(2**32)
        action = "rebuild" if rebuild and rng.random() < 0.1 else "sync"
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the writer
            os.close(r)
            code = 0
            try:
                _crash_child(store, counter_store, w, child_seed, action, clock, fold)
            except BaseException:  # a child must never return into the driver
                code = 1
            os._exit(code)
        os.close(w)
        early = b""
        if rng.random() < 0.25:
            # Let the sync finish (timing it), then kill among the counter's commits.
            early = _read_until(r, b"S", 30.0)
            time.sleep(rng.uniform(0, 0.005))
        else:
            # Inside sync_all or rebuild: up to a whole sync as timed in the rounds above.
            limit = max_delay or (sorted(durations)[len(durations) // 2] if durations else 0.05)
            time.sleep(rng.uniform(0, limit))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        report = early + _drain(r)
        os.close(r)
        if b"S" in report:
            durations.append(_first_sync_seconds(report, started))
        if b"X" in report:
            problems.append(f"writer raised: {report[report.index(b'X'):][:300]!r}")
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            landed += 1
            if b"S" not in report:  # killed before the sync (or rebuild) was done
                in_sync += 1
                in_rebuild += action == "rebuild"
        else:
            writer_errors += 1
        counter_expected, note = _check_counter(counter_store, report, counter_expected)
        if note:
            problems.append(note)
        try:
            ledger = store.load() if store.path.exists() else None
        except CorruptLedger as e:
            problems.append(f"after kill {landed}: the ledger does not parse: {e}")
            continue
        total = ledger_usage(ledger if ledger is not None else None)
        truth = hist.truth()
        if any(a > b for a, b in zip(total, truth, strict=True)):
            problems.append(f"after kill {landed}: counted {total.total} > written {truth.total}")
        rebuilding = ledger is not None and ledger["rebuild"]
        if total.total < prev_total.total and not rebuilding:
            problems.append(
                f"after kill {landed}: totals went back from {prev_total.total} to "
                f"{total.total} without a rebuild notice"
            )
        prev_total = total
    for s in hist.sessions:
        hist.finish(s)
    sync.sync_all(store, now=clock + (3 * 86400 if fold else 0),
                  retention_days=1.0 if fold else 3650.0)
    with counter_store.transaction():
        pass  # the next writer of each store sweeps what killed writers left
    leftovers = sorted(p.name for p in store.path.parent.iterdir() if p.name.endswith(".tmp"))
    final = ledger_usage()
    per_session = session_usage()
    truth_sessions = hist.truth_by_session()
    wrong = {sid: [list(per_session.get(sid, Usage())), list(u)]
             for sid, u in truth_sessions.items() if per_session.get(sid, Usage()) != u}
    counter = counter_store.load().get("stress_counter", 0)
    return {
        "kills": landed,
        "writer_errors": writer_errors,
        "killed_in_sync": in_sync,
        "killed_in_rebuild": in_rebuild,
        "problems": problems,
        "final": list(final),
        "truth": list(hist.truth()),
        "wrong_sessions": wrong,
        "sessions": len(hist.sessions),
        "requests": len(hist.complete),
        "counter": counter,
        "counter_expected": counter_expected,
        "tmp_leftovers": len(leftovers),
        "history_lines": _count_lines(history.history_path()),
        "sync_ms_median": round(sorted(durations)[len(durations) // 2] * 1000, 1)
        if durations else None,
    }


def _crash_child(
    store: Any, counter_store: Any, w: int, seed: int, action: str, clock: float, fold: bool
) -> None:
    from tokenbudget import sync

    rng = random.Random(seed)
    try:
        if action == "rebuild":
            sync.rebuild(store, now=clock, retention_days=0.5 if fold else 3650.0)
        else:
            sync.sync_all(store, now=clock, retention_days=0.5 if fold else 3650.0)
        os.write(w, b"S%f\n" % time.monotonic())
    except Exception as e:  # reported to the driver as a problem
        os.write(w, b"X" + repr(e).encode()[:300] + b"\n")
        raise
    while True:
        amount = rng.randint(1, 1000)
        # "I" before the transaction and "D" after the commit: a kill between them leaves the
        # driver unsure about this one addition only.
        os.write(w, b"I%d\n" % amount)
        with counter_store.transaction() as data:
            data["stress_counter"] = data.get("stress_counter", 0) + amount
        os.write(w, b"D\n")


def _read_until(r: int, marker: bytes, limit: float) -> bytes:
    """Read the writer's pipe until a line starting with `marker` arrives (or `limit` s)."""
    data = b""
    end = time.monotonic() + limit
    while not any(line.startswith(marker) for line in data.split(b"\n")):
        left = end - time.monotonic()
        ready, _, _ = select.select([r], [], [], max(0.0, left))
        if not ready:
            break
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    return data


def _drain(r: int) -> bytes:
    chunks = []
    while True:
        ready, _, _ = select.select([r], [], [], 0)
        if not ready:
            break
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _first_sync_seconds(report: bytes, started: float) -> float:
    for line in report.splitlines():
        if line.startswith(b"S"):
            return float(line[1:]) - started
    return 0.0


def _check_counter(store: Any, report: bytes, expected: int) -> tuple[int, str | None]:
    committed = 0
    pending = 0
    for line in report.splitlines():
        if line.startswith(b"I"):
            pending = int(line[1:])
        elif line == b"D":
            committed += pending
            pending = 0
    from tokenbudget.ledger import CorruptLedger

    try:
        value = store.load().get("stress_counter", 0)
    except CorruptLedger as e:
        return expected + committed, f"the counter store does not parse: {e}"
    low = expected + committed
    if value == low or (pending and value == low + pending):
        return value, None
    return value, f"counter {value}, expected {low} (+{pending} in flight)"


def _count_lines(path: Path) -> int:
    try:
        return len(path.read_bytes().splitlines())
    except OSError:
        return 0


# --- 8. a lock holder that never lets go ---------------------------------------------------------


def hold_lock(path: Path) -> None:
    """Take the ledger's lock the way tokenbudget does and keep it until killed."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    lock.acquire()
    print("held", flush=True)
    while True:
        time.sleep(3600)


# --- command line ------------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    what = argv[0]
    if what == "counter":
        out = counter_worker(int(argv[1]), int(argv[2]), int(argv[3]), Path(argv[4]))
    elif what == "hooks":
        out = hook_worker(int(argv[1]), int(argv[2]), int(argv[3]), Path(argv[4]),
                          json.loads(argv[5]), int(argv[6]))
    elif what == "syncs":
        out = sync_worker(Path(argv[1]), Path(argv[2]))
    elif what == "hold":
        hold_lock(Path(argv[1]))
        return
    elif what == "crash":
        import argparse

        p = argparse.ArgumentParser()
        p.add_argument("kills", type=int)
        p.add_argument("seed", type=int)
        p.add_argument("--fold", action="store_true")
        p.add_argument("--rebuild", action="store_true")
        p.add_argument("--sessions", type=int, default=8)
        p.add_argument("--max-delay", type=float, default=0.0)
        p.add_argument("--grow", type=int, default=2, help="sessions appended to per round")
        a = p.parse_args(argv[1:])
        out = crash_driver(a.kills, a.seed, fold=a.fold, rebuild=a.rebuild,
                           sessions=a.sessions, max_delay=a.max_delay, grow=a.grow)
    else:
        raise SystemExit(f"unknown workload {what!r}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
