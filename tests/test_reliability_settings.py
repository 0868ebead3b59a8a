"""Settings safety: another process edits settings.json at every step of our install and
uninstall; symlinked and unwritable files.

tests/test_claude_settings.py covers one edit while our temp file is written, a file that
never settles, torn reads under churn, a read-only file and folder (mode bits, which hold even
for root) and a write refused by the OS (simulated). This adds an edit at each other step, the
symlinked cases, and a refusal by the kernel itself that root cannot override.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tokenbudget import claude_settings as cs
from tokenbudget.errors import SettingsError

PY = "/usr/bin/python3"
STATUS = "tokenbudget statusline"


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def ours(doc: dict[str, Any]) -> int:
    return sum(1 for groups in doc.get("hooks", {}).values() for g in groups
               for h in g.get("hooks", []) if cs.is_our_command(h.get("command")))


def editor_save(path: Path, key: str, *, atomic: bool = True) -> None:
    """What another program does: read the file, add its own key, save (atomically or not)."""
    doc = load(path) if path.exists() else {}
    doc[key] = {"set by": "the other writer"}
    data = json.dumps(doc, indent=2)
    if atomic:
        tmp = path.with_name(path.name + ".editor-tmp")
        tmp.write_text(data)
        os.replace(tmp, path)
    else:
        path.write_text(data)


OPS: dict[str, Callable[[Path], object]] = {
    "install": lambda p: cs.install(p, PY),
    "uninstall": cs.uninstall,
    "statusline": lambda p: cs.set_statusline(p, STATUS),
}


def prepare(path: Path, op: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": "opus", "env": {"A": "1"}}))
    if op == "uninstall":
        cs.install(path, PY)


def check_result(path: Path, op: str) -> None:
    doc = load(path)
    assert doc["model"] == "opus" and doc["env"] == {"A": "1"}
    if op == "install":
        assert ours(doc) == len(cs.OUR_EVENTS)
    elif op == "uninstall":
        assert ours(doc) == 0
    else:
        assert doc["statusLine"]["command"] == STATUS
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


STAGES = ["after our read", "while our temp file is written", "while the backup is written"]


@pytest.mark.parametrize("atomic", [True, False], ids=["atomic save", "in-place save"])
@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("op", list(OPS))
def test_an_edit_at_any_step_survives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      op: str, stage: str, atomic: bool) -> None:
    path = tmp_path / "claude" / "settings.json"
    prepare(path, op)
    if stage == STAGES[2]:
        # A backup is written only where none is kept from before our install.
        cs.backup_path(path).unlink(missing_ok=True)
    edits = {"n": 0}

    def edit_once() -> None:
        if edits["n"] == 0:
            edits["n"] += 1
            editor_save(path, "otherKey", atomic=atomic)

    real_snapshot, real_write_temp = cs._snapshot, cs._write_temp

    def snapshot(p: Path) -> Any:
        snap = real_snapshot(p)
        if stage == STAGES[0]:
            edit_once()
        return snap

    def write_temp(folder: Path, name: str, data: bytes, like: Any) -> Path:
        is_backup = name.endswith(cs.BACKUP_SUFFIX)
        if (stage == STAGES[1] and not is_backup) or (stage == STAGES[2] and is_backup):
            edit_once()
        return real_write_temp(folder, name, data, like)

    monkeypatch.setattr(cs, "_snapshot", snapshot)
    monkeypatch.setattr(cs, "_write_temp", write_temp)
    OPS[op](path)
    assert edits["n"] == 1
    assert load(path)["otherKey"] == {"set by": "the other writer"}
    check_result(path, op)


@pytest.mark.xfail(strict=True, reason=(
    "claude_settings._update compares the file with what it read, then os.replace()s: an edit "
    "landing between that last check and the rename (a window of some 30 microseconds) is "
    "overwritten. Claude Code takes no lock we could share; closing it would need "
    "renameat2(RENAME_EXCHANGE) and a merge of what was swapped out. bench/stress_reliability.py "
    "measures how often an editor saving 1000 times a second loses an edit."))
@pytest.mark.parametrize("op", list(OPS))
def test_an_edit_between_the_last_check_and_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, op: str
) -> None:
    path = tmp_path / "claude" / "settings.json"
    prepare(path, op)
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(dst) == path and str(src).endswith(".tmp"):
            editor_save(path, "otherKey", atomic=False)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    OPS[op](path)
    monkeypatch.setattr(os, "replace", real_replace)
    assert load(path).get("otherKey") == {"set by": "the other writer"}


# --- symlinks -----------------------------------------------------------------------------------


def linked(tmp_path: Path) -> tuple[Path, Path]:
    real = tmp_path / "dotfiles" / "claude-settings.json"
    real.parent.mkdir()
    real.write_text(json.dumps({"model": "opus", "env": {"A": "1"}}))
    link = tmp_path / "claude" / "settings.json"
    link.parent.mkdir()
    link.symlink_to(real)
    return link, real


@pytest.mark.parametrize("op", list(OPS))
def test_symlinked_file_edited_through_the_link_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, op: str
) -> None:
    link, real = linked(tmp_path)
    if op == "uninstall":
        cs.install(link, PY)
    real_snapshot = cs._snapshot
    calls = {"n": 0}

    def snapshot(p: Path) -> Any:
        snap = real_snapshot(p)
        calls["n"] += 1
        if calls["n"] == 1:
            editor_save(real, "otherKey", atomic=False)  # writes through to the target
        return snap

    monkeypatch.setattr(cs, "_snapshot", snapshot)
    OPS[op](link)
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert load(real)["otherKey"] == {"set by": "the other writer"}
    check_result(real, op)


@pytest.mark.parametrize("op", list(OPS))
def test_symlink_replaced_by_a_file_meanwhile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             op: str) -> None:
    # An editor saving atomically through a symlink replaces the link with a plain file.
    # Our change must land in the file Claude Code reads, with the editor's change kept.
    link, _ = linked(tmp_path)
    if op == "uninstall":
        cs.install(link, PY)
    real_snapshot = cs._snapshot
    calls = {"n": 0}

    def snapshot(p: Path) -> Any:
        snap = real_snapshot(p)
        calls["n"] += 1
        if calls["n"] == 1:
            editor_save(link, "otherKey", atomic=True)
        return snap

    monkeypatch.setattr(cs, "_snapshot", snapshot)
    result = OPS[op](link)
    assert not link.is_symlink()
    assert load(link)["otherKey"] == {"set by": "the other writer"}
    check_result(link, op)
    assert isinstance(result, cs.InstallResult) and result.changed


def test_symlink_to_a_read_only_file_is_refused(tmp_path: Path) -> None:
    link, real = linked(tmp_path)
    real.chmod(0o444)
    before = real.read_bytes()
    with pytest.raises(SettingsError) as info:
        cs.install(link, PY)
    message = str(info.value)
    assert "read-only" in message and str(link) in message and str(real) in message
    assert "\n" not in message
    assert real.read_bytes() == before and link.is_symlink()


def test_symlink_into_a_read_only_folder_is_refused(tmp_path: Path) -> None:
    link, real = linked(tmp_path)
    real.parent.chmod(0o555)
    try:
        with pytest.raises(SettingsError, match="not a writable folder"):
            cs.install(link, PY)
        assert link.is_symlink() and load(real) == {"model": "opus", "env": {"A": "1"}}
    finally:
        real.parent.chmod(0o755)


def test_dangling_symlink_gets_its_target_created(tmp_path: Path) -> None:
    link = tmp_path / "claude" / "settings.json"
    link.parent.mkdir()
    target = tmp_path / "dotfiles" / "settings.json"
    link.symlink_to(target)
    cs.install(link, PY)
    assert link.is_symlink() and ours(load(target)) == len(cs.OUR_EVENTS)


def test_symlink_loop_is_one_clear_line(tmp_path: Path) -> None:
    link = tmp_path / "settings.json"
    link.symlink_to(link)
    with pytest.raises(SettingsError) as info:
        cs.install(link, PY)
    assert str(link) in str(info.value) and "\n" not in str(info.value)
    assert link.is_symlink()


# --- a refusal root cannot override -------------------------------------------------------------


def _sysfs() -> Path | None:
    """A sysfs folder: the kernel refuses to create files there, for root too."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in mounts:
        fields = line.split()
        if len(fields) > 2 and fields[2] == "sysfs" and Path(fields[1], "kernel").is_dir():
            return Path(fields[1], "kernel")
    return None


