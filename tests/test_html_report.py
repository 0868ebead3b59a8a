"""`report --html`: one self-contained, escaped page, rendered for real in headless Chromium."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from tests.helpers import CASES, install_fixture
from tokenbudget import charts, enforce, history, html_report, sync
from tokenbudget.budgets import Budget, evaluate
from tokenbudget.errors import TokenbudgetError

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
NASTY_PROJECT = '/home/dev/<script>alert("p")</script> & "quotes"'
NASTY_COMMAND = '/x"><img src=x onerror=alert(1)>'
NOW = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)


def sample_page() -> html_report.PageData:
    """Three weeks of made-up usage: days under, near and over a 2M daily budget."""
    pattern = [
        0.4,
        0.9,
        1.3,
        0.2,
        1.75,
        2.3,
        0.0,
        0.6,
        1.1,
        1.5,
        1.9,
        0.8,
        0.3,
        2.1,
        1.0,
        0.7,
        1.6,
        1.2,
        0.5,
        1.85,
        1.4,
    ]
    first = date(2026, 11, 8)
    days = html_report.fill_gaps(
        [
            html_report.Day((first + timedelta(days=i)).isoformat(), m * 1_000_000, m * 1.9)
            for i, m in enumerate(pattern)
            if m
        ]
    )
    daily = [Budget("daily", 2_000_000), Budget("daily", 5, "usd", mode="warn")]
    sessions = [
        html_report.Session(
            f"{i:08x}-aaaa-4bbb-8ccc-{i:012x}",
            NASTY_PROJECT if i == 2 else f"/home/dev/project-{i}",
            f"2026-11-{28 - i:02d} 1{i}:05",
            ["claude-opus-5-5", "claude-haiku-5"],
            3_000_000 / (i + 1),
            5.7 / (i + 1),
        )
        for i in range(6)
    ]
    stats = [
        charts.RunStats("/review", 14, 61_000, 92_000, 140_000),
        charts.RunStats("/test", 40, 18_500, 31_000, 58_000),
        charts.RunStats(NASTY_COMMAND, 2, 4_000, 5_000, 5_000),
        charts.RunStats("prompt", 310, 6_200, 14_000, 96_000),
    ]
    limits = {"/review": 80_000.0, "/test": 50_000.0}
    commands = [
        html_report.Command(s, s.mean * s.runs, s.mean * s.runs * 2e-6, limits.get(s.command))
        for s in stats
    ]
    checks = [
        evaluate(Budget("daily", 2_000_000), 1_850_000, 0, NOW, NOW + timedelta(hours=6)),
        evaluate(Budget("weekly", 10_000_000), 6_400_000, 0, NOW, NOW + timedelta(days=2)),
        evaluate(Budget("session", 2, "usd"), 0.4, 0, NOW, None),
        evaluate(Budget("command", 50_000, name="/test"), 58_000, 0, NOW, None),
    ]
    return html_report.PageData(
        generated="2026-11-28 18:00 UTC",
        days=days,
        daily_budgets=daily,
        sessions=sessions,
        commands=commands,
        checks=checks,
        total_tokens=sum(d.tokens for d in days),
        total_cost=sum(d.cost or 0 for d in days),
        session_count=42,
        scope="all projects",
    )


# --- the page as text --------------------------------------------------------------------------


def test_user_text_is_escaped_everywhere() -> None:
    page = html_report.render_page(sample_page())
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&quot;p&quot;)&lt;/script&gt; &amp; &quot;quotes&quot;" in page
    assert "/x&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert 'aria-label="runs of /x&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"' in page


def test_the_page_loads_nothing() -> None:
    page = html_report.render_page(sample_page())
    for needle in ("http://", "https://", "<link", "@import", "url(", 'src="', "<script"):
        assert needle not in page, needle
    assert "Content-Security-Policy" in page
    assert html.unescape(page).count("default-src 'none'") == 1


def test_the_daily_chart_marks_the_budget_and_colors_the_days() -> None:
    svg = html_report.day_svg(
        [
            html_report.Day("2026-11-27", 1_000_000, 1.0),
            html_report.Day("2026-11-28", 2_500_000, 2.5),
        ],
        "tokens",
        2_000_000,
    )
    assert svg.count('class="bar ok"') == 1 and svg.count('class="bar over"') == 1
    assert 'class="budget"' in svg and "daily budget 2M tokens" in svg
    assert "<title>2026-11-28: 2.5M tokens, $2.50 (125% of the daily budget)</title>" in svg


@pytest.mark.parametrize(
    ("value", "top"),
    [
        (0, (1.0, 0.25)),
        (7, (8.0, 2.0)),
        (1_050_000, (1_500_000.0, 500_000.0)),
        (2_415_000, (3_000_000.0, 1_000_000.0)),
        (96.6, (100.0, 25.0)),
    ],
)
def test_nice_axis(value: float, top: tuple[float, float]) -> None:
    assert html_report.nice_top(value) == top


def test_empty_page_says_so() -> None:
    page = html_report.render_page(html_report.PageData("now", [], [], [], []))
    assert "No usage found." in page and "No sessions." in page and "No command runs." in page
    assert "No budgets." in page


def test_built_from_the_ledger(private_home: Path) -> None:
    for case in CASES:
        install_fixture(case, private_home / ".claude", unique_ids=True)
    store = sync.open_store()
    sync.sync_all(store, now=NOW.timestamp())
    ledger = store.snapshot()
    budgets = [Budget("daily", 100_000), Budget("command", 20_000, name="/test")]
    checks = html_report.budget_checks(
        ledger, budgets, UTC, project="/home/dev/project", session_id=None, now=NOW.timestamp()
    )
    page = html_report.build_page(
        ledger, history.read_records(ledger), budgets, UTC, checks=checks, now=NOW.timestamp()
    )
    assert "Generated 2026-11-28 18:00 UTC" in page
    assert "<td>2026-11-28</td>" in page and "daily budget 100k tokens" in page
    expected = enforce.expected(ledger, "/test")[0]
    p90 = re.search(
        r"<code>/test</code></td><td class=n>(\d+)</td><td class=n>([^<]+)</td>"
        r"<td class=n>([^<]+)</td>",
        page,
    )
    assert p90 is not None and p90.group(3) == charts.format_amount(expected, "tokens")
    assert page.count('<code title="') == len(ledger["sessions"]) == 8  # forked holds two
    assert page.count('<svg class="runs"') == 3  # /test, /compact and plain prompts
    assert page.count('<span class="meter">') == len(checks) == 2


def test_write_failure_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(TokenbudgetError, match=r"cannot write .*: No such file or directory"):
        html_report.write_page(tmp_path / "missing" / "r.html", "x")


# --- rendered for real -------------------------------------------------------------------------


def chromium() -> str:
    """The Chromium to render with; a failure on CI (it must be installed), a skip elsewhere."""
    found = next(
        (
            p
            for p in (
                "/usr/bin/chromium",
                shutil.which("chromium"),
                shutil.which("chromium-browser"),
            )
            if p and os.path.exists(p)
        ),
        None,
    )
    if found is None:
        message = (
            "headless Chromium is needed to check the HTML report: "
            "apt-get install -y chromium (Debian's package)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def run_chromium(page: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        *extra,
        page.as_uri(),
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def console_errors(stderr: str) -> list[str]:
    # Page problems reach stderr as CONSOLE lines (a CSP refusal among them).
    return [
        line
        for line in stderr.splitlines()
        if "CONSOLE" in line or "Refused to" in line or "Content Security Policy" in line
    ]


@pytest.fixture
def page_file(tmp_path: Path) -> Path:
    path = tmp_path / "report.html"
    html_report.write_page(path, html_report.render_page(sample_page()))
    return path


def test_chromium_renders_the_page(page_file: Path, tmp_path: Path) -> None:
    proc = run_chromium(page_file, tmp_path, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    for section in ("budgets", "days", "sessions", "commands"):
        assert f'<section id="{section}">' in dom
    assert dom.count('<svg class="chart"') == 2  # tokens and dollars: two daily budgets
    assert dom.count('<svg class="runs"') == 4
    assert "<script" not in dom and "<img" not in dom  # the user's text stayed text
    assert console_errors(proc.stderr) == []


def test_chromium_screenshot(page_file: Path, tmp_path: Path) -> None:
    chromium()  # skip (or fail on CI) before touching test-artifacts/
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "html-report.png"
    shot.unlink(missing_ok=True)
    proc = run_chromium(
        page_file, tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", "--hide-scrollbars"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.stat().st_size > 20_000  # a real picture, not a blank page
    shutil.copy(page_file, ARTIFACTS / "html-report.html")
    assert console_errors(proc.stderr) == []
