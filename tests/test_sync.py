"""sync.py: a sync, a rebuild and hooks racing them count each request once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import (
    _transcript,
    install_fixture,
    ledger_total,
    truth_usage,
)
from tokenbudget import sync


def test_sync_twice_changes_nothing(private_home: Path) -> None:
    install_fixture("loop", private_home / ".claude")
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    first = store.path.read_bytes()
    report = sync.sync_all(store, now=1795887600.0)
    assert report.new_requests == 0 and report.files_read == 0
    assert ledger_total(store) == truth_usage("loop")

    a, b = json.loads(first), store.snapshot()
    a.pop("updated"), b.pop("updated"), a.pop("journal")
    assert a == b


RACER = """
import sys
from pathlib import Path
from tokenbudget import sync
store = sync.open_store(lock_timeout=60)
transcript, sid, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
for _ in range(15):
    if mode == "hook":
        sync.sync_session(store, transcript, sid)
    else:
        sync.sync_all(store, now=1795887600.0)
"""


def test_hooks_and_syncs_racing_count_each_request_once(private_home: Path) -> None:
    import os
    import subprocess
    import sys

    install_fixture("agent", private_home / ".claude")
    path = _transcript(private_home, "agent")
    sid = path.stem
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 3]))
    env = dict(os.environ)
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, str(path), sid, mode], env=env)
        for mode in ("hook", "hook", "sync", "sync")
    ]
    # The session goes on while they race: its remaining lines arrive in small appends.
    rest = lines[len(lines) // 3 :]
    for i in range(0, len(rest), 3):
        with open(path, "a") as f:
            f.writelines(rest[i : i + 3])
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    assert ledger_total(store) == truth_usage("agent")


def test_rollups_by_project_and_model_survive_rebuild(private_home: Path) -> None:
    for case in ("plain", "agent"):
        install_fixture(case, private_home / ".claude", unique_ids=True)
    store = sync.open_store()
    expected = truth_usage("plain").total + truth_usage("agent").total
    sync.sync_all(store, now=1795887600.0 + 7 * 86400)  # both fold into history
    ledger = store.snapshot()
    assert ledger["models"] == {"claude-opus-5-5": [expected, pytest.approx(0.026841)]}
    assert ledger["projects"]["/home/dev/project"][0] == expected
    sync.rebuild(store, now=1795887600.0 + 7 * 86400)
    rebuilt = store.snapshot()
    assert rebuilt["models"]["claude-opus-5-5"][0] == expected
    assert rebuilt["projects"]["/home/dev/project"][0] == expected
    assert ledger_total(store).total == expected
