"""The diff of a prepared change (journal.changes, which walks the whole ledger: 9 ms at 2,000
live sessions) is worked out before the ledger's lock, for a command hook and for the resident
answerer's commit after its reply alike: moving it after the reply must not move it under
the lock."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import truth_usage
from tests.test_hook import _append_request, session, session_tokens, set_budgets
from tokenbudget import hook, journal
from tokenbudget import store as store_mod
from tokenbudget.store import JsonFileStore


@pytest.mark.parametrize("answered_first", [False, True])
def test_a_prepared_change_s_diff_is_never_worked_out_under_the_lock(
    private_home: Path, monkeypatch: pytest.MonkeyPatch, answered_first: bool
) -> None:
    a = session(private_home)
    set_budgets(private_home, {"kind": "total", "limit": "1000M"})
    hook.handle("SessionStart", json.dumps({**a, "source": "startup"}).encode())
    _append_request(a["transcript_path"], 1, 1000)
    held = [False]
    calls: list[bool] = []
    real_lock, real_changes = JsonFileStore._lock, journal.changes

    def lock(self: JsonFileStore) -> Callable[[], None]:
        release = real_lock(self)
        held[0] = True

        def let_go() -> None:
            held[0] = False
            release()

        return let_go

    def changes(before: Any, after: Any) -> Any:
        calls.append(held[0])
        return real_changes(before, after)

    monkeypatch.setattr(JsonFileStore, "_lock", lock)
    monkeypatch.setattr(journal, "changes", changes)
    raw = json.dumps({**a, "hook_event_name": "PostToolBatch"}).encode()
    store_mod.keep_warm(answered_first)
    try:
        if answered_first:  # the resident answerer: the commit after the reply
            later: list[Any] = []
            assert hook.handle("PostToolBatch", raw, later=later) == {}
            assert len(later) == 1
            later[0]()
        else:  # a command hook
            assert hook.handle("PostToolBatch", raw) == {}
    finally:
        store_mod.keep_warm(False)
    assert calls == [False]  # worked out once, and not while the lock was held
    assert session_tokens(private_home, a["session_id"]) == truth_usage("loop").total + 1000
