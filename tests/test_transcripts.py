"""transcripts.py: lines counted correctly, or skipped and reported; never counted twice.

Hostile transcripts (huge lines written in pieces, junk at any cut point, files rewritten or
replaced), then partial, bad and overlong lines and rewritten files in the recorded fixtures.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import _transcript, install_fixture, ledger_total, stored_ledger, truth_usage
from tests.reliability_fixtures import REPO
from tests.reliability_workers import MODEL, T0, assistant_line, ledger_usage, prompt_line
from tokenbudget import hook, sync, transcripts
from tokenbudget.usage import Usage

# The synthetic responses are dated from T0: now is the day after, whatever day the suite runs.
pytestmark = pytest.mark.usefixtures("recorded_day")

SID = "s-hostile"
CWD = "/home/dev/hostile"


def transcript(home: Path, sid: str = SID) -> Path:
    path = home / ".claude" / "projects" / "-home-dev-hostile" / f"{sid}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def requests(first: int, n: int, sid: str = SID, seed: int = 0) -> tuple[bytes, Usage]:
    """`n` responses numbered from `first`, each as Claude Code writes it, and their sum."""
    rng = random.Random(seed * 7919 + first)
    data = b""
    total = Usage()
    for i in range(first, first + n):
        u = Usage(rng.randint(1, 999), rng.randint(1, 999), rng.randint(0, 999), 0,
                  rng.randint(0, 999))
        data += assistant_line(sid, CWD, f"{sid}-{i}", u, T0 + i)
        total = total + u
    return data, total


def hook_call(path: Path, sid: str = SID) -> dict[str, object]:
    return hook.handle("PostToolUse", json.dumps({
        "session_id": sid, "transcript_path": str(path), "tool_name": "Bash",
        "prompt_id": f"p{random.random()}"}).encode())


def skipped() -> dict[str, int]:
    return dict(sync.open_store().snapshot()["skipped"])


# --- a 50 MB line ---------------------------------------------------------------------------------

BIG = 50 * 1024 * 1024


def big_line(kind: bytes = b"user") -> bytes:
    # A tool's output: the usual reason for a giant line. It even mentions "assistant" and
    # usage, so only its length can tell it apart.
    head = b'{"type":"' + kind + b'","sessionId":"' + SID.encode() + b'","toolUseResult":"'
    tail = b'","note":"\\"type\\":\\"assistant\\",\\"usage\\""}\n'
    return head + b"a" * (BIG - len(head) - len(tail)) + tail


def test_a_50_mb_line_written_in_pieces_between_reads(private_home: Path) -> None:
    path = transcript(private_home)
    before, want_before = requests(0, 20)
    after, want_after = requests(100, 20)
    path.write_bytes(before)
    hook_call(path)
    line = big_line()
    # Claude Code appends the giant line while hooks keep reading: 7 MB at a time.
    for start in range(0, len(line), 7 * 1024 * 1024):
        with open(path, "ab") as f:
            f.write(line[start:start + 7 * 1024 * 1024])
        hook_call(path)
    with open(path, "ab") as f:
        f.write(after)
    hook_call(path)
    assert ledger_usage() == want_before + want_after
    assert skipped().get("too long", 0) >= 1
    # A full sync afterwards finds nothing new, and a rebuild reads it all again the same.
    report = sync.sync_all(sync.open_store())
    assert report.new_requests == 0
    sync.rebuild(sync.open_store())
    assert ledger_usage() == want_before + want_after


def test_a_50_mb_line_is_never_held_whole(private_home: Path) -> None:
    path = transcript(private_home)
    head, want = requests(0, 5)
    tail, want_tail = requests(50, 5)
    path.write_bytes(head + big_line(b"assistant") + tail)
    code = ("import tracemalloc\n"
            "tracemalloc.start()\n"
            "from tokenbudget import sync\n"
            "r = sync.sync_all(sync.open_store())\n"
            "print(r.new_requests, r.skipped.get('too long'),"
            " tracemalloc.get_traced_memory()[1] // 2**20)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=True)
    new, too_long, peak_mb = (int(x) for x in proc.stdout.split())
    assert (new, too_long) == (10, 1)
    # Python's own allocations: the 16 MB the reader allows a line, and a chunk or two more.
    # Holding the 50 MB line whole (and json.loads' copies of it) would show here.
    assert peak_mb < 45, f"peak {peak_mb} MiB"
    assert ledger_usage() == want + want_tail


# --- junk, partial lines, random cut points: a property -----------------------------------------

JUNK = [b"", b"   ", b"\x00\x00\x00", b"\xff\xfe\xfd garbage", b"{", b"}", b"{}", b"[1,2]",
        b"null", b'"text"', b"{not json}", b'{"type":"assistant"}',
        b'{"type":"assistant","message":"no"}', b'{"type":"assistant","message":{"usage":5}}',
        b'{"type":"assistant","message":{"id":"m","usage":{"input_tokens":"12"}}}',
        b'{"type":"user","message":{"content":[{"type":"text","text":"\xff"}]}}',
        b'{"type":"cost-state","sessionId":"' + SID.encode() + b'","modelUsage":[]}',
        b"\r", b"\t{\"type\":\"assistant\"}\t", b'{"a":' * 2000 + b"1" + b"}" * 2000,
        b'{"type":"assistant","message":{"id":"\xc3\x28","usage":{}}}']


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    layout=st.lists(st.one_of(st.integers(1, 4).map(lambda n: ("req", n)),
                              st.sampled_from(range(len(JUNK))).map(lambda j: ("junk", j))),
                    min_size=1, max_size=25),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
    reader=st.sampled_from(["hook", "sync_all", "sync_session"]),
)
def test_junk_and_any_cut_points_count_exactly(
    private_home: Path, layout: list[tuple[str, int]], cuts: list[int], reader: str
) -> None:
    state = Path(os.environ["TOKENBUDGET_HOME"])
    for p in state.glob("*"):
        if p.is_dir():
            shutil.rmtree(p)  # the hot view's folder
        else:
            p.unlink()
    path = transcript(private_home)
    path.unlink(missing_ok=True)
    data = b""
    want = Usage()
    n = 0
    for kind, value in layout:
        if kind == "req":
            chunk, total = requests(n, value)
            n += value
            data += chunk
            want = want + total
        else:
            data += JUNK[value] + b"\n"
    # Written in pieces cut anywhere (mid-line, mid-UTF-8 character), read after each piece.
    points = sorted({min(c, len(data)) for c in cuts} | {len(data)})
    path.touch()
    written = 0
    store = sync.open_store()
    for point in points:
        with open(path, "ab") as f:
            f.write(data[written:point])
        written = point
        if reader == "hook":
            hook_call(path)
        elif reader == "sync_all":
            sync.sync_all(store)
        else:
            sync.sync_session(store, path, SID)
    sync.sync_all(store)
    assert ledger_usage() == want


def test_junk_is_reported(private_home: Path) -> None:
    path = transcript(private_home)
    good, want = requests(0, 3)
    path.write_bytes(b"\xff\xfe junk\n" + good + b"{not json}\n[1]\n" + good)
    report = sync.sync_all(sync.open_store())
    assert ledger_usage() == want  # the same three responses twice count once
    # Binary junk and a JSON array are reported; an object of no type we read is passed over
    # without parsing (most lines of a transcript are such), as by design.
    assert report.skipped == {"not JSON": 2}, report.skipped


# --- partial lines, rewritten and replaced files -----------------------------------------------


def test_partial_last_line_completed_later(private_home: Path) -> None:
    path = transcript(private_home)
    data, want = requests(0, 3)
    path.write_bytes(data[:-40])  # the third line is cut short
    hook_call(path)
    assert ledger_usage() == requests(0, 2)[1]  # the cut line waits, uncounted
    with open(path, "ab") as f:
        f.write(data[-40:])
    hook_call(path)
    assert ledger_usage() == want


def test_file_rewritten_shorter(private_home: Path) -> None:
    path = transcript(private_home)
    data, want = requests(0, 10)
    path.write_bytes(data)
    sync.sync_all(sync.open_store())
    # Rewritten in place: the first three responses kept, two new ones; shorter than before.
    keep, _ = requests(0, 3)
    new, want_new = requests(500, 2)
    assert len(keep + new) < len(data)
    with open(path, "r+b") as f:
        f.write(keep + new)
        f.truncate()
    report = sync.sync_all(sync.open_store())
    assert report.new_requests == 2
    # Every response that ever appeared counts once: the ten, and the two new ones.
    assert ledger_usage() == want + want_new


@pytest.mark.parametrize("how", ["replace", "delete and recreate"])
@pytest.mark.parametrize("content", ["another session's", "the same with more"])
def test_file_replaced_by_another_of_the_same_name(private_home: Path, how: str,
                                                   content: str) -> None:
    path = transcript(private_home)
    data, want = requests(0, 10)
    path.write_bytes(data)
    hook_call(path)
    if content == "another session's":
        other, want_other = requests(0, 12, sid="s-other")
        expected = want + want_other  # both happened: the first file's were counted already
    else:
        extra, want_extra = requests(10, 5)
        other = data + extra
        expected = want + want_extra
    if how == "replace":
        tmp = path.with_name("new.tmp")
        tmp.write_bytes(other)
        os.replace(tmp, path)
    else:
        path.unlink()  # the freed inode number may well be reused by the new file
        path.write_bytes(other)
    hook_call(path)
    sync.sync_all(sync.open_store())
    assert ledger_usage() == expected


# --- bad numbers --------------------------------------------------------------------------------


def usage_line(key: str, usage: dict[str, object]) -> bytes:
    entry = {"type": "assistant", "message": {"id": f"msg_{key}", "model": MODEL,
                                              "usage": usage},
             "requestId": f"req_{key}", "timestamp": "2026-11-27T15:20:00.000Z",
             "sessionId": SID, "cwd": CWD}
    return json.dumps(entry).encode() + b"\n"


BAD_NUMBERS: dict[str, object] = {
    "negative": -5,
    "fraction": 1.5,
    "string": "100",
    "boolean": True,
    "list": [1],
    "NaN": float("nan"),
    "Infinity": float("inf"),
    "absurdly large": 10**400,
    "a trillion": 10**12,
}


@pytest.mark.parametrize("name", list(BAD_NUMBERS))
def test_bad_token_counts_are_skipped_and_reported(private_home: Path, name: str) -> None:
    path = transcript(private_home)
    good, want = requests(0, 2)
    bad = usage_line("bad", {"input_tokens": BAD_NUMBERS[name], "output_tokens": 7})
    path.write_bytes(good + bad)
    report = sync.sync_all(sync.open_store())
    assert report.skipped.get("bad usage") == 1, report.skipped
    assert ledger_usage() == want
    # And the hook carries on with the session afterwards.
    more, want_more = requests(10, 1)
    with open(path, "ab") as f:
        f.write(more)
    hook_call(path)
    assert ledger_usage() == want + want_more


def test_whole_numbers_written_as_floats_count(private_home: Path) -> None:
    path = transcript(private_home)
    path.write_bytes(usage_line("f", {"input_tokens": 1e3, "output_tokens": 2.0,
                                      "cache_read_input_tokens": None}))
    sync.sync_all(sync.open_store())
    assert ledger_usage() == Usage(1000, 2, 0, 0, 0)


@pytest.mark.parametrize("cost", [float("inf"), float("nan"), -1.0, 1e308, "3"])
def test_a_bad_cost_in_a_cost_state_cannot_wedge_the_ledger(private_home: Path,
                                                            cost: object) -> None:
    path = transcript(private_home)
    good, want = requests(0, 1)
    u = want
    state = {"type": "cost-state", "sessionId": SID, "timestamp": "2026-11-27T16:00:00.000Z",
             "modelUsage": {MODEL: {"inputTokens": u.input, "outputTokens": u.output,
                                    "cacheCreationInputTokens": u.cache_write_5m,
                                    "cacheReadInputTokens": u.cache_read, "costUSD": cost}}}
    path.write_bytes(good + json.dumps(state).encode() + b"\n")
    sync.sync_all(sync.open_store())
    assert ledger_usage() == want
    more, want_more = requests(10, 1)
    with open(path, "ab") as f:
        f.write(more)
    sync.sync_all(sync.open_store())  # a wedged ledger would fail here, and forever after
    assert ledger_usage() == want + want_more
    ledger = stored_ledger(Path(os.environ["TOKENBUDGET_HOME"]))
    assert ledger["sessions"][SID]["m"][MODEL][5] < 1e6  # Claude Code's absurd cost not taken


def test_prompt_lines_in_junk_do_not_break_turns(private_home: Path) -> None:
    path = transcript(private_home)
    data, want = requests(0, 2)
    path.write_bytes(prompt_line(SID, CWD, "p1", "/test go", T0) + b"\x00\n" + data)
    sync.sync_all(sync.open_store())
    assert ledger_usage() == want


def test_a_partial_last_line_waits_for_its_end(private_home: Path) -> None:
    install_fixture("plain", private_home / ".claude")
    path = _transcript(private_home, "plain")
    data = path.read_bytes()
    cut = data.index(b'"type":"assistant"') + 40
    path.write_bytes(data[:cut])
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    assert ledger_total(store) == Usage()
    with open(path, "ab") as f:
        f.write(data[cut:])
    sync.sync_all(store, now=1795887600.0)
    assert ledger_total(store) == truth_usage("plain")


def test_a_rewritten_or_replaced_file_is_not_counted_twice(private_home: Path) -> None:
    install_fixture("loop", private_home / ".claude")
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    path = _transcript(private_home, "loop")
    data = path.read_bytes()
    # Rewritten shorter (same inode), then replaced by a new file with the full content.
    path.write_bytes(data[: len(data) // 2])
    sync.sync_all(store, now=1795887600.0)
    tmp = path.with_suffix(".new")
    tmp.write_bytes(data)
    tmp.replace(path)
    report = sync.sync_all(store, now=1795887600.0)
    assert report.files_read == 1
    assert ledger_total(store) == truth_usage("loop")


def test_bad_lines_are_skipped_and_counted(private_home: Path) -> None:
    install_fixture("plain", private_home / ".claude")
    path = _transcript(private_home, "plain")
    with open(path, "ab") as f:
        f.write(b"not json at all\n\xff\xfe binary junk\n")
        f.write(b'{"type":"assistant","message":{"id":"m","usage":{"input_tokens":-5}}}\n')
        f.write(b'{"type":"assistant","message":{"id":"n","usage":{"input_tokens":1.5}}}\n')
    store = sync.open_store()
    report = sync.sync_all(store, now=1795887600.0)
    assert ledger_total(store) == truth_usage("plain")
    assert report.skipped.get("not JSON") == 2
    assert report.skipped.get("bad usage") == 2


def test_an_absurdly_long_line_is_skipped_not_fatal(private_home: Path) -> None:
    from tokenbudget import transcripts

    install_fixture("plain", private_home / ".claude")
    path = _transcript(private_home, "plain")
    data = path.read_bytes()
    long_line = b'{"type":"user","x":"' + b"a" * (transcripts.MAX_LINE_BYTES + 10) + b'"}\n'
    path.write_bytes(long_line + data)
    store = sync.open_store()
    report = sync.sync_all(store, now=1795887600.0)
    assert report.skipped.get("too long") == 1
    assert ledger_total(store) == truth_usage("plain")


def _by_datetime(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@settings(max_examples=2000, deadline=None)
@given(
    day=st.datetimes(),
    fields=st.one_of(st.none(), st.tuples(*(st.integers(0, n) for n in (9999, 13, 32, 25, 61, 61)),
                                          st.integers(0, 999))),
)
def test_a_timestamp_as_claude_code_writes_it_is_read_as_datetime_reads_it(
    day: datetime, fields: tuple[int, ...] | None
) -> None:
    """parse_ts reads Claude Code's form (UTC, milliseconds) without importing datetime: the
    same float datetime gives, every day of its range; the same None for a date that is not
    one (month 13, 30 February, hour 24, year 0)."""
    from tokenbudget.transcripts import parse_ts

    if fields is None:
        fields = (day.year, day.month, day.day, day.hour, day.minute, day.second,
                  day.microsecond // 1000)
    text = "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}.{:03d}Z".format(*fields)
    assert parse_ts(text) == _by_datetime(text)


@pytest.mark.parametrize("text", ["2026-01-02T03:04:05Z", "2026-01-02T03:04:05.123456Z",
                                  "2026-01-02T03:04:05.123+01:00", "2026-01-02 03:04:05.123Z",
                                  "2026-01-02T03:04:05.1Z", "٢٠٢٦-01-02T03:04:05.123Z", "x"])
def test_a_timestamp_in_another_form_is_read_by_datetime(text: str) -> None:
    from tokenbudget.transcripts import parse_ts

    assert parse_ts(text) == _by_datetime(text)


# --- requests and their responses -------------------------------------------------------------


def test_a_request_line_gives_its_id_and_each_response_line_names_it(private_home: Path) -> None:
    install_fixture("continued", private_home / ".claude")
    path = _transcript(private_home, "continued")
    events = transcripts.read_new(path, None).events
    sent = [ev.request_id for ev in events if isinstance(ev, transcripts.RequestEvent)]
    answered = [ev.ref for ev in events if isinstance(ev, transcripts.UsageEvent)]
    # One `api-request` line per request (its body and shape lines give nothing), each before
    # the two lines of its response.
    assert len(sent) == 5 and len(set(sent)) == 5
    assert answered == [ref for ref in sent for _ in range(2)]
    order = [ev.request_id if isinstance(ev, transcripts.RequestEvent) else ev.ref
             for ev in events if isinstance(ev, transcripts.RequestEvent | transcripts.UsageEvent)]
    assert all(order.index(ref) < order.index(ref, order.index(ref) + 1) for ref in sent)


@pytest.mark.parametrize("value", [None, "", 7, "x" * (transcripts.MAX_REQUEST_ID + 1)])
def test_a_request_id_that_is_not_one_is_not_kept(private_home: Path, value: object) -> None:
    path = transcript(private_home)
    line = {"type": "api-request", "sessionId": SID, "timestamp": "2026-11-28T16:00:00.000Z"}
    if value is not None:
        line["id"] = value
    path.write_text(json.dumps(line) + "\n")
    assert transcripts.read_new(path, None).events == []


def test_a_requests_body_and_shape_lines_are_never_parsed(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A body (`api-request-blob`) holds a message whole, a tool's output too; its role "user"
    # must not have it parsed like a user line.
    install_fixture("loop", private_home / ".claude")
    path = _transcript(private_home, "loop")
    parsed: list[bytes] = []
    loads = json.loads

    def counting(data: bytes) -> object:
        parsed.append(data)
        return loads(data)

    monkeypatch.setattr(transcripts.json, "loads", counting)
    events = transcripts.read_new(path, None).events
    assert events and parsed
    assert not [line for line in parsed if line.startswith(b'{"type":"api-request-')]
    blobs = [line for line in path.read_bytes().splitlines()
             if line.startswith(b'{"type":"api-request-blob"')]
    assert any(b'"user"' in line for line in blobs)  # what had them parsed before


def _fork_parent(tmp_path: Path, after_point: list[dict[str, object]]) -> Path:
    """A parent with a total, a prompt and response (the fork point), `after_point`, and the
    total its process wrote at its end."""
    from tests.claude_lines import cost_state_line

    lines = [
        cost_state_line("p", {"m": (100, 10, 0.0)}),
        {"type": "user", "uuid": "u1", "parentUuid": None},
        {"type": "assistant", "uuid": "a1", "parentUuid": "u1"},
        *after_point,
        cost_state_line("p", {"m": (200, 20, 0.0)}),
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(d, separators=(",", ":")) + "\n" for d in lines))
    return path


@pytest.mark.parametrize(("copied", "inherited", "running"), [
    ({b"u1", b"a1"}, 100, True),  # made before the summary, so before the total after it
    ({b"u1", b"a1", b"s1"}, 200, False),  # made after: it copied the summary too
])
def test_a_fork_made_before_its_parent_continued_the_copied_lines_starts_before_the_next_total(
    tmp_path: Path, copied: set[bytes], inherited: int, running: bool
) -> None:
    """A line continuing the conversation a fork copied (the parent's Stop hook summary after
    its last response), which the fork did not copy, was written after the fork was made: so
    was the total after it, and the fork started from the one before."""
    summary = {"type": "system", "subtype": "stop_hook_summary", "uuid": "s1", "parentUuid": "a1"}
    point = transcripts.fork_point(copied, _fork_parent(tmp_path, [summary]))
    assert point is not None and point.totals is not None
    assert (point.totals["m"].input, point.running, point.final) == (inherited, running, True)


def test_lines_after_the_fork_point_continuing_none_of_its_copies_leave_the_next_total_its(
    tmp_path: Path,
) -> None:
    """Lines that carry no uuid, or continue no line the fork copied, tell nothing of when
    the fork was made: the total after the point is the fork's."""
    after = [{"type": "last-prompt"}, {"type": "attachment", "uuid": "x1", "parentUuid": "x0"}]
    point = transcripts.fork_point({b"u1", b"a1"}, _fork_parent(tmp_path, after))
    assert point is not None and point.totals is not None
    assert (point.totals["m"].input, point.running) == (200, False)
