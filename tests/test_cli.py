"""The installed `tokenbudget` command, run as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import CASES, install_fixture, truth_usage
from tokenbudget.cli import main
from tokenbudget.usage import Usage

BIN = Path(sys.executable).parent / "tokenbudget"


def run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE")}
    env.update(HOME=str(home), TOKENBUDGET_HOME=str(home / "tb state"), NO_COLOR="1")
    return subprocess.run(
        [str(BIN), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_console_script_reports_exact_totals(private_home: Path) -> None:
    assert BIN.exists(), "the tokenbudget console script is not installed in this environment"
    for case in CASES:
        install_fixture(case, private_home / ".claude", unique_ids=True)
    proc = run("report", "--by", "day", "--json", home=private_home)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    expected = sum((truth_usage(c) for c in CASES), start=Usage())
    totals = data["totals"]
    assert totals["totalTokens"] == expected.total
    assert totals["inputTokens"] == expected.input
    assert totals["outputTokens"] == expected.output
    assert totals["cacheReadTokens"] == expected.cache_read
    assert totals["cacheCreationTokens"] == expected.cache_write
    assert [d["date"] for d in data["daily"]] == ["2026-11-28"]
    assert (private_home / "tb state" / "ledger.json").stat().st_mode & 0o777 == 0o600
    assert (private_home / "tb state").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("garbage", [b"{not json", b"", b"[1, 2]", b'{"schema": 99}', b"\x00\xff"])
def test_corrupt_ledger_is_kept_aside_and_rebuilt(private_home: Path, garbage: bytes) -> None:
    install_fixture("loop", private_home / ".claude")
    assert run("sync", home=private_home).returncode == 0
    ledger = private_home / "tb state" / "ledger.json"
    ledger.write_bytes(garbage)
    proc = run("report", "--json", home=private_home)
    assert proc.returncode == 0, proc.stderr
    notices = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(notices) == 1 and "corrupt-" in notices[0] and "rebuilt" in notices[0], notices
    kept = list(ledger.parent.glob("ledger.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == garbage
    assert json.loads(proc.stdout)["totals"]["totalTokens"] == truth_usage("loop").total
    # Told once: the next command is quiet.
    again = run("report", "--json", home=private_home)
    assert again.stderr == "" and json.loads(again.stdout)["totals"]["totalTokens"] > 0


def test_rebuild_on_demand(private_home: Path) -> None:
    install_fixture("agent", private_home / ".claude")
    assert run("sync", home=private_home).returncode == 0
    proc = run("rebuild", home=private_home)
    assert proc.returncode == 0, proc.stderr
    assert "kept as ledger.json.corrupt-" in proc.stdout or "kept as" in proc.stdout
    report = json.loads(run("report", "--json", home=private_home).stdout)
    assert report["totals"]["totalTokens"] == truth_usage("agent").total


def test_report_csv_and_table(private_home: Path) -> None:
    install_fixture("slash", private_home / ".claude")
    runner = CliRunner()
    csv = runner.invoke(main, ["report", "--by", "command", "--csv"])
    assert csv.exit_code == 0, csv.output
    assert csv.output.splitlines()[1].startswith(
        f"/test,2706,126,306,6060,{truth_usage('slash').total},"
    )
    table = runner.invoke(main, ["report", "--by", "command"])
    assert table.exit_code == 0
    assert "/test" in table.output and "\x1b[" not in table.output
    assert max(len(line) for line in table.output.splitlines()) <= 80


def test_bad_input_is_one_line(private_home: Path) -> None:
    proc = run("report", "--since", "yesterday", home=private_home)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    config = private_home / "tb state" / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("{broken")
    proc = run("report", home=private_home)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tokenbudget: ") and "config.json" in lines[0]


def _commands(group: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    import click

    out = []
    assert isinstance(group, click.Group)
    for name, cmd in group.commands.items():
        out.append((*prefix, name))
        if isinstance(cmd, click.Group):
            out.extend(_commands(cmd, (*prefix, name)))
    return out


@pytest.mark.parametrize("command", _commands(main))
def test_every_command_has_help(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output and len(result.output.splitlines()) > 2
