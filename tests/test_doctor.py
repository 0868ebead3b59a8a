"""`tokenbudget doctor`: findings, and what counts as a problem."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import install_fixture
from tokenbudget import claude_settings, doctor, plugin
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


def _hook_findings(report: doctor.Report) -> list[tuple[bool, str, str]]:
    return [(f.ok, f.title, f.detail) for f in report.findings]


def test_no_registration_anywhere_is_a_problem(private_home: Path) -> None:
    report = doctor.Report()
    doctor.check_hooks(report, private_home)
    assert [(f.ok, f.title) for f in report.findings] == [
        (False, "hooks are not registered anywhere")
    ]


def test_a_plugin_enabled_in_settings_is_registered(private_home: Path) -> None:
    settings = private_home / ".claude" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text('{"enabledPlugins": {"tokenbudget@tokenbudget": true, "x@y": true}}')
    report = doctor.Report()
    doctor.check_hooks(report, private_home / "project")
    registered = (
        True,
        "registered as a plugin",
        f"user settings ({settings}): plugin tokenbudget@tokenbudget",
    )
    # Enabled, but never run: nothing is enforced yet, and doctor must not say all is well.
    assert _hook_findings(report) == [
        registered,
        (False, "the plugin's hooks have not run yet",
         "no session start from it in the last 30 days"),
    ]
    from tokenbudget import clock

    plugin.note_run(str(private_home), None, sys.executable, clock.now())
    report = doctor.Report()
    doctor.check_hooks(report, private_home / "project")
    assert registered in _hook_findings(report)
    assert not [f for f in _hook_findings(report) if not f[0]]


def _plugin_data(tmp_path: Path, cli: str) -> Path:
    """A plugin data folder whose environment's `tokenbudget` is the shell script `cli`."""
    data = tmp_path / "plugin data"
    script = data / "venv" / "bin" / "tokenbudget"
    script.parent.mkdir(parents=True)
    script.write_text(cli)
    script.chmod(0o700)
    return data


def test_plugin_hooks_seen_running_are_registered_and_checked(
    private_home: Path, tmp_path: Path, recorded_day: float
) -> None:
    # `claude --plugin-dir` is in no settings file: the hooks' own note is what doctor sees.
    root = tmp_path / "the plugin"
    root.mkdir()
    data = _plugin_data(tmp_path, "#!/bin/sh\necho 'tokenbudget, version 0.1.0'\n")
    plugin.note_run(str(root), str(data), sys.executable, recorded_day - 3600)
    report = doctor.Report()
    doctor.check_hooks(report, private_home)
    findings = _hook_findings(report)
    seen = f"{root}: last session start 2026-11-28 16:40"
    assert findings[0] == (True, "hooks ran as a plugin", seen)
    assert findings[1][:2] == (True, "plugin hook interpreter runs")
    assert findings[1][2].startswith(f"{sys.executable}: Python 3.")
    script = str(data / "venv" / "bin" / "tokenbudget")
    assert findings[2] == (True, "plugin's tokenbudget command runs", script)
    assert len(findings) == 3 and report.ok
    # The time is in the zone the budgets follow.
    config = private_home / "tb state" / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('{"version": 1, "budgets": [], "timezone": "Europe/Berlin"}')
    report = doctor.Report()
    doctor.check_hooks(report, private_home)
    assert report.findings[0].detail == f"{root}: last session start 2026-11-28 17:40"


def test_a_session_start_waited_for_in_the_resident_layout_is_a_problem(
    private_home: Path,
) -> None:
    from tokenbudget import resident

    path = private_home / ".claude" / "settings.json"
    setup = resident.Setup(40123, "ab" * 32, "cd" * 32)
    claude_settings.install(path, sys.executable, None, setup)

    def registered() -> doctor.Finding:
        report = doctor.Report()
        doctor.check_hooks(report, private_home)
        [found] = [f for f in report.findings if f.title == "hooks registered in user settings"]
        return found

    assert registered().ok
    # As `install --resident` wrote it before SessionStart went async.
    doc = json.loads(path.read_text())
    del doc["hooks"]["SessionStart"][0]["hooks"][0]["async"]
    path.write_text(json.dumps(doc))
    found = registered()
    assert not found.ok
    assert found.fix == ("run `tokenbudget install --resident --scope user` (SessionStart not to"
                         " be waited for)")
    # And the command hooks' layout with an async SessionStart (nobody would say its notes).
    claude_settings.install(path, sys.executable)
    assert registered().ok
    doc = json.loads(path.read_text())
    doc["hooks"]["SessionStart"][0]["hooks"][0]["async"] = True
    path.write_text(json.dumps(doc))
    found = registered()
    assert found.fix == "run `tokenbudget install --scope user` (SessionStart to be waited for)"