def test_a_folder_the_kernel_will_not_write_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Mode bits stop root only because claude_settings honours them on purpose; sysfs refuses
    # root for real. Without sysfs (not Linux), a read-only filesystem is simulated instead.
    folder = _sysfs()
    if folder is None:
        folder = tmp_path
        real_mkstemp = cs.tempfile.mkstemp

        def erofs(*args: Any, **kwargs: Any) -> Any:
            raise OSError(30, "Read-only file system")

        monkeypatch.setattr(cs.tempfile, "mkstemp", erofs)
        del real_mkstemp
    for path in (folder / "settings.json", folder / f"tb-test-{os.getpid()}" / "settings.json"):
        with pytest.raises(SettingsError) as info:
            cs.install(path, PY)
        message = str(info.value)
        assert message.startswith("cannot ") and str(path) in message and "\n" not in message
        assert not path.exists()


# --- the statusLine we replace, while the user changes it ---------------------------------------


@pytest.mark.parametrize("stage", STAGES[:2])
def test_the_statusline_remembered_is_the_one_actually_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    # The user switches their own status line while we force ours in: the merge is redone on
    # the new content, so the one to give back on uninstall is the newer, not the one first read.
    path = tmp_path / "claude" / "settings.json"
    path.parent.mkdir()
    old_line = {"type": "command", "command": "old-status.sh"}
    new_line = {"type": "command", "command": "new-status.sh", "padding": 1}
    path.write_text(json.dumps({"model": "opus", "statusLine": old_line}))
    edits = {"n": 0}

    def switch_once(p: Path) -> None:
        if edits["n"] == 0 and p == path:
            edits["n"] += 1
            doc = load(path)
            doc["statusLine"] = new_line
            path.write_text(json.dumps(doc))

    real_snapshot, real_write_temp = cs._snapshot, cs._write_temp

    def snapshot(p: Path) -> Any:
        snap = real_snapshot(p)
        if stage == STAGES[0]:
            switch_once(p)
        return snap

    def write_temp(folder: Path, name: str, data: bytes, like: Any) -> Path:
        if stage == STAGES[1] and name == path.name:
            switch_once(path)
        return real_write_temp(folder, name, data, like)

    monkeypatch.setattr(cs, "_snapshot", snapshot)
    monkeypatch.setattr(cs, "_write_temp", write_temp)
    cs.set_statusline(path, STATUS, force=True)
    # Not monkeypatch.undo(): that would also undo the private HOME of conftest.
    monkeypatch.setattr(cs, "_snapshot", real_snapshot)
    monkeypatch.setattr(cs, "_write_temp", real_write_temp)
    assert edits["n"] == 1
    assert load(path)["statusLine"]["command"] == STATUS
    result = cs.remove_statusline(path)
    assert result.restored == new_line
    assert load(path) == {"model": "opus", "statusLine": new_line}
