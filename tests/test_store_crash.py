"""A writer killed at any step of a commit or a checkpoint: nothing lost, nothing counted twice.

Each run forks a child that commits one change and is stopped at a named step of the JSON
store (tokenbudget.store.CRASH_ENV): by `os._exit` there, or by SIGKILL from this process while
it waits there. The change is then either wholly in the ledger (the step is past the point
where it became visible) or not at all, every earlier change is there once, and the next
writer carries on from whatever was left (a torn line, a temp file, a journal not emptied).
9 steps x 2 ways x 11 runs: 198 kills, a few seconds in all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_store_contract import REPO, _bump
from tokenbudget import index
from tokenbudget.schema import SCHEMA
from tokenbudget.store import CRASH_ENV, JsonFileStore

APPEND = ["append.opened", "append.cut", "append.half", "append.written", "append.synced"]
CHECKPOINT = ["checkpoint.temp", "checkpoint.synced", "checkpoint.renamed", "checkpoint.emptied",
              "checkpoint.indexed"]
# Past these, a process killed (not the machine losing power) has made its change visible:
# the whole line is in the journal, or the new snapshot is in place.
VISIBLE = {"append.written", "append.synced", "checkpoint.renamed", "checkpoint.emptied",
           "checkpoint.indexed"}
RUNS = 11


def crash(store: JsonFileStore, step: str, how: str, n: int, ready: Path) -> None:
    """Fork a child that commits change `n` and dies at `step` (exits, or is killed)."""
    ready.unlink(missing_ok=True)
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.environ[CRASH_ENV] = step + (":pause" if how == "kill" else "")
            os.environ[CRASH_ENV + "_READY"] = str(ready)
            child = JsonFileStore(store.file, lock_timeout=30)
            with child.transaction(checkpoint=step.startswith("checkpoint")) as ledger:
                ledger["warned"][f"crash-{n}"] = float(n)
                ledger["folded"]["tokens"] += 1
        finally:
            os._exit(0)  # the step was never reached: the parent fails on this
    if how == "kill":
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline, f"the child never reached {step}"
            time.sleep(0.001)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if how == "kill":
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    else:
        assert os.waitstatus_to_exitcode(status) == 70, f"the child did not stop at {step}"


@pytest.mark.parametrize("how", ["exit", "kill"])
@pytest.mark.parametrize("step", APPEND + CHECKPOINT)
def test_a_writer_killed_at_any_step_loses_and_doubles_nothing(
    step: str, how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index, "FROM_BYTES", 0)  # every checkpoint writes the index too
    store = JsonFileStore(tmp_path / "tb" / "ledger.json", lock_timeout=30)
    crashed = 0
    for n in range(1, RUNS + 1):
        # Our own commit first: the journal has a line for the child to read, cut or fold.
        with store.transaction() as ledger:
            _bump(ledger, "parent", n)
        if step == "append.cut":
            with open(store.journal, "ab") as f:
                f.write(b'{"seq":999,"set":[[["folded","tokens"],12')  # an earlier torn line
        crash(store, step, how, n, tmp_path / "ready")
        crashed += step in VISIBLE
        seen = JsonFileStore(store.file).snapshot()
        assert seen["folded"]["sessions"] == n  # every change of ours, once
        assert seen["folded"]["tokens"] == crashed  # the child's: whole or not at all
        assert (f"crash-{n}" in seen["warned"]) == (step in VISIBLE)
        assert not seen["notices"]  # nothing in what it left was garbage
        assert json.dumps(store.read(lazy=True)[0]) == json.dumps(store.read()[0])
    with store.transaction() as ledger:  # the next writer cleans up after the dead
        _bump(ledger, "parent", RUNS + 1)
    assert not [p.name for p in Path(store.folder).glob("*.tmp")]
    data = Path(store.journal).read_bytes()
    assert not data or data.endswith(b"\n")
    store.checkpoint()
    final = JsonFileStore(store.file).snapshot()
    assert final["folded"]["sessions"] == RUNS + 1 and final["folded"]["tokens"] == crashed
    assert sorted(final["warned"]) == sorted(
        [f"parent-{i}" for i in range(1, RUNS + 2)]
        + [f"crash-{n}" for n in range(1, RUNS + 1) if step in VISIBLE]
    )


_APPENDER = """
import sys
sys.path.insert(0, {repo!r})
from tests.test_store_contract import _bump
from tokenbudget.store import JsonFileStore
store = JsonFileStore(sys.argv[1], lock_timeout=60)
for i in range(1, int(sys.argv[3]) + 1):
    with store.transaction() as ledger:
        _bump(ledger, sys.argv[2], i)
"""


def test_checkpoints_killed_while_others_append_lose_and_double_nothing(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path / "tb" / "ledger.json", lock_timeout=60)
    with store.transaction() as ledger:
        _bump(ledger, "parent", 1)
    code = _APPENDER.format(repo=str(REPO))
    writers = [
        subprocess.Popen([sys.executable, "-c", code, store.file, who, "40"]) for who in "abc"
    ]
    kills = 0
    while any(w.poll() is None for w in writers):
        step = ("checkpoint.renamed", "checkpoint.synced", "checkpoint.emptied")[kills % 3]
        crash(store, step, "kill", kills, tmp_path / "ready")
        kills += 1
    assert [w.wait() for w in writers] == [0, 0, 0]
    seen = JsonFileStore(store.file).snapshot()
    assert seen["folded"]["sessions"] == 121  # 3 x 40 appended alongside, and ours
    assert sorted(k for k in seen["warned"] if not k.startswith("crash-")) == sorted(
        ["parent-1"] + [f"{w}-{i}" for w in "abc" for i in range(1, 41)]
    )
    visible = sum(1 for k in range(kills) if k % 3 != 1)  # killed after the rename
    assert seen["folded"]["tokens"] == visible and kills >= 1
    assert json.loads(Path(store.file).read_bytes())["schema"] == SCHEMA
