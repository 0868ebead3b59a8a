"""Shared test helpers: fixtures copied into a Claude Code data dir, truth totals, the totals
a ledger holds."""

from __future__ import annotations

import itertools
import json
import random
import shutil
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

from tokenbudget import history, query, transcripts
from tokenbudget.store import Store
from tokenbudget.usage import Usage

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "claude-code-2.1.328"
_ALL = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
# Forks recorded for per-session exactness (tests/e2e/record_fixtures.py) are kept apart:
# the other tests count on the first cases' sessions and commands.
FORK_CASES = [c for c in _ALL if c.startswith("fork-")]
CASES = [c for c in _ALL if c not in FORK_CASES]
ALL_CASES = CASES + FORK_CASES


def install_fixture(case: str, claude_dir: Path, *, unique_ids: bool = False) -> Path:
    """Copy a fixture's projects/ into `claude_dir`/projects; return that folder.

    The fake API numbered its messages the same way in every case; `unique_ids` renames them
    per case so that several cases can share one data dir without being one another's copies.
    """
    target = claude_dir / "projects"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(FIXTURES / case / "projects", target, dirs_exist_ok=True)
    if unique_ids:
        for path in (FIXTURES / case / "projects").rglob("*.jsonl"):
            copy = target / path.relative_to(FIXTURES / case / "projects")
            text = path.read_text().replace("msg_fake_", f"msg_{case}_")
            copy.write_text(text.replace("req_fake_", f"req_{case}_"))
    return target


def truth(case: str) -> list[dict[str, object]]:
    lines = (FIXTURES / case / "truth.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def truth_usage(case: str, session: str | None = None) -> Usage:
    total = Usage()
    for t in truth(case):
        if session is not None and t.get("session") != session:
            continue
        total = total + Usage(
            int(t["input_tokens"]),  # type: ignore[call-overload]
            int(t["output_tokens"]),  # type: ignore[call-overload]
            int(t["cache_creation_input_tokens"]),  # type: ignore[call-overload]
            0,
            int(t["cache_read_input_tokens"]),  # type: ignore[call-overload]
        )
    return total


def truth_per_session(case: str, sessions: list[str]) -> dict[str, Usage]:
    """Truth per session; a case recorded without sessions has one, the only one in `sessions`."""
    if not any("session" in t for t in truth(case)):
        [only] = sessions
        return {only: truth_usage(case)}
    return {str(t["session"]): truth_usage(case, str(t["session"])) for t in truth(case)}


ORDERS = ("sorted", "reversed", "shuffled", "files")
DISCOVER = transcripts.discover


def every_file_order(dirs: list[Path]) -> Iterator[list[tuple[str, str, bool]]]:
    """Every order of every transcript transcripts.discover() finds, subagents' included
    (before or after their session's): for the few files of a recorded fixture."""
    yield from (list(p) for p in itertools.permutations(DISCOVER(dirs)))


def discover_in(order: str, dirs: list[Path]) -> Iterator[tuple[str, str, bool]]:
    """transcripts.discover() with its sessions in another order (each one's subagents still
    before its transcript; with "files", every file shuffled on its own, a subagent's after
    its session's too): a backfill must not depend on which file it reads first."""
    if order == "files":
        found = list(DISCOVER(dirs))
        random.Random(12).shuffle(found)
        yield from found
        return
    groups: dict[tuple[Path, str], list[tuple[str, str, bool]]] = {}
    for path, sid, sub in DISCOVER(dirs):
        folder = Path(path).parents[2] if sub else Path(path).parent
        groups.setdefault((folder, sid), []).append((path, sid, sub))
    keys = list(groups)
    if order == "reversed":
        keys.reverse()
    elif order == "shuffled":
        random.Random(12).shuffle(keys)
    for key in keys:
        yield from groups[key]


def stored_ledger(state: Path) -> dict[str, object]:
    """The ledger committed in tokenbudget state folder `state`: its snapshot and journal."""
    from tokenbudget.store import open_store

    return open_store(path=state / "ledger.json").snapshot()


def ledger_total(store: object) -> Usage:
    ledger = store.snapshot()  # type: ignore[attr-defined]
    groups = query.group("model", query.cells(ledger, history.read_records(ledger)), UTC)
    return query.totals(groups).usage


def session_totals(store: Store) -> dict[str, Usage]:
    ledger = store.snapshot()
    groups = query.group("session", query.cells(ledger, history.read_records(ledger)), UTC)
    return {g.key: g.usage for g in groups}


def _transcript(private_home: Path, case: str) -> Path:
    return next((private_home / ".claude" / "projects").glob("*/*.jsonl"))
