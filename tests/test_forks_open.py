"""Fork shapes found charged wrongly after the fork rule of ingest.py landed, read in every order.

A fork of a fork whose only work was /compact (its copies name the first session, but it
started from the second one's total), and a parent transcript that turns up after its fork.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DISCOVER, FIXTURES, FORK_CASES, install_fixture, truth_per_session
from tests.test_cli import run
from tokenbudget import query, sync, transcripts

pytestmark = pytest.mark.usefixtures("recorded_day")

SRC = FIXTURES / "fork-compacted" / "projects" / "-home-dev-project"
A = "4e9a33eb-78b1-4deb-bb3b-7b5841da46a8"  # the parent in fork-compacted
FORK = "5681032f-ea83-44c5-9acc-7e4c951b728c"  # its fork, after its /compact


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write(path: Path, objs: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(o, separators=(",", ":")) + "\n" for o in objs))


def restamp(objs: list[dict[str, Any]], sid: str, origin: str | None = None) -> list[Any]:
    """Lines as a fork copies them: its own session id, the requester's kept (or `origin`)."""
    out = []
    for o in json.loads(json.dumps(objs)):
        if "sessionId" in o:
            o["sessionId"] = sid
        if origin and o.get("type") == "assistant" and "requestSessionId" not in o:
            o["requestSessionId"] = origin
        out.append(o)
    return out


def per_session(home: Path) -> dict[str, int]:
    proc = run("report", "--by", "session", "--json", home=home)
    assert proc.returncode == 0, proc.stderr
    return {
        s["sessionId"][:8]: s["inputTokens"] + s["outputTokens"] + s["cacheCreationTokens"]
        + s["cacheReadTokens"]
        for s in json.loads(proc.stdout)["sessions"]
    }


def in_order(order: tuple[str, ...], dirs: list[Path]) -> Iterator[tuple[Path, str, bool]]:
    """transcripts.discover() with the sessions read in `order` (prefixes of their ids)."""
    found = list(DISCOVER(dirs))
    for prefix in order:
        yield from (f for f in found if f[1].startswith(prefix))


