"""A rebuilt ledger pushes nothing twice (corrections of Claude Code's totals have keys of what
they correct, and their sums replace the server's), and a command known only after a push (a
subagent read before its launching prompt) reaches the server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import install_fixture
from tests.team.test_team_sync import joined, ledger_of, local_totals, server_totals, usage_rows
from tests.test_cli import run
from tokenbudget.team import db


@pytest.mark.parametrize("how", ["corrupt", "rebuild"])
def test_a_rebuilt_ledger_changes_no_team_total(
    private_home: Path, team_dsn: str, recorded_day: float, how: str
) -> None:
    joined(private_home, team_dsn)
    for case in ("compacted", "agent", "fork-compacted"):
        install_fixture(case, private_home / ".claude", unique_ids=True)
    assert run("team", "sync", home=private_home).returncode == 0
    before, rows = server_totals(team_dsn), usage_rows(team_dsn)
    assert before == local_totals(private_home)
    with db.session(team_dsn) as conn:  # the fixtures hold usage known only from the totals
        assert conn.execute("SELECT count(*) FROM tokenbudget.usage"
                            " WHERE request_key LIKE 'adj-%'").fetchone()[0] > 0
    if how == "corrupt":
        (private_home / "tb state" / "ledger.json").write_bytes(b"{not json")
        assert run("sync", home=private_home).returncode == 0
    else:
        assert run("rebuild", home=private_home).returncode == 0
    proc = run("team", "sync", home=private_home)
    assert proc.returncode == 0, proc.stderr
    assert ledger_of(private_home)["team"] == "core"
    assert server_totals(team_dsn) == before == local_totals(private_home)
    assert usage_rows(team_dsn) == rows
    install_fixture("plain", private_home / ".claude", unique_ids=True)  # and it goes on
    assert run("team", "sync", home=private_home).returncode == 0
    assert server_totals(team_dsn) == local_totals(private_home) != before


def commands_by_key(dsn: str) -> dict[str, str]:
    with db.session(dsn) as conn:
        rows = conn.execute("SELECT request_key, command FROM tokenbudget.usage"
                            " WHERE request_key NOT LIKE 'adj-%'").fetchall()
    return {str(k): str(c) for k, c in rows}


def final_commands(home: Path) -> dict[str, str]:
    """Each request's command as the ledger has it once every prompt is read."""
    ledger = ledger_of(home)
    out = {}
    for key, rec in ledger["keys"].items():
        s = ledger["sessions"][rec[0]]
        turn = s["a"].get(rec[9], rec[9])
        out[key] = s["t"][turn][0]
    return out


def test_a_command_known_after_its_subagents_usage_was_pushed_reaches_the_server(
    private_home: Path, team_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import datetime

    # Minutes after the fixture's last line: its requests are still records, not compacted.
    last = datetime.fromisoformat("2026-11-28T16:00:01+00:00").timestamp()
    monkeypatch.setenv("TOKENBUDGET_NOW", repr(last + 120))
    joined(private_home, team_dsn)
    projects = install_fixture("fork-slash-agent", private_home / ".claude")
    full = {p: p.read_bytes() for p in projects.rglob("*.jsonl")}
    for path in full:  # the subagents' transcripts alone: their launching prompts not read yet
        if "subagents" not in path.parts:
            path.write_bytes(b"")
    assert run("team", "sync", home=private_home).returncode == 0
    early = commands_by_key(team_dsn)
    assert early and set(early.values()) == {"prompt"}  # the held turns' stand-in
    for path, text in full.items():
        path.write_bytes(text)
    assert run("team", "sync", home=private_home).returncode == 0
    final = final_commands(private_home)
    held = {k: final[k] for k in early}
    assert any(c.startswith("/") for c in held.values()), held
    assert commands_by_key(team_dsn) == final
    assert server_totals(team_dsn) == local_totals(private_home)
