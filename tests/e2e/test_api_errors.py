"""API errors, retries and unusual answers on the real Claude Code: what the ledger holds.

What an errored attempt costs: an attempt refused before its stream starts (HTTP 529 or 500,
or an error event before `message_start`) sends no usage, and Claude Code retries it. One
whose stream fails after `message_start` (an error event, a dropped connection) has sent its
input and cache counts, and Claude Code 2.1.328 writes a line for what arrived (output as
`message_start` gave it), asks the API to go on from there, and counts the attempt in its own
session total (`cost-state`, `total_cost_usd`): the API read that input, so it is billed too.
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ClaudeRun, RunClaude
from tests.e2e.fake_api import FakeAnthropic, ServedRequest
from tests.e2e.test_enforcement import settings, settled
from tokenbudget import history, query, sync

pytestmark = pytest.mark.e2e

Tokens = tuple[int, int, int, int]  # input, cache writes, cache reads, output


def _sent(r: ServedRequest) -> Tokens:
    """The usage that reached Claude Code: a failed stream's output stops at message_start's 1."""
    output = r.output_tokens if r.outcome == "complete" else 1
    return (r.input_tokens, r.cache_creation_input_tokens, r.cache_read_input_tokens, output)


def _add(a: Tokens, b: Tokens) -> Tokens:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3])


def served(fake: FakeAnthropic) -> Tokens:
    total: Tokens = (0, 0, 0, 0)
    for r in fake.requests:
        total = _add(total, _sent(r))
    return total


def claude_code_total(run: ClaudeRun) -> Tokens:
    """The session's total as Claude Code reports it (`modelUsage`, all models)."""
    assert run.output is not None, run.proc.stderr[-2000:]
    total: Tokens = (0, 0, 0, 0)
    for m in run.output["modelUsage"].values():
        fields = ("inputTokens", "cacheCreationInputTokens", "cacheReadInputTokens", "outputTokens")
        total = _add(total, tuple(int(m[f]) for f in fields))  # type: ignore[arg-type]
    return total


def recorded(ledger: Any) -> dict[str, tuple[Tokens, float]]:
    """Each session's tokens and cost in the ledger."""
    groups = query.group("session", query.cells(ledger, history.read_records(ledger)), UTC)
    return {
        g.key: ((g.usage.input, g.usage.cache_write, g.usage.cache_read, g.usage.output), g.cost)
        for g in groups
        if g.usage.total
    }


def tool_results(run: ClaudeRun) -> int:
    """How many tool results the run's transcript holds."""
    count = 0
    for entry in run.transcript():
        content = (entry.get("message") or {}).get("content")
        if entry.get("type") == "user" and isinstance(content, list):
            count += sum(
                1 for b in content if isinstance(b, dict) and b.get("type") == "tool_result"
            )
    return count


def after_hooks_sync_and_rebuild(home: Path, *runs: ClaudeRun) -> list[dict[str, Any]]:
    """The ledger per session: as the hooks left it, after a sync, after a rebuild."""
    settled(home, *runs)
    store = sync.open_store()
    seen = [recorded(store.snapshot())]
    sync.sync_all(store)
    seen.append(recorded(store.snapshot()))
    sync.rebuild(store)
    seen.append(recorded(store.snapshot()))
    return seen


def test_failed_attempts_and_retries_are_counted_as_claude_code_counts_them(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path
) -> None:
    # The first request is refused three ways before it is answered (a Bash step). The next
    # one's stream fails after message_start; Claude Code asks to go on from there, and that
    # answer's connection drops after message_start; it asks again, and is answered.
    fake_api.fail_next("overloaded", "server_error", "early_error", None, "error_event", "drop")
    run = run_claude("please LOOP 1", settings=settings())
    assert run.proc.returncode == 0, run.proc.stderr[-2000:]
    assert len(fake_api.refused) == 3
    outcomes = [r.outcome for r in fake_api.requests]
    assert outcomes == ["complete", "error_event", "drop", "complete"], outcomes
    cc = claude_code_total(run)
    cc_cost = float(run.output["total_cost_usd"]) if run.output else None
    sent = served(fake_api)
    # Claude Code's total holds every attempt that sent usage. For the dropped stream it adds
    # one output token beyond what message_start said (its `usage` field does not): the
    # ledger follows Claude Code's total, which `total_cost_usd` prices.
    assert cc[:3] == sent[:3]
    assert sent[3] <= cc[3] <= sent[3] + 1
    for stage in after_hooks_sync_and_rebuild(private_home, run):
        assert list(stage) == [run.session_id]
        tokens, cost = stage[run.session_id]
        assert tokens == cc
        assert cost == pytest.approx(cc_cost, abs=1e-9)


def test_thinking_parallel_tool_calls_and_a_max_tokens_stop_are_counted_once(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path
) -> None:
    # One answer with a thinking block, a text block and two Bash calls (four transcript lines
    # with one id); then, resumed, an answer cut at max_tokens that Claude Code asks to go on.
    first = run_claude("please THINK PARALLEL 2", settings=settings())
    assert first.proc.returncode == 0, first.proc.stderr[-2000:]
    second = run_claude("MAXTOK please", settings=settings(), args=["-c"])
    assert second.proc.returncode == 0, second.proc.stderr[-2000:]
    kinds = [r.kind for r in fake_api.requests]
    assert kinds == ["bash", "text", "max_tokens", "text"], kinds
    assert tool_results(first) == 2  # both calls of the one answer ran
    sent = served(fake_api)
    assert claude_code_total(second) == sent
    for stage in after_hooks_sync_and_rebuild(private_home, first, second):
        assert {k: v[0] for k, v in stage.items()} == {second.session_id: sent}
