"""Claude Code settings files: add, find and remove tokenbudget's hooks and statusLine.

The settings file belongs to the user and to Claude Code, not to us. So we only ever touch
entries we can recognise as ours, a second install changes nothing, and uninstall removes our
part alone. Every write is atomic, keeps the file's mode, leaves a backup of the previous
content and does not clobber an edit another process made while we were merging.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import os
import shlex
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from tokenbudget.errors import SettingsError
from tokenbudget.paths import claude_settings_dir

# Substrings that make a hook command ours: the module form and a console-script/shim form.
HOOK_MARKERS = ("tokenbudget.hook", "tokenbudget-hook")
STATUSLINE_MARKERS = ("tokenbudget statusline", "tokenbudget.statusline")
BACKUP_SUFFIX = ".tokenbudget-bak"
SCOPES = ("user", "project", "local")

# How often we redo the merge when another process keeps rewriting the file under us.
_CAS_ATTEMPTS = 10


class HookSpec(NamedTuple):
    """How one event is registered: timeout in seconds and the matcher (None: no matcher key)."""

    timeout: int
    matcher: str | None


# Timeouts are short because a hook runs on every prompt and tool call; SessionEnd hooks all
# share about 1.5 s before Claude Code exits, so ours must give up well before that.
# "*" and "" both match everything; events without a matcher get none at all.
OUR_EVENTS: Mapping[str, HookSpec] = {
    "SessionStart": HookSpec(10, ""),
    "UserPromptSubmit": HookSpec(10, None),
    "PreToolUse": HookSpec(10, "*"),
    "PostToolUse": HookSpec(10, "*"),
    "Stop": HookSpec(10, None),
    "SubagentStop": HookSpec(10, ""),
    "SessionEnd": HookSpec(2, ""),
}

_MATCH_ALL = (None, "", "*")

JSONDict = dict[str, Any]


@dataclass(frozen=True)
class InstallResult:
    """What a change to a settings file did."""

    path: Path
    changed: bool
    backup: Path | None = None


@dataclass(frozen=True)
class Registration:
    """One of our hook commands as found in a settings file."""

    event: str
    matcher: str | None
    command: str
    timeout: float | None


class _Snapshot(NamedTuple):
    """What the file looked like when read: None for every field when it did not exist."""

    key: tuple[int, int, int] | None  # (st_ino, st_mtime_ns, st_size)
    content: bytes | None


# --- recognising our entries -------------------------------------------------------------


def hook_command(python: str, event: str) -> str:
    """The shell command that runs our hook for `event` with interpreter `python`."""
    return f"{shlex.quote(python)} -m tokenbudget.hook {shlex.quote(event)}"


def is_our_command(command: object) -> bool:
    """Whether a hook command string is one of ours."""
    return isinstance(command, str) and any(m in command for m in HOOK_MARKERS)


def is_our_statusline(command: object) -> bool:
    """Whether a statusLine command string is ours."""
    if not isinstance(command, str):
        return False
    if any(m in command for m in STATUSLINE_MARKERS):
        return True
    # A quoted absolute path ('/opt/my tools/tokenbudget' statusline) hides the plain marker.
    try:
        words = shlex.split(command)
    except ValueError:
        return False
    return any(
        Path(a).name == "tokenbudget" and b == "statusline" for a, b in itertools.pairwise(words)
    )


def interpreter_of(command: str) -> str | None:
    """The interpreter path at the start of one of our hook commands, or None if unparsable."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    return words[0] if words else None


def _hook_entry(python: str, event: str) -> JSONDict:
    timeout = OUR_EVENTS[event].timeout
    return {"type": "command", "command": hook_command(python, event), "timeout": timeout}


def _group(matcher: str | None, hooks: list[JSONDict]) -> JSONDict:
    group: JSONDict = {} if matcher is None else {"matcher": matcher}
    group["hooks"] = hooks
    return group


