"""Fixtures and helpers shared by the tests/test_reliability_*.py files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SHIM = REPO / "hooks" / "tokenbudget-hook"


@pytest.fixture
def fast_state(private_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """TOKENBUDGET_HOME on a RAM disk when there is one.

    Every ledger write fsyncs, about 10 ms on a CI disk, and the stress tests make thousands.
    Neither a race nor a kill -9 depends on fsync (the page cache outlives a killed process),
    so they run on tmpfs; bench/stress_reliability.py runs them on the real disk as well.
    """
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        base = Path(tempfile.mkdtemp(prefix="tokenbudget-test-", dir=shm))
    else:
        base = Path(tempfile.mkdtemp(prefix="tokenbudget-test-", dir=private_home))
    state = base / "tb state"
    monkeypatch.setenv("TOKENBUDGET_HOME", str(state))
    yield state
    shutil.rmtree(base, ignore_errors=True)


def write_config(state: Path, *budgets: dict[str, Any], **extra: Any) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / "config.json").write_text(json.dumps({"version": 1, "budgets": list(budgets),
                                                    **extra}))


def run_shim(event: str, payload: bytes | Any, *, timeout: float = 30,
             env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str, float]:
    """The hooks/ script as Claude Code runs it: (exit code, answer, stderr, seconds)."""
    full_env = dict(os.environ, TOKENBUDGET_PYTHON=sys.executable)
    full_env.update(env or {})
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    start = time.monotonic()
    proc = subprocess.run([str(SHIM), event], input=raw, capture_output=True, env=full_env,
                          timeout=timeout, check=False)
    elapsed = time.monotonic() - start
    out = proc.stdout.decode()
    return proc.returncode, json.loads(out), proc.stderr.decode(), elapsed


def start_workers(argvs: list[list[str]], go: Path, *, timeout: float = 120) -> list[Any]:
    """Start `python -m tests.reliability_workers ARGV` processes, release them together,
    and return each one's JSON report."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.reliability_workers", *argv], cwd=REPO,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for argv in argvs
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.strip() == b"ready", (line, p.stderr.read() if p.stderr else b"")
        go.touch()
        reports = []
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err.decode()[-3000:]
            reports.append(json.loads(out.splitlines()[-1]))
        return reports
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def tree(root: Path, skip: Path | None = None) -> dict[str, tuple[int, int, int]]:
    """Every path under `root` (but `skip`) with its mode, size and mtime: a before/after view."""
    out: dict[str, tuple[int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if skip is not None and (d == skip or skip in d.parents):
            dirnames.clear()
            continue
        for name in dirnames + filenames:
            p = d / name
            if skip is not None and p == skip:
                continue
            st = p.lstat()
            out[str(p)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out
