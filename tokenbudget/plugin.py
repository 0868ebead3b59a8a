"""Where tokenbudget's hooks ran as a Claude Code plugin, for `doctor`.

A plugin loaded with `claude --plugin-dir` appears in no settings file, so nothing else could
tell doctor that its hooks run. A hook answering SessionStart as a plugin (Claude Code sets
CLAUDE_PLUGIN_ROOT for a plugin's hooks) notes the plugin's folder, its data folder, the
Python it runs with and the time, in one small private file beside the ledger; notes older
than KEEP_DAYS are dropped. The hook writes it under the ledger's lock, so writers take turns;
a file we cannot read is only a lost hint, never an error.
"""

from __future__ import annotations

import json
import os

from tokenbudget import paths
from tokenbudget.fileio import replace_atomically

TYPE_CHECKING = False  # typing stays off a hook call's imports
if TYPE_CHECKING:
    from typing import Any

RUNS_FILE = "plugin-runs.json"
KEEP_DAYS = 30


def runs_file() -> str:
    """The file holding the notes."""
    return os.path.join(paths.data_folder(), RUNS_FILE)


def read_runs() -> dict[str, dict[str, Any]]:
    """Plugin folder -> {"data", "python", "at"}; empty when there is no readable file."""
    try:
        with open(runs_file(), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return {}
    runs = doc.get("runs") if isinstance(doc, dict) else None
    if not isinstance(runs, dict):
        return {}
    return {
        root: run
        for root, run in runs.items()
        if isinstance(run, dict) and _a_time(run.get("at"))
    }


def _a_time(value: object) -> bool:
    # A time a date can hold: a hand-edited 1e400 or true must not fail every SessionStart.
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e11


def recent_runs(now: float) -> dict[str, dict[str, Any]]:
    """The notes of the last KEEP_DAYS, newest first."""
    runs = {r: v for r, v in read_runs().items() if now - float(v["at"]) < KEEP_DAYS * 86400}
    return dict(sorted(runs.items(), key=lambda kv: -float(kv[1]["at"])))


def note_run(root: str, data: str | None, python: str, now: float) -> None:
    """Remember that the hooks ran from plugin folder `root` at `now` (atomically, 0600)."""
    runs = recent_runs(now)
    runs[root] = {"data": data, "python": python, "at": now}
    paths.ensure_private_dir(paths.data_folder())
    replace_atomically(runs_file(), json.dumps({"version": 1, "runs": runs}).encode())
