"""ingest.py: what each request, subagent, compaction and fork is charged to.

Fork shapes found charged wrongly after the fork rule of ingest.py landed, read in every order:
a fork of a fork whose only work was /compact (its copies name the first session, but it
started from the second one's total), and a parent transcript that turns up after its fork.
Then compacted requests, kept per bucket, model and command and read alike in either form; and
the rules of attribution (slash commands, subagents, the largest usage of a response, Claude
Code's hidden compaction requests, forks read before their parents).
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    DISCOVER,
    FIXTURES,
    FORK_CASES,
    _transcript,
    install_fixture,
    ledger_total,
    session_totals,
    truth,
    truth_per_session,
    truth_usage,
)
from tests.test_cli import run
from tokenbudget import ingest, query, sync, transcripts
from tokenbudget.ledger import Ledger
from tokenbudget.schema import S_REQUESTS
from tokenbudget.usage import Usage

pytestmark = pytest.mark.usefixtures("recorded_day")

SRC = FIXTURES / "fork-compacted" / "projects" / "-home-dev-project"
A = "4e9a33eb-78b1-4deb-bb3b-7b5841da46a8"  # the parent in fork-compacted
FORK = "5681032f-ea83-44c5-9acc-7e4c951b728c"  # its fork, after its /compact


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write(path: Path, objs: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(o, separators=(",", ":")) + "\n" for o in objs))


def restamp(objs: list[dict[str, Any]], sid: str, origin: str | None = None) -> list[Any]:
    """Lines as a fork copies them: its own session id, the requester's kept (or `origin`)."""
    out = []
    for o in json.loads(json.dumps(objs)):
        if "sessionId" in o:
            o["sessionId"] = sid
        if origin and o.get("type") == "assistant" and "requestSessionId" not in o:
            o["requestSessionId"] = origin
        out.append(o)
    return out


def per_session(home: Path) -> dict[str, int]:
    proc = run("report", "--by", "session", "--json", home=home)
    assert proc.returncode == 0, proc.stderr
    return {
        s["sessionId"][:8]: s["inputTokens"] + s["outputTokens"] + s["cacheCreationTokens"]
        + s["cacheReadTokens"]
        for s in json.loads(proc.stdout)["sessions"]
    }


def in_order(order: tuple[str, ...], dirs: list[Path]) -> Iterator[tuple[str, str, bool]]:
    """transcripts.discover() with the sessions read in `order` (prefixes of their ids)."""
    found = list(DISCOVER(dirs))
    for prefix in order:
        yield from (f for f in found if f[1].startswith(prefix))


