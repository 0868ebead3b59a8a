"""Replaying history through a budget: synthetic histories whose answers are known."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from click.testing import CliRunner

from tests.helpers import install_fixture, truth
from tokenbudget import config, simulate, simulate_view
from tokenbudget.budgets import Budget
from tokenbudget.cli import main
from tokenbudget.ledger import BUCKET, Ledger, new_ledger

UTC_ZONE = ZoneInfo("UTC")
# (prompt id, command, prompt time, [(request time, tokens), ...]); times are UTC, 2026-11-02
Turns = list[tuple[str, str, str, list[tuple[str, int]]]]


def ts(hhmm: str, day: str = "2026-11-02") -> float:
    return datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=UTC).timestamp()


def at(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M")


def live(ledger: Ledger, sid: str, turns: Turns, project: str = "/p") -> None:
    """A session still in the ledger, with a request record per request (a dollar a million)."""
    s: dict[str, Any] = {"p": project, "f": 0.0, "l": 0.0, "m": {}, "x": {}, "s": {}, "t": {},
                         "a": {}, "adj": [], "fk": [], "cs": {}, "e": "0"}
    ledger["sessions"][sid] = s
    for pid, command, start, requests in turns:
        day, _, hhmm = start.rpartition(" ")
        s["t"][pid] = [command, ts(hhmm, day or "2026-11-02"), 0, 0.0]
        for when, tokens in requests:
            day, _, hhmm = when.rpartition(" ")
            bucket = int(ts(hhmm, day or "2026-11-02") // BUCKET)
            key = f"{sid}-{len(ledger['keys']):04d}"
            ledger["keys"][key] = [sid, "m", tokens, 0, 0, 0, 0, bucket, tokens / 1e6, pid]
            s["t"][pid][2] += tokens
    s["f"] = min(t[1] for t in s["t"].values())


def folded(sid: str, turns: Turns, project: str = "/p") -> dict[str, Any]:
    """The same session as history keeps it once folded: per bucket and command only."""
    hours: dict[str, dict[str, list[Any]]] = {}
    kept = []
    for _pid, command, start, requests in turns:
        kept.append([command, ts(start), sum(t for _, t in requests), 0.0])
        for when, tokens in requests:
            cell = hours.setdefault(str(int(ts(when) // BUCKET)), {}).setdefault(
                f"m\t{command}", [0, 0, 0, 0, 0, 0.0]
            )
            cell[0] += tokens
            cell[5] += tokens / 1e6
    return {"sid": sid, "p": project, "f": kept[0][1], "l": kept[-1][1], "m": {},
            "hours": hours, "turns": kept, "files": {}}


DAY: Turns = [
    ("a", "prompt", "09:00:00", [("09:01:00", 100_000), ("09:20:00", 100_000)]),
    # 200k + 150k = 350k; the next request crosses 400k at 15:47.
    ("b", "prompt", "15:10:00", [("15:16:00", 150_000), ("15:47:00", 60_000),
                                  ("16:05:00", 40_000)]),
    ("c", "prompt", "16:30:00", [("16:31:00", 70_000)]),
    ("d", "prompt", "17:00:00", [("17:02:00", 10_000)]),
]


def replay(budget: Budget, ledger: Ledger, records: dict[str, Any] | None = None,
           tz: ZoneInfo = UTC_ZONE) -> simulate.Result:
    return simulate.simulate(budget, simulate.history_of(ledger, records or {}), tz)


def test_a_day_is_blocked_at_the_request_that_crosses_and_what_follows_is_saved() -> None:
    ledger = new_ledger()
    live(ledger, "s1", DAY)
    live(ledger, "s2", [("e", "prompt", "2026-11-03 10:00:00",
                         [("2026-11-03 10:01:00", 70_000)])])
    result = replay(Budget("daily", 400_000), ledger)
    day, next_day = result.windows
    assert (day.used_tokens, at(day.blocked_at), at(day.over_at)) == (530_000, "11-02 15:45",
                                                                     "11-02 15:45")
    # The turn is stopped after the crossing request (its 16:05 request is saved); the two
    # prompts after it are refused, their usage saved too.
    assert (day.refused, day.saved_tokens) == (2, 40_000 + 70_000 + 10_000)
    assert round(day.saved_cost, 6) == 0.12
    assert (next_day.used_tokens, next_day.blocked_at, next_day.refused) == (70_000, None, 0)


def test_a_dollar_budget_replays_the_costs() -> None:
    ledger = new_ledger()
    live(ledger, "s1", DAY)  # a dollar a million tokens: $0.35 by 15:16, $0.41 at 15:47
    (day,) = replay(Budget("daily", 0.4, "usd"), ledger).windows
    assert (at(day.blocked_at), day.refused, day.saved_tokens) == ("11-02 15:45", 2, 120_000)
    assert round(day.used("usd"), 6) == 0.53


def test_folded_history_replays_to_the_bucket_with_the_same_answer() -> None:
    records = {"s1": folded("s1", DAY)}
    result = replay(Budget("daily", 400_000), new_ledger(), records)
    (day,) = result.windows
    assert (at(day.blocked_at), day.refused, day.saved_tokens) == ("11-02 15:45", 2, 120_000)


# A turn crosses the limit at 10:20 and the next prompt comes at 10:25: one 15-minute bucket.
SAME_BUCKET: Turns = [
    ("a", "prompt", "10:00:00", [("10:01:00", 60_000), ("10:20:00", 50_000)]),
    ("b", "prompt", "10:25:00", [("10:26:00", 5_000)]),
    ("c", "prompt", "11:00:00", [("11:01:00", 5_000)]),
]


def test_a_stop_and_the_next_prompt_in_one_folded_bucket_keep_their_order() -> None:
    ledger = new_ledger()
    live(ledger, "s1", SAME_BUCKET)
    want = [(at(w.blocked_at), w.refused, w.saved_tokens)
            for w in replay(Budget("daily", 100_000), ledger).windows]
    assert want == [("11-02 10:15", 2, 10_000)]
    # Folded, the bucket holds a's 50k and b's 5k together: each keeps its own, so the stop
    # still comes before b's prompt, which is refused as the hooks refused it.
    records = {"s1": folded("s1", SAME_BUCKET)}
    got = [(at(w.blocked_at), w.refused, w.saved_tokens)
           for w in replay(Budget("daily", 100_000), new_ledger(), records).windows]
    assert got == want


def test_a_prompt_refused_at_the_time_is_replayed_from_the_kept_stops() -> None:
    ledger = new_ledger()
    live(ledger, "s1", DAY[:2])
    # Refused by the budget in force then: no transcript line, only the kept stops say so.
    kept = [{"at": ts("16:30:00"), "session": "s1", "what": "refused", "kind": "daily",
             "budget": "daily"}, {"at": ts("16:40:00"), "session": "s1", "what": "stopped"}]
    history = simulate.history_of(ledger, {}, kept)
    (day,) = simulate.simulate(Budget("daily", 400_000), history, UTC_ZONE).windows
    assert (day.refused, day.saved_tokens) == (1, 40_000)
    history = simulate.fresh(history)
    (day,) = simulate.simulate(Budget("daily", 900_000), history, UTC_ZONE).windows
    assert (day.refused, day.blocked_at) == (0, None)


def test_warn_mode_blocks_nothing_and_says_when_it_would_have_warned() -> None:
    ledger = new_ledger()
    live(ledger, "s1", DAY)
    (day,) = replay(Budget("daily", 400_000, mode="warn", warn_at=0.5), ledger).windows
    assert (day.refused, day.saved_tokens, day.blocked_at) == (0, 0, None)
    # 200k is 50% of 400k at the 09:20 request's bucket; 400k is passed at 15:47's.
    assert (at(day.warned_at), at(day.over_at)) == ("11-02 09:15", "11-02 15:45")


def test_a_prompt_is_refused_when_its_commands_p90_would_exceed_the_budget() -> None:
    ledger = new_ledger()
    # Four runs of /test of 30k to 60k; at 16:00, 330k used + p90 60k > 350k: refused.
    runs = [(f"r{i}", "/test", f"1{i}:00:00", [(f"1{i}:05:00", tokens)])
            for i, tokens in enumerate((30_000, 40_000, 60_000, 50_000))]
    live(ledger, "s1", [*runs, ("x", "prompt", "14:30:00", [("14:31:00", 150_000)]),
                        ("t", "/test", "16:00:00", [("16:10:00", 10_000)])])
    (day,) = replay(Budget("daily", 350_000), ledger).windows
    assert (at(day.blocked_at), day.refused, day.saved_tokens) == ("11-02 16:00", 1, 10_000)
    assert day.over_at is None


def test_a_command_budget_replays_each_run_with_the_p90_of_the_runs_before() -> None:
    ledger = new_ledger()
    live(ledger, "s1", [
        ("r1", "/test", "09:00:00", [("09:01:00", 10_000), ("09:02:00", 5_000)]),
        # Crosses 20k at its second request: stopped there, its third saved.
        ("r2", "/test", "10:00:00", [("10:01:00", 15_000), ("10:02:00", 6_000),
                                      ("10:20:00", 9_000)]),
        ("p", "prompt", "10:30:00", [("10:31:00", 99_000)]),  # not /test: not counted
        # Runs so far: 15k and 21k (what was spent): p90 21k > 20k, so refused.
        ("r3", "/test", "11:00:00", [("11:01:00", 1_000)]),
    ])
    result = replay(Budget("command", 20_000, name="/test"), ledger)
    rows = [(w.used_tokens, at(w.blocked_at), w.refused, w.saved_tokens) for w in result.windows]
    assert rows == [
        (15_000, None, 0, 0),
        (30_000, "11-02 10:00", 0, 9_000),
        (1_000, "11-02 11:00", 1, 1_000),
    ]


def test_a_5h_budget_follows_the_blocks() -> None:
    ledger = new_ledger()
    live(ledger, "s1", [
        ("a", "prompt", "09:10:00", [("09:11:00", 60_000), ("11:00:00", 50_000)]),
        # 13:50 is still in the 09:00-14:00 block: 110k + 30k crosses 120k.
        ("b", "prompt", "13:50:00", [("13:51:00", 30_000)]),
        # 14:05 opens a new block (14:00-19:00): counted from zero, not refused.
        ("c", "prompt", "14:05:00", [("14:06:00", 100_000)]),
    ])
    result = replay(Budget("5h", 120_000), ledger)
    rows = [(at(w.start), w.used_tokens, at(w.blocked_at), w.refused) for w in result.windows]
    assert rows == [("11-02 09:00", 140_000, "11-02 13:50", 0), ("11-02 14:00", 100_000, None, 0)]


def test_a_session_budget_counts_each_session_on_its_own() -> None:
    ledger = new_ledger()
    live(ledger, "s1", DAY[:2])
    live(ledger, "s2", DAY[2:])
    result = replay(Budget("session", 300_000), ledger)
    rows = [(w.key, w.used_tokens, at(w.blocked_at), w.saved_tokens) for w in result.windows]
    assert rows == [("s1", 450_000, "11-02 15:15", 100_000), ("s2", 80_000, None, 0)]


def test_a_project_scope_counts_only_that_folder() -> None:
    ledger = new_ledger()
    live(ledger, "s1", DAY, project="/home/dev/app")
    live(ledger, "s2", [("z", "prompt", "08:00:00", [("08:01:00", 900_000)])], project="/other")
    (day,) = replay(Budget("daily", 400_000, project="/home/dev/app"), ledger).windows
    assert (day.used_tokens, at(day.blocked_at)) == (530_000, "11-02 15:45")


def test_a_day_is_the_local_day() -> None:
    ledger = new_ledger()
    live(ledger, "s1", DAY)  # 09:00 to 17:02 UTC is 20:00 to 04:02 in Sydney (UTC+11)
    result = replay(Budget("daily", 400_000), ledger, tz=ZoneInfo("Australia/Sydney"))
    rows = [(at(w.start), w.used_tokens, at(w.blocked_at)) for w in result.windows]
    assert rows == [("11-01 13:00", 200_000, None), ("11-02 13:00", 330_000, None)]


def test_since_and_until_choose_the_windows_shown_not_the_history_replayed() -> None:
    ledger = new_ledger()
    # The 2nd: /test runs 50k (then the day is used up); the 3rd: 0 + p90 50k > 40k, refused.
    live(ledger, "s1", [("a", "/test", "09:00:00", [("09:01:00", 50_000)]),
                        ("b", "/test", "10:00:00", [("10:01:00", 20_000)])])
    live(ledger, "s2", [("c", "/test", "2026-11-03 09:00:00", [("2026-11-03 09:01:00", 1_000)])])
    history = simulate.history_of(ledger, {})
    third = ts("00:00:00", "2026-11-03")
    result = simulate.simulate(Budget("daily", 40_000), history, UTC_ZONE, since=third)
    assert [(at(w.start), w.refused) for w in result.windows] == [("11-03 00:00", 1)]
    result = simulate.simulate(Budget("total", 40_000), simulate.fresh(history), UTC_ZONE,
                               until=third)
    assert [w.used_tokens for w in result.windows] == [71_000]


def test_the_summary_line_and_the_table() -> None:
    ledger = new_ledger()
    live(ledger, "s1", DAY)
    live(ledger, "s2", [("e", "prompt", "2026-11-03 10:00:00",
                         [("2026-11-03 10:01:00", 70_000)])])
    result = replay(Budget("daily", 400_000), ledger)
    assert simulate_view.render(result, UTC_ZONE) == (
        "If the daily budget had been 400k tokens (block):\n"
        "Window      Used  Blocked at  Refused         Saved\n"
        "2026-11-02  530k       15:45        2  120k ($0.12)\n"
        "2026-11-03   70k           –        0             –\n"
        "\n"
        "Would have blocked on 1 of 2 days, first at 15:45 on average; your median day is 70k,"
        " p90 530k.\n"
        "It would have refused 2 prompts and saved 120k tokens ($0.12).\n"
        "Usage times are known to the 15-minute bucket, prompt times to the second.\n"
    )
    doc = simulate.to_json(result, UTC_ZONE)
    assert doc["windows"][0] == {
        "start": "2026-11-02T00:00:00+00:00", "end": "2026-11-03T00:00:00+00:00",
        "used": 530_000, "limit": 400_000, "blockedAt": "2026-11-02T15:45:00+00:00",
        "refused": 2, "savedTokens": 120_000, "savedCost": 0.12,
        "warnedAt": "2026-11-02T15:15:00+00:00",
        "overAt": "2026-11-02T15:45:00+00:00",
    }
    assert doc["summary"]["median"] == 70_000 and doc["summary"]["p90"] == 530_000


def test_a_suggestion_is_the_p90_of_the_last_30_windows_rounded_up() -> None:
    ledger = new_ledger()
    # 40 days: the first 10 huge (beyond the last 30), then 100k, 110k, ... 390k.
    for n in range(40):
        day = f"2026-10-{n + 1:02d}" if n < 31 else f"2026-11-{n - 30:02d}"
        tokens = 5_000_000 if n < 10 else 100_000 + (n - 10) * 10_000
        live(ledger, f"s{n}", [(f"p{n}", "prompt", f"{day} 09:00:00",
                                [(f"{day} 09:01:00", tokens)])])
    history = simulate.history_of(ledger, {})
    measured, replayed = simulate.suggest(Budget("daily", 1), history, UTC_ZONE)
    assert replayed is not None
    # Nearest-rank p90 of 100k..390k is the 27th: 360k; a window at the limit is over it.
    assert replayed.budget.limit == 370_000
    # Of those 30 days it stops the three of 370k to 390k (the whole history is replayed).
    assert len(measured.windows) == 40 and len(replayed.windows) == 30
    assert sum(w.blocked_at is not None for w in replayed.windows) == 3
    assert simulate_view.render_suggestions([(measured, replayed)], UTC_ZONE) == (
        "daily 370k: the p90 of your last 30 days; would have blocked on 3 of 30 days, first at"
        " 09:00 on average; your median day is 240k, p90 360k\n"
        "  tokenbudget budget set daily 370k\n"
    )


def test_a_suggestion_counts_the_windows_it_replays() -> None:
    ledger = new_ledger()
    for n in range(3):
        live(ledger, f"s{n}", [(f"p{n}", "prompt", "09:00:00", [("09:01:00", 10_000 * (n + 1))])])
    for n in range(3, 5):  # a prompt that got no response: a session with nothing used
        live(ledger, f"s{n}", [(f"p{n}", "prompt", "10:00:00", [])])
    measured, replayed = simulate.suggest(
        Budget("session", 1), simulate.history_of(ledger, {}), UTC_ZONE
    )
    assert replayed is not None
    assert len(measured.windows) == len(replayed.windows) == 5
    text = simulate_view.render_suggestions([(measured, replayed)], UTC_ZONE)
    assert "the p90 of your last 5 sessions; would have blocked on 0 of 5 sessions" in text


def test_simulate_from_the_command_line_replays_the_recorded_requests(
    private_home: Path, recorded_day: float
) -> None:
    install_fixture("loop", private_home / ".claude")
    sizes = [sum(int(t[k]) for k in t if k.endswith("tokens")) for t in truth("loop")]  # type: ignore[call-overload]
    limit = sum(sizes[:3]) + 1  # the fourth request uses it up; the fifth and sixth are saved
    result = CliRunner().invoke(main, ["budget", "simulate", "daily", str(limit), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    (day,) = doc["windows"]
    assert (day["used"], day["refused"], day["savedTokens"]) == (sum(sizes), 0, sum(sizes[4:]))
    assert day["blockedAt"] is not None
    assert doc["budget"] == {"kind": "daily", "limit": limit, "unit": "tokens", "mode": "block",
                             "warn_at": 0.8}


def test_set_dry_run_replays_and_sets_nothing(private_home: Path, recorded_day: float) -> None:
    install_fixture("loop", private_home / ".claude")
    result = CliRunner().invoke(main, ["budget", "set", "daily", "10k", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("If the daily budget had been 10k tokens (block):\n")
    assert "Would have blocked on 1 of 1 day, first at " in result.output
    assert config.load_config().budgets == ()


def test_suggest_from_the_command_line(private_home: Path, recorded_day: float) -> None:
    install_fixture("slash", private_home / ".claude")
    result = CliRunner().invoke(main, ["budget", "suggest", "command", "--json"])
    assert result.exit_code == 0, result.output
    (only,) = json.loads(result.output)
    assert only["budget"]["kind"] == "command" and only["summary"]["windows"] == 1
    assert only["summary"]["blocked"] == 0


def test_a_bad_limit_is_a_usage_error(private_home: Path) -> None:
    result = CliRunner().invoke(main, ["budget", "simulate", "daily", "lots"])
    assert result.exit_code == 2


def test_since_and_until_from_the_command_line(private_home: Path, recorded_day: float) -> None:
    install_fixture("loop", private_home / ".claude")  # one turn on 2026-11-28
    shown = {}
    for option, day in (("--since", "2026-11-28"), ("--since", "2026-11-29"),
                        ("--until", "2026-11-27"), ("--until", "2026-11-28")):
        result = CliRunner().invoke(
            main, ["budget", "simulate", "daily", "10k", option, day, "--json"]
        )
        assert result.exit_code == 0, result.output
        shown[option, day] = len(json.loads(result.output)["windows"])
    assert shown == {("--since", "2026-11-28"): 1, ("--since", "2026-11-29"): 0,
                     ("--until", "2026-11-27"): 0, ("--until", "2026-11-28"): 1}
    result = CliRunner().invoke(main, ["budget", "simulate", "daily", "10k", "--until", "28/11"])
    assert result.exit_code == 2


def test_since_after_until_is_a_usage_error(private_home: Path) -> None:
    result = CliRunner().invoke(
        main, ["budget", "simulate", "daily", "10k", "--since", "2026-05-01", "--until",
               "2026-01-01"]
    )
    assert result.exit_code == 2 and "2026-05-01 is after --until 2026-01-01" in result.output


def test_runs_of_a_command_that_start_together_come_out_by_session() -> None:
    """Windows keyed by a run were ordered by the run's memory address when they began at once."""
    ledger = new_ledger()
    for sid in ("s3", "s1", "s2"):
        live(ledger, sid, [(f"r-{sid}", "/test", "09:00:00", [("09:01:00", 1_000)])])
    result = replay(Budget("command", 20_000, name="/test"), ledger)
    assert [w.key.sid for w in result.windows] == ["s1", "s2", "s3"]