def desired_hooks(python: str) -> dict[str, list[JSONDict]]:
    """Our entries for the `hooks` key of a settings file, one matcher group per event."""
    return {
        event: [_group(spec.matcher, [_hook_entry(python, event)])]
        for event, spec in OUR_EVENTS.items()
    }


def _is_our_hook(hook: object) -> bool:
    return isinstance(hook, dict) and is_our_command(hook.get("command"))


def _hook_list(group: object) -> list[Any] | None:
    """A matcher group's hook list, or None when the group is not shaped as we expect."""
    if isinstance(group, dict):
        hooks = group.get("hooks")
        if isinstance(hooks, list):
            return hooks
    return None


# --- paths and reading -------------------------------------------------------------------


def settings_path(scope: str, project_dir: Path | None = None) -> Path:
    """The settings file for `scope`: user, project or local."""
    if scope == "user":
        return claude_settings_dir() / "settings.json"
    if scope not in SCOPES:
        raise SettingsError(f"unknown settings scope {scope!r} (use one of: {', '.join(SCOPES)})")
    base = (project_dir if project_dir is not None else Path.cwd()) / ".claude"
    return base / ("settings.json" if scope == "project" else "settings.local.json")


def backup_path(path: Path) -> Path:
    """Where the previous content of `path` is kept before we change it."""
    return path.with_name(path.name + BACKUP_SUFFIX)


def _parse(content: bytes | None, path: Path) -> JSONDict:
    if content is None:
        return {}
    try:
        # utf-8-sig: editors on Windows sometimes leave a BOM that JSON itself does not allow.
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        return {}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(doc, dict):
        raise SettingsError(f"{path}: expected a JSON object at the top, found {_json_type(doc)}")
    return doc


def _json_type(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _snapshot(path: Path) -> _Snapshot:
    try:
        with path.open("rb") as fh:
            st = os.fstat(fh.fileno())
            content = fh.read()
    except (FileNotFoundError, NotADirectoryError):
        return _Snapshot(None, None)  # a file standing where a folder should be: no settings yet
    except IsADirectoryError:
        raise SettingsError(f"{path}: is a directory, not a settings file") from None
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror or exc}") from None
    return _Snapshot((st.st_ino, st.st_mtime_ns, st.st_size), content)


def read_settings(path: Path) -> JSONDict:
    """The settings object in `path`: {} when missing or blank; SettingsError when not an object."""
    return _parse(_snapshot(path).content, path)


# --- the transformations (pure: document in, document out) -------------------------------


def _hooks_section(doc: JSONDict, path: Path) -> JSONDict:
    if "hooks" not in doc:
        doc["hooks"] = {}
    hooks = doc["hooks"]
    if not isinstance(hooks, dict):
        # Rewriting a malformed section could drop someone's hooks: leave it to a human.
        raise SettingsError(
            f'{path}: "hooks" is {_json_type(hooks)}, expected an object; fix it by hand'
        )
    return hooks


def _strip_ours(hooks: JSONDict, keep: Callable[[str, int, int], bool]) -> None:
    """Remove our hooks except those `keep(event, group_index, hook_index)` spares.

    A group, an event or nothing else is dropped unless WE emptied it: containers that were
    already empty, or are shaped in ways we do not understand, stay exactly as they are.
    """
    for event in list(hooks):
        groups = hooks[event]
        if not isinstance(groups, list):
            continue
        emptied_groups: list[int] = []
        for gi, group in enumerate(groups):
            entries = _hook_list(group)
            if entries is None:
                continue
            kept = [h for hi, h in enumerate(entries) if not _is_our_hook(h) or keep(event, gi, hi)]
            if len(kept) != len(entries):
                group["hooks"] = kept
                if not kept:
                    emptied_groups.append(gi)
        if emptied_groups:
            hooks[event] = [g for gi, g in enumerate(groups) if gi not in emptied_groups]
            if not hooks[event]:
                del hooks[event]