def per_session_in_process(order: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(transcripts, "discover", lambda dirs: in_order(order, dirs))
    store = sync.open_store()
    Path(store.file).unlink(missing_ok=True)
    sync.sync_all(store, now=1795887600.0)
    groups = query.group("session", query.cells(store.snapshot(), {}), UTC)
    return {g.key[:8]: g.usage.total for g in groups}


def only_compacted(project: Path) -> tuple[str, str]:
    """A, then B forked from A whose only work was /compact, then C forked from B."""
    b, c = "bbbbbbbb-0000-4000-8000-000000000001", "cccccccc-0000-4000-8000-000000000002"
    a = lines(SRC / f"{A}.jsonl")
    write(project / f"{A}.jsonl", a[:30])
    write(project / f"{b}.jsonl", restamp([o for o in a[:29] if "uuid" in o], b, A)
          + restamp(a[30:], b))
    write(project / f"{c}.jsonl", restamp(lines(SRC / f"{FORK}.jsonl"), c))
    return b, c


def test_a_fork_of_a_fork_that_only_compacted(private_home: Path) -> None:
    # C's copies all name A (B made no response of its own), but C started from B's total,
    # B's compaction included: B is C's parent, the one whose total at the fork point is the
    # largest that C's own first total holds.
    only_compacted(private_home / ".claude" / "projects" / "-home-dev-project")
    assert run("sync", home=private_home).returncode == 0
    assert per_session(private_home) == {"4e9a33eb": 6119, "bbbbbbbb": 3079, "cccccccc": 3092}


@pytest.mark.parametrize("order", list(itertools.permutations(("4e9a33eb", "bbbb", "cccc"))))
def test_a_fork_of_a_fork_that_only_compacted_in_any_order(
    order: tuple[str, ...], private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read before B, C takes A for its parent; reading B works C's inheritance out again.
    only_compacted(private_home / ".claude" / "projects" / "-home-dev-project")
    assert per_session_in_process(order, monkeypatch) == {
        "4e9a33eb": 6119, "bbbbbbbb": 3079, "cccccccc": 3092,
    }


def test_hooks_of_a_fork_of_a_fork_before_its_parent_was_read(private_home: Path) -> None:
    project = private_home / ".claude" / "projects" / "-home-dev-project"
    b, c = only_compacted(project)
    store = sync.open_store()
    for sid in (c, A, c, b, c):
        sync.sync_session(store, project / f"{sid}.jsonl", sid)
    groups = query.group("session", query.cells(store.snapshot(), {}), UTC)
    assert {g.key[:8]: g.usage.total for g in groups} == {
        "4e9a33eb": 6119, "bbbbbbbb": 3079, "cccccccc": 3092,
    }


def test_a_parent_transcript_that_arrives_after_its_fork(private_home: Path) -> None:
    project = private_home / ".claude" / "projects" / "-home-dev-project"
    project.mkdir(parents=True)
    for f in SRC.iterdir():
        if not f.name.startswith(A[:8]):
            shutil.copy(f, project / f.name)
    assert run("sync", home=private_home).returncode == 0
    shutil.copy(SRC / f"{A}.jsonl", project / f"{A}.jsonl")
    assert run("sync", home=private_home).returncode == 0
    assert per_session(private_home) == {"4e9a33eb": 9198, "5681032f": 3092, "f0ed2512": 3105}


def parents(case: str) -> list[str]:
    """The sessions a fork of `case` names as the requester of its copies."""
    named = set()
    for path in (FIXTURES / case / "projects").glob("*/*.jsonl"):
        for o in lines(path):
            if o.get("requestSessionId") not in (None, o.get("sessionId")):
                named.add(o["requestSessionId"])
    return sorted(named)


@pytest.mark.parametrize(
    ("case", "parent"), [(c, p) for c in FORK_CASES for p in parents(c)]
)
def test_any_parent_transcript_that_arrives_after_its_forks(
    case: str, parent: str, private_home: Path, tmp_path: Path
) -> None:
    # Its forks hold its requests meanwhile (their totals stay whole); when it turns up, it
    # takes them back and each fork's inheritance is worked out again: the same split, by
    # session and by command, as one sync of everything.
    projects = install_fixture(case, private_home / ".claude")
    [main] = projects.glob(f"*/{parent}.jsonl")
    aside = tmp_path / "aside"
    aside.mkdir()
    main.rename(aside / main.name)
    if (main.parent / parent).is_dir():
        (main.parent / parent).rename(aside / parent)
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    (aside / main.name).rename(main)
    if (aside / parent).is_dir():
        (aside / parent).rename(main.parent / parent)
    sync.sync_all(store, now=1795887600.0)
    fresh = sync.open_store(path=tmp_path / "fresh.json")
    sync.sync_all(fresh, now=1795887600.0)
    ledger, whole = store.snapshot(), fresh.snapshot()
    by_session = {g.key: g.usage for g in query.group("session", query.cells(ledger, {}), UTC)}
    assert by_session == truth_per_session(case, list(by_session))
    assert [(g.key, g.usage) for g in query.group("command", query.cells(ledger, {}), UTC)] == [
        (g.key, g.usage) for g in query.group("command", query.cells(whole, {}), UTC)
    ]


def test_a_fork_that_compacted_is_charged_it_once_its_parent_arrives(
    private_home: Path, tmp_path: Path
) -> None:
    # Without its parent's total, nothing in B's own total can be told from what it inherited:
    # B is charged none of it (never more than its own), until A's transcript is read.
    project = private_home / ".claude" / "projects" / "-home-dev-project"
    only_compacted(project)
    (project / f"{A}.jsonl").rename(tmp_path / "parent.jsonl")
    assert run("sync", home=private_home).returncode == 0
    assert per_session(private_home) == {"bbbbbbbb": 6119, "cccccccc": 3092}
    (tmp_path / "parent.jsonl").rename(project / f"{A}.jsonl")
    assert run("sync", home=private_home).returncode == 0
    assert per_session(private_home) == {"4e9a33eb": 6119, "bbbbbbbb": 3079, "cccccccc": 3092}


@pytest.mark.parametrize("damage", ["rejected", "torn"])
def test_a_fork_is_never_charged_more_than_its_own(
    damage: str, private_home: Path
) -> None:
    # The parent's total at the fork point cannot be read: the fork's own total then adds
    # nothing beyond its own lines (its parent's compaction must not land on it).
    project = private_home / ".claude" / "projects" / "-home-dev-project"
    project.mkdir(parents=True)
    for f in SRC.iterdir():
        shutil.copy(f, project / f.name)
    parent = project / f"{A}.jsonl"
    whole = parent.read_bytes()
    last = whole.rstrip(b"\n").rsplit(b"\n", 1)[1]
    assert b'"type":"cost-state"' in last
    if damage == "rejected":
        parent.write_bytes(whole.replace(b'"inputTokens":2706', b'"inputTokens":-2706'))
    else:
        parent.write_bytes(whole[: len(whole) - len(last) // 2])  # still being written
    assert run("sync", home=private_home).returncode == 0
    assert per_session(private_home) == {"4e9a33eb": 6119, "5681032f": 3092, "f0ed2512": 3105}
    parent.write_bytes(whole)  # whole after all: the compaction is the parent's, not the fork's
    assert run("sync", home=private_home).returncode == 0
    assert per_session(private_home) == {"4e9a33eb": 9198, "5681032f": 3092, "f0ed2512": 3105}


NOW = 1795887600.0


CASES = ("slash", "compacted", "loop", "agent")


def _synced(private_home: Path) -> Ledger:
    for case in CASES:
        install_fixture(case, private_home / ".claude", unique_ids=True)
    store = sync.open_store()
    sync.sync_all(store, now=NOW)
    ledger = store.snapshot()
    assert ledger["keys"]
    return ledger


def test_compacted_cells_name_the_command_not_the_turn(private_home: Path) -> None:
    ledger = _synced(private_home)
    turns = {pid for s in ledger["sessions"].values() for pid in s["t"]}
    assert ingest.compact(ledger, NOW + 2 * 3600) > 0
    keys = [k for s in ledger["sessions"].values() for k in s["c"]]
    commands = {k.split("\t")[2] for k in keys}
    assert commands == {"prompt", "/test"}  # /compact's usage is in no request record
    assert not commands & turns


def test_slash_command_turns_are_attributed(private_home: Path) -> None:
    install_fixture("slash", private_home / ".claude", unique_ids=True)
    install_fixture("compacted", private_home / ".claude", unique_ids=True)
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    groups = query.group("command", query.cells(store.snapshot(), {}), UTC)
    by_cmd = {g.key: g.usage.total for g in groups}
    assert by_cmd["/test"] == truth_usage("slash").total
    # The two compaction requests appear in no assistant line: they are /compact's.
    assert by_cmd["/compact"] == 6223


def test_largest_usage_wins_not_the_first(private_home: Path) -> None:
    install_fixture("plain", private_home / ".claude")
    path = _transcript(private_home, "plain")
    lines = path.read_text().splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if '"type":"assistant"' in line)
    # Older Claude Code wrote a partial output count on the first line of a response.
    lines[first] = lines[first].replace('"output_tokens":41', '"output_tokens":1', 1)
    path.write_text("".join(lines[: first + 1]))
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    assert ledger_total(store).output == 1
    path.write_text("".join(lines))
    sync.sync_all(store, now=1795887600.0)
    assert ledger_total(store) == truth_usage("plain")


def test_a_subagent_line_written_after_the_session_total_counts_once(private_home: Path) -> None:
    install_fixture("agent", private_home / ".claude")
    agent = next((private_home / ".claude" / "projects").rglob("agent-*.jsonl"))
    full = agent.read_bytes()
    lines = full.splitlines(keepends=True)
    cut = max(i for i, line in enumerate(lines) if b'"type":"assistant"' in line)
    agent.write_bytes(b"".join(lines[: cut - 1]))  # the subagent's response not on disk yet
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    # Claude Code's session total already covers it, as usage in no line.
    assert ledger_total(store) == truth_usage("agent")
    agent.write_bytes(full)
    sync.sync_all(store, now=1795887600.0)
    assert ledger_total(store) == truth_usage("agent")
    assert session_totals(store)[agent.parent.parent.name] == truth_usage("agent")


def _interrupted(path: Path, written_ms: int | None, *, sent_after: bool = False,
                 requests: bool = True) -> None:
    """The transcript as Claude Code 2.1.328 leaves it on Ctrl-C in `claude -p` while the
    response streams: the session's total (which counts that response from its first event)
    written before the response's lines, dated when the response began, and after the
    request's `api-request` line. `sent_after`: the total before that line too (a request sent
    after the total was written). `requests`: False drops the `api-request` lines (a
    transcript whose start was read by a tokenbudget that kept no requests, or an older
    Claude Code)."""
    lines = path.read_text().splitlines(keepends=True)
    state = next(i for i, line in enumerate(lines) if '"type":"cost-state"' in line)
    kind = '"type":"api-request"' if sent_after else '"type":"assistant"'
    first = next(i for i, line in enumerate(lines) if kind in line)
    total = json.loads(lines[state])
    if written_ms is None:
        del total["startTime"], total["totalDuration"]
    else:
        total["totalDuration"] = written_ms - total["startTime"]
    rest = [line for i, line in enumerate(lines) if i not in (state,)]
    rest.insert(first, json.dumps(total) + "\n")
    if not requests:
        rest = [line for line in rest if '"type":"api-request"' not in line]
    path.write_text("".join(rest))


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


@pytest.mark.parametrize("requests", [True, False])
def test_a_response_whose_line_follows_the_total_it_is_in_counts_once(
    private_home: Path, requests: bool
) -> None:
    install_fixture("plain", private_home / ".claude")
    path = _transcript(private_home, "plain")
    # Its lines are dated 17:14:35.881-.884; the total was written at .919, after them: the
    # total's time tells, with or without the request's line before the total.
    _interrupted(path, _ms("2026-11-28T17:14:35.919Z"), requests=requests)
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    assert ledger_total(store) == truth_usage("plain")


WRITTEN = [
    _ms("2026-11-28T17:14:35.850Z"),  # before the response began at .881: cannot hold it
    None,  # a total that names no time
    _ms("2026-11-28T17:14:35.850Z") + int(ingest.TOTAL_WRITTEN_SLACK * 1000),  # past believing
]


@pytest.mark.parametrize("written", WRITTEN)
def test_a_response_whose_request_was_sent_before_the_total_is_in_it_whatever_its_time(
    private_home: Path, written: int | None
) -> None:
    # The request's line is before the total's: the response began before the total was
    # written, and the total holds it, whatever time the total names (a resumed process's
    # names one too early by the pauses between processes).
    install_fixture("plain", private_home / ".claude")
    _interrupted(_transcript(private_home, "plain"), written)
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    assert ledger_total(store) == truth_usage("plain")


@pytest.mark.parametrize("written", WRITTEN)
@pytest.mark.parametrize("sent_after", [True, False], ids=["sent-after", "no-request-line"])
def test_a_response_begun_after_the_total_was_written_is_a_new_request(
    private_home: Path, written: int | None, sent_after: bool
) -> None:
    # Sent after the total (its request's line after the total's), or with no request line
    # read: the total's time decides, and says after.
    install_fixture("plain", private_home / ".claude")
    _interrupted(_transcript(private_home, "plain"), written, sent_after=sent_after,
                 requests=sent_after)
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    assert ledger_total(store).total == 2 * truth_usage("plain").total


def _line(entry: dict[str, Any]) -> str:
    return json.dumps(entry) + "\n"


def _response(sid: str, n: int, at: str, input_tokens: int, output_tokens: int = 10,
              ref: str | None = None) -> dict[str, Any]:
    line = {"type": "assistant", "isSidechain": False, "sessionId": sid, "timestamp": at,
            "requestId": f"req_{n}", "uuid": f"u{n}", "cwd": "/home/dev/project",
            "message": {"id": f"msg_{n}", "type": "message", "role": "assistant",
                        "model": "claude-opus-5-5", "content": [{"type": "text", "text": "x"}],
                        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                                  "cache_creation_input_tokens": 0,
                                  "cache_read_input_tokens": 0}}}
    if ref is not None:
        line["requestRef"] = ref
    return line


def _prompt(sid: str, n: int, at: str) -> dict[str, Any]:
    return {"type": "user", "isSidechain": False, "sessionId": sid, "timestamp": at,
            "promptId": f"prompt-{n}", "uuid": f"p{n}", "cwd": "/home/dev/project",
            "message": {"role": "user", "content": "Say hello."}}


def _request(sid: str, ref: str, at: str) -> dict[str, Any]:
    """An `api-request` line, as Claude Code writes one before it sends the request."""
    return {"type": "api-request", "sessionId": sid, "id": ref, "timestamp": at,
            "version": "2.1.328", "querySource": "sdk",
            "params": {"model": "claude-opus-5-5", "max_tokens": 128000}}


def _total(sid: str, input_tokens: int, output_tokens: int, start: str, written: str
           ) -> dict[str, Any]:
    return {"type": "cost-state", "sessionId": sid, "startTime": _ms(start),
            "totalDuration": _ms(written) - _ms(start),
            "modelUsage": {"claude-opus-5-5": {
                "inputTokens": input_tokens, "outputTokens": output_tokens,
                "cacheReadInputTokens": 0, "cacheCreationInputTokens": 0}}}


@pytest.mark.xfail(strict=True, reason=(
    "review: a session total's `written` (startTime + totalDuration) takes for 'already in the "
    "total' a line of another process of the same session that began before this process "
    "exited and was written after its total; _settle_extra takes that line off the usage only "
    "the total knows (here 500 input tokens of a request in no line), which no later total "
    "gives back. Before `written` the line counted, since it is dated after the last line "
    "before the total. With the requests' `api-request` lines the order says the same: B's "
    "request was sent before A's total was written, and no line tells which process sent it."))
@pytest.mark.parametrize("requests", [False, True], ids=["no-request-lines", "request-lines"])
def test_a_response_of_another_process_written_after_a_total_keeps_the_totals_own_usage(
    private_home: Path, requests: bool
) -> None:
    # Process A and process B of one session (resumed while A runs) append to one file.
    sid = "11111111-2222-3333-4444-555555555555"
    folder = private_home / ".claude" / "projects" / "-home-dev-project"
    folder.mkdir(parents=True)
    entries = [
        _request(sid, "r-a", "2026-11-28T16:19:59.500Z"),
        _response(sid, 1, "2026-11-28T16:20:00.000Z", 1000, ref="r-a"),  # A's request
        _request(sid, "r-b", "2026-11-28T16:20:30.000Z"),  # B sends its request
        # A exits at 16:21:00: its total holds 500 input tokens in no line (a compaction's,
        # or an interactive session's side request).
        _total(sid, 1500, 20, "2026-11-28T16:19:50.000Z", "2026-11-28T16:21:00.000Z"),
        # B's response, begun at 16:20:30, written after A's total: not in it.
        _response(sid, 2, "2026-11-28T16:20:30.000Z", 800, ref="r-b"),
        # B exits: its total goes on from the one before B started (none), not from A's.
        _total(sid, 800, 10, "2026-11-28T16:19:55.000Z", "2026-11-28T16:21:30.000Z"),
    ]
    if not requests:
        entries = [e for e in entries if e["type"] != "api-request"]
    (folder / f"{sid}.jsonl").write_text("".join(map(_line, entries)))
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0 + 3600)
    assert ledger_total(store).input == 1000 + 500 + 800


RESUMED = "22222222-3333-4444-5555-666666666666"


def _resumed(*, hidden: int = 0) -> list[dict[str, Any]]:
    """A session's first `claude -p` process, then `claude -p --resume` ten minutes later,
    Ctrl-C'd while its response streams. The second process's total carries the first one's
    startTime and adds only its own running time: its `written` (16:00:07) is ten minutes
    short of when it was written, and the interrupted response's line (written after the
    total, dated when the response began) is dated after it. `hidden`: input tokens the
    second total holds in no line (a compaction's)."""
    sid, start = RESUMED, "2026-11-28T15:59:59.000Z"
    return [
        _prompt(sid, 1, "2026-11-28T16:00:00.000Z"),
        _request(sid, "r-1", "2026-11-28T16:00:00.500Z"),
        _response(sid, 1, "2026-11-28T16:00:01.000Z", 1000, ref="r-1"),
        _total(sid, 1000, 10, start, "2026-11-28T16:00:02.000Z"),  # 3 s of running time
        _prompt(sid, 2, "2026-11-28T16:10:00.000Z"),
        _request(sid, "r-2", "2026-11-28T16:10:00.500Z"),
        # Interrupted at 16:10:05 after 5 s more: the total holds the response so far.
        _total(sid, 1000 + hidden + 800, 10 + 5, start, "2026-11-28T16:00:07.000Z"),
        _response(sid, 2, "2026-11-28T16:10:01.000Z", 800, 5, ref="r-2"),
    ]


def _deliver(private_home: Path, entries: list[dict[str, Any]], *, one_by_one: bool,
             path: Path | None = None) -> Path:
    """Append `entries` to the session's transcript and read them: with one hook call after
    each line (a hook reads a few new lines at a time), or with one sync of all of them."""
    sid = entries[0]["sessionId"]
    if path is None:
        folder = private_home / ".claude" / "projects" / "-home-dev-project"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{sid}.jsonl"
    from tokenbudget import hook

    for n, entry in enumerate(entries if one_by_one else []):
        with path.open("a") as f:
            f.write(_line(entry))
        # Each call's payload differs (the same one twice is taken for a hook registered twice).
        event = {"session_id": sid, "transcript_path": str(path), "cwd": "/home/dev/project",
                 "hook_event_name": "PostToolBatch", "prompt_id": "prompt-1", "call": n}
        hook.handle("PostToolBatch", json.dumps(event).encode(), now=1795887600.0)
    if not one_by_one:
        with path.open("a") as f:
            f.write("".join(map(_line, entries)))
        sync.sync_all(sync.open_store(), now=1795887600.0)
    return path


@pytest.mark.parametrize("one_by_one", [False, True], ids=["all-at-once", "hook-by-hook"])
def test_a_response_interrupted_in_a_resumed_process_counts_once(
    private_home: Path, one_by_one: bool
) -> None:
    _deliver(private_home, _resumed(), one_by_one=one_by_one)
    store = sync.open_store()
    assert ledger_total(store) == Usage(1800, 15, 0, 0, 0)
    # Every request answered: none is kept open.
    assert S_REQUESTS not in store.snapshot()["sessions"][RESUMED]


@pytest.mark.parametrize("one_by_one", [False, True], ids=["all-at-once", "hook-by-hook"])
def test_a_request_sent_after_a_total_is_new_whatever_that_total_holds(
    private_home: Path, one_by_one: bool
) -> None:
    # A third process: its request's line comes after the second total, which holds 500
    # input tokens in no line. Its response is its own, not part of that total: taken for
    # part of it, it would take the 500 off until the third process's own total is read.
    sid = RESUMED
    third = [
        _prompt(sid, 3, "2026-11-28T16:20:00.000Z"),
        _request(sid, "r-3", "2026-11-28T16:20:00.500Z"),
        _response(sid, 3, "2026-11-28T16:20:01.000Z", 700, ref="r-3"),
    ]
    path = _deliver(private_home, _resumed(hidden=500) + third, one_by_one=one_by_one)
    assert ledger_total(sync.open_store()) == Usage(3000, 25, 0, 0, 0)
    total = _total(sid, 3000, 25, "2026-11-28T15:59:59.000Z", "2026-11-28T16:00:09.000Z")
    _deliver(private_home, [total], one_by_one=one_by_one, path=path)
    assert ledger_total(sync.open_store()) == Usage(3000, 25, 0, 0, 0)


def test_requests_never_answered_are_not_kept_forever(private_home: Path) -> None:
    # Requests whose response never came (an error, a process killed): only the latest few
    # are kept open, and the interrupted one among them still counts once.
    entries = _resumed()
    unanswered = [_request(RESUMED, f"lost-{i}", "2026-11-28T16:05:00.000Z")
                  for i in range(2 * ingest.OPEN_REQUESTS)]
    entries[4:4] = unanswered
    _deliver(private_home, entries[:-1], one_by_one=False)
    kept = sync.open_store().snapshot()["sessions"][RESUMED][S_REQUESTS]
    assert len(kept) == ingest.OPEN_REQUESTS
    assert list(kept)[-1] == "r-2" and kept["r-2"] == 1  # sent before the total was written
    _deliver(private_home, entries[-1:], one_by_one=False)
    assert ledger_total(sync.open_store()) == Usage(1800, 15, 0, 0, 0)


def test_a_second_compaction_in_a_session_is_counted_too(private_home: Path) -> None:
    install_fixture("compacted", private_home / ".claude")
    path = _transcript(private_home, "compacted")
    lines = path.read_text().splitlines(keepends=True)
    states = [i for i, line in enumerate(lines) if '"type":"cost-state"' in line]
    store = sync.open_store()
    # Read the session one process at a time, each ending with its cost-state.
    for end in states:
        path.write_text("".join(lines[: end + 1]))
        sync.sync_all(store, now=1795887600.0)
    path.write_text("".join(lines))
    sync.sync_all(store, now=1795887600.0)
    assert ledger_total(store) == truth_usage("compacted")
    # A later process compacts again: 3,000 tokens in no assistant line.
    last = json.loads(lines[states[-1]])
    usage = last["modelUsage"]["claude-opus-5-5"]
    usage["inputTokens"] += 3000
    with open(path, "a") as f:
        f.write(json.dumps(last) + "\n")
    sync.sync_all(store, now=1795887600.0)
    assert ledger_total(store).total == truth_usage("compacted").total + 3000


def test_compacted_requests_still_count_once(private_home: Path) -> None:
    from tokenbudget import ingest

    for case in ("agent", "forked", "compacted"):
        install_fixture(case, private_home / ".claude", unique_ids=True)
    store = sync.open_store()
    expected = sum((truth_usage(c) for c in ("agent", "forked", "compacted")), Usage())
    sync.sync_all(store, now=1795887600.0)
    before = store.snapshot()
    by = {k: query.group(k, query.cells(before, {}), UTC) for k in query.BY_CHOICES}
    assert before["keys"]
    # Two hours later every session is idle: their request records are compacted.
    sync.sync_all(store, now=1795887600.0 + 2 * 3600)
    after = store.snapshot()
    assert after["keys"] == {} and all(s.get("k") for s in after["sessions"].values())
    assert len(store.path.read_bytes()) < len(json.dumps(before))
    for k, groups in by.items():
        again = query.group(k, query.cells(after, {}), UTC)
        assert [(g.key, g.usage, round(g.cost, 9)) for g in again] == [
            (g.key, g.usage, round(g.cost, 9)) for g in groups
        ], k
    # Read again from the start (a transcript rewritten), and a new fork of a compacted
    # session: nothing counts twice.
    fork = next(p for p in (private_home / ".claude" / "projects").glob("*/*.jsonl")
                if "fd4b2298" in p.name)
    data = fork.read_bytes()
    fork.write_bytes(data[: len(data) // 3])
    sync.sync_all(store, now=1795887600.0 + 3 * 3600)
    fork.write_bytes(data)
    sync.sync_all(store, now=1795887600.0 + 3 * 3600)
    copy = fork.with_name("0f0f0f0f-0000-4000-8000-000000000000.jsonl")
    copy.write_bytes(data.replace(b"fd4b2298-2ab6-44e1-8473-ac50d60f614d",
                                  b"0f0f0f0f-0000-4000-8000-000000000000"))
    sync.sync_all(store, now=1795887600.0 + 3 * 3600)
    assert ledger_total(store) == expected
    settled = store.snapshot()
    assert ingest.compact(settled, 1795887600.0 + 3 * 3600) == 0  # sync compacted them all


def test_a_fork_read_before_its_parent_credits_the_copies_to_the_parent(
    private_home: Path,
) -> None:
    # The first hook of a new install may come from the fork: its copies of the parent's
    # requests must still be the parent's, whatever reads the parent's transcript later.
    projects = install_fixture("forked", private_home / ".claude")
    parent = "41481808-d348-404b-a183-6d629348bbef"
    fork = "fd4b2298-2ab6-44e1-8473-ac50d60f614d"
    store = sync.open_store()
    sync.sync_session(store, projects / "-home-dev-project" / f"{fork}.jsonl", fork)
    assert session_totals(store) == {fork: truth_usage("forked", fork)}
    sync.sync_all(store, now=1795887600.0)
    per_session = session_totals(store)
    assert per_session[parent] == truth_usage("forked", parent)
    assert per_session[fork] == truth_usage("forked", fork)


def test_a_first_sync_puts_subagent_usage_in_the_launching_turn(private_home: Path) -> None:
    install_fixture("agent", private_home / ".claude")
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)  # subagent transcripts are read before the main one
    s = store.snapshot()["sessions"]["8e945286-e779-410e-9516-f3c30e65f9e5"]
    turn = s["t"]["e1fb9928-8dba-4eae-9c5a-27858b8eb42a"]  # "please AGENT", which launched it
    # Every request of the session is this turn's: its own, the subagent's, and the answer to
    # the subagent's notification (which carries the same turn on).
    fields = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
              "cache_read_input_tokens")
    assert turn[0] == "prompt" and turn[1] > 0
    assert turn[2] == sum(int(str(t[k])) for t in truth("agent") for k in fields)


def test_a_subagent_launched_from_a_notification_joins_the_turn_it_continues(
    private_home: Path,
) -> None:
    projects = install_fixture("agent", private_home / ".claude")
    sid = "8e945286-e779-410e-9516-f3c30e65f9e5"
    launching, note = "e1fb9928-8dba-4eae-9c5a-27858b8eb42a", "23cf6c6f-b517-4d6b-bc2c-b7940b565cbd"
    (agent,) = projects.glob(f"*/{sid}/subagents/agent-*.jsonl")
    agent.write_text(agent.read_text().replace(launching, note))  # launched by the note's turn
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)  # the subagent is read first
    s = store.snapshot()["sessions"][sid]
    assert set(s["t"]) == {launching} and s["a"] == {note: launching}
    fields = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
              "cache_read_input_tokens")
    assert s["t"][launching][2] == sum(int(str(t[k])) for t in truth("agent") for k in fields)