def test_a_plugin_command_that_cannot_start_is_a_problem(
    private_home: Path, tmp_path: Path, recorded_day: float
) -> None:
    root = tmp_path / "the plugin"
    root.mkdir()
    # What the first setup-env built: a script whose interpreter is where the build was made.
    data = _plugin_data(tmp_path, f"#!{tmp_path}/venv.partial/bin/python\n")
    plugin.note_run(str(root), str(data), sys.executable, recorded_day)
    report = doctor.Report()
    doctor.check_hooks(report, private_home)
    [bad] = [f for f in report.findings if not f.ok]
    assert bad.title == "plugin's tokenbudget command runs"
    assert bad.detail.startswith(f"{data / 'venv' / 'bin' / 'tokenbudget'}: ")
    assert "rebuild" in bad.fix


def test_a_plugin_folder_gone_or_seen_long_ago_does_not_count(
    private_home: Path, tmp_path: Path, recorded_day: float
) -> None:
    kept = tmp_path / "kept"
    kept.mkdir()
    plugin.note_run(str(tmp_path / "gone"), None, sys.executable, recorded_day)
    plugin.note_run(str(kept), None, sys.executable, recorded_day - 31 * 86400)
    report = doctor.Report()
    doctor.check_hooks(report, private_home)
    assert [f.title for f in report.findings] == ["hooks are not registered anywhere"]


def test_doctor_says_what_a_prompt_here_would_meet(private_home: Path, recorded_day: float) -> None:
    from tokenbudget import config, sync
    from tokenbudget.budgets import Budget

    install_fixture("loop", private_home / ".claude")
    sync.sync_all(sync.open_store())
    here = Path("/home/dev/project")
    cfg = config.Config(timezone="UTC")
    meets = []
    for budgets in ([Budget("daily", 10_000), Budget("weekly", 20_000)],
                    [Budget("daily", 20_000), Budget("weekly", 1_000_000)],
                    [Budget("daily", 1_000_000)],
                    [Budget("daily", 1_000, project="/elsewhere")],
                    # 18,513 of 18,560 is 99.7%: not yet used up, so it must not read 100%
                    [Budget("daily", 18_560)]):
        report = doctor.Report()
        doctor.check_prompt(report, cfg, budgets, here)
        [finding] = report.findings
        assert (finding.ok, finding.title) == (True, "a prompt here now would meet")
        meets.append(finding.detail)
    assert meets == ["block (daily: 185% used)", "warn (daily: 92% used)", "allow", "allow",
                     "warn (daily: 99% used)"]


def test_a_quick_start_whose_folders_moved_is_a_problem(private_home: Path, tmp_path: Path) -> None:
    settings = private_home / ".claude" / "settings.json"
    paths = claude_settings.site_paths(sys.executable)
    assert paths is not None
    claude_settings.install(settings, sys.executable, paths)
    report = doctor.Report()
    doctor.check_hooks(report, private_home / "project")
    title = "hooks find tokenbudget without site (user)"
    quick = [f for f in _hook_findings(report) if f[1] == title]
    assert quick == [(True, title, f"{sys.executable} -I -S: {', '.join(paths)}")]
    claude_settings.install(settings, sys.executable, [str(tmp_path / "moved")])
    report = doctor.Report()
    doctor.check_hooks(report, private_home / "project")
    (finding,) = [f for f in report.findings if f.title.startswith("hooks find tokenbudget")]
    assert not finding.ok and "No module named 'tokenbudget'" in finding.detail
    assert finding.fix == "reinstall: `tokenbudget install --scope user` (a folder it names moved)"


def test_an_older_install_with_pre_tool_use_is_told_to_reinstall(private_home: Path) -> None:
    settings = private_home / ".claude" / "settings.json"
    claude_settings.install(settings, sys.executable)
    doc = json.loads(settings.read_text())
    command = claude_settings.hook_command(sys.executable, "PreToolUse")
    doc["hooks"]["PreToolUse"] = [{"matcher": "*", "hooks": [{"type": "command",
                                                              "command": command}]}]
    settings.write_text(json.dumps(doc))
    report = doctor.Report()
    doctor.check_hooks(report, private_home / "project")
    (finding,) = [f for f in report.findings if f.title == "hooks registered in user settings"]
    assert not finding.ok and "PreToolUse" in finding.detail
    assert finding.fix == (
        "run `tokenbudget install --scope user` (no longer needed: PreToolUse)"
    )
    claude_settings.install(settings, sys.executable)
    report = doctor.Report()
    doctor.check_hooks(report, private_home / "project")
    (finding,) = [f for f in report.findings if f.title == "hooks registered in user settings"]
    assert finding.ok


def test_doctor_in_the_home_folder_names_the_user_settings_once(private_home: Path) -> None:
    """In the home folder the project's settings file is the user's: one file, one finding."""
    settings = private_home / ".claude" / "settings.json"
    claude_settings.install(settings, sys.executable)
    data = json.loads(settings.read_text())
    data["enabledPlugins"] = {"tokenbudget@tokenbudget": True}
    settings.write_text(json.dumps(data))
    report = doctor.Report()
    doctor.check_hooks(report, private_home)
    titles = [f.title for f in report.findings]
    assert titles.count("hooks registered in user settings") == 1
    assert not [t for t in titles if "project" in t]
    assert doctor.plugin_registrations(private_home) == [
        f"user settings ({settings}): plugin tokenbudget@tokenbudget"
    ]
