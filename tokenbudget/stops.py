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
    """Append one refusal or stop; an error here is the caller's to report, never to raise."""
    path = paths.stops_file()
    paths.ensure_private_dir(os.path.dirname(path))
    line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    try:
        if os.stat(path).st_size > KEEP_BYTES:
            os.replace(path, path + ".1")
    except OSError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


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
            if not isinstance(entry, dict):
                continue
            if session_id is None or entry.get("session") == session_id:
                found.append(entry)
    return found
