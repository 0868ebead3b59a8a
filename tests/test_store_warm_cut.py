"""The resident answerer's warm ledger (store.keep_warm) and a journal cut in place (the
same file: the same device and inode) and written on again by other processes past where the
answerer's last commit ended, between two of its events: a backup of the journal put back
with `cp` (which keeps the inode), a journal emptied by hand, or one deleted and made again by
the next commit where the file system gives the freed inode back. Reading only the bytes after
the kept end, a warm read that finds a whole line there would apply the other history's later
lines on top of lines the files no longer have.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokenbudget import store as store_mod
from tokenbudget.store import JsonFileStore

NOW = 1_900_000_000.0


@pytest.fixture
def warm() -> Iterator[None]:
    store_mod.keep_warm()
    try:
        yield
    finally:
        store_mod.keep_warm(False)


def _other_process(s: JsonFileStore, code: str) -> str:
    prelude = ("import os\nfrom tokenbudget.store import JsonFileStore\n"
               f"s = JsonFileStore({s.file!r})\n")
    done = subprocess.run([sys.executable, "-c", prelude + code], check=True,
                          capture_output=True, text=True, env=dict(os.environ))
    return done.stdout


# The other process cuts the journal back to `cut` and commits an event of its own, again
# until its line ends exactly where the answerer's last one did (the lines differ only in
# the name and the commit time's digits), then one more.
_REGROW = """
for _ in range(50):
    os.truncate(s.journal, {cut})
    s.seen_event({name!r}, {now!r})
    if os.stat(s.journal).st_size == {end}:
        break
else:
    raise SystemExit("no line ended at the kept end")
s.seen_event("theirs-after", {now!r})
"""


def test_a_journal_cut_and_written_again_past_the_kept_end_is_read_whole(
    private_home: Path, warm: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Compared here by hand: the suite's check (which would raise in the read) is off.
    monkeypatch.delenv("TOKENBUDGET_STORE_CHECK")
    s = JsonFileStore(private_home / "state" / "ledger.json")
    s.seen_event("first", NOW)  # a new ledger: written whole
    s.seen_event("kept", NOW)  # appended (line 1)
    cut = os.path.getsize(s.journal)
    s.seen_event("lost", NOW)  # appended (line 2): the answerer keeps this commit's ledger
    end = os.path.getsize(s.journal)
    ino = os.stat(s.journal).st_ino
    name = "ours"  # as long as "lost"'s line: only the commit time's digits differ
    _other_process(s, _REGROW.format(cut=cut, name=name, now=NOW, end=end))
    assert os.stat(s.journal).st_ino == ino and os.path.getsize(s.journal) > end

    got, _ = s.read()  # the answerer's next event
    cold, _ = s._read_cold()  # a command hook's read of the same files
    assert "lost" not in cold["events"] and "theirs-after" in cold["events"]
    assert got == cold, (
        f"warm read: {sorted(got['events'])}; a fresh read: {sorted(cold['events'])}")