@pytest.mark.parametrize("split", [False, True])
def test_a_fork_that_writes_its_total_before_its_copies_is_charged_its_own(
    split: bool, private_home: Path
) -> None:
    # An interactive fork may write its cost-state ahead of the lines it covers, its copies
    # included: read first, that total looks like the fork's own, until the copies say whose.
    projects = install_fixture("fork-elsewhere", private_home / ".claude")
    [fork] = projects.glob("-home-dev-a-elsewhere/*.jsonl")
    lines = fork.read_bytes().splitlines(keepends=True)
    [total] = [line for line in lines if b'"cost-state"' in line]
    rest = [line for line in lines if line is not total]
    store = sync.open_store()
    if split:
        fork.write_bytes(total)
        sync.sync_session(store, fork, fork.stem)
    fork.write_bytes(total + b"".join(rest))
    sync.sync_session(store, fork, fork.stem)
    sync.sync_all(store, now=1795887600.0)
    per_session = session_totals(store)
    assert per_session == truth_per_session("fork-elsewhere", list(per_session))


def test_subagents_of_slash_commands_in_forks_count_for_the_command(private_home: Path) -> None:
    # /helper launches a subagent, in a session and again in its fork: every request served
    # (subagents and the turns after their notifications included) is /helper's, once.
    install_fixture("fork-slash-agent", private_home / ".claude")
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    groups = query.group("command", query.cells(store.snapshot(), {}), UTC)
    assert {g.key: g.usage for g in groups} == {"/helper": truth_usage("fork-slash-agent")}


