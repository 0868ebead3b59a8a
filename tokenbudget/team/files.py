"""The team's files on this machine: the cache of its totals and budgets, and the sync state.

Below both the hook's reading (cache.py) and the sync that writes them (sync.py).
"""

from __future__ import annotations

import json
import os

from tokenbudget import paths
from tokenbudget.fileio import replace_atomically

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

VERSION = 1  # of the cache file's layout


def cache_file() -> str:
    return os.path.join(paths.data_folder(), "team-cache.json")


def state_file() -> str:
    return os.path.join(paths.data_folder(), "team-state.json")


def write_private_json(path: str, data: dict[str, Any]) -> None:
    """Replace `path` atomically with `data`, readable by the user alone."""
    paths.ensure_private_dir(os.path.dirname(path))
    replace_atomically(path, json.dumps(data, separators=(",", ":")).encode())


def write_cache(data: dict[str, Any]) -> None:
    write_private_json(cache_file(), data)


def read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
