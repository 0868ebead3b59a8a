"""The status line, fed what Claude Code sends it: exact text, and never a loud failure."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import install_fixture
from tokenbudget import statusline
from tokenbudget.budgets import Budget, evaluate

# The loop fixture: one session of 18,513 tokens and $0.032451 on 2026-11-28 at 17:14 UTC.
LOOP_TOKENS = 18_513
AT_17_30 = datetime(2026, 11, 28, 17, 30, tzinfo=UTC).timestamp()


def claude_code_payload(private_home: Path, case: str = "loop") -> dict[str, Any]:
    """Every field Claude Code 2.1.328 sends a statusLine command (claude-code-facts.md)."""
    install_fixture(case, private_home / ".claude")
    transcript = next((private_home / ".claude" / "projects").glob("*/*.jsonl"))
    return {
        "session_id": transcript.stem,
        "transcript_path": str(transcript),
        "cwd": "/home/dev/project",
        "prompt_id": "7522e4b4-9752-43c2-ae74-64f8daadc9f0",
        "model": {"id": "claude-opus-5-5", "display_name": "Opus 5.5"},
        "workspace": {
            "current_dir": "/home/dev/project",
            "project_dir": "/home/dev/project",
            "added_dirs": [],
        },
        "version": "2.1.328",
        "output_style": {"name": "default"},
        "cost": {
            "total_cost_usd": 0.032451,
            "total_duration_ms": 1200,
            "total_api_duration_ms": 236,
            "total_lines_added": 0,
            "total_lines_removed": 0,
        },
        "context_window": {
            "total_input_tokens": 5421,
            "total_output_tokens": 261,
            "context_window_size": 200000,
            "current_usage": {
                "input_tokens": 900,
                "output_tokens": 40,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 3000,
            },
            "used_percentage": 2,
            "remaining_percentage": 98,
        },
        "exceeds_200k_tokens": False,
        "prompt_cache": {},
        "fast_mode": False,
        "thinking": {"enabled": False},
        "effort": {"level": "medium"},
        "rate_limits": {
            "five_hour": {"used_percentage": 12, "resets_at": 1795900000},
            "seven_day": {"used_percentage": 3, "resets_at": 1796400000},
        },
    }


def set_config(private_home: Path, text: str) -> None:
    cfg = private_home / "tb state" / "config.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(text)


def set_budgets(private_home: Path, *budgets: dict[str, Any]) -> None:
    set_config(private_home, json.dumps({"version": 1, "budgets": list(budgets)}))


def run(payload: Any, **env: str) -> tuple[int, str, str]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    full_env = dict(os.environ, **env)
    proc = subprocess.run(
        [sys.executable, "-m", "tokenbudget.statusline"],
        input=raw,
        capture_output=True,
        env=full_env,
        timeout=30,
        check=False,
    )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def ledger_file(private_home: Path) -> Path:
    return private_home / "tb state" / "ledger.json"


# --- through the real entry point -------------------------------------------------------


def test_what_claude_code_sends(private_home: Path, recorded_day: float) -> None:
    set_budgets(
        private_home,
        {"kind": "session", "limit": "400k"},
        {"kind": "total", "limit": "20k"},
        {"kind": "total", "limit": "$1"},
    )
    rc, out, err = run(claude_code_payload(private_home))
    assert (rc, err) == (0, "")
    # The fullest budget first; its burn rate and the model gave way to fit 80 columns.
    assert out == "all-time 92% of 20k │ session 18.5k/400k · $0.03 │ all-time 3% of $1.00\n"


def test_color_is_on_unless_no_color(private_home: Path, recorded_day: float) -> None:
    set_budgets(private_home, {"kind": "session", "limit": "20k"}, {"kind": "total", "limit": "$1"})
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    raw = json.dumps(claude_code_payload(private_home)).encode()
    proc = subprocess.run(
        [sys.executable, "-m", "tokenbudget.statusline"],
        input=raw,
        capture_output=True,
        env=env,
        timeout=30,
        check=True,
    )
    assert proc.stdout.decode() == (
        "session \x1b[31m18.5k/20k\x1b[0m · $0.03 · 18.5k/h │ all-time \x1b[32m3%\x1b[0m of $1.00"
        " │ Opus 5.5 · ctx \x1b[32m2%\x1b[0m\n"
    )
    assert run(json.loads(raw))[1] == (
        "session 18.5k/20k · $0.03 · 18.5k/h │ all-time 3% of $1.00 │ Opus 5.5 · ctx 2%\n"
    )


def test_without_budgets_it_shows_tokens_and_cost(private_home: Path) -> None:
    rc, out, _ = run(claude_code_payload(private_home))
    assert (rc, out) == (0, "session 18.5k · $0.03 │ Opus 5.5 · ctx 2%\n")


def test_unknown_and_oddly_typed_fields_are_ignored(private_home: Path) -> None:
    payload = claude_code_payload(private_home)
    payload.update(
        workspace=5,
        cost="lots",
        model=None,
        some_future_field={"x": [1, 2]},
        context_window=[],
        rate_limits={"five_hour": "soon"},
    )
    set_budgets(private_home, {"kind": "total", "limit": "1M"})
    rc, out, err = run(payload)
    assert (rc, out, err) == (0, "all-time 1% of 1M │ session 18.5k · $0.03\n", "")


@pytest.mark.parametrize("missing", ["transcript_path", "cwd", "workspace", "prompt_id"])
def test_missing_fields_are_tolerated(private_home: Path, missing: str) -> None:
    payload = claude_code_payload(private_home)
    del payload[missing]
    rc, out, err = run(payload)
    assert rc == 0 and err == ""
    # Without the transcript there is nothing recorded yet for this session: it reads zero.
    used = "0 · $0.00" if missing == "transcript_path" else "18.5k · $0.03"
    assert out == f"session {used} │ Opus 5.5 · ctx 2%\n"


def test_disabled_says_off(private_home: Path) -> None:
    rc, out, err = run(claude_code_payload(private_home), TOKENBUDGET_DISABLE="1")
    assert (rc, out, err) == (0, "tokenbudget: off\n", "")


def test_without_a_session_it_shows_the_budget_alone(private_home: Path) -> None:
    set_budgets(private_home, {"kind": "total", "limit": "1M"})
    assert run({"cwd": "/home/dev/project"})[1] == "all-time 0% of 1M\n"
    assert run({})[1] == "all-time 0% of 1M\n"


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"not json",
        b"[]",
        b"null",
        b"\xff\xfe\x00",
        b'{"session_id": 5}',
        b'{"session_id": "../../etc", "transcript_path": "/etc/passwd"}',
        b"[" * 100_000,
    ],
)
def test_garbage_prints_one_quiet_line(private_home: Path, garbage: bytes) -> None:
    rc, out, err = run(garbage)
    assert rc == 0 and err == ""
    assert out in ("tokenbudget: –\n",) and out.count("\n") == 1


def test_a_transcript_outside_claude_code_is_not_read(private_home: Path, tmp_path: Path) -> None:
    payload = claude_code_payload(private_home)
    outside = tmp_path / f"{payload['session_id']}.jsonl"
    outside.write_bytes(Path(payload["transcript_path"]).read_bytes())
    payload["transcript_path"] = str(outside)
    assert run(payload)[1] == "session 0 · $0.00 │ Opus 5.5 · ctx 2%\n"


def test_broken_config_says_so_briefly(private_home: Path) -> None:
    set_config(private_home, "{oops")
    rc, out, err = run(claude_code_payload(private_home))
    assert (rc, err) == (0, "")
    # What is wrong stays; the model gives way to it.
    assert out == "session 18.5k · $0.03 │ tokenbudget: config broken, budgets not enforced\n"


def test_broken_project_budget_file_says_so_briefly(private_home: Path, tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / ".claude").mkdir(parents=True)
    (project / ".claude" / "tokenbudget.json").write_text('{"budgets": [{"kind": "nope"}]}')
    payload = claude_code_payload(private_home)
    payload["workspace"] = {"project_dir": str(project)}
    rc, out, _ = run(payload)
    assert rc == 0 and out.endswith("│ tokenbudget: config broken, budgets not enforced\n")


def test_no_ledger_yet_and_nothing_written(private_home: Path, recorded_day: float) -> None:
    set_budgets(private_home, {"kind": "session", "limit": "400k"})
    rc, out, _ = run(claude_code_payload(private_home))
    assert (rc, out) == (0, "session 18.5k/400k · $0.03 · 18.5k/h │ Opus 5.5 · ctx 2%\n")
    assert not ledger_file(private_home).exists()  # the hooks record it, under the lock
    assert sorted(p.name for p in (private_home / "tb state").iterdir()) == ["config.json"]


def test_reads_the_ledger_without_changing_it(private_home: Path) -> None:
    from tokenbudget import sync

    payload = claude_code_payload(private_home, "slash")
    with sync.open_store().transaction():
        pass  # an empty committed ledger: the session is not recorded yet
    before = ledger_file(private_home).read_bytes()
    assert run(payload)[1] == "session 9.2k · $0.02 │ Opus 5.5 · ctx 2%\n"
    assert ledger_file(private_home).read_bytes() == before


def test_held_lock_does_not_slow_it(private_home: Path) -> None:
    from filelock import FileLock

    payload = claude_code_payload(private_home)
    state = private_home / "tb state"
    state.mkdir(parents=True, exist_ok=True)
    with FileLock(str(state / "ledger.json.lock")):
        assert run(payload)[1] == "session 18.5k · $0.03 │ Opus 5.5 · ctx 2%\n"


def test_corrupt_ledger_gives_the_quiet_line_and_is_left_alone(private_home: Path) -> None:
    payload = claude_code_payload(private_home)
    ledger = ledger_file(private_home)
    ledger.parent.mkdir(parents=True)
    ledger.write_bytes(b"{not json")
    rc, out, err = run(payload)
    assert (rc, out, err) == (0, "tokenbudget: –\n", "")
    assert ledger.read_bytes() == b"{not json"  # recovery is the hooks' job, under the lock
    log = (private_home / "tb state" / "tokenbudget.log").read_text()
    assert "statusline: CorruptLedger" in log


# --- in process: fixed clock ------------------------------------------------------------


def test_the_tightest_window_and_when_it_resets(private_home: Path) -> None:
    set_budgets(
        private_home,
        {"kind": "daily", "limit": "25k"},
        {"kind": "weekly", "limit": "1M"},
        {"kind": "command", "name": "/x", "limit": "1"},
    )
    raw = json.dumps(claude_code_payload(private_home)).encode()
    line = statusline.status_line(raw, AT_17_30, color=False)
    # Too long with the session's usage and the model (89 columns): they give way.
    assert line == "daily 74% of 25k · resets 6h30m · 18.5k/h │ weekly 1% of 1M"
    colored = statusline.status_line(raw, AT_17_30, color=True)
    assert colored == (
        "daily \x1b[33m74%\x1b[0m of 25k · resets 6h30m · 18.5k/h │ weekly \x1b[32m1%\x1b[0m of 1M"
    )


def test_the_budget_that_blocks_comes_before_a_fuller_warn_only_one(private_home: Path) -> None:
    # Issue 11: a daily budget at 102% (blocking) was hidden behind a warn-only weekly at 162%.
    set_budgets(
        private_home,
        {"kind": "session", "limit": "$2"},
        {"kind": "weekly", "limit": "11.4k", "mode": "warn"},
        {"kind": "daily", "limit": "18k"},
    )
    raw = json.dumps(claude_code_payload(private_home)).encode()
    assert statusline.status_line(raw, AT_17_30, color=False) == (
        "daily 102% of 18k BLOCKS · resets 6h30m │ session 18.5k · $0.03/$2.00 │ +1 more"
    )


def test_the_session_is_not_read_twice_once_recorded(
    private_home: Path, recorded_day: float
) -> None:
    from tokenbudget import sync

    payload = claude_code_payload(private_home)
    sync.sync_all(sync.open_store())
    raw = json.dumps(payload).encode()
    line = "session 18.5k · $0.03 │ Opus 5.5 · ctx 2%"
    assert statusline.status_line(raw, AT_17_30, color=False) == line
    assert statusline.status_line(raw, AT_17_30, color=False, ingest=False) == line


def test_any_error_becomes_the_quiet_line(
    private_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(*args: object, **kwargs: object) -> str:
        raise RuntimeError("surprise")

    monkeypatch.setattr(statusline, "status_line", boom)
    monkeypatch.setattr(sys, "stdin", None)
    statusline.main()
    assert capsys.readouterr() == ("tokenbudget: –\n", "")
    assert (
        "statusline: RuntimeError: surprise"
        in (private_home / "tb state" / "tokenbudget.log").read_text()
    )


def test_cli_command_prints_the_same_line(private_home: Path, recorded_day: float) -> None:
    from click.testing import CliRunner

    from tokenbudget.cli import main

    set_budgets(private_home, {"kind": "total", "limit": "1M"})
    payload = json.dumps(claude_code_payload(private_home))
    result = CliRunner().invoke(main, ["statusline"], input=payload)
    assert (result.exit_code, result.output) == (
        0,
        "all-time 1% of 1M · 18.5k/h │ session 18.5k · $0.03 │ Opus 5.5 · ctx 2%\n",
    )


# --- the pure parts ---------------------------------------------------------------------

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
RESETS = {
    "daily": datetime(2026, 11, 29, tzinfo=UTC),
    "weekly": datetime(2026, 11, 30, 0, 0, tzinfo=UTC),
    "5h": datetime(2026, 11, 28, 16, 12, tzinfo=UTC),
}
MODEL = "Opus 5.5 · ctx 2%"


def check(kind: str, limit: float, used: float, unit: str = "tokens", mode: str = "block") -> Any:
    name = "/t" if kind == "command" else None
    budget = Budget(kind, limit, unit, name=name, mode=mode)  # type: ignore[arg-type]
    return evaluate(budget, used, 0, NOW, RESETS.get(kind))


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@pytest.mark.parametrize(
    ("used", "color", "state"),
    [
        (69, "\x1b[32m", ""),
        (70, "\x1b[33m", ""),
        (90, "\x1b[33m", ""),
        (91, "\x1b[31m", ""),
        (150, "\x1b[31m", " \x1b[31mBLOCKS\x1b[0m"),
    ],
)
def test_colors_follow_the_thresholds(used: int, color: str, state: str) -> None:
    text = statusline.budget_part(check("daily", 100, used), color=True)
    assert text == f"daily {color}{used}%\x1b[0m of 100{state} · resets 12h"


def the_issue_case() -> list[Any]:
    return [
        check("session", 2, 0.04, "usd"),
        check("weekly", 120_000, 194_400, mode="warn"),
        check("daily", 100_000, 102_000),
    ]


def test_the_budget_that_blocks_now_comes_first() -> None:
    line = statusline.compose((22_500, 0.04), the_issue_case(), color=False, rate=18_000)
    assert line == "daily 102% of 100k BLOCKS · resets 12h │ session 22.5k · $0.04/$2.00 │ +1 more"
    wide = statusline.compose((22_500, 0.04), the_issue_case(), color=False, rate=18_000, width=200)
    assert wide == (
        "daily 102% of 100k BLOCKS · resets 12h · 18k/h │ session 22.5k · $0.04/$2.00"
        " │ weekly 162% of 120k (warn)"
    )


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_warn_only_budgets_come_after_every_blocking_one(order: tuple[int, ...]) -> None:
    checks = [
        check("weekly", 1000, 1620, mode="warn"),
        check("monthly", 1000, 100),
        check("daily", 100, 50),
        check("total", 1000, 990, mode="warn"),
    ]
    line = statusline.compose(None, [checks[i] for i in order], color=False, width=200)
    assert line == (
        "daily 50% of 100 · resets 12h │ monthly 10% of 1k"
        " │ weekly 162% of 1k (warn) │ all-time 99% of 1k (warn)"
    )


def test_what_gives_way_when_space_is_short() -> None:
    checks = [check("weekly", 1000, 100), check("daily", 100_000, 74_000), check("5h", 100, 5)]
    seen: list[str] = []
    for width in range(120, 20, -1):
        line = statusline.compose(
            (1234, 0.5), checks, color=False, rate=9000, model=MODEL, width=width
        )
        assert statusline.visible_width(line) <= width or line == "daily 74% of 100k │ +2 more"
        if line not in seen:
            seen.append(line)
    assert seen == [
        "daily 74% of 100k · resets 12h · 9k/h │ weekly 10% of 1k │ 5h 5% of 100"
        " │ session 1.2k · $0.50 │ Opus 5.5 · ctx 2%",
        "daily 74% of 100k · resets 12h · 9k/h │ weekly 10% of 1k │ 5h 5% of 100"
        " │ session 1.2k · $0.50",
        "daily 74% of 100k · resets 12h · 9k/h │ weekly 10% of 1k │ 5h 5% of 100",
        "daily 74% of 100k · resets 12h │ weekly 10% of 1k │ 5h 5% of 100",
        "daily 74% of 100k · resets 12h │ weekly 10% of 1k │ +1 more",
        "daily 74% of 100k · resets 12h │ +2 more",
        "daily 74% of 100k │ +2 more",
    ]


def test_several_budgets_fit_in_80_columns() -> None:
    checks = [
        check("total", 10_000_000, 2_500_000),
        check("session", 500_000, 182_300),
        check("session", 5, 4.12, "usd"),
        check("monthly", 100, 31.5, "usd"),
        check("weekly", 2_000_000, 1_500_000, mode="warn"),
        check("5h", 200_000, 150_000),
        check("daily", 500_000, 310_000),
        check("command", 10, 9),
    ]
    for color in (False, True):
        line = statusline.compose((182_300, 4.12), checks, color=color, rate=0.9, model=MODEL)
        assert plain(line) == (
            "session 182.3k/500k · $4.12/$5.00 │ 5h 75% of 200k │ daily 62% of 500k │ +3 more"
        )
        assert statusline.visible_width(line) <= 80
    assert plain(line) == statusline.compose(
        (182_300, 4.12), checks, color=False, rate=0.9, model=MODEL
    )


def test_budgets_that_block_are_never_given_up() -> None:
    checks = [
        check("weekly", 1000, 1200),
        check("total", 10, 5),
        check("monthly", 1000, 1100),
        check("daily", 100, 150),
        check("5h", 100, 104),
        check("weekly", 10, 50, mode="warn"),
    ]
    line = statusline.compose((1234, 5.5), checks, color=False, rate=50, model=MODEL)
    # Too long even bare: the reset time goes, but no budget that blocks now.
    assert line == (
        "daily 150% of 100 BLOCKS │ weekly 120% of 1k BLOCKS │ monthly 110% of 1k BLOCKS"
        " │ 5h 104% of 100 BLOCKS │ +2 more"
    )


@pytest.mark.parametrize(
    "checks",
    [
        [],
        the_issue_case(),
        [check("daily", 100, 95), check("5h", 100, 40, mode="warn")],
        [check("session", 100, 99), check("session", 5, 6, "usd"), check("monthly", 10, 8, "usd")],
    ],
)
def test_colour_changes_no_visible_text(checks: list[Any]) -> None:
    for rate in (None, 12_345.0):
        model = statusline.model_part("Opus 5.5", 75, color=True)
        colored = statusline.compose((9000, 6.0), checks, color=True, rate=rate, model=model)
        model = statusline.model_part("Opus 5.5", 75, color=False)
        uncolored = statusline.compose((9000, 6.0), checks, color=False, rate=rate, model=model)
        assert "\x1b[" in colored and "\x1b[" not in uncolored
        assert plain(colored) == uncolored


def test_the_session_budget_takes_its_place_among_the_budgets() -> None:
    checks = [check("daily", 100_000, 50_000), check("session", 5, 6, "usd")]
    line = statusline.compose((250_000, 6.0), checks, color=False, rate=1.5)
    assert line == "session 250k · $6.00/$5.00 BLOCKS · $1.50/h │ daily 50% of 100k"


def test_a_dollar_session_budget_is_shown_against_the_cost() -> None:
    line = statusline.compose((250_000, 4.125), [check("session", 5, 4.125, "usd")], color=False)
    assert line == "session 250k · $4.13/$5.00"  # half a cent rounds up


def test_a_burn_rate_is_shown_in_the_first_budget_s_unit() -> None:
    daily = [check("daily", 100, 80, "usd")]
    assert statusline.compose(None, daily, color=False, rate=0.004) == (
        "daily 80% of $100.00 · resets 12h · $0.0040/h"
    )
    no_rate = statusline.compose(None, daily, color=False, rate=0)
    assert no_rate == "daily 80% of $100.00 · resets 12h"


def test_visible_width_counts_columns() -> None:
    assert statusline.visible_width("\x1b[31mdaily\x1b[0m │ …") == 9
    assert statusline.visible_width("Opus 漢字") == 9
    assert statusline.visible_width("e\u0301") == 1


def test_the_model_part_is_short_and_harmless() -> None:
    assert statusline.model_part("Opus 5.5", 12.7, color=False) == "Opus 5.5 · ctx 12%"
    assert statusline.model_part(None, 0, color=False) == "ctx 0%"
    assert statusline.model_part("x\x1b[2Jy", None, color=False) == "x\\x1b[2Jy"
    assert statusline.model_part("A" * 40, None, color=False) == "A" * 10 + "…" + "A" * 9
    assert statusline.model_part(None, None, color=False) == ""


def test_nothing_to_show_is_the_quiet_line() -> None:
    assert statusline.compose(None, [], color=False) == "tokenbudget: –"
    assert statusline.compose(None, [check("command", 10, 1)], color=False) == "tokenbudget: –"
