"""Shared by the benchmarks: a non-editable install, clean environments, timing, machine info.

Every timing here is wall time of a whole child process (spawn to exit) measured with
`time.perf_counter`; its peak RSS comes from `os.wait4` (the kernel's ru_maxrss for that child).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
# One folder per checkout: two checkouts benched at once must never share the venv that one of
# them reinstalls (each would measure the other's code).
WORK = Path(os.environ.get("TB_BENCH_DIR") or os.path.join(
    tempfile.gettempdir(), "tb-bench-" + hashlib.sha256(bytes(REPO)).hexdigest()[:8]))
VENV = WORK / "venv"
HOOK_SCRIPT = REPO / "hooks" / "tokenbudget-hook"
# How installed hooks ran the package before `run` (claude_settings.hook_command): `python -P
# -c ... EVENT`; every version has main(). The commands now call hook.run, which ends the process
# as soon as the answer is out: quick_call.py measures each version with its own code.
HOOK_ARGS = ["-P", "-c", "from tokenbudget.hook import main; main()"]


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def bench_python(reinstall: bool = False) -> Path:
    """The Python of a venv with tokenbudget installed non-editable and compiled to .pyc.

    A real install has bytecode; an editable install adds a meta-path finder to every import.
    `reinstall` installs the working tree again (after the package changed).
    """
    py = VENV / "bin" / "python"
    env = clean_env()
    fresh = not py.exists()
    if fresh:
        log(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, env=env)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        str(REPO)], check=True, env=env)
    elif reinstall:
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--force-reinstall", "--no-deps", str(REPO)], check=True, env=env)
    if fresh or reinstall:
        _record_install(VENV)
        # Compile everything the interpreter may import (stdlib is compiled already).
        _compile(py, env)
    return py


def bench_python_at(ref: str) -> Path:
    """Like bench_python, for the package as committed at git `ref` (e.g. HEAD: before a change)."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", ref], check=True,
                         capture_output=True, text=True).stdout.strip()
    venv = WORK / f"venv-{sha}"
    py = venv / "bin" / "python"
    if py.exists():
        return py
    src = WORK / f"src-{sha}"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", sha], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    env = clean_env()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    str(src)], check=True, env=env)
    _record_install(venv, sha)
    _compile(py, env)
    return py


def _record_install(venv: Path, ref: str | None = None) -> None:
    """Remember which code a venv holds: the commit, and whether the tree differed from it."""
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", ref or "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    dirty = "" if ref else subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "tokenbudget"],
        capture_output=True, text=True).stdout.strip()
    (venv / "installed.json").write_text(json.dumps({
        "commit": head, "uncommitted_changes_in_tokenbudget": dirty.splitlines(),
        "installed": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}))


def installed(venv: Path = VENV) -> dict[str, Any]:
    try:
        return dict(json.loads((venv / "installed.json").read_text()))
    except OSError:
        return {}


def _compile(py: Path, env: dict[str, str]) -> None:
    """Bytecode for everything in the venv's site-packages, as a real install has."""
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = subprocess.run([str(py), "-c", code], check=True, env=env, capture_output=True,
                          text=True).stdout.strip()
    subprocess.run([str(py), "-m", "compileall", "-q", site], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a measured child: bytecode allowed, UTC, no tokenbudget overrides."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "TOKENBUDGET_HOME", "CLAUDE_CONFIG_DIR",
                        "TOKENBUDGET_DISABLE", "PYTHONPATH", "VIRTUAL_ENV", "XDG_DATA_HOME",
                        "XDG_CONFIG_HOME")}
    env["TZ"] = "UTC"
    env.update(extra)
    return env


def peak_rss_kb(argv: Sequence[str], *, stdin: bytes = b"", env: dict[str, str] | None = None
                ) -> int:
    """Peak RSS of one run, through /usr/bin/time: a small parent, so the figure is the child's.

    (`os.wait4` from this process would report this process's own size too: Linux carries the
    high-water mark of the memory a child was forked from across exec.)
    """
    out = WORK / "rss.txt"
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(out), *argv], input=stdin, env=env,
                   cwd=str(WORK), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return int(out.read_text().split()[-1])


@dataclass
class Run:
    seconds: float
    maxrss_kb: int
    stdout: bytes
    returncode: int