def per_session_in_process(order: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(transcripts, "discover", lambda dirs: in_order(order, dirs))
    store = sync.open_store()
    Path(store.file).unlink(missing_ok=True)
    sync.sync_all(store, now=1795887600.0)
    groups = query.group("session", query.cells(store.snapshot(), {}), UTC)
    return {g.key[:8]: g.usage.total for g in groups}


def only_compacted(project: Path) -> tuple[str, str]:
    """A, then B forked from A whose only work was /compact, then C forked from B."""
    b, c = "bbbbbbbb-0000-4000-8000-000000000001", "cccccccc-0000-4000-8000-000000000002"
    a = lines(SRC / f"{A}.jsonl")
    write(project / f"{A}.jsonl", a[:30])
    write(project / f"{b}.jsonl", restamp([o for o in a[:29] if "uuid" in o], b, A)
          + restamp(a[30:], b))
    write(project / f"{c}.jsonl", restamp(lines(SRC / f"{FORK}.jsonl"), c))
    return b, c


def test_a_fork_of_a_fork_that_only_compacted(private_home: Path) -> None:
    # C's copies all name A (B made no response of its own), but C started from B's total,
    # B's compaction included: B is C's parent, the one whose total at the fork point is the
    # largest that C's own first total holds.
    only_compacted(private_home / ".claude" / "projects" / "-home-dev-project")
    assert run("sync", home=private_home).returncode == 0
    assert per_session(private_home) == {"4e9a33eb": 6119, "bbbbbbbb": 3079, "cccccccc": 3092}


@pytest.mark.parametrize("order", list(itertools.permutations(("4e9a33eb", "bbbb", "cccc"))))
def test_a_fork_of_a_fork_that_only_compacted_in_any_order(
    order: tuple[str, ...], private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read before B, C takes A for its parent; reading B works C's inheritance out again.
    only_compacted(private_home / ".claude" / "projects" / "-home-dev-project")
    assert per_session_in_process(order, monkeypatch) == {
        "4e9a33eb": 6119, "bbbbbbbb": 3079, "cccccccc": 3092,
    }


def test_hooks_of_a_fork_of_a_fork_before_its_parent_was_read(private_home: Path) -> None:
    project = private_home / ".claude" / "projects" / "-home-dev-project"
    b, c = only_compacted(project)
    store = sync.open_store()
    for sid in (c, A, c, b, c):
        sync.sync_session(store, project / f"{sid}.jsonl", sid)
    groups = query.group("session", query.cells(store.snapshot(), {}), UTC)
    assert {g.key[:8]: g.usage.total for g in groups} == {
        "4e9a33eb": 6119, "bbbbbbbb": 3079, "cccccccc": 3092,
    }


def test_a_parent_transcript_that_arrives_after_its_fork(private_home: Path) -> None:
    project = private_home / ".claude" / "projects" / "-home-dev-project"
    project.mkdir(parents=True)
    for f in SRC.iterdir():
        if not f.name.startswith(A[:8]):
            shutil.copy(f, project / f.name)
    assert run("sync", home=private_home).returncode == 0
    shutil.copy(SRC / f"{A}.jsonl", project / f"{A}.jsonl")
    assert run("sync", home=private_home).returncode == 0
    assert per_session(private_home) == {"4e9a33eb": 9198, "5681032f": 3092, "f0ed2512": 3105}


def parents(case: str) -> list[str]:
    """The sessions a fork of `case` names as the requester of its copies."""
    named = set()
    for path in (FIXTURES / case / "projects").glob("*/*.jsonl"):
        for o in lines(path):
            if o.get("requestSessionId") not in (None, o.get("sessionId")):
                named.add(o["requestSessionId"])
    return sorted(named)


@pytest.mark.parametrize(
    ("case", "parent"), [(c, p) for c in FORK_CASES for p in parents(c)]
)
def test_any_parent_transcript_that_arrives_after_its_forks(
    case: str, parent: str, private_home: Path, tmp_path: Path
) -> None:
    # Its forks hold its requests meanwhile (their totals stay whole); when it turns up, it
    # takes them back and each fork's inheritance is worked out again: the same split, by
    # session and by command, as one sync of everything.
    projects = install_fixture(case, private_home / ".claude")
    [main] = projects.glob(f"*/{parent}.jsonl")
    aside = tmp_path / "aside"
    aside.mkdir()
    main.rename(aside / main.name)
    if (main.parent / parent).is_dir():
        (main.parent / parent).rename(aside / parent)
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    (aside / main.name).rename(main)
    if (aside / parent).is_dir():
        (aside / parent).rename(main.parent / parent)
    sync.sync_all(store, now=1795887600.0)
    fresh = sync.open_store(path=tmp_path / "fresh.json")
    sync.sync_all(fresh, now=1795887600.0)
    ledger, whole = store.snapshot(), fresh.snapshot()
    by_session = {g.key: g.usage for g in query.group("session", query.cells(ledger, {}), UTC)}
    assert by_session == truth_per_session(case, list(by_session))
    assert [(g.key, g.usage) for g in query.group("command", query.cells(ledger, {}), UTC)] == [
        (g.key, g.usage) for g in query.group("command", query.cells(whole, {}), UTC)
    ]


def test_a_fork_that_compacted_is_charged_it_once_its_parent_arrives(
    private_home: Path, tmp_path: Path
) -> None:
    # Without its parent's total, nothing in B's own total can be told from what it inherited:
    # B is charged none of it (never more than its own), until A's transcript is read.
    project = private_home / ".claude" / "projects" / "-home-dev-project"
    only_compacted(project)
    (project / f"{A}.jsonl").rename(tmp_path / "parent.jsonl")
    assert run("sync", home=private_home).returncode == 0
    assert per_session(private_home) == {"bbbbbbbb": 6119, "cccccccc": 3092}
    (tmp_path / "parent.jsonl").rename(project / f"{A}.jsonl")
    assert run("sync", home=private_home).returncode == 0
    assert per_session(private_home) == {"4e9a33eb": 6119, "bbbbbbbb": 3079, "cccccccc": 3092}


@pytest.mark.parametrize("damage", ["rejected", "torn"])
def test_a_fork_is_never_charged_more_than_its_own(
    damage: str, private_home: Path
) -> None:
    # The parent's total at the fork point cannot be read: the fork's own total then adds
    # nothing beyond its own lines (its parent's compaction must not land on it).
    project = private_home / ".claude" / "projects" / "-home-dev-project"
    project.mkdir(parents=True)
    for f in SRC.iterdir():
        shutil.copy(f, project / f.name)
    parent = project / f"{A}.jsonl"
    whole = parent.read_bytes()
    last = whole.rstrip(b"\n").rsplit(b"\n", 1)[1]
    assert b'"type":"cost-state"' in last
    if damage == "rejected":
        parent.write_bytes(whole.replace(b'"inputTokens":2706', b'"inputTokens":-2706'))
    else:
        parent.write_bytes(whole[: len(whole) - len(last) // 2])  # still being written
    assert run("sync", home=private_home).returncode == 0
    assert per_session(private_home) == {"4e9a33eb": 6119, "5681032f": 3092, "f0ed2512": 3105}
    parent.write_bytes(whole)  # whole after all: the compaction is the parent's, not the fork's
    assert run("sync", home=private_home).returncode == 0
    assert per_session(private_home) == {"4e9a33eb": 9198, "5681032f": 3092, "f0ed2512": 3105}
