"""Claude Code settings files: add, find and remove tokenbudget's hooks and statusLine.

The settings file belongs to the user and to Claude Code, not to us. So we only ever touch
entries we can recognise as ours (exactly the commands we write, never a command that merely
mentions us), a second install changes nothing, and uninstall removes our part alone. Every
write is atomic, keeps the file's mode, leaves a backup of the previous content and does not
clobber an edit another process made while we were merging. A statusLine we replace is
remembered, and uninstall puts it back.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import re
import shlex
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeGuard

from tokenbudget import paths, relay, resident
from tokenbudget.errors import SettingsError
from tokenbudget.fileio import fsync_folder

HOOK_MODULE = "tokenbudget.hook"  # the form written before HOOK_CODE
# `run`: main() in a process that ends as soon as its answer is out (see tokenbudget.hook.run).
HOOK_CODE = "from tokenbudget.hook import run; run()"
# With the resident answerer, the command hooks that stay hand their event to it (relay_hook).
RELAY_CODE = "from tokenbudget.relay_hook import run; run()"
# The codes written before `run`: still ours, so that install replaces them and uninstall
# removes them (they keep working meanwhile: main() answers the same, in a process that ends
# the usual way).
_BEFORE_RUN = ("from tokenbudget.hook import main; main()",
               "from tokenbudget.relay_hook import main; main()")
_CODES = (HOOK_CODE, RELAY_CODE, *_BEFORE_RUN)
# The quick start: `python -I -S` skips `site` (every .pth file of the environment: a few ms on
# a lean venv, far more on some machines), so the folders it would have added are given here.
_FAST_CODE = "import sys; sys.path[:0] = {paths}; {code}"
_FAST_CODE_RE = re.compile(
    r"import sys; sys\.path\[:0\] = (\[.*\]); (" + "|".join(map(re.escape, _CODES)) + r")\Z",
    re.DOTALL,
)
STATUSLINE_MODULE = "tokenbudget.statusline"
# The console script (pyproject [project.scripts]) a portable registration finds on PATH.
PORTABLE_HOOK = "tokenbudget-hook"
# The plugin's shim as its hooks.json names it (Claude Code expands the variable, shlex does not).
PLUGIN_HOOK = "${CLAUDE_PLUGIN_ROOT}/hooks/tokenbudget-hook"
BACKUP_SUFFIX = ".tokenbudget-bak"
# What the backup holds when there was no settings file before ours: not JSON, so never taken
# for a document; uninstall then removes the file instead of leaving an empty `{}` behind.
ABSENT = b"// tokenbudget: there was no settings file here before it was installed\n"
PREVIOUS_STATUSLINE_FILE = "statusline-previous.json"
SCOPES = ("user", "project", "local")

# Claude Code's hook event names (reported for 2.1.x). A command of ours names one of them; any
# of them, not only OUR_EVENTS, so that an upgrade still finds what an older version registered.
KNOWN_EVENTS = frozenset(
    {
        "SessionStart", "Setup", "UserPromptSubmit", "UserPromptExpansion", "PreToolUse",
        "PermissionRequest", "PermissionDenied", "PostToolUse", "PostToolUseFailure",
        "PostToolBatch", "Notification", "Stop", "StopFailure", "SubagentStart", "SubagentStop",
        "PreCompact", "PostCompact", "Elicitation", "ElicitationResult", "TeammateIdle",
        "TaskCreated", "TaskCompleted", "InstructionsLoaded", "CwdChanged", "FileChanged",
        "ConfigChange", "WorktreeCreate", "WorktreeRemove", "SessionEnd",
    }
)  # fmt: skip

_PORTABLE_GUARD = "command -v tokenbudget-hook >/dev/null 2>&1"
_PORTABLE_GUARD_WORDS = shlex.split(_PORTABLE_GUARD)
# Without tokenbudget-hook on PATH, these events tell the user, once a session and once a
# prompt; the others answer "{}" quietly rather than a line on every tool call.
_ANNOUNCED_EVENTS = frozenset({"SessionStart", "UserPromptSubmit"})
_NOT_RUNNING = (
    "tokenbudget is not installed here (or its tokenbudget-hook command does not run): this "
    "project's token budgets are not enforced. Install tokenbudget, then run `tokenbudget doctor`."
)

HookForm = Literal["module", "portable", "plugin"]

# How often we redo the merge when another process keeps rewriting the file under us.
_CAS_ATTEMPTS = 10


class HookSpec(NamedTuple):
    """How one event is registered: timeout in seconds, the matcher (None: no matcher key) and
    whether Claude Code runs it in the background (`"async": true`: nobody waits for it)."""

    timeout: int
    matcher: str | None
    is_async: bool = False


# Every hook is a process Claude Code starts and (unless async) waits for: a turn pays for each
# one (bench/turn.py). Timeouts are short because a hook runs on every prompt and tool batch;
# SessionEnd hooks all share about 1.5 s before Claude Code exits, so ours must give up well
# before that. "*" and "" both match everything; events without a matcher get none at all.
OUR_EVENTS: Mapping[str, HookSpec] = {
    "SessionStart": HookSpec(10, ""),
    "UserPromptSubmit": HookSpec(10, None),
    # Once after each batch of tool calls, before the next request, in subagents too, and after
    # failed tools (which fire PostToolUseFailure, whose continue:false Claude Code 2.1.328
    # ignores, instead of PostToolUse): one process a batch where PostToolUse took one a tool.
    # It stops a turn before the request after the one that used a budget up. PreToolUse is not
    # registered: it took one process a tool call, only to keep the tools of that one response
    # from running when Claude Code had written it to the transcript before asking for them.
    "PostToolBatch": HookSpec(10, None),
    "Stop": HookSpec(10, None),
    # Nothing waits for these answers. What an async hook did not record before Claude Code
    # killed it (2.1.328 kills async hooks still running at a `-p` exit, but lets an async
    # SessionEnd finish after it), the next hook or `sync` reads: read positions only move when
    # what was read is committed.
    "SubagentStop": HookSpec(10, "", is_async=True),
    "SessionEnd": HookSpec(2, "", is_async=True),
}
# Async with the resident answerer only (`install --resident`). SessionStart's answer says the
# ledger's notes, warnings and (opt-in) the context hint; there the waited UserPromptSubmit
# says them instead (hook.handle's `async_start`), and starts and proves the answerer before
# the turn, so nothing needs to wait for SessionStart: Claude Code 2.1.328 runs an async
# SessionStart hook, but its additionalContext reaches the model only from the session's
# second request on. The command hooks keep it waited (they have no other hook for it before
# the first request). It stays a command hook: Claude Code runs no http SessionStart hook.
RESIDENT_ASYNC = frozenset({"SessionStart"})

_MATCH_ALL = (None, "", "*")

JSONDict = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class InstallResult:
    """What a change to a settings file did.

    `backup` holds the previous content when it is kept; `backup_removed` names the backup
    deleted because nothing of ours is left to undo; `restored` is the user's own statusLine
    put back in place of ours; `deleted`: the file itself went, as there was none before ours.
    """

    path: Path
    changed: bool
    backup: Path | None = None
    backup_removed: Path | None = None
    deleted: bool = False
    restored: Any = None


class ParsedHook(NamedTuple):
    """One of our hook commands taken apart: its form, its event, (module form) interpreter and
    (quick start) the folders it puts on sys.path."""

    form: HookForm
    event: str
    python: str | None
    paths: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Registration:
    """One of our hook commands as found in a settings file."""

    event: str
    matcher: str | None
    command: str
    timeout: float | None
    is_async: bool = False  # registered `"async": true`


class _Snapshot(NamedTuple):
    """What the file looked like when read: None for every field when it did not exist."""

    key: tuple[int, int, int] | None  # (st_ino, st_mtime_ns, st_size)
    content: bytes | None


# --- recognising our entries -------------------------------------------------------------


def hook_command(
    python: str, event: str, paths: Sequence[str] | None = None, code: str = HOOK_CODE
) -> str:
    """The shell command that runs our hook for `event` with interpreter `python`.

    Not `python -m tokenbudget.hook`: that puts the working directory (the project's folder)
    first on sys.path, where a folder named tokenbudget would be imported instead of us, and
    runpy costs every call ~2 ms. `-P` keeps the folder off sys.path (Python 3.11+). With
    `paths` (see site_paths), the quick start: `-I -S` (isolated, which implies -P; no `site`)
    with those folders put first on sys.path. `code`: HOOK_CODE, or RELAY_CODE (resident).
    """
    if paths is None:
        return f"{shlex.quote(python)} -P -c {shlex.quote(code)} {shlex.quote(event)}"
    quick = fast_code(paths, code)
    return f"{shlex.quote(python)} -I -S -c {shlex.quote(quick)} {shlex.quote(event)}"


def fast_code(paths: Sequence[str], code: str = HOOK_CODE) -> str:
    """The `-c` code of the quick start. JSON strings are Python string literals too."""
    return _FAST_CODE.format(paths=json.dumps(list(paths)), code=code)


def _fast_paths(code: str) -> tuple[str, ...] | None:
    """The folders of a quick-start `-c` code exactly as fast_code writes it, else None."""
    match = _FAST_CODE_RE.match(code)
    if match is None:
        return None
    try:
        paths = json.loads(match[1])
    except ValueError:
        return None
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        return None
    return tuple(paths) if fast_code(paths, match[2]) == code else None


_PROBE = (
    "import json, os, sys, tokenbudget; "
    "print(json.dumps([os.path.dirname(os.path.dirname(tokenbudget.__file__)), sys.path]))"
)
_BARE_PROBE = "import json, sys; print(json.dumps(sys.path))"
# What the hook path imports from outside the standard library, besides tokenbudget itself.
_NEEDED = "import tokenbudget.hook, tokenbudget.sync, filelock, platformdirs"


def site_paths(python: str) -> list[str] | None:
    """The folders `python` finds tokenbudget and its dependencies in that `-I -S` leaves off
    sys.path: tokenbudget's own first, then what `site` adds (site-packages, .pth entries).

    None when they cannot be found, or do not suffice to run the hook that way: the hooks
    then start the usual way (`-P`), a few milliseconds slower, never broken.
    """
    try:
        full = _run_json([python, "-P", "-c", _PROBE])
        bare = _run_json([python, "-I", "-S", "-c", _BARE_PROBE])
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    match full:
        case [str(root), list(path)] if isinstance(bare, list):
            paths: list[str] = []
            for p in [root, *path]:
                if isinstance(p, str) and p and p not in bare and p not in paths:
                    paths.append(p)
        case _:
            return None
    return paths if quick_start_runs(python, paths)[0] else None


def quick_start_runs(python: str, paths: Sequence[str]) -> tuple[bool, str]:
    """Whether `python -I -S` finds all the hook needs in `paths`: (ok, what it said)."""
    code = f"import sys; sys.path[:0] = {json.dumps(list(paths))}; {_NEEDED}"
    try:
        done = subprocess.run(
            [python, "-I", "-S", "-c", code],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return False, str(e)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return False, lines[-1] if lines else f"it exited {done.returncode}"
    return True, ", ".join(paths)


def _run_json(argv: list[str]) -> Any:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=20, check=True, stdin=subprocess.DEVNULL
    )
    return json.loads(done.stdout)


def portable_hook_command(event: str) -> str:
    """The command for settings shared with others: tokenbudget-hook from PATH, or a note.

    A checked-in settings file cannot name the installer's interpreter: on a teammate's machine
    that path does not exist, the hook exits 127 and Claude Code silently enforces nothing. So
    the console script is looked up on PATH, and when it is missing or cannot run, the shell
    prints valid hook JSON saying so and exits 0 (Claude Code would hide a bare non-zero exit).
    `command -v` keeps a "not found" line off stderr. No `exec`: a console script whose
    interpreter has gone (a pipx venv after a Python upgrade) must reach the fallback too, and
    tokenbudget-hook itself always exits 0, so `||` only ever sees a failure to run.
    """
    note: JSONDict = {"systemMessage": _NOT_RUNNING} if event in _ANNOUNCED_EVENTS else {}
    fallback = json.dumps(note, ensure_ascii=False)
    return (
        f"{_PORTABLE_GUARD} && {PORTABLE_HOOK} {shlex.quote(event)} || echo {shlex.quote(fallback)}"
    )


def parse_hook_command(command: object) -> ParsedHook | None:
    """`command` taken apart if it is exactly one of the shapes we write, else None.

    Ours: `<python> -P -c '<HOOK_CODE or RELAY_CODE>' EVENT` and its quick start (earlier
    `<python> -m tokenbudget.hook EVENT`, still recognised so that install replaces it and
    uninstall removes it); the portable
    `tokenbudget-hook EVENT`, bare or guarded as portable_hook_command writes it (whatever its
    fallback text); and the plugin's
    `"${CLAUDE_PLUGIN_ROOT}/hooks/tokenbudget-hook" EVENT`; EVENT being a Claude Code event.
    A command that merely mentions us (`~/bin/audit-tokenbudget.hook.sh`, `notify-send
    tokenbudget-hooked`) is the user's: install must not overwrite it, nor uninstall delete it.
    """
    if not isinstance(command, str):
        return None
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    parsed: ParsedHook | None = None
    match words:
        case [python, "-P", "-c", code, event] if code in _CODES and python:
            parsed = ParsedHook("module", event, python)
        case [python, "-I", "-S", "-c", code, event] if python and _fast_paths(code):
            parsed = ParsedHook("module", event, python, _fast_paths(code))
        case [python, "-m", module, event] if module == HOOK_MODULE and python:
            parsed = ParsedHook("module", event, python)
        case [hook, event] if hook == PORTABLE_HOOK:
            parsed = ParsedHook("portable", event, None)
        case [*guard, "&&", hook, event, "||", "echo", _] if (
            guard == _PORTABLE_GUARD_WORDS and hook == PORTABLE_HOOK
        ):
            parsed = ParsedHook("portable", event, None)
        case [hook, event] if hook == PLUGIN_HOOK:
            parsed = ParsedHook("plugin", event, None)
    return parsed if parsed is not None and parsed.event in KNOWN_EVENTS else None


def is_our_command(command: object) -> bool:
    """Whether a hook command string is one of ours."""
    return parse_hook_command(command) is not None


def hook_form(command: object) -> HookForm | None:
    """How one of our hook commands finds tokenbudget; None when the command is not ours."""
    parsed = parse_hook_command(command)
    return parsed.form if parsed is not None else None


def interpreter_of(command: str) -> str | None:
    """The interpreter a module-form hook command of ours runs; None for any other command."""
    parsed = parse_hook_command(command)
    return parsed.python if parsed is not None else None


def statusline_command(python: str | None) -> str:
    """Our statusLine command: run by `python`, or (None) the `tokenbudget` found on PATH."""
    if python is None:
        return "tokenbudget statusline"
    # -P: the project's folder (the working directory) stays off sys.path, see hook_command.
    return f"{shlex.quote(python)} -P -m {STATUSLINE_MODULE}"


def is_our_statusline(command: object) -> bool:
    """Whether a statusLine command string is exactly one of the shapes we write (or wrote)."""
    if not isinstance(command, str):
        return False
    try:
        words = shlex.split(command)
    except ValueError:
        return False
    match words:
        case ["tokenbudget", "statusline"]:
            return True
        case [python, "-P", "-m", module] if module == STATUSLINE_MODULE and python:
            return True
        case [python, "-m", module] if module == STATUSLINE_MODULE and python:
            return True  # the form written before -P
    return False


_OUR_URL = re.compile(
    r"http://127\.0\.0\.1:[0-9]{1,5}" + re.escape(resident.URL_PATH) + r"([A-Za-z]+)\Z"
)


def is_our_http_hook(hook: object) -> bool:
    """Whether a hook entry is one of our http hooks (to the resident answerer)."""
    if not isinstance(hook, dict) or hook.get("type") != "http":
        return False
    url = hook.get("url")
    match = _OUR_URL.match(url) if isinstance(url, str) else None
    return match is not None and match[1] in KNOWN_EVENTS


def _is_our_statusline_value(value: object) -> TypeGuard[JSONDict]:
    return isinstance(value, dict) and is_our_statusline(value.get("command"))


def _hook_entry(
    python: str | None,
    event: str,
    paths: Sequence[str] | None = None,
    answerer: resident.Setup | None = None,
) -> JSONDict:
    spec = OUR_EVENTS[event]
    if answerer is not None and event in resident.EVENTS:
        # The key rides in the settings file (an http hook can send nothing else of ours):
        # install refuses a settings file that other users can read.
        return {
            "type": "http",
            "url": resident.url(answerer.port, event),
            # TOKENBUDGET_DISABLE=1 in a session's environment reaches the answerer only so.
            "headers": {
                "Authorization": f"Bearer {answerer.key}",
                resident.DISABLE_HEADER: "${TOKENBUDGET_DISABLE}",
            },
            "allowedEnvVars": ["TOKENBUDGET_DISABLE"],
            "timeout": spec.timeout,
        }
    code = RELAY_CODE if answerer is not None and event in relay.RELAYED else HOOK_CODE
    command = (
        portable_hook_command(event) if python is None
        else hook_command(python, event, paths, code)
    )
    entry: JSONDict = {"type": "command", "command": command, "timeout": spec.timeout}
    if is_async(event, answerer is not None):
        entry["async"] = True
    return entry


def is_async(event: str, with_answerer: bool) -> bool:
    """Whether our hook for `event` is registered `"async": true` (in `install --resident`'s
    layout when `with_answerer`)."""
    return OUR_EVENTS[event].is_async or (with_answerer and event in RESIDENT_ASYNC)


def _group(matcher: str | None, hooks: list[JSONDict]) -> JSONDict:
    group: JSONDict = {} if matcher is None else {"matcher": matcher}
    group["hooks"] = hooks
    return group


def desired_hooks(
    python: str | None,
    paths: Sequence[str] | None = None,
    answerer: resident.Setup | None = None,
) -> dict[str, list[JSONDict]]:
    """Our entries for the `hooks` key of a settings file, one matcher group per event.

    `python` None gives the portable form, for settings shared with people whose
    interpreter is elsewhere (a project's checked-in .claude/settings.json); `paths`, the
    quick start (see hook_command); `answerer`, the resident answerer's http hooks.
    """
    return {
        event: [_group(spec.matcher, [_hook_entry(python, event, paths, answerer)])]
        for event, spec in OUR_EVENTS.items()
    }


def _is_our_hook(hook: object) -> bool:
    return isinstance(hook, dict) and (
        is_our_command(hook.get("command")) or is_our_http_hook(hook)
    )


def _our_hooks(doc: JSONDict) -> list[tuple[str, JSONDict, JSONDict]]:
    """(event, matcher group, hook) for each hook of ours in `doc`, in file order."""
    hooks = doc.get("hooks")
    found: list[tuple[str, JSONDict, JSONDict]] = []
    if not isinstance(hooks, dict):
        return found
    for event, groups in hooks.items():
        if not isinstance(groups, list):
            continue
        for group in groups:
            found.extend((event, group, h) for h in _hook_list(group) or [] if _is_our_hook(h))
    return found


def _nothing_of_ours(doc: JSONDict) -> bool:
    return not _our_hooks(doc) and not _is_our_statusline_value(doc.get("statusLine"))


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
        return paths.claude_settings_dir() / "settings.json"
    if scope not in SCOPES:
        raise SettingsError(f"unknown settings scope {scope!r} (use one of: {', '.join(SCOPES)})")
    base = (project_dir if project_dir is not None else Path.cwd()) / ".claude"
    return base / ("settings.json" if scope == "project" else "settings.local.json")


def settings_files(project_dir: Path) -> list[tuple[str, Path]]:
    """Each scope's settings file for `project_dir`, once: in the home folder, the project's
    is the user's."""
    seen: set[str] = set()
    found: list[tuple[str, Path]] = []
    for scope in SCOPES:
        path = settings_path(scope, project_dir)
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            found.append((scope, path))
    return found


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


def _merge_install(
    doc: JSONDict,
    python: str | None,
    path: Path,
    paths: Sequence[str] | None = None,
    answerer: resident.Setup | None = None,
) -> JSONDict:
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
        for key in ("type", "command", "url", "headers", "allowedEnvVars"):
            entry.pop(key, None)  # a command hook that becomes an http one, or back
        fresh = _hook_entry(python, event, paths, answerer)
        entry.update(fresh)
        if "async" not in fresh:
            # Whether Claude Code waits for our answer is ours to say (SessionStart's depends on
            # the layout: `install` over `install --resident` makes it waited again).
            entry.pop("async", None)
    _strip_ours(hooks, lambda event, gi, hi: keep_at.get(event) == (gi, hi))
    for event, spec in OUR_EVENTS.items():
        if event in keep_at:
            continue
        # A new group of our own (never a foreign one) so that uninstall can drop it whole.
        hooks.setdefault(event, []).append(
            _group(spec.matcher, [_hook_entry(python, event, paths, answerer)])
        )
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


_INDENT = re.compile(r"\n([ \t]+)\S")


def _dump(doc: JSONDict, like: bytes | None = None) -> bytes:
    """`doc` written the way `like` (the file's current content) is: its indentation, line
    ends, final newline, byte order mark and escapes, so that taking out what we put in gives
    back the same bytes. Keys keep their order (json keeps it both ways)."""
    if not like or not like.strip():
        return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    bom = b"\xef\xbb\xbf" if like.startswith(b"\xef\xbb\xbf") else b""
    text = like.decode("utf-8-sig", errors="replace")
    found = _INDENT.search(text)
    indent = found[1] if found else None
    if found is None and text.strip() == "{}":
        indent = "  "  # nothing to learn from: json.dumps writes an empty object as {} anyway
    # One line: keep its spacing after commas and colons ({"a":1} or {"a": 1}).
    compact = indent is None and '": ' not in text and '", ' not in text
    out = json.dumps(
        doc,
        indent=indent,
        separators=(",", ":") if compact else None,
        ensure_ascii=not any(ord(c) > 127 for c in text) and "\\u" in text,
    )
    if text.rstrip(" \t").endswith("\n"):
        out += "\n"
    if "\r\n" in text:
        out = out.replace("\n", "\r\n")
    return bom + out.encode("utf-8")


def _update(
    path: Path,
    change: Callable[[JSONDict], JSONDict],
    *,
    backup: bool = True,
    before_write: Callable[[JSONDict, JSONDict], None] | None = None,
    drop_backup_if: Callable[[JSONDict], bool] | None = None,
    original: bytes | None = None,
) -> InstallResult:
    """Apply `change` to the JSON object in `path`; write only if the document differs.

    `before_write(old, new)` runs on every attempt that is about to write, so it sees exactly
    the content this attempt replaces; raising there leaves the file alone. `backup=False`
    writes no backup (for our own state files); `drop_backup_if(new)` deletes the backup once
    `new` is safely in place, when it says there is nothing left to undo. `original` (the
    content before our install) is written back byte for byte when `new` is that document.
    """
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
        if before_write is not None:
            before_write(old, new)
        # Taking ours out of a file that did not exist before us removes it.
        remove = original == ABSENT and not new and snap.content is not None
        try:
            _make_dirs(target.parent)
            like = target.stat() if snap.content is not None else None
            data = original if _same_document(original, new, path) else None
            if data is None:
                data = _dump(new, snap.content)
            tmp = _write_temp(target.parent, target.name, data, like)
        except FileNotFoundError:
            continue  # the file vanished between our read and stat: start over
        except OSError as exc:
            raise SettingsError(f"cannot write {path}: {exc.strerror or exc}") from None
        try:
            kept: Path | None = None
            # The backup keeps the content from before any of ours: a change on top of our own
            # (the status line after the hooks) leaves the first one, the way all the way back.
            if backup:
                kept = backup_path(path)
                if _nothing_of_ours(old) or not kept.exists():
                    before = snap.content if snap.content is not None else ABSENT
                    bak = _write_temp(kept.parent, kept.name, before, None)
                    try:
                        os.replace(bak, kept)
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
            if remove:
                tmp.unlink()
                os.unlink(target)
            else:
                os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise SettingsError(f"cannot write {path}: {exc.strerror or exc}") from None
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        fsync_folder(str(target.parent))
        if kept is not None and drop_backup_if is not None and drop_backup_if(new):
            # Only now that the file is safely replaced: a failure before this keeps the way back.
            with contextlib.suppress(FileNotFoundError):
                kept.unlink()
            return InstallResult(path, changed=True, backup_removed=kept, deleted=remove)
        return InstallResult(path, changed=True, backup=kept, deleted=remove)
    raise SettingsError(f"{path} kept changing while we updated it; left as is, try again")


def _same_document(content: bytes | None, doc: JSONDict, path: Path) -> bool:
    """Whether `content` holds `doc`, but for the empty event lists and `hooks` object that
    uninstall leaves out once ours are gone from them."""
    if content is None:
        return False
    try:
        was = _parse(content, path)
    except SettingsError:
        return False
    hooks, now = was.get("hooks"), doc.get("hooks")
    if isinstance(hooks, dict):
        kept = now if isinstance(now, dict) else {}
        hooks = {k: v for k, v in hooks.items() if v != [] or k in kept}
        was = {k: v for k, v in was.items() if k != "hooks"}
        if hooks or "hooks" in doc:
            was["hooks"] = hooks
    return was == doc


def _read_original(path: Path) -> bytes | None:
    try:
        return backup_path(path).read_bytes()
    except OSError:
        return None


# --- public operations -------------------------------------------------------------------


def install(
    path: Path,
    python: str | None,
    paths: Sequence[str] | None = None,
    answerer: resident.Setup | None = None,
) -> InstallResult:
    """Register our hooks in `path`, replacing older registrations of ours.

    They run with interpreter `python` (started quickly with `paths`, see site_paths), or
    (None) find tokenbudget-hook on PATH: the form for settings that other people check out.
    With `answerer`, PostToolBatch and Stop are http hooks to the resident answerer, and
    SessionStart is async (RESIDENT_ASYNC).
    The backup is kept: it is the way back.
    """
    return _update(path, lambda doc: _merge_install(doc, python, path, paths, answerer))


def uninstall(path: Path) -> InstallResult:
    """Remove our hooks from `path`, leaving every other entry as it was.

    The backup goes too once nothing of ours is left (in a project it would be clutter in the
    repository); while our statusLine remains, it stays.
    """
    # What install kept aside: when taking ours out leaves that document, its very bytes go
    # back (spacing, number spellings and escapes that no JSON writer could reproduce).
    return _update(
        path, _merge_uninstall, drop_backup_if=_nothing_of_ours, original=_read_original(path)
    )


def set_statusline(path: Path, command: str, *, force: bool = False) -> InstallResult:
    """Point Claude Code's statusLine at `command`; a foreign statusLine needs `force`.

    A foreign statusLine replaced with `force` is remembered (see previous_statusline_path),
    and remove_statusline puts it back.
    """

    def change(doc: JSONDict) -> JSONDict:
        current = doc.get("statusLine")
        if _is_our_statusline_value(current):
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

    def remember(old: JSONDict, new: JSONDict) -> None:
        # Before the settings are written: were the write to land and the record not, the
        # user's command would be lost; a record of a write that then failed is harmless, as
        # it is only ever restored over a statusLine of ours.
        current = old.get("statusLine")
        if current is None:
            _forget_statusline(path)  # nothing replaced: an older record must not come back
        elif not _is_our_statusline_value(current):
            _remember_statusline(path, current)

    return _update(path, change, before_write=remember)


def remove_statusline(path: Path) -> InstallResult:
    """Remove our statusLine from `path`, putting back the one we replaced, if any.

    A foreign statusLine is left alone (the user replaced ours since: our record is dropped).
    The backup goes once nothing of ours is left.
    """
    saved = _recall_statusline(path)
    restored: list[Any] = []

    def change(doc: JSONDict) -> JSONDict:
        restored.clear()  # a retried attempt starts over
        if _is_our_statusline_value(doc.get("statusLine")):
            if saved is None:
                del doc["statusLine"]
            else:
                doc["statusLine"] = copy.deepcopy(saved.value)
                restored.append(saved.value)
        return doc

    result = _update(path, change, drop_backup_if=_nothing_of_ours)
    if saved is not None:
        # Restored now, or the statusLine is no longer ours to replace: either way it is done.
        _forget_statusline(path)
    return dataclasses.replace(result, restored=restored[0]) if restored else result


def http_targets(path: Path) -> set[tuple[int, str]]:
    """(port, bearer key) of each of our http hooks in `path` (a missing key reads as "")."""
    found: set[tuple[int, str]] = set()
    for _event, _group, hook in _our_hooks(read_settings(path)):
        if hook.get("type") != "http":
            continue
        headers = hook.get("headers")
        bearer = headers.get("Authorization") if isinstance(headers, dict) else None
        key = bearer[len("Bearer "):] if isinstance(bearer, str) and bearer.startswith(
            "Bearer ") else ""
        port = int(hook["url"].split(":")[2].split("/")[0])  # is_our_http_hook checked its shape
        found.add((port, key))
    return found


def _merge_retarget(doc: JSONDict, answerer: resident.Setup) -> JSONDict:
    for event, _group, hook in _our_hooks(doc):
        if hook.get("type") == "http":
            fresh = _hook_entry(None, event, None, answerer)
            hook["url"] = fresh["url"]
            headers = hook.get("headers")
            hook["headers"] = (headers if isinstance(headers, dict) else {}) | fresh["headers"]
    return doc


def retarget(path: Path, answerer: resident.Setup) -> InstallResult:
    """Point our http hooks in `path` at `answerer` (its port and key); nothing else changes."""
    return _update(path, lambda doc: _merge_retarget(doc, answerer))


def find_registrations(path: Path) -> list[Registration]:
    """Our hook commands registered in `path`, in file order."""
    found: list[Registration] = []
    for event, group, hook in _our_hooks(read_settings(path)):
        timeout = hook.get("timeout")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            timeout = None
        matcher = group.get("matcher")
        found.append(
            Registration(
                event=event,
                matcher=matcher if isinstance(matcher, str) else None,
                command=hook["command"] if "command" in hook else hook["url"],
                timeout=timeout,
                is_async=hook.get("async") is True,
            )
        )
    return found


# --- the statusLine we replaced ----------------------------------------------------------
#
# The settings backup cannot keep it: every later write overwrites the backup. So it lives in
# tokenbudget's own data folder, one entry per settings file (by resolved path, so a symlinked
# settings.json is one file however it is named), private like the rest of our state.

_RECORD_VERSION = 1


class _Saved(NamedTuple):
    value: Any


def previous_statusline_path() -> Path:
    """Where the statusLines we replaced are remembered, per settings file."""
    return paths.data_dir() / PREVIOUS_STATUSLINE_FILE


def _record_key(settings: Path) -> str:
    return os.path.realpath(settings)


def _record_entries(doc: JSONDict, record: Path) -> JSONDict:
    """The record's per-file entries; SettingsError for a record we cannot read safely."""
    version = doc.get("version", _RECORD_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise SettingsError(f'{record}: "version" is not a number; fix or delete the file')
    if version > _RECORD_VERSION:
        # Rewriting it would drop what the newer version keeps there.
        raise SettingsError(f"{record}: written by a newer tokenbudget (version {version})")
    entries = doc.setdefault("statusLines", {})
    if not isinstance(entries, dict):
        raise SettingsError(
            f'{record}: "statusLines" is {_json_type(entries)}, expected an object; '
            "fix or delete the file"
        )
    return entries


def _remember_statusline(settings: Path, value: Any) -> None:
    record = previous_statusline_path()
    key = _record_key(settings)

    def change(doc: JSONDict) -> JSONDict:
        _record_entries(doc, record)[key] = {"statusLine": value}
        doc["version"] = _RECORD_VERSION
        return doc

    _update(record, change, backup=False)


def _forget_statusline(settings: Path) -> None:
    record = previous_statusline_path()
    if not record.exists():
        return
    key = _record_key(settings)

    def change(doc: JSONDict) -> JSONDict:
        _record_entries(doc, record).pop(key, None)
        return doc

    _update(record, change, backup=False)


def _recall_statusline(settings: Path) -> _Saved | None:
    record = previous_statusline_path()
    doc = read_settings(record)  # same rules: a JSON object, or nothing yet
    entry = _record_entries(doc, record).get(_record_key(settings))
    if not isinstance(entry, dict) or "statusLine" not in entry:
        return None
    return _Saved(entry["statusLine"])
