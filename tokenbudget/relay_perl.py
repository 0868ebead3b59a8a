"""The Perl relay (relay.pl): the lean hook of `install --resident` without a Python start.

A Python start is ~12 ms of CPU a hook; perl with its Socket module ~2 ms. The Perl relay
knows no tokenbudget rule: it hands the event to the resident answerer as relay.py does and
prints the answer, and hands everything else to the Python relay (relay_hook), the same stdin
bytes on a pipe. It cannot resolve the data folder and the Claude config folders as paths.py
does, so install resolves them (`baked`) and writes, beside them, the environment they came
from; a session whose environment differs goes to the Python relay.
"""

from __future__ import annotations

import os
import shutil

from tokenbudget import paths, relay

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "relay.pl")
# Every variable paths.data_folder and paths.claude_config_folders read (ANDROID_DATA: where
# platformdirs has its own rules).
ENVIRONMENT = ("TOKENBUDGET_HOME", "XDG_DATA_HOME", "HOME", "CLAUDE_CONFIG_DIR", "ANDROID_DATA")


def available() -> bool:
    """Whether perl is on this PATH (the command hooks look for it there)."""
    return shutil.which("perl") is not None


def baked() -> list[str] | None:
    """relay.pl's arguments before `--`: the answerer's folder, the session's Claude config
    folders (as relay.header_line lists them) and the environment they were read from; None
    when that would not pin them down (a relative or undecodable path, a CLAUDE_CONFIG_DIR
    list, whose meaning depends on which of its folders exist)."""
    where = relay.folder()
    found = paths.claude_config_folders()
    if "," in os.environ.get("CLAUDE_CONFIG_DIR", ""):
        return None
    if not os.path.isabs(where) or not all(os.path.isabs(d) for d in found):
        return None
    said = [n if (v := os.environ.get(n)) is None else f"{n}={v}" for n in ENVIRONMENT]
    words = [where, relay.listed(found[: relay.MAX_DIRS]), *said]
    try:
        for w in words:
            w.encode()
    except UnicodeEncodeError:
        return None
    return words
