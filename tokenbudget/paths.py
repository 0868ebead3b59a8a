"""Where tokenbudget keeps its state and where Claude Code keeps its transcripts.

Each place has a `str` form (`*_file`, `*_folder`), used by the hook, and a `Path` form for
everything else: importing pathlib costs a hook call about 5 ms.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

APP = "tokenbudget"
# A session id we act on: Claude Code's are UUIDs; this much is safe as a file name.
_SESSION_ID = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"


def is_session_id(text: str) -> bool:
    """Whether `text` can be a session id: safe as a file name, no separators, no newline."""
    # fullmatch: with `^...$`, `match` let a trailing newline through.
    import re  # here: the resident mode's lean hooks (relay.py) need this module, not re

    return re.fullmatch(_SESSION_ID, text) is not None


# Where zoneinfo looks for a zone by name, unless PYTHONTZPATH says (CPython's default TZPATH).
_TZPATH = ("/usr/share/zoneinfo", "/usr/lib/zoneinfo", "/usr/share/lib/zoneinfo", "/etc/zoneinfo")


def zone_file(name: str) -> str | None:
    """The file zoneinfo would read for zone `name`, found without importing it (None: not
    found there, or not a name zoneinfo takes)."""
    if "\x00" in name or ".." in name.split("/") or os.path.normpath(name) != name:
        return None
    listed = os.environ.get("PYTHONTZPATH")
    for root in listed.split(os.pathsep) if listed is not None else _TZPATH:
        path = os.path.join(root, name)
        if os.path.isabs(root) and os.path.isfile(path):
            return path
    return None


def _path(value: str) -> Path:
    from pathlib import Path

    return Path(value)


def home_override_folder() -> str | None:
    """`$TOKENBUDGET_HOME`, when set: then data, config and logs all live there."""
    value = os.environ.get("TOKENBUDGET_HOME")
    return os.path.expanduser(value) if value else None


def _xdg(variable: str, default: str) -> str | None:
    """The XDG base dir platformdirs gives on Linux and the BSDs; None elsewhere.

    Importing platformdirs costs a hook call about 7 ms (it pulls in tempfile and shutil);
    on these systems its answer is this simple rule, which a test keeps equal to it.
    """
    if sys.platform == "darwin" or sys.platform.startswith(("win", "cygwin", "msys")):
        return None
    if "ANDROID_DATA" in os.environ:  # platformdirs has its own rules there
        return None
    base = os.environ.get(variable, "")
    home = os.environ.get("HOME", "")
    if not os.path.isabs(base) and not os.path.isabs(home):
        return None  # no usable folder either way: platformdirs knows the fallbacks
    # The XDG spec ignores a relative value, and so does platformdirs.
    return os.path.join(base if os.path.isabs(base) else os.path.expanduser(default), APP)


def data_folder() -> str:
    """The folder holding the ledger, its lock and the log."""
    found = home_override_folder() or _xdg("XDG_DATA_HOME", "~/.local/share")
    if found is not None:
        return found
    import platformdirs

    return str(platformdirs.user_data_dir(APP, appauthor=False))


def config_folder() -> str:
    """The folder holding config.json (budgets and settings)."""
    found = home_override_folder() or _xdg("XDG_CONFIG_HOME", "~/.config")
    if found is not None:
        return found
    import platformdirs

    return str(platformdirs.user_config_dir(APP, appauthor=False))


def ledger_file() -> str:
    return os.path.join(data_folder(), "ledger.json")


def config_file() -> str:
    return os.path.join(config_folder(), "config.json")


def log_file() -> str:
    return os.path.join(data_folder(), "tokenbudget.log")


def stops_file() -> str:
    return os.path.join(data_folder(), "stops.jsonl")


def data_dir() -> Path:
    return _path(data_folder())


def config_dir() -> Path:
    return _path(config_folder())


def ledger_path() -> Path:
    return _path(ledger_file())


def config_path() -> Path:
    return _path(config_file())


def log_path() -> Path:
    return _path(log_file())


def ensure_private_dir(path: str | os.PathLike[str]) -> str:
    """Create `path` (and parents) readable by the user alone; return it as a string.

    A folder of the user's own that others can read is narrowed to 0700, but never a shared
    one: a sticky folder (/tmp), one the user does not own, or the home folder itself, which a
    `TOKENBUDGET_HOME` may name.
    """
    folder = os.fspath(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    try:
        st = os.stat(folder)
        if (
            st.st_mode & 0o077
            and not st.st_mode & 0o1000  # sticky: a folder shared by design
            and st.st_uid == getattr(os, "getuid", lambda: st.st_uid)()
            and not os.path.samestat(st, os.stat(os.path.expanduser("~")))
        ):
            os.chmod(folder, 0o700)
    except OSError:
        pass
    return folder


def claude_config_folders() -> list[str]:
    """Claude Code's data dirs: `$CLAUDE_CONFIG_DIR` (comma-separated) or the two defaults.

    Claude Code itself takes the variable as one folder; peers read it as a list. A value
    that names an existing folder is that folder, commas and all; else it is a list.
    """
    env = os.environ.get("CLAUDE_CONFIG_DIR", "").strip()
    if env and os.path.isdir(os.path.expanduser(env)):
        dirs = [os.path.expanduser(env)]
    elif env:
        dirs = [os.path.expanduser(p.strip()) for p in env.split(",") if p.strip()]
    else:
        home = os.path.expanduser("~")
        dirs = [os.path.join(home, ".claude"), os.path.join(home, ".config", "claude")]
    seen: list[str] = []
    for d in dirs:
        d = os.path.normpath(d)
        if d not in seen:
            seen.append(d)
    return seen


def claude_config_dirs() -> list[Path]:
    return [_path(d) for d in claude_config_folders()]


def claude_settings_dir() -> Path:
    """The folder of the user's settings.json: `$CLAUDE_CONFIG_DIR` as Claude Code reads it."""
    env = os.environ.get("CLAUDE_CONFIG_DIR", "").strip()
    folders = claude_config_folders() if env else []
    # The folder itself, or the first of a list (the rule of claude_config_folders).
    return _path(folders[0]) if folders else _path(os.path.expanduser("~")) / ".claude"