def _merge_install(doc: JSONDict, python: str, path: Path) -> JSONDict:
    hooks = _hooks_section(doc, path)
    # For each of our events, the first of our entries that already sits in a match-all group is
    # updated in place, so a re-install or an upgrade does not move it among the user's hooks.
    keep_at: dict[str, tuple[int, int]] = {}
    for event in OUR_EVENTS:
        groups = hooks.get(event)
        if groups is not None and not isinstance(groups, list):
            raise SettingsError(
                f"{path}: hooks.{event} is {_json_type(groups)}, expected an array; fix it by hand"
            )
        for gi, group in enumerate(groups or []):
            entries = _hook_list(group)
            if entries is None or group.get("matcher") not in _MATCH_ALL:
                continue
            hi = next((i for i, h in enumerate(entries) if _is_our_hook(h)), None)
            if hi is not None:
                keep_at[event] = (gi, hi)
                break
    # Before removal, update the kept entries (indexes are still valid), keeping keys the user
    # may have added to it such as "onFailure".
    for event, (gi, hi) in keep_at.items():
        entry = hooks[event][gi]["hooks"][hi]
        entry.update(_hook_entry(python, event))
    _strip_ours(hooks, lambda event, gi, hi: keep_at.get(event) == (gi, hi))
    for event, spec in OUR_EVENTS.items():
        if event in keep_at:
            continue
        # A new group of our own (never a foreign one) so that uninstall can drop it whole.
        hooks.setdefault(event, []).append(_group(spec.matcher, [_hook_entry(python, event)]))
    return doc


def _merge_uninstall(doc: JSONDict) -> JSONDict:
    hooks = doc.get("hooks")
    if not isinstance(hooks, dict) or not hooks:
        return doc  # nothing of ours in an empty or malformed section, and it is not ours to drop
    _strip_ours(hooks, lambda event, gi, hi: False)
    if not hooks:
        del doc["hooks"]  # only we can have emptied a section that was not empty
    return doc


# --- atomic, race-aware writing ----------------------------------------------------------


def _has_write_bit(path: Path) -> bool:
    """Writable for us, and not marked read-only by its mode.

    Root passes every access check, and an atomic rename replaces a file whatever its mode, so
    a file or folder with no write bit at all is taken as the owner saying "do not change".
    """
    try:
        st = path.stat()
    except OSError:
        return False
    return bool(st.st_mode & 0o222) and os.access(path, os.W_OK)


def _nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def _check_writable(link: Path, target: Path, exists: bool) -> None:
    if exists and not _has_write_bit(target):
        shown = link if link == target else f"{link} (-> {target})"
        raise SettingsError(f"cannot change {shown}: the file is read-only")
    for folder in {target.parent, link.parent}:
        existing = _nearest_existing(folder)
        if not existing.is_dir() or not _has_write_bit(existing):
            raise SettingsError(f"cannot change {link}: {existing} is not a writable folder")


def _make_dirs(folder: Path) -> None:
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700)
        d.chmod(0o700)  # mkdir's mode is filtered by the umask


