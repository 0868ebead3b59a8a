"""The budget rules and the config stay off the standard modules that are slow to import.

A hook runs on every Claude Code event: dataclasses (with inspect), typing and pathlib would add
about 20 ms to each call. `python -X importtime` says where an import comes from.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SLOW = ("dataclasses", "inspect", "typing", "pathlib")
# What a hook call with nothing new imports of tokenbudget, and what it leaves alone.
QUICK = ("tokenbudget tokenbudget.clock tokenbudget.config tokenbudget.errors tokenbudget.fileio"
         " tokenbudget.hook tokenbudget.hot tokenbudget.ledger tokenbudget.limits"
         " tokenbudget.paths tokenbudget.record tokenbudget.schema")
QUICK_OFF = ("datetime", "zoneinfo", "contextlib", "sysconfig")


def _loop_session(home: Path, config: dict[str, object]) -> tuple[Path, Path]:
    """tokenbudget's state folder with `config`, and the "loop" fixture's transcript."""
    import json

    from tests.helpers import install_fixture

    state = home / "tb state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "config.json").write_text(json.dumps(config))
    return state, next(install_fixture("loop", home / ".claude").glob("*/*.jsonl"))


def _event(transcript: Path, prompt_id: str = "p-1", **more: str) -> bytes:
    import json

    return json.dumps({"session_id": transcript.stem, "transcript_path": str(transcript),
                       "cwd": "/home/dev/project", "prompt_id": prompt_id, **more}).encode()


def _imported(modules: str) -> list[str]:
    # -S: without site, which may import some of them itself (an editable install's finder does).
    code = f"import sys, {modules}; print(' '.join(m for m in {SLOW!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    return out.stdout.split()


@pytest.mark.parametrize("module", ["budgets", "usage", "record", "schema"])
def test_no_slow_imports(module: str) -> None:
    assert _imported(f"tokenbudget.{module}") == []


def test_config_imports_no_dataclasses_or_typing() -> None:
    # pathlib comes in through paths.py, which config only hands its paths to.
    assert _imported("tokenbudget.config") in ([], ["pathlib"])


@pytest.mark.parametrize("name", ["PreToolUse", "UserPromptSubmit"])
def test_a_hook_call_with_nothing_new_imports_none_of_them(private_home: Path, name: str) -> None:
    from tokenbudget import hook

    kinds = ("daily", "weekly", "monthly", "5h", "session")
    _, transcript = _loop_session(private_home, {"budgets": [
        {"kind": kind, "limit": "900M"} for kind in kinds]})
    event = _event(transcript, prompt="/test --fast")
    assert hook.handle("Stop", event) == {}  # everything read: the next call has nothing new
    assert hook.handle("PreToolUse", event) == {}  # keeps the calendar windows (hot.py)
    code = ("import sys; from tokenbudget.hook import main; main(); "
            f"print(' '.join(m for m in {SLOW!r} if m in sys.modules), file=sys.stderr); "
            f"print(' '.join(m for m in sorted(sys.modules) if m.startswith({QUICK_OFF!r})),"
            " file=sys.stderr); "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('tokenbudget'))),"
            " file=sys.stderr)")
    out = subprocess.run([sys.executable, "-S", "-c", code, name], input=event,
                         capture_output=True, check=True, cwd=REPO)
    # Neither the engine nor the store, nor the time zones: the hot view and the window cache
    # decide (each module costs a call 0.2-2.5 ms).
    assert (out.stdout, out.stderr.decode().split("\n")) == (b"{}\n", ["", "", QUICK, ""])


def test_a_hook_call_in_team_mode_imports_no_database_code(private_home: Path) -> None:
    # Without -S, so that psycopg could be imported: the point is that nothing does.
    import json

    from tokenbudget import hook

    team = {"dsn": "host=/nowhere dbname=t", "team": "core", "member": "ann@a"}
    state, transcript = _loop_session(private_home, {"team": team})
    budget = {"kind": "daily", "scope": "team", "name": "", "limit": 9e8, "unit": "tokens",
              "mode": "block", "warn_at": 0.8}
    (state / "team-cache.json").write_text(json.dumps({
        "version": 1, "team": "core", "member": "ann@a", "fetched": 4e9, "timezone": "UTC",  # fresh
        "week_start": 0, "projects": {}, "totals": [], "budgets": [budget]}))
    event = _event(transcript, prompt="go on")
    assert hook.handle("Stop", event) == {}
    code = ("import sys; from tokenbudget.hook import main; main(); "
            "print(sorted(m for m in sys.modules if m.startswith(('psycopg', 'tokenbudget.team'))"
            "), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code, "UserPromptSubmit"], input=event,
                         capture_output=True, check=True, cwd=REPO)
    # the cache reader and its files alone
    loaded = b"['tokenbudget.team', 'tokenbudget.team.cache', 'tokenbudget.team.files']\n"
    assert (out.stdout, out.stderr) == (b"{}\n", loaded)


@pytest.mark.parametrize("zone", [None, "Europe/Berlin"])
def test_reading_budgets_imports_no_time_zones(tmp_path: Path, zone: str | None) -> None:
    # Reading the config and its budgets needs neither datetime nor zoneinfo (nor contextlib):
    # a hook call with nothing new reads them and decides from the window cache (hot.py). A
    # configured zone is checked by its file where zoneinfo would find it.
    import json

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"budgets": [{"kind": "daily", "limit": "200k"},
                                            {"kind": "command", "name": "/t", "limit": "$2"}],
                                "timezone": zone}))
    code = (f"import sys, tokenbudget.config as c; print(len(c.load_config({str(path)!r}).budgets),"
            " [m for m in ('datetime', 'zoneinfo', 'contextlib', 'tokenbudget.budgets',"
            " 'tokenbudget.usage') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout == "2 []\n"


def test_a_hook_call_with_news_imports_no_dataclasses_typing_or_pathlib(private_home: Path) -> None:
    # A call that reads and records a response: pricing, ingest, sync and the store come in,
    # dataclasses (with inspect, ~9 ms), typing (~2.5 ms) and pathlib (~3.5 ms) do not.
    state, transcript = _loop_session(private_home, {"budgets": [{"kind": "daily",
                                                                   "limit": "900M"}]})
    event = _event(transcript)
    code = ("import sys; from tokenbudget.hook import main; main(); "
            f"print(' '.join(m for m in {SLOW!r} if m in sys.modules), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-S", "-c", code, "Stop"], input=event,
                         capture_output=True, check=True, cwd=REPO)
    assert (out.stdout, out.stderr) == (b"{}\n", b"\n")
    assert (state / "ledger.json").exists()  # it read the transcript and recorded it


# What a call with news far from every limit imports of tokenbudget: it reads and records the
# response before the lock and decides with the quick check (hot.quiet), so neither the engine
# nor the budgets' rules (enforce, budgets, numfmt) come in, nor datetime (transcripts.parse_ts
# reads Claude Code's timestamps without it) or zoneinfo. The store reads the ledger a record at
# a time (lazy), and the index of a large one's records (index: a small module, mmap only when
# the index is read).
NEWS = ("tokenbudget tokenbudget.clock tokenbudget.config tokenbudget.errors tokenbudget.fileio"
        " tokenbudget.history tokenbudget.hook tokenbudget.hot tokenbudget.index"
        " tokenbudget.ingest"
        " tokenbudget.journal tokenbudget.lazy tokenbudget.ledger tokenbudget.limits"
        " tokenbudget.lock"
        " tokenbudget.paths tokenbudget.pricing tokenbudget.record tokenbudget.schema"
        " tokenbudget.store tokenbudget.sync tokenbudget.transcripts tokenbudget.usage")


@pytest.mark.parametrize("name", ["PostToolUse", "Stop"])
def test_a_hook_call_with_news_far_from_its_limits_imports_no_engine(
    private_home: Path, recorded_day: float, name: str
) -> None:
    from tokenbudget import hook

    kinds = ("daily", "weekly", "monthly", "5h", "session")
    state, transcript = _loop_session(private_home, {"budgets": [
        {"kind": kind, "limit": "900M"} for kind in kinds]})
    lines = transcript.read_bytes().splitlines(keepends=True)
    responses = [i for i, line in enumerate(lines) if b'"type":"assistant"' in line]
    transcript.write_bytes(b"".join(lines[:responses[-1]]))  # all but the last response
    assert hook.handle("Stop", _event(transcript, "p-1")) == {}  # read up to there
    journal = state / "ledger.journal.jsonl"
    before = journal.stat().st_size if journal.exists() else 0
    transcript.write_bytes(b"".join(lines))  # the news: one more response and what follows
    code = ("import sys; from tokenbudget.hook import main; main(); "
            f"print(' '.join(m for m in {SLOW + QUICK_OFF[:2]!r} if m in sys.modules),"
            " file=sys.stderr); "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('tokenbudget'))),"
            " file=sys.stderr)")
    out = subprocess.run([sys.executable, "-S", "-c", code, name], input=_event(transcript, "p-2"),
                         capture_output=True, check=True, cwd=REPO)
    assert (out.stdout, out.stderr.decode().split("\n")) == (b"{}\n", ["", NEWS, ""])
    assert journal.stat().st_size > before  # it recorded the response (one journal line)


def test_a_hook_call_the_engine_decides_imports_no_dataclasses_typing_or_pathlib(
    private_home: Path,
) -> None:
    """A prompt in a session past its budget: the quick check leaves it to the engine, which
    blocks it without dataclasses, inspect, typing or pathlib (its annotations' imports are
    for the type checker only)."""
    import json

    from tokenbudget import hook

    _, transcript = _loop_session(private_home, {"budgets": [{"kind": "session",
                                                             "limit": "1k"}]})
    event = _event(transcript, prompt="go on")
    hook.handle("Stop", event)  # everything read: the next call has nothing new
    code = ("import sys; from tokenbudget.hook import main; main(); "
            f"print(' '.join(m for m in {SLOW!r} if m in sys.modules), file=sys.stderr); "
            "print('tokenbudget.engine' in sys.modules, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-S", "-c", code, "UserPromptSubmit"], input=event,
                         capture_output=True, check=True, cwd=REPO)
    assert json.loads(out.stdout)["decision"] == "block"
    assert out.stderr == b"\nTrue\n"


def test_importing_the_index_compiles_no_expression() -> None:
    # Every call with news imports tokenbudget.index (store, ingest), and most never write an
    # index: its expression is a checkpoint's, compiled when one writes an index (compiling it
    # at import was about 0.4 ms of each such call).
    code = ("import re, json, tokenbudget.schema; seen = []; compile = re.compile; "
            "re.compile = lambda *a, **k: seen.append(a) or compile(*a, **k); "
            "import tokenbudget.index; print(seen)")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout == "[]\n"