def test_a_subagent_that_compacts_on_its_own_is_counted_for_its_session(
    private_home: Path,
) -> None:
    # Its compaction request is in no transcript line: only its session's cost-state has it
    # (and the fork's, inherited, where it must not count again).
    projects = install_fixture("fork-autocompact-subagent", private_home / ".claude")
    [agent] = projects.glob("*/*/subagents/agent-*.jsonl")
    assert b'"trigger":"auto"' in agent.read_bytes()
    assert sum(1 for t in truth("fork-autocompact-subagent") if t["sub"]) == 3
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    per_session = session_totals(store)
    assert per_session == truth_per_session("fork-autocompact-subagent", list(per_session))


def test_a_corrections_key_in_the_team_outbox_is_the_same_in_every_version(
    private_home: Path,
) -> None:
    """A correction (here /compact's usage, known only from Claude Code's total) waits for
    the team under a key made from its session, model and bucket alone, and that key never
    changes between versions: the server replaces the row it holds under it, so a ledger
    rebuilt or upgraded sends it again without counting it twice."""
    install_fixture("compacted", private_home / ".claude")
    store = sync.open_store()
    with store.transaction() as ledger:
        ledger["team"] = "core"
    sync.sync_all(store, now=NOW)
    key = "adj-90b5c722a3e427cb"
    sid = "4b4c9a4f-44d4-4d90-8875-e2461628edf9"
    outbox = store.snapshot()["outbox"]
    assert [k for k in outbox if k.startswith("adj-")] == [key]
    assert outbox[key][:2] == [sid, "claude-opus-5-5"] and outbox[key][7] == 1995430
    # A ledger that lost its team (and its outbox) sends its corrections under the same key.
    again = store.snapshot()
    again["outbox"] = {}
    ingest.requeue_all(again)
    assert [k for k in again["outbox"] if k.startswith("adj-")] == [key]