def run(argv: Sequence[str], *, stdin: bytes = b"", env: dict[str, str] | None = None,
        cwd: str | None = None, stdout_to: str | None = None) -> Run:
    """Run one child: its wall time (maxrss_kb is only an upper bound, see peak_rss_kb)."""
    out_f = open(stdout_to, "wb") if stdout_to else None  # noqa: SIM115 - closed below
    t0 = time.perf_counter()
    # A neutral cwd: `python -m` and `-c` put the cwd first on sys.path, and in the repo that
    # would import the working tree instead of the installed package.
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out_f or subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=env, cwd=cwd or str(WORK))
    assert p.stdin is not None
    with contextlib.suppress(BrokenPipeError):  # a child that exits without reading stdin
        p.stdin.write(stdin)
        p.stdin.close()
    with contextlib.suppress(BrokenPipeError):
        p.stdin.close()
    out = p.stdout.read() if p.stdout is not None else b""
    _, status, ru = os.wait4(p.pid, 0)
    t1 = time.perf_counter()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.stdout is not None:
        p.stdout.close()
    if out_f:
        out_f.close()
    return Run(t1 - t0, ru.ru_maxrss, out, p.returncode)


def interleave(cases: dict[str, Callable[[], float]], rounds: int, *, warmup: int = 3,
               seed: int = 0) -> dict[str, list[float]]:
    """Run every case once per round, in a shuffled order, `rounds` times; seconds per case.

    Interleaving makes the shared machine's noise fall on all cases alike.
    """
    rng = random.Random(seed)
    names = list(cases)
    for _ in range(warmup):
        for n in names:
            cases[n]()
    out: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds):
        rng.shuffle(names)
        for n in names:
            out[n].append(cases[n]())
    return out


def stats(xs: Sequence[float]) -> dict[str, float]:
    s = sorted(xs)
    q = statistics.quantiles(s, n=20) if len(s) >= 2 else [s[0]] * 19
    return {"n": len(s), "median": statistics.median(s), "p05": q[0], "p95": q[18],
            "min": s[0], "max": s[-1], "mean": statistics.fmean(s)}


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu, "cpus": os.cpu_count(), "memory": mem,
        "kernel": platform.release(), "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in load],
        "measured_code": installed(),
    }


def save(name: str, data: dict[str, Any]) -> Path:
    """Write bench/results/<name>.json with the machine it ran on."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"machine": machine(), **data}
    path.write_text(json.dumps(data, indent=1) + "\n")
    log(f"wrote {path}")
    return path


def synth(out: Path, *args: str) -> dict[str, Any]:
    """Generate synthetic history with bench/synth.py (reused when already there)."""
    truth = out / "truth.json"
    if truth.exists():
        return dict(json.loads(truth.read_text()))
    if out.exists():
        shutil.rmtree(out)
    subprocess.run([sys.executable, str(BENCH / "synth.py"), str(out), *args], check=True)
    return dict(json.loads(truth.read_text()))


BUDGETS = [
    {"kind": "daily", "limit": 10_000_000_000, "unit": "tokens"},
    {"kind": "weekly", "limit": 100_000, "unit": "usd"},
    {"kind": "monthly", "limit": 90_000_000_000, "unit": "tokens"},
    {"kind": "5h", "limit": 5_000_000_000, "unit": "tokens"},
    {"kind": "session", "limit": 8_000_000_000, "unit": "tokens"},
]


def state_env(data: Path, state: Path) -> dict[str, str]:
    """Claude Code's data in `data` (used as HOME), tokenbudget's state under `state` through
    the XDG variables: the default setup (no TOKENBUDGET_HOME), platformdirs included."""
    return clean_env(HOME=str(data), CLAUDE_CONFIG_DIR=str(data / ".claude"),
                     XDG_DATA_HOME=str(state / "data"), XDG_CONFIG_HOME=str(state / "config"))


def data_dir(state: Path) -> Path:
    """Where the ledger, history and log end up for `state_env(..., state)`."""
    return state / "data" / "tokenbudget"


def write_config(state: Path, *, retention_days: int | None = 14,
                 budgets: list[dict[str, Any]] | None = None,
                 lock_timeout: float | None = None) -> None:
    """config.json with five budgets that no synthetic history reaches (the allow path).

    `retention_days=None` leaves the setting out: tokenbudget's own default applies.
    """
    state = state / "config" / "tokenbudget"
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    cfg: dict[str, Any] = {"version": 1, "budgets": BUDGETS if budgets is None else budgets}
    if retention_days is not None:
        cfg["retention_days"] = retention_days
    if lock_timeout is not None:
        cfg["lock_timeout_seconds"] = lock_timeout
    (state / "config.json").write_text(json.dumps(cfg, indent=1))


def hook_event(name: str, session: str, transcript: str, cwd: str, n: int,
               prompt_id: str | None = None) -> bytes:
    """One hook event as Claude Code sends it; `n` makes it unique (a repeat is answered early)."""
    ev: dict[str, Any] = {
        "session_id": session, "transcript_path": transcript, "cwd": cwd,
        "hook_event_name": name, "permission_mode": "default",
    }
    if prompt_id:
        ev["prompt_id"] = prompt_id
    if name in ("PreToolUse", "PostToolUse"):
        ev.update(tool_name="Bash", tool_input={"command": f"echo {n}", "description": "x"},
                  tool_use_id=f"toolu_bench_{n:08d}")
    if name == "Stop":
        ev.update(stop_hook_active=False, last_assistant_message=f"done {n}",
                  background_tasks=[])
    return json.dumps(ev).encode()


# A transaction that changes nothing: its commit writes the hot view for the files as they are.
# The index beside a large snapshot (tokenbudget/index.py) names its file's stamp too: a
# version that writes one writes it again for the files as put back, as the checkpoint that
# wrote them did.
_RESTAMP = """from tokenbudget.store import open_store
store = open_store()
with store.transaction():
    pass
