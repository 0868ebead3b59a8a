"""Installing into Claude Code settings files: real files in a temp dir, never the real home."""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenbudget import claude_settings as cs
from tokenbudget.claude_settings import (
    OUR_EVENTS,
    InstallResult,
    Registration,
    desired_hooks,
    find_registrations,
    hook_command,
    install,
    interpreter_of,
    is_our_command,
    is_our_statusline,
    read_settings,
    remove_statusline,
    set_statusline,
    settings_path,
    statusline_command,
    uninstall,
)
from tokenbudget.errors import SettingsError

PY = "/usr/bin/python3"
NEW_PY = "/opt/venvs/tokenbudget 2/bin/python3"
STATUS = "tokenbudget statusline"
PLUGIN_CMD = '"${{CLAUDE_PLUGIN_ROOT}}/hooks/tokenbudget-hook" {}'

FOREIGN: dict[str, Any] = {
    "model": "opus",
    "permissions": {"allow": ["Bash(git status)"], "deny": []},
    "hooks": {
        "PreToolUse": [
            {
                "matcher": "Bash",
                "hooks": [{"type": "command", "command": "guard.sh", "timeout": 5}],
            },
            {"matcher": "*", "hooks": [{"type": "command", "command": "log-all.sh"}]},
        ],
        "Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}],
        "Notification": [{"matcher": "", "hooks": [{"type": "command", "command": "beep"}]}],
    },
    "env": {"FOO": "bar"},
}


def write_json(path: Path, doc: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=4) + "\n")


def _fail_replacing(monkeypatch: pytest.MonkeyPatch, target: Path, error: OSError) -> None:
    """Renaming a file over `target` fails with `error`; every other rename works."""
    real_replace = os.replace

    def failing_replace(src: Any, dst: Any) -> None:
        if Path(dst) == target:
            raise error
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def ours(doc: dict[str, Any], event: str) -> list[dict[str, Any]]:
    return [
        h
        for g in doc.get("hooks", {}).get(event, [])
        for h in g.get("hooks", [])
        if is_our_command(h.get("command"))
    ]


def commands(doc: dict[str, Any], event: str) -> list[str]:
    return [h["command"] for g in doc["hooks"][event] for h in g["hooks"]]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    return tmp_path / "claude" / "settings.json"


# --- commands and recognition ------------------------------------------------------------


def test_hook_command_is_recognised_and_parses_back() -> None:
    cmd = hook_command(PY, "PreToolUse")
    assert cmd == (
        "/usr/bin/python3 -P -c 'from tokenbudget.hook import run; run()' PreToolUse"
    )
    assert is_our_command(cmd)
    assert is_our_command("/usr/bin/python3 -m tokenbudget.hook PreToolUse")  # as written before
    # as written before `run`
    assert is_our_command("/usr/bin/python3 -P -c 'from tokenbudget.hook import main; main()' Stop")
    assert not is_our_command("/usr/bin/python3 -P -c 'import os; main()' PreToolUse")
    assert is_our_command('"${CLAUDE_PLUGIN_ROOT}/hooks/tokenbudget-hook" Stop')
    assert not is_our_command("/x/hooks/tokenbudget-hook Stop")  # not a shape we write
    assert not is_our_command("tokenbudget report")
    assert not is_our_command(None)
    assert interpreter_of(cmd) == PY
    assert interpreter_of("'unterminated") is None
    assert interpreter_of("") is None


@pytest.mark.parametrize(
    "python",
    [
        "/opt/my tools/bin/python3",
        '/tmp/it\'s a "quoted" dir/python3',
        "/tmp/$HOME `x` ;|&/python3",
    ],
)
@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_quoted_command_runs_the_exact_interpreter(tmp_path: Path, python: str, shell: str) -> None:
    # A fake interpreter at an awkward path prints how it was called: the shell must hand it
    # exactly our arguments, and find it at exactly that path.
    fake = tmp_path / python.lstrip("/")
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$0" "$@"\n')
    fake.chmod(0o755)
    cmd = hook_command(str(fake), "SessionEnd")
    words = [str(fake), "-P", "-c", "from tokenbudget.hook import run; run()", "SessionEnd"]
    assert shlex.split(cmd) == words
    assert interpreter_of(cmd) == str(fake)
    out = subprocess.run([shell, "-c", cmd], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == words


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_the_quick_start_hands_python_its_folders_exactly(tmp_path: Path, shell: str) -> None:
    fake = tmp_path / "my tools" / "python3"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$0" "$@"\n')
    fake.chmod(0o755)
    folders = ["/opt/it's a \"lib\"/site-packages", "/home/dév/src $HOME"]
    cmd = hook_command(str(fake), "Stop", folders)
    out = subprocess.run([shell, "-c", cmd], capture_output=True, text=True, check=True)
    code = cs.fast_code(folders)
    assert out.stdout.splitlines() == [str(fake), "-I", "-S", "-c", code, "Stop"]
    namespace: dict[str, Any] = {}
    exec(code.split("; from ")[0].replace("import sys; sys.path[:0]", "found"), namespace)
    assert namespace["found"] == folders  # the JSON list reads as that very Python list
    assert cs.parse_hook_command(cmd) == cs.ParsedHook("module", "Stop", str(fake), tuple(folders))
    assert interpreter_of(cmd) == str(fake)


@pytest.mark.parametrize(
    "code",
    [
        'import sys; sys.path[:0] = ["/x"]; from tokenbudget.hook import main; main(); evil()',
        'import sys; sys.path[:0] = ["/x"]; from tokenbudget.cli import main; main()',
        "import sys; sys.path[:0] = [1]; from tokenbudget.hook import main; main()",
        'import sys; sys.path[:0] = [""]; from tokenbudget.hook import main; main()',
        'import sys; sys.path[:0] = ["/x", ]; from tokenbudget.hook import main; main()',
        "import sys; sys.path[:0] = [; from tokenbudget.hook import main; main()",
    ],
)
def test_only_the_quick_start_we_write_is_ours(code: str) -> None:
    assert not is_our_command(f"/usr/bin/python3 -I -S -c {shlex.quote(code)} Stop")


def test_the_quick_start_runs_the_hook_from_the_folders_it_names(
    private_home: Path, tmp_path: Path
) -> None:
    paths = cs.site_paths(sys.executable)
    assert paths is not None and paths[0] == str(Path(cs.__file__).parent.parent)
    assert cs.quick_start_runs(sys.executable, paths)[0]
    # SessionStart takes the locked way: the ledger, its lock (filelock) and the state folders
    # (platformdirs) are all imported without `site`.
    cmd = hook_command(sys.executable, "SessionStart", paths)
    done = subprocess.run(["sh", "-c", cmd], input='{"session_id": "s-1", "cwd": "/tmp"}',
                          capture_output=True, text=True, check=True, cwd=tmp_path)
    assert (json.loads(done.stdout), done.stderr) == ({}, "")
    assert "s-1" in json.loads((private_home / "tb state" / "ledger.json").read_text())["sessions"]
    moved = [str(tmp_path / "gone")]
    runs, said = cs.quick_start_runs(sys.executable, moved)
    assert not runs and "No module named 'tokenbudget'" in said


def test_no_quick_start_for_an_interpreter_that_cannot_run_it(tmp_path: Path) -> None:
    bare = tmp_path / "bare venv"  # a Python 3.11+ without tokenbudget
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    assert cs.site_paths(str(bare / "bin" / "python")) is None
    assert cs.site_paths(str(tmp_path / "no such python")) is None


def test_upgrade_to_the_quick_start_in_place(settings_file: Path) -> None:
    write_json(settings_file, FOREIGN)
    install(settings_file, PY)
    before = load(settings_file)
    install(settings_file, PY, ["/opt/tb/site-packages"])
    doc = load(settings_file)
    for event in OUR_EVENTS:
        assert [h["command"] for h in ours(doc, event)] == [
            hook_command(PY, event, ["/opt/tb/site-packages"])
        ]
        assert len(doc["hooks"][event]) == len(before["hooks"][event])
    uninstall(settings_file)
    assert load(settings_file) == FOREIGN


def test_desired_hooks_shape() -> None:
    hooks = desired_hooks(PY)
    assert list(hooks) == list(OUR_EVENTS)
    assert set(OUR_EVENTS) == {
        "SessionStart",
        "UserPromptSubmit",
        "PostToolBatch",
        "Stop",
        "SubagentStop",
        "SessionEnd",
    }
    for event, groups in hooks.items():
        assert len(groups) == 1
        (entry,) = groups[0]["hooks"]
        # Nobody waits for these answers; the others answer before Claude Code goes on.
        waits = {} if event in ("SubagentStop", "SessionEnd") else None
        assert entry == {
            "type": "command",
            "command": hook_command(PY, event),
            "timeout": OUR_EVENTS[event].timeout,
            **({"async": True} if waits is not None else {}),
        }
        assert groups[0].get("matcher") in (None, "", "*")
    assert hooks["SessionEnd"][0]["hooks"][0]["timeout"] == 2  # they share ~1.5 s in all
    assert "matcher" not in hooks["PostToolBatch"][0]
    assert "matcher" not in hooks["UserPromptSubmit"][0]
    assert all(spec.timeout == 10 for e, spec in OUR_EVENTS.items() if e != "SessionEnd")


def test_statusline_recognition() -> None:
    assert is_our_statusline("tokenbudget statusline")
    assert is_our_statusline("'/usr/bin/python3' -m tokenbudget.statusline")  # written before
    assert is_our_statusline("'/usr/bin/python3' -P -m tokenbudget.statusline")
    assert statusline_command("/usr/bin/python3") == "/usr/bin/python3 -P -m tokenbudget.statusline"
    assert is_our_statusline(statusline_command(None))
    assert is_our_statusline(statusline_command("/opt/my tools/bin/python3"))
    # Someone's own wrapper around our command is theirs: we never write these shapes.
    assert not is_our_statusline("'/opt/my tools/tokenbudget' statusline --compact")
    assert not is_our_statusline("ccusage statusline")
    assert not is_our_statusline(None)


# --- paths -------------------------------------------------------------------------------


def test_settings_path_scopes(tmp_path: Path, private_home: Path) -> None:
    assert settings_path("user") == private_home / ".claude" / "settings.json"
    assert settings_path("project", tmp_path) == tmp_path / ".claude" / "settings.json"
    assert settings_path("local", tmp_path) == tmp_path / ".claude" / "settings.local.json"
    with pytest.raises(SettingsError, match="unknown settings scope"):
        settings_path("global", tmp_path)


def test_settings_path_honours_claude_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "alt config"))
    path = settings_path("user")
    assert path == tmp_path / "alt config" / "settings.json"
    install(path, PY)
    assert ours(load(path), "Stop")