def test_a_compacted_key_is_found_by_search_as_by_the_index() -> None:
    """A hook call's few keys are searched in the compacted keys joined, a sync's many looked
    up in their index: both name the same owner, the last session holding the key, and never
    text that spans two keys or two sessions, or a session's short last slot as a whole key."""
    from tokenbudget.ledger import new_ledger

    a, b, c, d, e = ("0123456789abcdef", "fedcba9876543210", "aaaaaaaaaaaaaaaa",
                     "bbbbbbbbbbbbbbbb", "cccccccccccccccc")
    ledger = new_ledger()
    for sid, joined in (("s1", a + b), ("s2", c), ("s3", ""), ("s4", b + d), ("s5", e + "0123"),
                        ("s6", d[:8])):
        ledger["sessions"][sid] = {"k": joined} if joined else {}
    asked = {
        a: "s1", b: "s4", c: "s2", d: "s4", e: "s5",
        "89abcdeffedcba98": None,  # the end of one key and the start of the next
        "aaaaaaaabbbbbbbb": None,  # across two sessions' keys
        d[8:] + e[:8]: None,  # across the last key of a session and the first of the next
        "cccccccc01234567": None,  # into a short slot
        "0123": "s5", "bbbbbbbb": "s6",  # short slots, whole: as the index holds them
        "01234567": None, "": None, a + "0": None, "0" * 16: None,
    }
    ing = ingest.Ingestor(ledger)
    assert {k: ing._compacted_search(k) for k in asked} == asked
    index = ingest.Ingestor(ledger)
    index._compacted_asked = ingest.COMPACTED_SEARCHES  # the index from the first question on
    assert {k: index._compacted_owner(k) for k in asked} == asked
    assert index._compacted is not None and ing._compacted is None
    many = ingest.Ingestor(ledger)
    assert [many._compacted_owner(k) for k in [*asked] * 3] == [*asked.values()] * 3
    assert many._compacted is not None  # a pass that asks many builds the index
