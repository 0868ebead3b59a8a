"""The totals equal what the API served, for every real transcript fixture."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path

import pytest

from tests.helpers import (
    ALL_CASES,
    FORK_CASES,
    ORDERS,
    _transcript,
    discover_in,
    every_file_order,
    install_fixture,
    ledger_total,
    session_totals,
    truth_per_session,
    truth_usage,
)
from tokenbudget import history, query, sync, transcripts
from tokenbudget.usage import Usage


@pytest.mark.parametrize("case", ALL_CASES)
def test_fixture_totals_equal_truth(case: str, private_home: Path) -> None:
    install_fixture(case, private_home / ".claude")
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    assert ledger_total(store) == truth_usage(case)


def test_forked_session_copies_belong_to_the_parent(private_home: Path) -> None:
    install_fixture("forked", private_home / ".claude")
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    per_session = session_totals(store)
    parent = "41481808-d348-404b-a183-6d629348bbef"
    fork = "fd4b2298-2ab6-44e1-8473-ac50d60f614d"
    assert per_session[parent] == truth_usage("forked", parent)
    assert per_session[fork] == truth_usage("forked", fork)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("case", ALL_CASES)
def test_each_session_is_charged_exactly_its_own_requests_in_any_order(
    case: str, order: str, private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Forks of compacted sessions and of sessions with subagents, a fork in another folder:
    # a fork is charged only what its own process sent, whichever transcript is read first.
    install_fixture(case, private_home / ".claude")
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    by_command = query.group("command", query.cells(store.snapshot(), {}), UTC)
    Path(store.file).unlink()
    monkeypatch.setattr(transcripts, "discover", lambda dirs: discover_in(order, dirs))
    sync.sync_all(store, now=1795887600.0)
    per_session = session_totals(store)
    assert per_session == truth_per_session(case, list(per_session))
    again = query.group("command", query.cells(store.snapshot(), {}), UTC)
    assert [(g.key, g.usage) for g in again] == [(g.key, g.usage) for g in by_command]


@pytest.mark.parametrize("case", FORK_CASES)
def test_forks_read_in_every_order_of_their_files_split_the_same(
    case: str, private_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Every permutation of the fixture's files (folders and files, a subagent's before or
    # after its session's): each session is charged its truth, each command the same.
    from tokenbudget.ledger import Ledger

    install_fixture(case, private_home / ".claude")

    def split(ledger: Ledger) -> tuple[dict[str, Usage], list[tuple[str, Usage]]]:
        sessions = query.group("session", query.cells(ledger, {}), UTC)
        commands = query.group("command", query.cells(ledger, {}), UTC)
        return {g.key: g.usage for g in sessions}, [(g.key, g.usage) for g in commands]

    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    per_session, by_command = split(store.snapshot())
    assert per_session == truth_per_session(case, list(per_session))
    orders = list(every_file_order([private_home / ".claude"]))
    assert len(orders) >= 2
    for n, order in enumerate(orders):
        monkeypatch.setattr(transcripts, "discover", lambda dirs, o=order: iter(o))
        fresh = sync.open_store(path=tmp_path / f"order-{n}.json")
        sync.sync_all(fresh, now=1795887600.0)
        assert split(fresh.snapshot()) == (per_session, by_command), [p.name for p, *_ in order]


def test_subagent_usage_belongs_to_the_parent_session(private_home: Path) -> None:
    install_fixture("agent", private_home / ".claude")
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    per_session = session_totals(store)
    assert list(per_session) == ["8e945286-e779-410e-9516-f3c30e65f9e5"]
    assert per_session["8e945286-e779-410e-9516-f3c30e65f9e5"] == truth_usage("agent")


@pytest.mark.parametrize("case", ALL_CASES)
def test_cost_equals_claude_codes_own(case: str, private_home: Path) -> None:
    import json

    from tests.helpers import FIXTURES

    install_fixture(case, private_home / ".claude")
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    ledger = store.snapshot()
    groups = query.group("session", query.cells(ledger, history.read_records(ledger)), UTC)
    outputs = [
        json.loads(line)
        for line in (FIXTURES / case / "claude-output.json").read_text().splitlines()
        if line.strip()
    ]
    # Each process's total_cost_usd is cumulative over its session's life; the largest per
    # session is that session's cost (a fork's includes its parent's, so sum the differences).
    expected = max(o["total_cost_usd"] for o in outputs)
    assert sum(g.cost for g in groups) == pytest.approx(expected, abs=1e-9)


def test_appending_a_turn_adds_exactly_that_turn(private_home: Path) -> None:
    install_fixture("plain", private_home / ".claude")
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    path = _transcript(private_home, "plain")
    lines = path.read_text().splitlines(keepends=True)
    extra = [
        line.replace("msg_fake_00001", "msg_fake_00099").replace("req_fake_00001", "req_x")
        for line in lines
        if '"type":"assistant"' in line
    ]
    with open(path, "a") as f:
        f.writelines(extra)
    report = sync.sync_all(store, now=1795887600.0)
    assert report.new_requests == 1
    assert ledger_total(store) == truth_usage("plain") + truth_usage("plain")


def test_claude_config_dir_may_list_several_dirs(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = private_home / "one, dir", private_home / "two"
    install_fixture("plain", first, unique_ids=True)
    install_fixture("loop", second, unique_ids=True)
    install_fixture("slash", private_home / ".claude", unique_ids=True)  # not listed: not read
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", f"{second},{first}")
    # A list whose parts exist is a list: a folder with a comma in its name is then not found.
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    assert ledger_total(store) == truth_usage("loop")
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", f" {second} , {private_home / '.claude'} ")
    sync.sync_all(store, now=1795887600.0)
    assert ledger_total(store) == truth_usage("loop") + truth_usage("slash")


def test_a_session_start_folds_and_compacts_without_the_cli(private_home: Path) -> None:
    import json as _json

    from tokenbudget import hook

    install_fixture("plain", private_home / ".claude", unique_ids=True)
    install_fixture("loop", private_home / ".claude", unique_ids=True)
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    assert len(store.snapshot()["sessions"]) == 2
    raw = _json.dumps({"session_id": "new-session", "cwd": "/p", "source": "startup"}).encode()
    hook.handle("SessionStart", raw, now=1795887600.0 + 3 * 86400)
    ledger = store.snapshot()
    assert list(ledger["sessions"]) == ["new-session"]  # the two idle ones are in history now
    assert ledger_total(store) == truth_usage("plain") + truth_usage("loop")


def test_claude_config_dir_naming_a_folder_with_a_comma(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenbudget import paths

    odd = private_home / "conf,v2"
    install_fixture("plain", odd)
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(odd))  # Claude Code reads it as one folder
    assert paths.claude_config_dirs() == [odd] and paths.claude_settings_dir() == odd
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", ",")  # names no folder at all: the default
    assert paths.claude_settings_dir() == private_home / ".claude"
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(odd))
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    assert ledger_total(store) == truth_usage("plain")


def _replay(case: str) -> list[tuple[Path, str, str, bytes]]:
    """Every line of a fixture as Claude Code wrote it, in a plausible live order: by each
    file's running latest timestamp (a fork's copies take the time the fork wrote them).
    Items: (path under projects/, session id, main transcript path, line)."""
    from tests.helpers import FIXTURES

    root = FIXTURES / case / "projects"
    steps: list[tuple[float, int, int, tuple[Path, str, str, bytes]]] = []
    for n, path in enumerate(sorted(root.rglob("*.jsonl"))):
        rel = path.relative_to(root)
        sub = rel.parent.name == "subagents"
        sid = rel.parts[1] if sub else path.stem
        main = str(Path(rel.parts[0]) / f"{sid}.jsonl")
        latest = 0.0
        for i, line in enumerate(path.read_bytes().splitlines(keepends=True)):
            ts = transcripts.parse_ts(json.loads(line).get("timestamp"))
            latest = max(latest, ts or 0.0)
            steps.append((latest, n, i, (rel, sid, main, line)))
    steps.sort(key=lambda s: s[:3])
    return [s[3] for s in steps]


@pytest.mark.parametrize("case", FORK_CASES)
def test_hooks_reading_as_lines_are_written_agree_with_a_backfill(
    case: str, private_home: Path, tmp_path: Path
) -> None:
    # A hook reads its session's files whenever a line is written; a backfill of the same
    # files at that moment must give every session the same total.
    projects = private_home / ".claude" / "projects"
    store = sync.open_store()
    for n, (rel, sid, main, line) in enumerate(_replay(case)):
        (projects / rel).parent.mkdir(parents=True, exist_ok=True)
        with open(projects / rel, "ab") as f:
            f.write(line)
        if b'"cost-state"' not in line and b'"assistant"' not in line:
            continue
        sync.sync_session(store, projects / main, sid)
        fresh = sync.open_store(path=tmp_path / f"backfill-{n}.json")
        sync.sync_all(fresh, now=1795887600.0)
        assert session_totals(store) == session_totals(fresh), (n, rel)
    per_session = session_totals(store)
    assert per_session == truth_per_session(case, list(per_session))


def test_the_synthetic_history_with_every_fork_shape_agrees_with_its_truth(
    private_home: Path,
) -> None:
    # bench/synth.py's forks of sessions with subagents and compactions, forks of forks (of
    # forks whose only work was /compact too): each session's total is the generator's truth,
    # and each command's the same, read in any order of sessions or of files.
    import importlib.util
    import re
    import sys

    from tests.helpers import REPO

    spec = importlib.util.spec_from_file_location("bench_synth", REPO / "bench" / "synth.py")
    assert spec is not None and spec.loader is not None
    synth = importlib.util.module_from_spec(spec)
    sys.modules["bench_synth"] = synth  # its dataclasses look their module up
    spec.loader.exec_module(synth)
    options = synth.Options(
        sessions=150, projects=3, seed=7, days=2.0, end=1795800000.0, subagents=0.4,
        forks=0.4, compaction=0.3, lean=True,
    )
    truth_doc = synth.generate(private_home, options)
    forks = elsewhere = 0
    for path in private_home.glob(".claude/projects/*/*.jsonl"):
        origins = set(re.findall(rb'"requestSessionId":"([^"]+)"', path.read_bytes()))
        forks += bool(origins)
        elsewhere += any(not (path.parent / f"{o.decode()}.jsonl").exists() for o in origins)
    assert forks > 20 and elsewhere > 3
    by_command: list[tuple[str, Usage]] | None = None
    for order in ORDERS:
        store = sync.open_store()
        Path(store.file).unlink(missing_ok=True)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(transcripts, "discover", lambda dirs, o=order: discover_in(o, dirs))
            sync.sync_all(store, now=1795800000.0)
        per_session = {sid: u.total for sid, u in session_totals(store).items() if u.total}
        assert per_session == truth_doc["session_totals"], order
        groups = query.group("command", query.cells(store.snapshot(), {}), UTC)
        split = [(g.key, g.usage) for g in groups]
        assert split == (by_command if by_command is not None else split), order
        by_command = split
