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


def run(
    *args: str, home: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE")}
    full.update(HOME=str(home), TOKENBUDGET_HOME=str(home / "tb state"), NO_COLOR="1")
    full.update(env or {})
    return subprocess.run(
        [str(BIN), *args],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single `tokenbudget: ...` line a failure must print, checked to be just that."""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tokenbudget: "), proc.stderr
    assert "Traceback" not in proc.stderr and "Usage:" not in proc.stderr
    return lines[0]


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
        f"/test,1,2706,126,306,6060,{truth_usage('slash').total},"
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
    proc = run("budget", "list", home=private_home)  # budgets it cannot read: an error
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


# --- every failure is one line -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("budget", "set", "daily", "500k", "extra"), "tokenbudget budget set --help"),
        (("report", "--by", "foo"), "'foo' is not one of"),
        (("report", "--json", "--csv"), "choose one of --json, --csv and --html"),
        (("budget", "set", "daily", "-5"), "a limit must be more than 0, not -5"),
        (("budget", "set", "daily", "0"), 'a limit must be more than 0, not "0"'),
        (("budget", "set", "daily", "lots"), 'cannot read "lots" as tokens or dollars'),
        (("budget", "set", "daily", "5k", "--warn-at", "300%"), "warn_at must be above 0%"),
        (("budget", "set", "daily", "5k", "--project", "/no/such/dir"), "/no/such/dir does not"),
        (("budget", "set", "project", "/no/such/dir", "5k"), "/no/such/dir does not exist"),
        (("nosuch",), "no such command 'nosuch'"),
        (("budget", "set"), "missing argument"),
        (("budget", "rm", "daily", "--unit", "eur"), "'eur' is not one of"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(
    private_home: Path, args: tuple[str, ...], says: str
) -> None:
    proc = run(*args, home=private_home)
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc)
    assert says in line and "--help`" in line, line
    assert proc.stdout == ""


def test_usage_error_inside_the_process_is_one_line_too() -> None:
    result = CliRunner().invoke(main, ["report", "--by", "foo"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("tokenbudget: ")


def test_help_and_version_still_work(private_home: Path) -> None:
    version = run("--version", home=private_home)
    assert version.returncode == 0 and "tokenbudget, version" in version.stdout
    helped = run("--help", home=private_home)
    assert helped.returncode == 0 and "Usage: tokenbudget" in helped.stdout
    # A bare group still shows what it holds.
    bare = run("budget", home=private_home)
    assert "Usage: tokenbudget budget" in bare.stdout + bare.stderr


def test_a_broken_data_folder_is_one_line(private_home: Path) -> None:
    state = private_home / "tb state"
    # A folder where the lock file should be: opening it fails with an OSError.
    (state / "ledger.json.lock").mkdir(parents=True)
    proc = run("sync", home=private_home)
    assert proc.returncode == 1
    line = one_line(proc)
    assert "ledger.json.lock" in line, line


def test_unexpected_os_error_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from tokenbudget import sync

    # An OSError no module turned into a TokenbudgetError still leaves as one line, exit 1.
    def denied(*_: object, **__: object) -> None:
        raise PermissionError(13, "Permission denied", "/proc/x")

    monkeypatch.setattr(sync, "open_store", denied)
    result = CliRunner().invoke(main, ["sync"])
    assert result.exit_code == 1
    assert result.output == "tokenbudget: /proc/x: Permission denied\n"


def test_unexpected_bug_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from tokenbudget import sync

    def broken(*_: object, **__: object) -> None:
        raise KeyError("sessions")

    monkeypatch.setattr(sync, "open_store", broken)
    result = CliRunner().invoke(main, ["sync"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "tokenbudget: unexpected error: KeyError: 'sessions' "
        "(TOKENBUDGET_DEBUG=1 shows the traceback; please report it)"
    ]


def test_error_line_is_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    from tokenbudget import cli

    with pytest.raises(SystemExit):
        cli._fail("bad\nthing in /p/\x1b]0;x\x07", 1)
    assert capsys.readouterr().err == "tokenbudget: bad thing in /p/\\x1b]0;x\\x07\n"


# --- install --settings --------------------------------------------------------------------------


def test_install_settings_in_a_missing_folder_is_refused(private_home: Path) -> None:
    target = private_home / "nonexistent" / "dir" / "s.json"
    proc = run("install", "--settings", str(target), "--no-sync", home=private_home)
    assert proc.returncode == 1
    assert "does not exist" in one_line(proc)
    assert not (private_home / "nonexistent").exists()
    # An existing folder is fine, and --scope still creates ~/.claude when it is missing.
    (private_home / "elsewhere").mkdir()
    ok = run(
        "install",
        "--settings",
        str(private_home / "elsewhere" / "s.json"),
        "--no-sync",
        home=private_home,
    )
    assert ok.returncode == 0 and "Registered" in ok.stdout, ok.stderr
    scoped = run("install", "--no-sync", home=private_home)
    assert scoped.returncode == 0 and (private_home / ".claude" / "settings.json").exists()


@pytest.mark.parametrize(
    ("script", "said"),
    [
        # A Python before 3.11, word for word:
        (
            'printf "Unknown option: -P\\nusage: python3 ...\\nTry python -h for more.\\n" >&2;'
            " exit 2",
            "Unknown option: -P",
        ),
        (
            'echo "ModuleNotFoundError: No module named \'tokenbudget\'" >&2; exit 1',
            "No module named 'tokenbudget'",
        ),
    ],
)
def test_install_refuses_an_interpreter_that_cannot_run_the_hooks(
    private_home: Path, script: str, said: str
) -> None:
    python = private_home / "old python" / "python3"
    python.parent.mkdir()
    python.write_text(f"#!/bin/sh\n{script}\n")
    python.chmod(0o755)
    settings = private_home / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text('{"model": "opus"}')
    proc = run("install", "--python", str(python), "--no-sync", home=private_home)
    assert proc.returncode == 1
    line = one_line(proc)
    assert "cannot run the hooks" in line and "3.11" in line, line
    assert said in line, line
    assert settings.read_text() == '{"model": "opus"}'
    ok = run("install", "--python", sys.executable, "--no-sync", home=private_home)
    assert ok.returncode == 0, ok.stderr


# --- the project root ----------------------------------------------------------------------------


def _project_with_budget(home: Path) -> Path:
    project = home / "code" / "app"
    (project / ".claude").mkdir(parents=True)
    (project / ".claude" / "tokenbudget.json").write_text(
        json.dumps({"budgets": [{"kind": "daily", "limit": "2M"}]})
    )
    return project


def test_find_project_root(private_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tokenbudget.config import find_project_root

    project = _project_with_budget(private_home)
    deep = project / "src" / "pkg"
    deep.mkdir(parents=True)
    assert find_project_root(deep) == str(project)
    assert find_project_root(project) == str(project)
    # The budgets file wins over a nearer folder that only has Claude Code settings.
    (project / "src" / ".claude").mkdir()
    assert find_project_root(deep) == str(project)
    # Without any budgets file, the nearest .claude/ folder marks the project.
    other = private_home / "other"
    (other / ".claude").mkdir(parents=True)
    (other / "a" / "b").mkdir(parents=True)
    assert find_project_root(other / "a" / "b") == str(other)
    # ~/.claude is Claude Code's own folder: home is no project, and the walk stops there.
    (private_home / ".claude").mkdir()
    loose = private_home / "loose" / "x"
    loose.mkdir(parents=True)
    assert find_project_root(str(loose)) == str(loose)
    # Nor does a budgets file above home count.
    above = private_home.parent / ".claude"
    above.mkdir()
    (above / "tokenbudget.json").write_text("{}")
    assert find_project_root(str(loose)) == str(loose)
    monkeypatch.setenv("HOME", f"{private_home}/")  # home spelled with a trailing slash
    assert find_project_root(str(loose)) == str(loose)
    # Claude Code's own idea of the project wins.
    monkeypatch.setenv("CLAUDE_PROJECT_DIR", str(other))
    assert find_project_root(deep) == str(other)


def test_commands_in_a_subfolder_see_the_projects_budgets(
    private_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    project = _project_with_budget(private_home)
    sub = project / "src" / "pkg"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    runner = CliRunner()
    listed = runner.invoke(main, ["budget", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [(b["id"], b["source"]) for b in json.loads(listed.output)] == [
        (f"daily@{project}", "project")
    ]
    status = runner.invoke(main, ["status", "--json"])
    assert status.exit_code == 0, status.output
    assert len(json.loads(status.output)["budgets"]) == 1
    doctor = runner.invoke(main, ["doctor", "--json"])
    config_finding = [f for f in json.loads(doctor.output)["findings"] if f["title"] == "config"]
    assert "1 budget(s) apply here" in config_finding[0]["detail"]
    page = tmp_path / "usage.html"
    html = runner.invoke(main, ["report", "--html", str(page)])
    assert html.exit_code == 0, html.output
    assert f"daily@{project}" in page.read_text()


# --- report --project ----------------------------------------------------------------------------


def test_report_project_includes_subfolders(private_home: Path) -> None:
    install_fixture("loop", private_home / ".claude")  # its session ran in /home/dev/project
    runner = CliRunner()
    parent = runner.invoke(main, ["report", "--project", "/home/dev", "--json"])
    assert parent.exit_code == 0, parent.output
    assert json.loads(parent.output)["totals"]["totalTokens"] == truth_usage("loop").total
    exact = runner.invoke(main, ["report", "--project", "/home/dev/project", "--json"])
    assert json.loads(exact.output)["totals"]["totalTokens"] == truth_usage("loop").total
    # A folder whose name only starts the same is another folder: none of the usage is its,
    # and as it does not exist either, it is taken for a typo.
    prefix = runner.invoke(main, ["report", "--project", "/home/dev/proj", "--json"])
    assert prefix.exit_code == 2, prefix.output
    assert "no usage was recorded in it" in prefix.output


# --- budget rm -----------------------------------------------------------------------------------


def test_budget_rm_says_which_budgets_it_removed(private_home: Path) -> None:
    runner = CliRunner()
    for args in (["daily", "500k"], ["daily", "$2"], ["weekly", "1M"], ["weekly", "$9"]):
        assert runner.invoke(main, ["budget", "set", *args]).exit_code == 0
    both = runner.invoke(main, ["budget", "rm", "daily"])
    assert both.exit_code == 0, both.output
    assert both.output.splitlines() == ["Removed daily: 500k tokens.", "Removed daily: $2.00."]
    one = runner.invoke(main, ["budget", "rm", "weekly", "--unit", "usd"])
    assert one.output.splitlines() == ["Removed weekly: $9.00."]
    listed = json.loads(runner.invoke(main, ["budget", "list", "--json"]).output)
    assert [(b["id"], b["unit"]) for b in listed] == [("weekly", "tokens")]


def test_budget_rm_names_the_budgets_there_are(private_home: Path) -> None:
    runner = CliRunner()
    project = private_home / "p"
    project.mkdir()
    runner.invoke(main, ["budget", "set", "monthly", "$100", "--project", str(project)])
    result = runner.invoke(main, ["budget", "rm", "monthly"])
    assert result.exit_code == 1
    assert result.output == (
        f"tokenbudget: no monthly budget without --project; there is monthly@{project} "
        f"($100.00): use `tokenbudget budget rm monthly --project '{project}'`\n"
    )
    wrong_unit = runner.invoke(
        main, ["budget", "rm", "monthly", "--project", str(project), "--unit", "tokens"]
    )
    assert "there is monthly@" in wrong_unit.output and "--unit usd" in wrong_unit.output
    none = runner.invoke(main, ["budget", "rm", "daily"])
    assert none.output == "tokenbudget: no daily budget to remove\n"


# --- rebuild -------------------------------------------------------------------------------------


def test_rebuild_says_the_previous_ledger_is_kept(private_home: Path, recorded_day: float) -> None:
    install_fixture("loop", private_home / ".claude")
    runner = CliRunner()
    assert runner.invoke(main, ["sync"]).exit_code == 0
    result = runner.invoke(main, ["rebuild"])
    assert result.exit_code == 0, result.output
    # Whatever name the ledger gave the file it set aside, the CLI calls it the previous one.
    prefix = "Rebuilt the ledger from 1 transcript(s); the previous ledger is kept as "
    line = result.output.strip()
    assert line.startswith(prefix) and line.endswith("."), line
    kept = line.removeprefix(prefix).removesuffix(".")
    assert (private_home / "tb state" / kept).exists()


# --- control characters from transcripts ---------------------------------------------------------

# As JSON writes it in a transcript line: ESC ] (a window title), BEL, ESC [ 2J (clear the
# screen) and the one-byte C1 CSI.
HOSTILE_CWD = r"/home/dev/\u001b]0;pwned\u0007\u001b[2J\u009b31mx"


def test_control_characters_in_transcripts_never_reach_the_terminal(private_home: Path) -> None:
    projects = install_fixture("loop", private_home / ".claude")
    for path in projects.rglob("*.jsonl"):
        path.write_text(path.read_text().replace('"/home/dev/project"', f'"{HOSTILE_CWD}"'))
    runner = CliRunner()
    table = runner.invoke(main, ["report", "--by", "project"])
    csv = runner.invoke(main, ["report", "--by", "project", "--csv"])
    for result in (table, csv):
        assert result.exit_code == 0, result.output
        assert not any(ch in result.output for ch in "\x1b\x07\x9b"), repr(result.output)
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\x9b31mx" in csv.output
    assert "/home/dev/\\x1" in table.output and "\\x9b31mx" in table.output  # cut in the middle
    # JSON escapes them by itself, and keeps the real folder name.
    data = json.loads(runner.invoke(main, ["report", "--by", "project", "--json"]).output)
    assert data["projects"][0]["project"] == json.loads(f'"{HOSTILE_CWD}"')


def test_control_characters_in_command_names_never_reach_the_terminal(private_home: Path) -> None:
    projects = install_fixture("slash", private_home / ".claude")
    for path in projects.rglob("*.jsonl"):
        path.write_text(path.read_text().replace("/test", r"/te\u001b[2Jst"))
    result = CliRunner().invoke(main, ["report", "--by", "command"])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    # Both the table and the runs chart under it name the command, escaped.
    assert result.output.count("/te\\x1b[2Jst") >= 2, result.output


def test_uninstall_with_an_unreadable_status_line_record_changes_nothing(
    private_home: Path,
) -> None:
    settings = private_home / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps({"statusLine": {"type": "command", "command": "my-line.sh"}}))
    ok = run("install", "--statusline", "--force", "--no-sync", home=private_home)
    assert ok.returncode == 0, ok.stderr
    (private_home / "tb state" / "statusline-previous.json").write_text("{not json")
    before = settings.read_bytes()
    proc = run("uninstall", home=private_home)
    assert proc.returncode == 1
    assert one_line(proc)
    assert settings.read_bytes() == before  # neither the hooks nor the status line went


def test_uninstall_removes_the_settings_file_install_created(private_home: Path) -> None:
    settings = private_home / ".claude" / "settings.json"
    ok = run("install", "--statusline", "--no-sync", home=private_home)
    assert ok.returncode == 0, ok.stderr
    assert settings.exists()
    proc = run("uninstall", home=private_home)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"Removed tokenbudget from {settings}.",
        "Deleted settings.json: there was none before tokenbudget was installed.",
        "Deleted settings.json.tokenbudget-bak: nothing of tokenbudget is left to undo.",
    ]
    assert sorted(p.name for p in settings.parent.iterdir()) == []


READ_ONLY = [
    (("status",), "No budgets."),
    (("status", "--json"), '"budgets": []'),
    (("status", "--check"), ""),
    (("status", "--check", "--session", "abc"), ""),
    (("report",), "No usage found."),
    (("report", "--by", "session", "--json"), '"sessions": []'),
    (("statusline",), "tokenbudget: "),
    (("doctor",), "hooks are not registered"),  # and exits 1: they are not
    (("budget", "simulate", "daily", "500k"), "No recorded usage to replay."),
    (("budget", "suggest"), "daily: no recorded usage"),
    (("budget", "list"), "No budgets."),
]


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("state", ["missing", "empty"])
@pytest.mark.parametrize(("command", "says"), READ_ONLY, ids=[" ".join(c) for c, _ in READ_ONLY])
def test_a_command_that_only_reads_creates_no_state_on_a_machine_without_history(
    private_home: Path, state: str, command: tuple[str, ...], says: str
) -> None:
    """With no ledger and no transcript to record, a command that only reads reports an empty
    history and leaves the state folder as it found it (missing, or empty): no ledger, lock
    or hot copy is written for nothing."""
    if state == "empty":
        (private_home / "tb state").mkdir(mode=0o700)
    before = _listing(private_home)
    proc = run(*command, home=private_home, cwd=private_home)
    assert proc.returncode == (command == ("doctor",)), proc.stderr
    assert says in proc.stdout, proc.stdout
    assert _listing(private_home) == before
