"""Refused prompts and stopped turns, kept for `tokenbudget status --check`.

`claude -p` shows its user no hook's reason (claude-code-facts.md), so each refusal and stop is
appended here as one JSON line: outside the ledger, so that one given when the ledger could not
be locked (fail-closed) is kept too. One append is one write(2) of a short line to a file opened
with O_APPEND, which concurrent hooks cannot interleave. The file is turned over at KEEP_BYTES,
the previous one kept as `.1`: `read` sees both.
"""

from __future__ import annotations

import json
import os

from tokenbudget import paths

TYPE_CHECKING = False  # typing costs a hook call about 5 ms to import
if TYPE_CHECKING:
    from typing import Any

KEEP_BYTES = 256 * 1024


def record(entry: dict[str, Any]) -> None:
    """Append one refusal or stop (OSError is the caller's to report: a hook never raises)."""
    path = paths.stops_file()
    paths.ensure_private_dir(os.path.dirname(path))
    line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size > KEEP_BYTES:
            fd = _turn_over(path, fd)
        os.write(fd, line)
    finally:
        os.close(fd)


def _turn_over(path: str, fd: int) -> int:
    """Keep the full file as `.1` and return a descriptor of a new one. Under an exclusive
    flock, and only if `path` is still the file `fd` has: two hooks turning it over at once
    would otherwise put the new, nearly empty file over the full `.1`."""
    try:
        import fcntl
    except ImportError:
        return fd  # not POSIX: the file grows past KEEP_BYTES rather than lose entries
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        st = os.fstat(fd)
        if os.stat(path).st_ino == st.st_ino and st.st_size > KEEP_BYTES:
            os.replace(path, path + ".1")
    except OSError:
        return fd
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def read(session_id: str | None = None) -> list[dict[str, Any]]:
    """Every refusal and stop kept, oldest first (only `session_id`'s if given)."""
    path = paths.stops_file()
    found = []
    for name in (path + ".1", path):
        try:
            with open(name, "rb") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for raw in lines:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue  # a line cut short by a crash: the others still count
            if not _well_formed(entry):
                continue  # another writer's, or a hand edit: the others still count
            if session_id is None or entry.get("session") == session_id:
                found.append(entry)
    return found


def _well_formed(entry: object) -> bool:
    """The fields readers use, of the types they expect (a time a date can hold)."""
    if not isinstance(entry, dict):
        return False
    at = entry.get("at")
    if isinstance(at, bool) or not isinstance(at, int | float) or not 0 < at < 1e11:
        return False
    return all(
        isinstance(entry.get(key), str) or entry.get(key) is None
        for key in ("session", "prompt_id", "what", "event", "budget", "kind", "unit", "reason")
    ) and all(
        entry.get(key) is None
        or (isinstance(entry.get(key), int | float) and not isinstance(entry.get(key), bool))
        for key in ("used", "expected", "limit")
    )