def _write_temp(folder: Path, name: str, data: bytes, like: os.stat_result | None) -> Path:
    """Write `data` to a new temp file in `folder` (same filesystem: os.replace stays atomic)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if like is None:
            os.chmod(tmp, 0o600)
        else:
            os.chmod(tmp, stat.S_IMODE(like.st_mode))
            if (like.st_uid, like.st_gid) != (os.getuid(), os.getgid()):
                # Root editing a user's file must not leave it owned by root.
                with contextlib.suppress(OSError):
                    os.chown(tmp, like.st_uid, like.st_gid)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every platform lets us open a folder.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _dump(doc: JSONDict) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _update(path: Path, change: Callable[[JSONDict], JSONDict]) -> InstallResult:
    """Apply `change` to the settings in `path`; write only if the document differs."""
    for _attempt in range(_CAS_ATTEMPTS):
        # Dotfile managers symlink settings.json: write the target and keep the link. Resolved
        # on every attempt: an editor saving through the link may have replaced it by a file.
        target = Path(os.path.realpath(path))
        snap = _snapshot(target)
        old = _parse(snap.content, path)
        new = change(copy.deepcopy(old))
        if new == old:
            return InstallResult(path, changed=False)
        _check_writable(path, target, snap.content is not None)
        try:
            _make_dirs(target.parent)
            like = target.stat() if snap.content is not None else None
            tmp = _write_temp(target.parent, target.name, _dump(new), like)
        except FileNotFoundError:
            continue  # the file vanished between our read and stat: start over
        except OSError as exc:
            raise SettingsError(f"cannot write {path}: {exc.strerror or exc}") from None
        try:
            backup: Path | None = None
            if snap.content is not None:
                backup = backup_path(path)
                bak = _write_temp(backup.parent, backup.name, snap.content, None)
                try:
                    os.replace(bak, backup)
                except OSError:
                    with contextlib.suppress(OSError):
                        bak.unlink()
                    raise
            # Compare and swap: Claude Code or an editor may have saved the file while we merged.
            # Claude Code takes no lock we could share, so re-read as late as possible and, if
            # anything moved, merge again onto the new content instead of overwriting it.
            if _snapshot(target) != snap or Path(os.path.realpath(path)) != target:
                tmp.unlink()
                time.sleep(0.01)
                continue
            os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise SettingsError(f"cannot write {path}: {exc.strerror or exc}") from None
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(target.parent)
        return InstallResult(path, changed=True, backup=backup)
    raise SettingsError(f"{path} kept changing while we updated it; left as is, try again")


# --- public operations -------------------------------------------------------------------


def install(path: Path, python: str) -> InstallResult:
    """Register our hooks (run by `python`) in `path`, replacing older registrations of ours."""
    return _update(path, lambda doc: _merge_install(doc, python, path))


def uninstall(path: Path) -> InstallResult:
    """Remove our hooks from `path`, leaving every other entry as it was."""
    return _update(path, _merge_uninstall)


def set_statusline(path: Path, command: str, *, force: bool = False) -> InstallResult:
    """Point Claude Code's statusLine at `command`; a foreign statusLine needs `force`."""

    def change(doc: JSONDict) -> JSONDict:
        current = doc.get("statusLine")
        if isinstance(current, dict) and is_our_statusline(current.get("command")):
            # Ours already: update in place, keeping keys such as "padding" the user set.
            current.update({"type": "command", "command": command})
            return doc
        if current is not None and not force:
            shown = current.get("command") if isinstance(current, dict) else current
            raise SettingsError(
                f"{path} already has a statusLine ({shown!r}); use --force to replace it"
            )
        doc["statusLine"] = {"type": "command", "command": command}
        return doc

    return _update(path, change)


def remove_statusline(path: Path) -> InstallResult:
    """Remove the statusLine from `path` if it is ours; a foreign one is left alone."""

    def change(doc: JSONDict) -> JSONDict:
        current = doc.get("statusLine")
        if isinstance(current, dict) and is_our_statusline(current.get("command")):
            del doc["statusLine"]
        return doc

    return _update(path, change)


def find_registrations(path: Path) -> list[Registration]:
    """Our hook commands registered in `path`, in file order."""
    hooks = read_settings(path).get("hooks")
    found: list[Registration] = []
    if not isinstance(hooks, dict):
        return found
    for event, groups in hooks.items():
        if not isinstance(groups, list):
            continue
        for group in groups:
            for hook in _hook_list(group) or []:
                if not _is_our_hook(hook):
                    continue
                timeout = hook.get("timeout")
                if isinstance(timeout, bool) or not isinstance(timeout, int | float):
                    timeout = None
                matcher = group.get("matcher")
                found.append(
                    Registration(
                        event=event,
                        matcher=matcher if isinstance(matcher, str) else None,
                        command=hook["command"],
                        timeout=timeout,
                    )
                )
    return found
