"""Refusals and stops kept for `status --check`: appended by many hooks at once, read safely."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tokenbudget import paths, stops

REPO = Path(__file__).resolve().parent.parent


def entry(n: int, **extra: object) -> dict[str, object]:
    return {"at": 1795887600.0 + n, "session": f"s{n % 3}", "prompt_id": f"p{n}",
            "what": "stopped", "event": "PreToolUse", "budget": "daily", "kind": "daily",
            "unit": "tokens", "used": 10.0, "expected": 0.0, "limit": 5.0, "reason": "x" * 40,
            **extra}


def test_what_is_kept_is_read_back_by_session_and_private(private_home: Path) -> None:
    for n in range(6):
        stops.record(entry(n))
    assert [e["prompt_id"] for e in stops.read("s1")] == ["p1", "p4"]
    assert len(stops.read()) == 6
    assert stat.S_IMODE(os.stat(paths.stops_file()).st_mode) == 0o600


def test_lines_that_are_not_whole_entries_are_passed_over(private_home: Path) -> None:
    stops.record(entry(1))
    bad = [b"{not json", b"[1, 2]", json.dumps(entry(2, at="abc")).encode(),
           json.dumps(entry(3, at=1e300)).encode(), json.dumps(entry(4, at=True)).encode(),
           json.dumps(entry(5, used="lots")).encode(), json.dumps(entry(6, reason=7)).encode()]
    with open(paths.stops_file(), "ab") as f:
        f.write(b"\n".join(bad) + b"\n")
    stops.record(entry(9))
    assert [e["prompt_id"] for e in stops.read()] == ["p1", "p9"]


def test_many_hooks_appending_while_it_turns_over_tear_nothing(private_home: Path) -> None:
    # Four writers, 300 lines each, turning over every 4 KB: no line torn.
    code = (
        "import sys; from tokenbudget import stops; stops.KEEP_BYTES = 4096\n"
        "from tests.test_stops import entry\n"
        "for n in range(300): stops.record(entry(n, prompt_id=sys.argv[1] + str(n)))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, f"w{i}-"], cwd=REPO) for i in range(4)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    path = paths.stops_file()
    for name in (path, path + ".1"):
        for line in Path(name).read_bytes().splitlines():
            assert json.loads(line)["reason"] == "x" * 40


def test_a_writer_late_to_turn_over_leaves_the_full_file_kept(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stops, "KEEP_BYTES", 100)
    for n in range(3):
        stops.record(entry(n))
    path = paths.stops_file()
    late = os.open(path, os.O_WRONLY | os.O_APPEND)  # another hook opened the full file...
    stops.record(entry(3))  # ...this one turned it over first
    kept = Path(path + ".1").read_bytes()
    assert len(kept) > 100
    late = stops._turn_over(path, late)  # the late one must not put the new file over it
    os.close(late)
    assert Path(path + ".1").read_bytes() == kept