if hasattr(store, "_index"):
    import json
    with open(store.file, "rb") as f:
        raw = f.read()
    store._index(json.loads(raw), raw)
"""


class Kept:
    """A state folder as it is now, put back before each timed call (untimed), so that every
    call of a case does the same work and the hot view stays trusted (it is, only while the
    ledger's files keep the stamps it names).

    The files are kept as hard links: a commit replaces most files it writes (a new inode),
    and the link puts the old one back. The hot view's files are written in place (the same
    inode, so the link holds the new bytes): their bytes are put back. The journal is appended
    to and emptied by a fold: its bytes are written back into the same file.
    """

    def __init__(self, tb: Path) -> None:
        self.tb = tb
        self.journal = tb / "ledger.journal.jsonl"
        self.journal_bytes = self.journal.read_bytes()
        st = self.journal.stat()
        self.journal_id = (st.st_dev, st.st_ino)
        self.pristine = tb.parent / f"{tb.name}.pristine"
        shutil.rmtree(self.pristine, ignore_errors=True)
        self.inodes: dict[Path, int] = {}
        for path in tb.rglob("*"):
            rel = path.relative_to(tb)
            if path.is_file() and path != self.journal and path.suffix != ".lock":
                (self.pristine / rel).parent.mkdir(parents=True, exist_ok=True)
                os.link(path, self.pristine / rel)
                self.inodes[rel] = (self.pristine / rel).stat().st_ino
        self.contents = {rel: (tb / rel).read_bytes() for rel in self.inodes}

    def reset(self, restamp: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
        """Put the state back. `restamp`: the interpreter (argv) of the code measured next,
        which then commits nothing so that the hot view names the files as they are now: a
        file's stamp holds its inode's change time, which the links move, and each version of
        the package trusts only a view it wrote (untimed, one process)."""
        self._put_back()
        if restamp:
            # A neutral cwd (as `run`): from the repo, `-c` would import the working tree, and
            # the code before would keep the view and index this tree writes.
            subprocess.run([*restamp, "-c", _RESTAMP], check=True, env=env, cwd=str(WORK))

    def _put_back(self) -> None:
        for path in [p for p in self.tb.rglob("*") if p.is_file()]:
            rel = path.relative_to(self.tb)
            if rel not in self.inodes and path != self.journal and path.suffix != ".lock":
                path.unlink()  # written by the last call: a stop kept, a temp file
        for rel, ino in self.inodes.items():
            target = self.tb / rel
            if not target.exists() or target.stat().st_ino != ino:
                tmp = target.parent / f".{target.name}.bench"
                os.link(self.pristine / rel, tmp)
                os.replace(tmp, target)
            # The kept inode may itself have been written in place before it was replaced.
            if target.read_bytes() != self.contents[rel]:
                with open(target, "r+b") as f:
                    f.truncate(0)
                    f.write(self.contents[rel])
        st = self.journal.stat()
        assert (st.st_dev, st.st_ino) == self.journal_id, "the journal was replaced"
        with open(self.journal, "r+b") as f:
            f.truncate(0)
            f.write(self.journal_bytes)
