"""Where tokenbudget keeps its state and where Claude Code keeps its transcripts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP = "tokenbudget"


def home_override() -> Path | None:
    """`$TOKENBUDGET_HOME`, when set: then data, config and logs all live there."""
    value = os.environ.get("TOKENBUDGET_HOME")
    return Path(value).expanduser() if value else None


def _xdg(variable: str, default: str) -> Path | None:
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
    return Path(base if os.path.isabs(base) else os.path.expanduser(default)) / APP


def data_dir() -> Path:
    """The folder holding the ledger, its lock and the log."""
    override = home_override()
    if override is not None:
        return override
    fast = _xdg("XDG_DATA_HOME", "~/.local/share")
    if fast is not None:
        return fast
    import platformdirs

    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def config_dir() -> Path:
    """The folder holding config.json (budgets and settings)."""
    override = home_override()
    if override is not None:
        return override
    fast = _xdg("XDG_CONFIG_HOME", "~/.config")
    if fast is not None:
        return fast
    import platformdirs

    return Path(platformdirs.user_config_dir(APP, appauthor=False))


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) readable by the user alone; return it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
    except OSError:
        pass
    return path


def ledger_path() -> Path:
    return data_dir() / "ledger.json"


def config_path() -> Path:
    return config_dir() / "config.json"


def log_path() -> Path:
    return data_dir() / "tokenbudget.log"


def claude_config_dirs() -> list[Path]:
    """Claude Code's data dirs: `$CLAUDE_CONFIG_DIR` (comma-separated) or the two defaults.

    Claude Code itself takes the variable as one folder; peers read it as a list. A value
    that names an existing folder is that folder, commas and all; else it is a list.
    """
    env = os.environ.get("CLAUDE_CONFIG_DIR", "").strip()
    if env and Path(env).expanduser().is_dir():
        dirs = [Path(env).expanduser()]
    elif env:
        dirs = [Path(p.strip()).expanduser() for p in env.split(",") if p.strip()]
    else:
        home = Path.home()
        dirs = [home / ".claude", home / ".config" / "claude"]
    seen: list[Path] = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def claude_settings_dir() -> Path:
    """The folder of the user's settings.json: `$CLAUDE_CONFIG_DIR` as Claude Code reads it."""
    env = os.environ.get("CLAUDE_CONFIG_DIR", "").strip()
    if not env:
        return Path.home() / ".claude"
    literal = Path(env).expanduser()
    if literal.is_dir() or "," not in env:
        return literal
    return claude_config_dirs()[0]