def test_install_replaces_the_form_written_before(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    old = f"{PY} -m tokenbudget.hook Stop"
    path.write_text(json.dumps({"hooks": {"Stop": [{"hooks": [
        {"type": "command", "command": old, "timeout": 10},
        {"type": "command", "command": "notify-send done"},
    ]}]}}))
    install(path, PY)
    commands = [h["command"] for g in load(path)["hooks"]["Stop"] for h in g["hooks"]]
    assert sorted(commands) == sorted([hook_command(PY, "Stop"), "notify-send done"])
    uninstall(path)
    assert "tokenbudget" not in json.dumps(load(path))


# --- reading -----------------------------------------------------------------------------


def test_read_missing_empty_and_blank(tmp_path: Path) -> None:
    assert read_settings(tmp_path / "nope.json") == {}
    (tmp_path / "empty.json").write_text("")
    assert read_settings(tmp_path / "empty.json") == {}
    (tmp_path / "blank.json").write_text(" \n\t\n")
    assert read_settings(tmp_path / "blank.json") == {}
    (tmp_path / "obj.json").write_text("{}")
    assert read_settings(tmp_path / "obj.json") == {}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"hooks": {', "invalid JSON at line 1"),
        ("[1, 2]", "expected a JSON object at the top, found an array"),
        ('"text"', "found a string"),
        ("null", "found null"),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
)
def test_unreadable_settings_are_refused_and_left_untouched(
    settings_file: Path, content: str | bytes, message: str
) -> None:
    settings_file.parent.mkdir()
    raw = content if isinstance(content, bytes) else content.encode()
    settings_file.write_bytes(raw)
    for action in (
        lambda: read_settings(settings_file),
        lambda: install(settings_file, PY),
        lambda: uninstall(settings_file),
        lambda: set_statusline(settings_file, STATUS),
        lambda: find_registrations(settings_file),
    ):
        with pytest.raises(SettingsError) as info:
            action()
        text = str(info.value)
        assert message in text
        assert str(settings_file) in text
        assert "\n" not in text
    assert settings_file.read_bytes() == raw
    assert sorted(p.name for p in settings_file.parent.iterdir()) == ["settings.json"]


def test_malformed_hooks_section_is_not_rewritten(settings_file: Path) -> None:
    write_json(settings_file, {"hooks": ["not", "an", "object"]})
    before = settings_file.read_bytes()
    with pytest.raises(SettingsError, match='"hooks" is an array'):
        install(settings_file, PY)
    assert uninstall(settings_file).changed is False
    assert settings_file.read_bytes() == before
    assert find_registrations(settings_file) == []
    write_json(settings_file, {"hooks": {"Stop": {"oops": 1}}})
    before = settings_file.read_bytes()
    with pytest.raises(SettingsError, match=r"hooks\.Stop is an object, expected an array"):
        install(settings_file, PY)
    assert settings_file.read_bytes() == before


# --- installing --------------------------------------------------------------------------


BEFORE_RUN = ["from tokenbudget.hook import main; main()",
              "from tokenbudget.relay_hook import main; main()"]


@pytest.mark.parametrize("code", BEFORE_RUN)
@pytest.mark.parametrize("folders", [None, ["/opt/tb site"]])
def test_install_replaces_the_commands_written_before_run(
    tmp_path: Path, code: str, folders: list[str] | None
) -> None:
    # Settings written before `run` call main(): still ours, so that install replaces them
    # (with the code that ends the process early) and uninstall removes them.
    path = tmp_path / "settings.json"
    old = hook_command(PY, "UserPromptSubmit", folders, code)
    assert cs.parse_hook_command(old) == cs.ParsedHook(
        "module", "UserPromptSubmit", PY, None if folders is None else tuple(folders))
    path.write_text(json.dumps({"hooks": {"UserPromptSubmit": [{"hooks": [
        {"type": "command", "command": old, "timeout": 10}]}]}}))
    install(path, PY, folders)
    assert load(path)["hooks"] == desired_hooks(PY, folders)
    assert old not in json.dumps(load(path))
    uninstall(path)
    assert "tokenbudget" not in json.dumps(load(path))


@pytest.mark.parametrize("code", BEFORE_RUN)
def test_a_command_written_before_run_still_answers(private_home: Path, code: str) -> None:
    # Until install runs again, the old command calls main(): the same answer, exit 0.
    cmd = hook_command(sys.executable, "SessionStart", None, code)
    done = subprocess.run(["sh", "-c", cmd], input='{"session_id": "s-1", "cwd": "/tmp"}',
                          capture_output=True, text=True, check=True, cwd=private_home)
    assert (json.loads(done.stdout), done.stderr) == ({}, "")
    assert "s-1" in json.loads((private_home / "tb state" / "ledger.json").read_text())["sessions"]


def test_install_into_missing_file_and_folder(settings_file: Path) -> None:
    old_umask = os.umask(0)  # even a permissive umask must not widen our modes
    try:
        result = install(settings_file, PY)
    finally:
        os.umask(old_umask)
    # The backup says there was no file: uninstall removes it again.
    bak = cs.backup_path(settings_file)
    assert result == InstallResult(settings_file, changed=True, backup=bak)
    assert bak.read_bytes() == cs.ABSENT and stat.S_IMODE(bak.stat().st_mode) == 0o600
    assert load(settings_file) == {"hooks": desired_hooks(PY)}
    assert stat.S_IMODE(settings_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings_file.parent.stat().st_mode) == 0o700
    assert leftovers(settings_file.parent) == []


@pytest.mark.parametrize("content", ["", "  \n", "{}"])
def test_install_into_empty_file(settings_file: Path, content: str) -> None:
    settings_file.parent.mkdir()
    settings_file.write_text(content)
    result = install(settings_file, PY)
    assert result.changed
    assert load(settings_file) == {"hooks": desired_hooks(PY)}
    assert result.backup == settings_file.with_name("settings.json.tokenbudget-bak")
    assert result.backup.read_text() == content
    assert stat.S_IMODE(result.backup.stat().st_mode) == 0o600


def test_install_keeps_foreign_hooks_and_keys_in_place(settings_file: Path) -> None:
    write_json(settings_file, FOREIGN)
    install(settings_file, PY)
    doc = load(settings_file)
    assert list(doc) == list(FOREIGN)  # "hooks" keeps its place among the keys
    for key in ("model", "permissions", "env"):
        assert doc[key] == FOREIGN[key]
    hooks = doc["hooks"]
    # Existing events first, in their order; ours that were missing follow.
    assert list(hooks)[:3] == ["PreToolUse", "Stop", "Notification"]
    assert set(hooks) == set(FOREIGN["hooks"]) | set(OUR_EVENTS)
    assert hooks["PreToolUse"][:2] == FOREIGN["hooks"]["PreToolUse"]
    assert hooks["Stop"][:1] == FOREIGN["hooks"]["Stop"]
    assert hooks["Notification"] == FOREIGN["hooks"]["Notification"]
    for event in OUR_EVENTS:
        assert [h["command"] for h in ours(doc, event)] == [hook_command(PY, event)]


def test_second_install_is_byte_identical_and_makes_no_backup(settings_file: Path) -> None:
    write_json(settings_file, FOREIGN)
    first = install(settings_file, PY)
    assert first.changed and first.backup is not None
    first.backup.unlink()
    before = settings_file.read_bytes()
    mtime = settings_file.stat().st_mtime_ns
    second = install(settings_file, PY)
    assert second == InstallResult(settings_file, changed=False, backup=None)
    assert settings_file.read_bytes() == before
    assert settings_file.stat().st_mtime_ns == mtime
    assert not first.backup.exists()


def test_install_then_uninstall_restores_an_equal_document(settings_file: Path) -> None:
    write_json(settings_file, FOREIGN)
    install(settings_file, PY)
    result = uninstall(settings_file)
    assert result.changed
    doc = load(settings_file)
    assert doc == FOREIGN
    assert list(doc) == list(FOREIGN)
    assert list(doc["hooks"]) == list(FOREIGN["hooks"])
    # Nothing of ours is left to undo, so the backup is not left behind either.
    assert result.backup is None
    assert result.backup_removed == cs.backup_path(settings_file)
    assert not cs.backup_path(settings_file).exists()


def _styled(doc: dict[str, Any], style: str) -> bytes:
    text = {
        "2 spaces": json.dumps(doc, indent=2) + "\n",
        "4 spaces": json.dumps(doc, indent=4) + "\n",
        "tabs": json.dumps(doc, indent="\t") + "\n",
        "no final newline": json.dumps(doc, indent=2),
        "one line": json.dumps(doc),
        "one line, no spaces": json.dumps(doc, separators=(",", ":")) + "\n",
        "crlf": (json.dumps(doc, indent=2) + "\n").replace("\n", "\r\n"),
        "non-ascii kept": json.dumps({**doc, "note": "café ☕"}, indent=2, ensure_ascii=False),
        "non-ascii escaped": json.dumps({**doc, "note": "café ☕"}, indent=2) + "\n",
        "empty": "{}\n",
    }[style]
    return ("\ufeff" + text if style == "crlf" else text).encode("utf-8")


STYLES = ["2 spaces", "4 spaces", "tabs", "no final newline", "one line", "one line, no spaces",
          "crlf", "non-ascii kept", "non-ascii escaped", "empty"]


@pytest.mark.parametrize("style", STYLES)
def test_install_then_uninstall_gives_back_the_same_bytes(settings_file: Path, style: str) -> None:
    original = _styled(FOREIGN, style)
    settings_file.parent.mkdir(parents=True)
    settings_file.write_bytes(original)
    assert install(settings_file, PY).changed
    assert settings_file.read_bytes() != original
    assert uninstall(settings_file).changed
    assert settings_file.read_bytes() == original


# Written by hand: spellings no JSON writer reproduces.
HAND_WRITTEN = (
    b'{\n  "permissions" : {"allow": ["Bash(npm run test:*)", "Read"]},  \n'
    b'  "hooks": {},\n  "cost": 1.50, "big": 1e3,\n'
    b'  "url": "http:\\/\\/x", "name": "caf\\u00e9 and caf\xc3\xa9",\n'
    b'  "model": "opus", "model": "sonnet"\n}\n\n'
)


EMPTY_LISTS = b'{"model": "opus", "hooks": {"PostToolBatch": [], "Stop": []}}\n'
MINE_AND_EMPTY = (
    b'{\n\t"hooks": {"PostToolBatch": [{"hooks": [{"type": "command", "command": "echo mine"}]}],'
    b' "Stop": []}\n}'
)


@pytest.mark.parametrize(
    "original",
    [HAND_WRITTEN, b"", b"  \n", EMPTY_LISTS, MINE_AND_EMPTY],
    ids=["hand", "empty", "blank", "empty event lists", "mine and an empty list"],
)
@pytest.mark.parametrize("statusline", [False, True], ids=["hooks", "hooks and status line"])
def test_uninstall_gives_back_any_file_byte_for_byte(
    settings_file: Path, original: bytes, statusline: bool
) -> None:
    settings_file.parent.mkdir(parents=True)
    settings_file.write_bytes(original)
    install(settings_file, PY)
    if statusline:
        set_statusline(settings_file, STATUS)
    assert settings_file.read_bytes() != original
    if statusline:
        remove_statusline(settings_file)
    uninstall(settings_file)
    assert settings_file.read_bytes() == original
    assert not cs.backup_path(settings_file).exists()


@pytest.mark.parametrize("style", ["2 spaces", "4 spaces", "tabs", "no final newline"])
def test_a_change_made_in_between_is_kept_in_the_file_s_style(
    settings_file: Path, style: str
) -> None:
    settings_file.parent.mkdir(parents=True)
    settings_file.write_bytes(_styled(FOREIGN, style))
    install(settings_file, PY)
    # The user changes a setting while our hooks are in: that survives uninstall, in their style.
    changed = {**load(settings_file), "model": "haiku"}
    settings_file.write_bytes(_styled(changed, style))
    uninstall(settings_file)
    assert settings_file.read_bytes() == _styled({**FOREIGN, "model": "haiku"}, style)


def test_install_then_uninstall_without_hooks_key(settings_file: Path) -> None:
    original = {"model": "sonnet", "statusLine": {"type": "command", "command": "mine.sh"}}
    write_json(settings_file, original)
    install(settings_file, PY)
    uninstall(settings_file)
    assert load(settings_file) == original


def test_uninstall_of_a_file_we_created_removes_it(settings_file: Path) -> None:
    assert not settings_file.exists()
    install(settings_file, PY)
    assert cs.backup_path(settings_file).read_bytes() == cs.ABSENT
    result = uninstall(settings_file)
    assert result.changed and result.deleted
    assert result.backup_removed == cs.backup_path(settings_file)
    assert sorted(p.name for p in settings_file.parent.iterdir()) == []
    assert uninstall(settings_file).changed is False


def test_hooks_then_status_line_on_a_new_file_leave_nothing_behind(settings_file: Path) -> None:
    """The status line set after the hooks keeps the first backup: there was no file."""
    install(settings_file, PY)
    set_statusline(settings_file, statusline_command(None))
    assert cs.backup_path(settings_file).read_bytes() == cs.ABSENT
    assert remove_statusline(settings_file).deleted is False  # our hooks are still there
    assert uninstall(settings_file).deleted
    assert sorted(p.name for p in settings_file.parent.iterdir()) == []


def test_a_file_we_created_and_the_user_added_to_stays(settings_file: Path) -> None:
    install(settings_file, PY)
    doc = load(settings_file)
    doc["model"] = "sonnet"
    write_json(settings_file, doc)
    result = uninstall(settings_file)
    assert result.changed and not result.deleted
    assert load(settings_file) == {"model": "sonnet"}
    assert not cs.backup_path(settings_file).exists()


def test_uninstall_without_anything_of_ours_changes_nothing(settings_file: Path) -> None:
    assert uninstall(settings_file) == InstallResult(settings_file, changed=False)
    assert not settings_file.exists()
    write_json(settings_file, FOREIGN)
    before = settings_file.read_bytes()
    assert uninstall(settings_file) == InstallResult(settings_file, changed=False)
    assert settings_file.read_bytes() == before
    assert not cs.backup_path(settings_file).exists()


def test_shared_matcher_group_keeps_its_foreign_hooks(settings_file: Path) -> None:
    # The user moved our hook into their own match-all group, between two of their hooks.
    shared: dict[str, Any] = {
        "hooks": {
            "PostToolBatch": [
                {
                    "hooks": [
                        {"type": "command", "command": "before.sh"},
                        {"type": "command", "command": hook_command("/old", "PostToolBatch")},
                        {"type": "command", "command": "after.sh"},
                    ],
                }
            ],
            "Stop": [{"hooks": [{"type": "command", "command": "only-foreign.sh"}]}],
            "SessionEnd": [{"matcher": "", "hooks": []}],  # someone's empty group: not ours
        }
    }
    write_json(settings_file, shared)
    install(settings_file, NEW_PY)
    doc = load(settings_file)
    assert commands(doc, "PostToolBatch") == [
        "before.sh",
        hook_command(NEW_PY, "PostToolBatch"),  # upgraded in place, not moved
        "after.sh",
    ]
    assert len(doc["hooks"]["PostToolBatch"]) == 1
    assert doc["hooks"]["Stop"][0] == shared["hooks"]["Stop"][0]
    assert doc["hooks"]["SessionEnd"][0] == {"matcher": "", "hooks": []}
    uninstall(settings_file)
    doc = load(settings_file)
    assert commands(doc, "PostToolBatch") == ["before.sh", "after.sh"]  # group kept: not ours
    assert doc["hooks"]["Stop"] == shared["hooks"]["Stop"]
    assert doc["hooks"]["SessionEnd"] == [{"matcher": "", "hooks": []}]


def test_upgrade_replaces_old_interpreter_without_duplicates(settings_file: Path) -> None:
    write_json(settings_file, FOREIGN)
    install(settings_file, "/old/venv/bin/python3")
    old = load(settings_file)
    result = install(settings_file, NEW_PY)
    assert result.changed
    doc = load(settings_file)
    for event in OUR_EVENTS:
        assert [h["command"] for h in ours(doc, event)] == [hook_command(NEW_PY, event)]
        # Same place as before: only the command changed.
        assert len(doc["hooks"][event]) == len(old["hooks"][event])
    assert {r.command for r in find_registrations(settings_file)} == {
        hook_command(NEW_PY, e) for e in OUR_EVENTS
    }


def test_upgrade_cleans_duplicates_stray_events_and_narrow_matchers(settings_file: Path) -> None:
    stale = {
        "hooks": {
            # Ours under a narrow matcher would miss most tools: replaced by a match-all group.
            "PreToolUse": [
                {"matcher": "Bash", "hooks": [{"type": "command", "command": "guard.sh"}]},
                {
                    "matcher": "Bash",
                    "hooks": [{"type": "command", "command": PLUGIN_CMD.format("PreToolUse")}],
                },
            ],
            "Stop": [
                {"hooks": [{"type": "command", "command": hook_command("/a", "Stop")}]},
                {"hooks": [{"type": "command", "command": hook_command("/b", "Stop")}]},
            ],
            # Events an older version used and this one does not (PostToolBatch replaced
            # PostToolUse).
            "Notification": [
                {"hooks": [{"type": "command", "command": hook_command("/a", "Notification")}]}
            ],
            "PostToolUse": [
                {"matcher": "*",
                 "hooks": [{"type": "command", "command": hook_command("/a", "PostToolUse")}]}
            ],
        }
    }
    write_json(settings_file, stale)
    install(settings_file, PY)
    doc = load(settings_file)
    # PreToolUse is no longer ours: the user's group stays, our entry and its group go.
    assert doc["hooks"]["PreToolUse"] == [
        {"matcher": "Bash", "hooks": [{"type": "command", "command": "guard.sh"}]},
    ]
    assert doc["hooks"]["Stop"] == desired_hooks(PY)["Stop"]
    assert "Notification" not in doc["hooks"] and "PostToolUse" not in doc["hooks"]
    assert doc["hooks"]["PostToolBatch"] == desired_hooks(PY)["PostToolBatch"]


def test_upgrade_keeps_keys_the_user_added_to_our_entry(settings_file: Path) -> None:
    install(settings_file, "/old/python")
    doc = load(settings_file)
    doc["hooks"]["PostToolBatch"][0]["hooks"][0]["onFailure"] = "block"
    write_json(settings_file, doc)
    install(settings_file, PY)
    (entry,) = ours(load(settings_file), "PostToolBatch")
    assert entry == {
        "type": "command",
        "command": hook_command(PY, "PostToolBatch"),
        "timeout": 10,
        "onFailure": "block",
    }


def test_upgrade_says_which_of_our_hooks_claude_code_waits_for(settings_file: Path) -> None:
    # As an older version wrote them: every event waited for, PreToolUse on every tool call.
    old = {
        "hooks": {
            event: [{"hooks": [{"type": "command", "command": hook_command("/old", event),
                                "timeout": spec.timeout}]}]
            for event, spec in {**OUR_EVENTS, "PreToolUse": OUR_EVENTS["Stop"]}.items()
        }
    }
    old["hooks"]["Stop"][0]["hooks"][0]["async"] = True  # not ours to leave so: Stop answers
    write_json(settings_file, old)
    install(settings_file, PY)
    doc = load(settings_file)
    assert "PreToolUse" not in doc["hooks"]
    waited = {e: "async" not in ours(doc, e)[0] for e in OUR_EVENTS}
    assert waited == {e: e not in ("SubagentStop", "SessionEnd") for e in OUR_EVENTS}
    assert ours(doc, "SessionEnd")[0]["async"] is True
    assert all(ours(doc, e) == desired_hooks(PY)[e][0]["hooks"] for e in OUR_EVENTS)


def test_session_start_is_async_in_the_resident_layout_and_waited_for_again_without(
    settings_file: Path,
) -> None:
    from tokenbudget import resident

    setup = resident.Setup(40123, "ab" * 32, "cd" * 32)

    def starts(doc: dict[str, Any]) -> list[dict[str, Any]]:
        return [h for g in doc["hooks"]["SessionStart"] for h in g["hooks"]]

    write_json(settings_file, FOREIGN)
    install(settings_file, PY)
    assert [h.get("async") for h in starts(load(settings_file))] == [None]
    # Over a plain install, and over an older resident layout whose SessionStart was waited.
    for before in ("plain", "older resident"):
        if before == "older resident":
            doc = load(settings_file)
            del starts(doc)[0]["async"]
            write_json(settings_file, doc)
        assert install(settings_file, PY, None, setup).changed
        doc = load(settings_file)
        assert starts(doc) == desired_hooks(PY, None, setup)["SessionStart"][0]["hooks"]
        assert [h["async"] for h in starts(doc)] == [True]
        waited = {e for e in OUR_EVENTS if not any(h.get("async") for h in ours(doc, e))}
        assert waited == {"UserPromptSubmit", "PostToolBatch", "Stop"}
        regs = [r for r in find_registrations(settings_file) if r.event == "SessionStart"]
        assert [r.is_async for r in regs] == [True]
    assert not install(settings_file, PY, None, setup).changed
    # `install` back: waited for again, still one registration, exactly the plain one.
    assert install(settings_file, PY).changed
    doc = load(settings_file)
    assert starts(doc) == desired_hooks(PY)["SessionStart"][0]["hooks"]
    assert "async" not in starts(doc)[0]
    uninstall(settings_file)
    assert "SessionStart" not in load(settings_file).get("hooks", {})


def test_find_registrations(settings_file: Path) -> None:
    assert find_registrations(settings_file) == []
    write_json(settings_file, FOREIGN)
    install(settings_file, NEW_PY)
    regs = find_registrations(settings_file)
    assert sorted(r.event for r in regs) == sorted(OUR_EVENTS)
    batch = next(r for r in regs if r.event == "PostToolBatch")
    assert batch == Registration("PostToolBatch", None, hook_command(NEW_PY, "PostToolBatch"), 10)
    end = next(r for r in regs if r.event == "SessionEnd")
    assert end.timeout == 2
    assert {interpreter_of(r.command) for r in regs} == {NEW_PY}


# --- files: links, modes, permissions, failures ------------------------------------------


def test_symlinked_settings_write_the_target_and_keep_the_link(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "claude-settings.json"
    write_json(real, FOREIGN)
    real.chmod(0o640)
    link = tmp_path / "claude" / "settings.json"
    link.parent.mkdir()
    link.symlink_to(real)
    result = install(link, PY)
    assert link.is_symlink()
    assert link.resolve() == real.resolve()
    assert ours(load(real), "Stop")
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert result.backup == link.with_name("settings.json.tokenbudget-bak")
    assert json.loads(result.backup.read_text()) == FOREIGN
    assert leftovers(real.parent) == [] and leftovers(link.parent) == []
    uninstall(link)
    assert link.is_symlink()
    assert load(real) == FOREIGN


def test_existing_mode_is_kept_and_backup_is_private(settings_file: Path) -> None:
    write_json(settings_file, FOREIGN)
    settings_file.chmod(0o644)
    result = install(settings_file, PY)
    assert stat.S_IMODE(settings_file.stat().st_mode) == 0o644
    assert result.backup is not None
    assert stat.S_IMODE(result.backup.stat().st_mode) == 0o600


def test_read_only_file_is_refused_even_for_root(settings_file: Path) -> None:
    # Root passes every access check and a rename replaces a file whatever its mode, so the
    # module treats "no write bit at all" as the owner's wish. That makes this hold as root too.
    write_json(settings_file, FOREIGN)
    settings_file.chmod(0o444)
    before = settings_file.read_bytes()
    with pytest.raises(SettingsError) as info:
        install(settings_file, PY)
    assert "read-only" in str(info.value) and str(settings_file) in str(info.value)
    assert "\n" not in str(info.value)
    assert settings_file.read_bytes() == before
    assert sorted(p.name for p in settings_file.parent.iterdir()) == ["settings.json"]
    # Nothing to change is not an error, even on a read-only file.
    assert uninstall(settings_file).changed is False


def test_read_only_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(SettingsError, match="not a writable folder"):
            install(folder / ".claude" / "settings.json", PY)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_os_write_failure_is_one_line_and_changes_nothing(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a read-only filesystem (a Nix store, a bind mount) does, which no mode check sees.
    write_json(settings_file, FOREIGN)
    before = settings_file.read_bytes()
    _fail_replacing(monkeypatch, settings_file, OSError(30, "Read-only file system"))
    with pytest.raises(SettingsError, match=r"cannot write .*Read-only file system") as info:
        install(settings_file, PY)
    assert "\n" not in str(info.value)
    assert settings_file.read_bytes() == before
    assert leftovers(settings_file.parent) == []


def test_parent_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "claude").write_text("not a folder")
    with pytest.raises(SettingsError, match="not a writable folder"):
        install(tmp_path / "claude" / "settings.json", PY)


def test_directory_in_place_of_settings_is_refused(settings_file: Path) -> None:
    settings_file.mkdir(parents=True)
    with pytest.raises(SettingsError, match="is a directory"):
        install(settings_file, PY)


# --- concurrent editors ------------------------------------------------------------------


def test_concurrent_edit_between_read_and_write_survives(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_json(settings_file, FOREIGN)
    edited = copy.deepcopy(FOREIGN)
    edited["model"] = "haiku"
    edited["hooks"]["Stop"].append({"hooks": [{"type": "command", "command": "late.sh"}]})
    real_write_temp = cs._write_temp
    calls = {"n": 0}

    def racing_write_temp(*args: Any, **kwargs: Any) -> Path:
        calls["n"] += 1
        if calls["n"] == 1:
            # Another process (here a thread) saves the file after we read it, before we
            # replace it, the way Claude Code saves settings when the user runs /config.
            editor = threading.Thread(target=write_json, args=(settings_file, edited))
            editor.start()
            editor.join()
        return real_write_temp(*args, **kwargs)

    monkeypatch.setattr(cs, "_write_temp", racing_write_temp)
    result = install(settings_file, PY)
    assert result.changed
    doc = load(settings_file)
    assert doc["model"] == "haiku"
    assert "late.sh" in commands(doc, "Stop")
    for event in OUR_EVENTS:
        assert len(ours(doc, event)) == 1
    # The backup is the content we actually replaced: the other process's version.
    assert result.backup is not None
    assert json.loads(result.backup.read_text()) == edited
    assert leftovers(settings_file.parent) == []


def test_a_file_that_never_settles_is_left_to_the_other_writer(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_json(settings_file, FOREIGN)
    real_write_temp = cs._write_temp
    counter = {"n": 0}

    def always_racing(folder: Path, name: str, data: bytes, like: Any) -> Path:
        if name == settings_file.name:
            counter["n"] += 1
            write_json(settings_file, {**FOREIGN, "n": counter["n"]})
        return real_write_temp(folder, name, data, like)

    monkeypatch.setattr(cs, "_write_temp", always_racing)
    with pytest.raises(SettingsError, match="kept changing"):
        install(settings_file, PY)
    assert load(settings_file) == {**FOREIGN, "n": counter["n"]}
    assert leftovers(settings_file.parent) == []


def test_concurrent_process_never_sees_a_half_written_file(settings_file: Path) -> None:
    # A real second process keeps parsing and rewriting the file while we install and
    # uninstall: with atomic replaces neither side ever reads a torn document.
    write_json(settings_file, {"n0": 0})
    script = (
        "import json, os, sys, time\n"
        "p = sys.argv[1]\n"
        "for i in range(1, 60):\n"
        "    d = json.load(open(p))\n"
        "    d[f'n{i}'] = i\n"
        "    t = p + '.other'\n"
        "    open(t, 'w').write(json.dumps(d))\n"
        "    os.replace(t, p)\n"
        "    time.sleep(0.002)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(settings_file)])
    rounds = 0
    try:
        while proc.poll() is None:
            try:
                install(settings_file, PY)
                uninstall(settings_file)
            except SettingsError as exc:
                assert "kept changing" in str(exc)  # the only failure allowed under churn
            rounds += 1
    finally:
        proc.wait()
    assert proc.returncode == 0
    assert rounds > 0
    # Keys the other process lost in the churn are its own doing (it merges blindly); what is
    # there now must all survive our next install.
    before = load(settings_file)
    install(settings_file, PY)
    doc = load(settings_file)
    assert {k: v for k, v in doc.items() if k != "hooks"} == {
        k: v for k, v in before.items() if k != "hooks"
    }
    for event in OUR_EVENTS:
        assert len(ours(doc, event)) == 1
    assert leftovers(settings_file.parent) == []


# --- statusLine --------------------------------------------------------------------------


def test_statusline_set_update_and_remove(settings_file: Path) -> None:
    write_json(settings_file, {"model": "opus"})
    assert set_statusline(settings_file, STATUS).changed
    assert load(settings_file)["statusLine"] == {"type": "command", "command": STATUS}
    assert set_statusline(settings_file, STATUS).changed is False
    doc = load(settings_file)
    doc["statusLine"]["padding"] = 1
    write_json(settings_file, doc)
    newer = "'/opt/my tools/bin/python3' -m tokenbudget.statusline"
    assert set_statusline(settings_file, newer).changed
    assert load(settings_file)["statusLine"] == {"type": "command", "command": newer, "padding": 1}
    assert remove_statusline(settings_file).changed
    assert load(settings_file) == {"model": "opus"}
    assert remove_statusline(settings_file).changed is False


def test_foreign_statusline_needs_force(settings_file: Path) -> None:
    foreign = {"type": "command", "command": "~/.claude/my-status.sh"}
    write_json(settings_file, {"statusLine": foreign})
    before = settings_file.read_bytes()
    with pytest.raises(SettingsError, match="use --force") as info:
        set_statusline(settings_file, STATUS)
    assert "my-status.sh" in str(info.value) and "\n" not in str(info.value)
    assert settings_file.read_bytes() == before
    assert remove_statusline(settings_file).changed is False
    assert settings_file.read_bytes() == before
    result = set_statusline(settings_file, STATUS, force=True)
    assert load(settings_file)["statusLine"] == {"type": "command", "command": STATUS}
    assert result.backup is not None
    assert json.loads(result.backup.read_text()) == {"statusLine": foreign}


def test_statusline_and_hooks_coexist(settings_file: Path) -> None:
    install(settings_file, PY)
    set_statusline(settings_file, STATUS)
    uninstall(settings_file)
    assert load(settings_file) == {"statusLine": {"type": "command", "command": STATUS}}
    remove_statusline(settings_file)
    assert load(settings_file) == {}


# --- the merge as a property -------------------------------------------------------------

_names = st.sampled_from([*OUR_EVENTS, "Notification", "PreCompact"])
_foreign_hook = st.fixed_dictionaries(
    {
        "type": st.just("command"),
        "command": st.sampled_from(
            ["a.sh", "b --x", "tokenbudget report", "~/bin/audit-tokenbudget.hook.sh"]
        ),
    },
    optional={"timeout": st.integers(1, 60)},
)
_our_hook = st.builds(
    lambda py, ev: {
        "type": "command",
        "command": cs.portable_hook_command(ev) if py is None else hook_command(py, ev),
        "timeout": 10,
    },
    st.sampled_from(["/old/py", PY, "/p q/py", None]),
    _names,
)
_group = st.builds(
    lambda matcher, hooks: ({} if matcher is None else {"matcher": matcher}) | {"hooks": hooks},
    st.sampled_from([None, "", "*", "Bash"]),
    st.lists(st.one_of(_foreign_hook, _our_hook), max_size=4),
)
_docs = st.fixed_dictionaries(
    {"hooks": st.dictionaries(_names, st.lists(_group, min_size=1, max_size=3), min_size=1)},
    optional={"model": st.just("opus")},
)


def _without_ours(doc: dict[str, Any]) -> dict[str, Any]:
    return cs._merge_uninstall(copy.deepcopy(doc))


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_docs)
def test_merge_properties(doc: dict[str, Any]) -> None:
    path = Path("settings.json")
    once = cs._merge_install(copy.deepcopy(doc), PY, path)
    # Idempotent, and exactly one hook of ours per event, in a match-all group.
    assert cs._merge_install(copy.deepcopy(once), PY, path) == once
    for event in OUR_EVENTS:
        found = [
            (g.get("matcher"), h["command"])
            for g in once["hooks"][event]
            for h in g["hooks"]
            if is_our_command(h["command"])
        ]
        assert len(found) == 1
        assert found[0][0] in (None, "", "*")
        assert found[0][1] == hook_command(PY, event)
    # Uninstall after install gives what uninstall alone would: foreign entries never move.
    assert cs._merge_uninstall(copy.deepcopy(once)) == _without_ours(doc)
    # A document with nothing of ours comes back equal.
    clean = _without_ours(doc)
    assert cs._merge_uninstall(cs._merge_install(copy.deepcopy(clean), PY, path)) == clean


# --- only what we write is ours -----------------------------------------------------------

LOOKALIKES = [
    "~/bin/audit-tokenbudget.hook.sh",
    "notify-send tokenbudget-hooked",
    "echo tokenbudget.hook >> ~/hooks.log",
    "/usr/bin/python3 -m tokenbudget.hook",  # no event
    "/usr/bin/python3 -m tokenbudget.hook NotAnEvent",
    "/usr/bin/python3 -m tokenbudget.hook Stop && notify-send done",
    "/usr/bin/python3 -m tokenbudget.hooks Stop",
    "/x/hooks/tokenbudget-hook Stop",
    "tokenbudget-hook Stop; curl example.invalid",
    "tokenbudget-hook Stop || my-fallback.sh",
    "'${CLAUDE_PLUGIN_ROOT}/hooks/tokenbudget-hook Stop'",  # one word, not shim + event
]


@pytest.mark.parametrize("command", LOOKALIKES)
def test_a_command_that_mentions_us_is_not_ours(command: str) -> None:
    assert not is_our_command(command)
    assert cs.parse_hook_command(command) is None
    assert interpreter_of(command) is None


@pytest.mark.parametrize("event", sorted(OUR_EVENTS))
def test_every_shape_we_write_is_ours(event: str) -> None:
    assert cs.parse_hook_command(hook_command(NEW_PY, event)) == (
        cs.ParsedHook("module", event, NEW_PY)
    )
    for portable in (cs.portable_hook_command(event), f"tokenbudget-hook {event}"):
        assert cs.parse_hook_command(portable) == cs.ParsedHook("portable", event, None)
        assert interpreter_of(portable) is None
    assert cs.hook_form(PLUGIN_CMD.format(event)) == "plugin"
    assert interpreter_of(PLUGIN_CMD.format(event)) is None


def test_install_and_uninstall_leave_lookalike_hooks_alone(settings_file: Path) -> None:
    # Each lookalike sits first in a match-all group of an event we register: exactly where
    # install looks for an entry of ours to update in place.
    original: dict[str, Any] = {
        "hooks": {
            event: [{"matcher": "*", "hooks": [{"type": "command", "command": cmd}]}]
            for event, cmd in zip(OUR_EVENTS, LOOKALIKES, strict=False)
        }
    }
    original["hooks"]["Stop"][0]["hooks"] += [
        {"type": "command", "command": cmd} for cmd in LOOKALIKES
    ]
    write_json(settings_file, original)
    install(settings_file, PY)
    doc = load(settings_file)
    for event, groups in original["hooks"].items():
        assert doc["hooks"][event][: len(groups)] == groups  # untouched, in place
        assert [h["command"] for h in ours(doc, event)] == [hook_command(PY, event)]
    assert uninstall(settings_file).changed
    assert load(settings_file) == original


@pytest.mark.parametrize(
    "command", ["~/bin/tokenbudget statusline-wrapper.sh", "my-tokenbudget.statusline.sh"]
)
def test_a_statusline_that_mentions_us_is_not_ours(settings_file: Path, command: str) -> None:
    write_json(settings_file, {"statusLine": {"type": "command", "command": command}})
    before = settings_file.read_bytes()
    assert not is_our_statusline(command)
    with pytest.raises(SettingsError, match="use --force"):
        set_statusline(settings_file, STATUS)
    assert remove_statusline(settings_file).changed is False
    assert settings_file.read_bytes() == before


# --- the portable form for shared (project) settings ---------------------------------------


def test_desired_hooks_portable_form_names_no_interpreter() -> None:
    hooks = desired_hooks(None)
    assert list(hooks) == list(OUR_EVENTS)
    for event, groups in hooks.items():
        (entry,) = groups[0]["hooks"]
        assert entry == {
            **desired_hooks(PY)[event][0]["hooks"][0],
            "command": cs.portable_hook_command(event),
        }
        assert groups[0].get("matcher") == desired_hooks(PY)[event][0].get("matcher")
    assert sys.executable not in json.dumps(hooks)
    assert statusline_command(None) == "tokenbudget statusline"


def _shell(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"no {name} here")
    return found


def _run_portable(
    shell: str, event: str, path_dirs: list[Path], stdin: str = "{}"
) -> subprocess.CompletedProcess[str]:
    # Claude Code runs a hook command through a shell; only PATH decides what it finds.
    env = {"PATH": os.pathsep.join(str(d) for d in path_dirs)}
    env.update({k: v for k, v in os.environ.items() if k in ("HOME", "TOKENBUDGET_HOME")})
    return subprocess.run(
        [shell, "-c", cs.portable_hook_command(event)],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("shell", ["sh", "bash"])
@pytest.mark.parametrize("setup", ["not installed", "interpreter gone", "exits 1"])
def test_portable_command_fails_open_visibly(tmp_path: Path, shell: str, setup: str) -> None:
    shell_path = _shell(shell)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    if setup != "not installed":
        script = bindir / "tokenbudget-hook"
        first = "#!/nonexistent/venv/bin/python3" if setup == "interpreter gone" else "#!/bin/sh"
        script.write_text(f"{first}\nexit 1\n")
        script.chmod(0o755)
    for event in OUR_EVENTS:
        proc = _run_portable(shell_path, event, [bindir])
        assert proc.returncode == 0, proc.stderr  # non-zero would only be a hidden hook error
        answer = json.loads(proc.stdout)  # exactly one JSON object, apostrophe and all
        if event in ("SessionStart", "UserPromptSubmit"):
            message = answer["systemMessage"]
            assert "not installed" in message and "project's token budgets are not enforced" in (
                message
            )
        else:
            assert answer == {}
        if setup == "not installed":
            assert proc.stderr == ""


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_portable_command_hands_event_and_stdin_to_tokenbudget_hook(
    tmp_path: Path, shell: str
) -> None:
    bindir = tmp_path / "bin dir"
    bindir.mkdir()
    script = bindir / "tokenbudget-hook"
    script.write_text('#!/bin/sh\nprintf \'{"argv": "%s", "stdin": %s}\\n\' "$*" "$(cat)"\n')
    script.chmod(0o755)
    payload = json.dumps({"hook_event_name": "Stop", "note": 'it\'s "quoted" $HOME `x`'})
    # The system folders too: the fake script needs cat.
    proc = _run_portable(_shell(shell), "Stop", [bindir, Path("/usr/bin"), Path("/bin")], payload)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"argv": "Stop", "stdin": json.loads(payload)}


def test_the_console_script_answers_through_the_portable_command(private_home: Path) -> None:
    # The real `tokenbudget-hook` console script (pyproject [project.scripts]) reads the event
    # from argv[1] like `python -m tokenbudget.hook EVENT`.
    script = Path(sys.executable).parent / "tokenbudget-hook"
    assert script.exists(), "run `pip install -e .`: the tokenbudget-hook script is missing"
    event = {
        "session_id": "portable-test",
        "transcript_path": str(private_home / "none.jsonl"),
        "cwd": str(private_home),
        "hook_event_name": "SessionStart",
    }
    proc = _run_portable(
        _shell("sh"),
        "SessionStart",  # a session start is always recorded: the ledger shows the hook ran
        [script.parent, Path("/usr/bin"), Path("/bin")],
        stdin=json.dumps(event),
    )
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert "not installed" not in answer.get("systemMessage", "")
    assert (private_home / "tb state" / "ledger.json").exists()  # the hook itself ran
    direct = subprocess.run(
        [str(script)], input="", capture_output=True, text=True, timeout=60, check=False
    )
    assert (direct.returncode, direct.stdout) == (0, "{}\n")  # no event: nothing to do


def test_install_switches_between_portable_and_module_forms_in_place(settings_file: Path) -> None:
    write_json(settings_file, FOREIGN)
    install(settings_file, None)
    doc = load(settings_file)
    for event in OUR_EVENTS:
        assert [h["command"] for h in ours(doc, event)] == [cs.portable_hook_command(event)]
    regs = find_registrations(settings_file)
    assert sorted(r.event for r in regs) == sorted(OUR_EVENTS)
    assert {interpreter_of(r.command) for r in regs} == {None}
    assert {cs.hook_form(r.command) for r in regs} == {"portable"}
    assert install(settings_file, None).changed is False
    install(settings_file, PY)
    moved = load(settings_file)
    for event in OUR_EVENTS:
        assert [h["command"] for h in ours(moved, event)] == [hook_command(PY, event)]
        assert len(moved["hooks"][event]) == len(doc["hooks"][event])  # updated, not added
    install(settings_file, None)
    uninstall(settings_file)
    assert load(settings_file) == FOREIGN


# --- a statusLine we replace comes back ---------------------------------------------------

MINE = {"type": "command", "command": "~/.claude/my-status.sh", "padding": 2}


def previous(settings: Path) -> Any:
    record = load(cs.previous_statusline_path())
    return record["statusLines"].get(os.path.realpath(settings))


def test_forced_statusline_comes_back_on_uninstall(settings_file: Path) -> None:
    write_json(settings_file, {**FOREIGN, "statusLine": MINE})
    install(settings_file, PY)
    set_statusline(settings_file, STATUS, force=True)
    install(settings_file, NEW_PY)
    set_statusline(settings_file, "'/opt/py' -m tokenbudget.statusline")
    # What we replaced must not depend on the settings backup, which the user may delete.
    cs.backup_path(settings_file).unlink()
    uninstall(settings_file)
    result = remove_statusline(settings_file)
    assert load(settings_file) == {**FOREIGN, "statusLine": MINE}
    assert result.changed and result.restored == MINE
    assert previous(settings_file) is None
    assert remove_statusline(settings_file).changed is False


def test_the_record_is_private_and_keyed_by_resolved_path(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "settings.json"
    write_json(real, {"statusLine": MINE})
    link = tmp_path / "claude" / "settings.json"
    link.parent.mkdir()
    link.symlink_to(real)
    set_statusline(link, STATUS, force=True)
    record = cs.previous_statusline_path()
    assert record == cs.paths.data_dir() / "statusline-previous.json"
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert load(record) == {
        "version": 1,
        "statusLines": {os.path.realpath(real): {"statusLine": MINE}},
    }


def test_replaced_statuslines_are_remembered_per_file(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "settings.json"
    write_json(real, {"statusLine": MINE})
    link = tmp_path / "claude" / "settings.json"
    link.parent.mkdir()
    link.symlink_to(real)
    other = tmp_path / "project" / ".claude" / "settings.json"
    theirs = {"type": "command", "command": "starship statusline"}
    write_json(other, {"statusLine": theirs})
    set_statusline(link, STATUS, force=True)
    set_statusline(other, STATUS, force=True)
    assert previous(real) == {"statusLine": MINE}  # one file, whichever name it is given
    assert remove_statusline(real).restored == MINE
    assert link.is_symlink() and load(real) == {"statusLine": MINE}
    assert previous(other) == {"statusLine": theirs}
    assert remove_statusline(other).restored == theirs


def test_a_statusline_the_user_changed_since_is_not_overwritten(settings_file: Path) -> None:
    write_json(settings_file, {"statusLine": MINE})
    set_statusline(settings_file, STATUS, force=True)
    newer = {"type": "command", "command": "ccusage statusline"}
    write_json(settings_file, {"statusLine": newer})  # the user replaced ours by hand
    assert remove_statusline(settings_file).changed is False
    assert load(settings_file) == {"statusLine": newer}
    assert previous(settings_file) is None  # done with: it must not come back later
    set_statusline(settings_file, STATUS, force=True)
    assert remove_statusline(settings_file).restored == newer


def test_a_statusline_the_user_removed_since_does_not_come_back(settings_file: Path) -> None:
    write_json(settings_file, {"statusLine": MINE})
    set_statusline(settings_file, STATUS, force=True)
    write_json(settings_file, {})  # the user dropped the status line altogether
    set_statusline(settings_file, STATUS)
    result = remove_statusline(settings_file)
    assert result.changed and result.restored is None
    assert load(settings_file) == {}


def test_a_statusline_we_cannot_remember_is_not_replaced(settings_file: Path) -> None:
    write_json(settings_file, {"statusLine": MINE})
    before = settings_file.read_bytes()
    record = cs.previous_statusline_path()
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text('{"version": 99, "statusLines": {}}')
    with pytest.raises(SettingsError, match="newer tokenbudget"):
        set_statusline(settings_file, STATUS, force=True)
    record.write_text('{"statusLines": []}')
    with pytest.raises(SettingsError, match="fix or delete") as info:
        set_statusline(settings_file, STATUS, force=True)
    assert str(record) in str(info.value) and "\n" not in str(info.value)
    assert settings_file.read_bytes() == before
    assert record.read_text() == '{"statusLines": []}'  # never silently reset


# --- the backup does not outlive us -------------------------------------------------------


def test_uninstall_deletes_the_backup_once_nothing_of_ours_is_left(tmp_path: Path) -> None:
    path = settings_path("project", tmp_path)
    write_json(path, FOREIGN)
    assert install(path, None).backup == cs.backup_path(path)
    set_statusline(path, statusline_command(None))
    assert cs.backup_path(path).exists()  # after install the backup is the way back
    hooks_gone = uninstall(path)
    # Our statusLine is still there: the backup still undoes something of ours.
    assert hooks_gone.backup == cs.backup_path(path) and hooks_gone.backup_removed is None
    assert cs.backup_path(path).exists()
    line_gone = remove_statusline(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["settings.json"]
    assert load(path) == FOREIGN
    assert line_gone.changed and line_gone.backup is None
    assert line_gone.backup_removed == cs.backup_path(path)


def test_a_failed_uninstall_keeps_the_backup(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_json(settings_file, FOREIGN)
    install(settings_file, PY)
    _fail_replacing(monkeypatch, settings_file, OSError(28, "No space left on device"))
    with pytest.raises(SettingsError, match="No space left"):
        uninstall(settings_file)
    assert cs.backup_path(settings_file).exists()
    assert ours(load(settings_file), "Stop")
