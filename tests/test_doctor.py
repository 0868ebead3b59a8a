"""`tokenbudget doctor`: findings, and what counts as a problem."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import install_fixture
from tokenbudget import claude_settings, doctor
from tokenbudget.cli import main


def _claude_dirs_finding(report: doctor.Report) -> doctor.Finding:
    [finding] = [f for f in report.findings if f.title == "Claude Code data dirs"]
    return finding


def test_fresh_install_before_claude_code_ever_ran_is_all_good(private_home: Path) -> None:
    # What `tokenbudget install` leaves behind: ~/.claude/settings.json and nothing else.
    claude_settings.install(private_home / ".claude" / "settings.json", sys.executable)
    project = private_home / "project"
    project.mkdir()
    report = doctor.run(project)
    assert report.ok, doctor.render(report)
    finding = _claude_dirs_finding(report)
    assert finding.ok
    assert finding.detail == (
        "no transcripts yet (Claude Code writes them once it runs; if it keeps its data "
        f"elsewhere, set CLAUDE_CONFIG_DIR): {private_home / '.claude'} exists, with no "
        f"projects/ in it; {private_home / '.config' / 'claude'} does not exist"
    )
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    assert result.output.endswith("All good.\n")


def test_transcripts_are_counted_per_dir(private_home: Path) -> None:
    install_fixture("loop", private_home / ".claude")
    report = doctor.Report()
    doctor.check_claude_dirs(report)
    finding = _claude_dirs_finding(report)
    assert finding.ok
    assert finding.detail == (
        f"{private_home / '.claude' / 'projects'}: 1 session transcript(s); "
        f"{private_home / '.config' / 'claude'} does not exist"
    )


def test_a_config_dir_that_does_not_exist_yet_is_information(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(private_home / "cc"))
    report = doctor.Report()
    doctor.check_claude_dirs(report)
    finding = _claude_dirs_finding(report)
    assert finding.ok
    assert finding.detail.endswith(f"{private_home / 'cc'} does not exist")
    assert finding.detail.startswith("no transcripts yet")


def test_render_escapes_control_characters() -> None:
    report = doctor.Report()
    report.add(False, "ledger cannot be read", "/p/\x1b]0;title\x07\x9b2J", "chmod 600 /p/\x1b[2J")
    text = doctor.render(report)
    assert not any(ch in text for ch in "\x1b\x07\x9b")
    assert text.splitlines()[:2] == [
        "!!  ledger cannot be read: /p/\\x1b]0;title\\x07\\x9b2J",
        "    fix: chmod 600 /p/\\x1b[2J",
    ]


def test_a_tokenbudget_folder_where_doctor_runs_proves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    bare = tmp_path / "bare venv"  # a Python 3.11+ without tokenbudget
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    python = str(bare / "bin" / "python")
    fake = tmp_path / "work" / "tokenbudget"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "hook.py").write_text("")
    monkeypatch.chdir(fake.parent)
    runs, detail = doctor.interpreter_runs(python)
    assert not runs and "No module named 'tokenbudget'" in detail, detail
    assert doctor.interpreter_runs(sys.executable)[0]
