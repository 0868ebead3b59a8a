"""The decision engine: which budgets a prompt or tool call meets, and what it decides."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tokenbudget import engine
from tokenbudget.budgets import Budget, warn_key
from tokenbudget.config import Config
from tokenbudget.ledger import BUCKET, new_ledger, resolve_turn
from tokenbudget.store import held

NOW = datetime(2026, 11, 28, 17, 30, tzinfo=UTC).timestamp()
CFG = Config(timezone="UTC")
SID = "s-1"


def ledger_with(usage: dict[str, tuple[float, float]], at: float = NOW - 600) -> dict[str, Any]:
    """A ledger holding `usage` (project -> tokens, dollars) at `at`, in session SID."""
    ledger = new_ledger()
    cells = ledger["hours"].setdefault(str(int(at // BUCKET)), {})
    for project, (tokens, cost) in usage.items():
        cells[project] = [tokens, cost, at, at]
        ledger["projects"][project] = [tokens, cost]
    first = next(iter(usage), "")
    tokens = sum(t for t, _ in usage.values())
    cost = sum(c for _, c in usage.values())
    ledger["sessions"][SID] = {
        "p": first, "f": at, "l": at, "m": {"m": [tokens, 0, 0, 0, 0, cost, 0, 0]},
        "x": {}, "s": {}, "t": {}, "a": {}, "adj": [], "fk": [], "cs": {},
    }
    return ledger


def prompt(
    budgets: list[Budget], ledger: dict[str, Any], text: str, project: str | None = "/p"
) -> list[Any]:
    ctx = engine.event_context("UserPromptSubmit", ledger, CFG, NOW, session_id=SID,
                               cwd=project, prompt=text, prompt_id="p-9")
    return engine.measure(budgets, ledger, ctx)


def decide(event: str, checks: list[Any], ledger: dict[str, Any], **kw: Any) -> engine.Decision:
    return engine.decide(event, checks, held(ledger), now=NOW, session_id=SID,
                         prompt_id=kw.get("prompt_id", "p-9"))


# ---------------------------------------------------------------- which budgets apply


def test_a_budget_that_does_not_apply_does_not_stop_the_checking() -> None:
    ledger = ledger_with({"/p": (1_000, 0.0)})
    budgets = [Budget("command", 10, name="/deploy"), Budget("weekly", 500, project="/q"),
               Budget("daily", 1_000)]
    checks = prompt(budgets, ledger, "go on")
    assert [c.budget.id for c in checks] == ["daily"]
    assert decide("UserPromptSubmit", checks, ledger).action == "refuse"


def test_a_command_budget_applies_to_its_command_only() -> None:
    ledger = ledger_with({"/p": (1_000, 0.0)})
    budgets = [Budget("command", 5_000, name="/test")]
    assert [c.budget.id for c in prompt(budgets, ledger, "/test --fast")] == ["command /test"]
    assert prompt(budgets, ledger, "/testing") == []
    assert prompt(budgets, ledger, "run /test") == []
    assert prompt(budgets, ledger, "go on") == []


def test_window_budgets_apply_to_slash_command_prompts() -> None:
    ledger = ledger_with({"/p": (1_000, 0.0)})
    ledger["commands"]["/test"] = [[NOW - 9000, 400, 0.1], [NOW - 8000, 600, 0.2]]
    kinds = ("total", "daily", "weekly", "monthly", "5h", "session")
    checks = prompt([Budget(k, 1_500) for k in kinds], ledger, "/test")
    assert [c.budget.kind for c in checks] == list(kinds)
    # Each one counts what the command is expected to take on top of what is used.
    assert {(c.used, c.expected) for c in checks} == {(1_000, 600)}
    assert decide("UserPromptSubmit", checks, ledger).action == "refuse"


@pytest.mark.parametrize("kind", ["weekly", "total"])
def test_a_window_budget_limited_to_a_project(kind: str) -> None:
    ledger = ledger_with({"/p/app": (700, 0.0), "/q": (5_000, 0.0)})
    budget = Budget(kind, 1_000, project="/p")  # type: ignore[arg-type]
    inside = prompt([budget], ledger, "go on", project="/p/app/src")
    assert [c.used for c in inside] == [700]  # only what was used under /p counts
    assert prompt([budget], ledger, "go on", project="/q") == []
    assert prompt([budget], ledger, "go on", project="/pq") == []  # a sibling, not a subfolder


def test_a_project_budget_counts_its_folder() -> None:
    ledger = ledger_with({"/p/app": (700, 0.0), "/q": (5_000, 0.0)})
    budget = Budget("project", 1_000, name="/p")
    assert [c.used for c in prompt([budget], ledger, "go on", project="/p")] == [700]
    assert prompt([budget], ledger, "go on", project="/q") == []


def test_a_session_budget_applies_in_any_folder() -> None:
    ledger = ledger_with({"/p": (700, 0.0)})
    for project in ("/p", "/elsewhere", None):
        checks = prompt([Budget("session", 1_000)], ledger, "go on", project=project)
        assert [c.used for c in checks] == [700]


def test_a_dollar_command_budget_expects_the_dollar_cost() -> None:
    ledger = ledger_with({"/p": (0, 0.0)})
    ledger["commands"]["/test"] = [[NOW - 9000, 400_000, 0.25], [NOW - 8000, 900, 0.75]]
    budgets = [Budget("command", 0.5, "usd", name="/test"), Budget("command", 1e6, name="/test")]
    dollars, tokens = prompt(budgets, ledger, "/test")
    assert (dollars.expected, tokens.expected) == (0.75, 400_000)
    assert dollars.blocks and not tokens.blocks


def test_the_project_is_the_sessions_folder_when_the_event_has_no_cwd() -> None:
    ledger = ledger_with({"/p": (700, 0.0)})
    checks = prompt([Budget("daily", 1_000, project="/p")], ledger, "go on", project=None)
    assert [c.used for c in checks] == [700]


def test_a_tool_call_measures_the_command_its_turn_runs() -> None:
    ledger = ledger_with({"/p": (0, 0.0)})
    s = ledger["sessions"][SID]
    s["t"]["p-1"] = ["/test", NOW - 60, 3_000, 0.3]
    s["a"]["p-2"] = "p-1"  # a note that came in during the turn
    ctx = engine.event_context("PreToolUse", ledger, CFG, NOW, session_id=SID, cwd="/p",
                               prompt_id="p-2")
    checks = engine.measure([Budget("command", 2_000, name="/test")], ledger, ctx)
    assert [(c.used, c.state) for c in checks] == [(3_000, "over")]
    assert decide("PreToolUse", checks, ledger, prompt_id="p-2").action == "stop"


def test_turn_aliases_end_even_in_a_cycle() -> None:
    session = {"a": {"x": "y", "y": "x", "n": "t"}}
    assert resolve_turn(session, "n") == "t"
    assert resolve_turn(session, "t") == "t"
    assert resolve_turn(session, None) is None
    assert resolve_turn(session, "x") in ("x", "y")  # stops after 8 steps


def test_turn_aliases_are_followed_for_eight_steps_and_no_more() -> None:
    """The walk's bound (resolve_turn's docstring): a chain of 8 aliases reaches its turn, and
    the walk stops after 8 steps on a longer chain, as on a cycle in a damaged ledger."""
    session = {"a": {f"n{i}": f"n{i + 1}" for i in range(9)}}  # n0 -> n1 -> ... -> n9
    assert resolve_turn(session, "n1") == "n9"
    assert resolve_turn(session, "n0") == "n8"


def test_the_plugins_own_command_is_never_refused() -> None:
    ledger = ledger_with({"/p": (1_000, 0.0)})
    for text, exempt in (("/tokenbudget status", True), ("/tokenbudget:tokenbudget", True),
                         ("/test", False)):
        ctx = engine.event_context("UserPromptSubmit", ledger, CFG, NOW, session_id=SID,
                                   cwd="/p", prompt=text)
        assert engine.exempt("UserPromptSubmit", ctx) is exempt
    ctx = engine.event_context("PreToolUse", ledger, CFG, NOW, session_id=SID, cwd="/p")
    assert not engine.exempt("PreToolUse", ctx)


def test_only_the_prompt_of_the_plugins_own_command_is_exempt() -> None:
    """The tool calls and the stop of a /tokenbudget turn meet the budgets like any other
    turn's: what is never refused is the command's prompt (exempt's docstring)."""
    ledger = ledger_with({"/p": (1_000, 0.0)})
    ledger["sessions"][SID]["t"]["p-1"] = ["/tokenbudget", NOW - 60, 0, 0.0]
    for event in ("PreToolUse", "PostToolUse", "PostToolBatch", "Stop"):
        ctx = engine.event_context(event, ledger, CFG, NOW, session_id=SID, cwd="/p",
                                   prompt_id="p-1")
        assert ctx.command == "/tokenbudget" and not engine.exempt(event, ctx), event


# ---------------------------------------------------------------- what is decided


def test_only_a_used_up_budget_stops_a_turn_and_only_tool_events_stop() -> None:
    ledger = ledger_with({"/p": (1_000, 0.0)})
    checks = prompt([Budget("daily", 1_000)], ledger, "go on")
    for event in ("PreToolUse", "PostToolUse", "PostToolBatch"):
        assert decide(event, checks, ledger).action == "stop"
    for event in ("Stop", "SubagentStop", "SessionStart", "SessionEnd"):
        quiet = decide(event, checks, ledger)
        assert quiet.action == "allow" and quiet.warnings == tuple(checks)
    near = prompt([Budget("daily", 1_100)], ledger, "go on")  # at 91%: a warning, no stop
    assert decide("PreToolUse", near, ledger).action == "allow"


def test_a_warning_is_given_once_per_window_and_level() -> None:
    ledger = ledger_with({"/p": (900, 0.0)})
    daily = Budget("daily", 1_000)
    checks = prompt([daily], ledger, "go on")
    first = decide("Stop", checks, ledger)
    key = warn_key(daily, datetime(2026, 11, 28, tzinfo=UTC), "warn")
    assert (first.action, first.warned, first.records) == ("allow", (key,), True)
    engine.remember(ledger, first)
    assert ledger["warned"] == {key: NOW}
    again = decide("Stop", checks, ledger)
    assert (again.warnings, again.records) == ((), False)
    # The next day is a new window: the same threshold is news again.
    tomorrow = engine.event_context("Stop", ledger, CFG, NOW + 86400, session_id=SID, cwd="/p")
    ledger["hours"][str(int((NOW + 86400) // BUCKET))] = {"/p": [900, 0.0, NOW, NOW]}
    later = engine.measure([daily], ledger, tomorrow)
    assert decide("Stop", later, ledger).warned == (
        warn_key(daily, datetime(2026, 11, 29, tzinfo=UTC), "warn"),
    )
    # Going over is a level of its own.
    ledger["hours"][str(int((NOW - 600) // BUCKET))]["/p"][0] = 1_000
    over = decide("Stop", prompt([daily], ledger, "go on"), ledger)
    assert over.warned == (key.replace("|warn|", "|over|"),)


def test_remember_keeps_the_latest_warnings() -> None:
    ledger = new_ledger()
    ledger["warned"] = {f"k{i}": float(i) for i in range(engine.MAX_WARNED)}
    engine.remember(ledger, engine.Decision("allow", warned=("new",), now=1e9))
    assert len(ledger["warned"]) == engine.MAX_WARNED
    assert "k0" not in ledger["warned"] and "new" in ledger["warned"]


def test_allow_lets_one_refused_prompt_through_and_bounds_its_turn() -> None:
    ledger = ledger_with({"/p": (1_000, 0.0)})
    ledger["allow"] = {"pending": True, "at": NOW - 60}
    checks = prompt([Budget("daily", 1_000)], ledger, "go on")
    passed = decide("UserPromptSubmit", checks, ledger)
    assert (passed.action, passed.let_through) == ("allow", True)
    assert passed.allow == {"session": SID, "prompt_id": "p-9", "at": NOW,
                            "base": {"daily|tokens": 1_000}}
    engine.remember(ledger, passed)
    # The turn it let through goes on until it has used one more budget's worth.
    assert decide("PreToolUse", checks, ledger).action == "allow"
    ledger["hours"][str(int((NOW - 600) // BUCKET))]["/p"][0] = 2_000
    spent = prompt([Budget("daily", 1_000)], ledger, "go on")
    assert decide("PreToolUse", spent, ledger).action == "stop"
    # Another turn is not let through, nor a second prompt.
    assert decide("PreToolUse", checks, ledger, prompt_id="p-10").action == "stop"
    assert decide("UserPromptSubmit", checks, ledger).action == "refuse"


def test_an_allow_lapses_after_an_hour() -> None:
    ledger = ledger_with({"/p": (1_000, 0.0)})
    ledger["allow"] = {"pending": True, "at": NOW - engine.ALLOW_TTL}
    checks = prompt([Budget("daily", 1_000)], ledger, "go on")
    assert decide("UserPromptSubmit", checks, ledger).action == "refuse"


def test_an_allow_with_no_time_recorded_has_lapsed() -> None:
    """A granted allow whose grant time is missing from the ledger counts as long lapsed: the
    prompt is refused, as after an hour."""
    ledger = ledger_with({"/p": (1_000, 0.0)})
    ledger["allow"] = {"pending": True}
    checks = prompt([Budget("daily", 1_000)], ledger, "go on")
    refused = decide("UserPromptSubmit", checks, ledger)
    assert (refused.action, refused.let_through, refused.allow) == ("refuse", False, None)


def test_the_stop_of_a_let_through_turn_names_the_budget_it_used_one_more_of() -> None:
    """In a turn `tokenbudget allow` let through, the stop names the budget that has used one
    more budget's worth since the prompt, not one further over that has not."""
    tokens, dollars = Budget("daily", 1_000), Budget("daily", 1, "usd")
    ledger = ledger_with({"/p": (5_000, 1.0)})
    ledger["allow"] = {"pending": True, "at": NOW - 60}
    engine.remember(ledger, decide("UserPromptSubmit", prompt([tokens, dollars], ledger, "go on"),
                                   ledger))
    assert ledger["allow"]["base"] == {"daily|tokens": 5_000, "daily|usd": 1.0}
    # 500 tokens more (5.5 times its limit, under one more limit's worth) and $1.10 more.
    ledger["hours"][str(int((NOW - 600) // BUCKET))]["/p"][:2] = [5_500, 2.1]
    stopped = decide("PreToolUse", prompt([tokens, dollars], ledger, "go on"), ledger)
    assert stopped.action == "stop"
    assert stopped.check is not None
    assert (stopped.check.budget.unit, stopped.check.used) == ("usd", 2.1)


def test_used_up_is_what_refuses_the_next_prompt_whatever_it_is() -> None:
    ledger = ledger_with({"/p": (1_000, 0.0)})
    budgets = [Budget("daily", 1_000), Budget("weekly", 1_000, mode="warn"),
               Budget("monthly", 5_000)]
    ctx = engine.context(CFG, NOW, session_id=SID, project="/p")
    assert [c.budget.id for c in engine.used_up(engine.measure(budgets, ledger, ctx))] == [
        "daily"
    ]


def test_the_reason_and_the_notes_come_from_messages() -> None:
    ledger = ledger_with({"/p": (1_000, 0.0)})
    checks = prompt([Budget("daily", 1_000)], ledger, "go on")
    refused = decide("UserPromptSubmit", checks, ledger)
    assert engine.reason(refused, ledger, UTC).splitlines()[:3] == [
        "tokenbudget: the daily budget is used up.",
        "Used 1k of 1k tokens.",
        "Resets at 00:00 (in 6h 30m).",
    ]
    ledger["allow"] = {"pending": True, "at": NOW}
    passed = decide("UserPromptSubmit", checks, ledger)
    assert engine.notes(passed, ledger, UTC)[-1] == (
        "tokenbudget: letting this prompt through once (tokenbudget allow)."
    )
