"""One clock: every "now" comes from tokenbudget.clock, which tests can pin."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest

from tokenbudget import clock
from tokenbudget.errors import ConfigError

PACKAGE = Path(__file__).resolve().parent.parent / "tokenbudget"
# Calls that read the system's wall clock or calendar, and those that do when given no time.
READS = {("time", "time"), ("datetime", "now"), ("datetime", "today"), ("date", "today"),
         ("datetime", "utcnow"), ("time", "time_ns")}
READS_UNLESS_GIVEN = {("time", "localtime"): 0, ("time", "gmtime"): 0, ("time", "ctime"): 0,
                      ("time", "asctime"): 0, ("time", "strftime"): 1}


def test_unpinned_it_is_the_system_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENBUDGET_NOW", raising=False)
    before = time.time()
    assert before <= clock.now() <= time.time()


def test_pinned_it_stands_still(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENBUDGET_NOW", "1795887600.5")
    assert clock.now() == clock.now() == 1795887600.5


@pytest.mark.parametrize("value", ["tomorrow", "nan", "inf", "-5", "2026-11-28"])
def test_a_bad_pin_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("TOKENBUDGET_NOW", value)
    with pytest.raises(ConfigError) as e:
        clock.now()
    assert str(e.value) == f"TOKENBUDGET_NOW={value!r} is not a time in seconds since the epoch"


def _clock_reads(source: str) -> list[int]:
    """Lines of `source` that read the system clock (a line may say `# the real clock`)."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        # `from time import time` would hide the calls from the check below.
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "time"
            and any(a.name in ("time", "time_ns", "localtime", "gmtime") for a in node.names)
        ):
            found.append(node.lineno)
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
        ):
            continue
        name = (node.func.value.id, node.func.attr)
        reads = name in READS or (
            name in READS_UNLESS_GIVEN and len(node.args) <= READS_UNLESS_GIVEN[name]
        )
        if reads and not lines[node.lineno - 1].endswith("# the real clock"):
            found.append(node.lineno)
    return found


def test_no_module_reads_the_system_clock_but_the_clock() -> None:
    found = [
        f"{path.name}:{line}"
        for path in sorted(PACKAGE.glob("*.py"))
        if path.name != "clock.py"
        for line in _clock_reads(path.read_text())
    ]
    assert found == []


@pytest.mark.parametrize(
    "code",
    ["time.time()", "datetime.now(tz)", "time.localtime()", "time.strftime('%H')",
     "from time import time", "date.today()"],
)
def test_the_check_sees_each_way_to_read_the_clock(code: str) -> None:
    assert _clock_reads(code) == [1]
    assert _clock_reads("time.localtime(t); time.strftime('%H', t); x.now()") == []


# Calls that read the machine's time zone: the user's zone is config.tz() (config.local_zone
# asks the system when the config names none). A line may say `# the machine's zone`.
ZONE_READS = {("time", "localtime"), ("time", "mktime")}


def _zone_reads(source: str) -> list[int]:
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        f = node.func
        name = (f.value.id if isinstance(f.value, ast.Name) else "", f.attr)
        reads = (
            name in ZONE_READS
            or (f.attr == "astimezone" and not node.args and not node.keywords)
            or (f.attr == "fromtimestamp" and len(node.args) < 2 and not node.keywords)
        )
        if reads and not lines[node.lineno - 1].endswith("# the machine's zone"):
            found.append(node.lineno)
    return found


def test_no_module_reads_the_machines_zone_but_the_config() -> None:
    found = [
        f"{path.relative_to(PACKAGE)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "config.py"
        for line in _zone_reads(path.read_text())
    ]
    assert found == []


def test_no_module_of_a_subpackage_reads_the_system_clock_either() -> None:
    found = [
        f"{path.relative_to(PACKAGE)}:{line}"
        for path in sorted(PACKAGE.rglob("*/*.py"))
        for line in _clock_reads(path.read_text())
    ]
    assert found == []


@pytest.mark.parametrize(
    "code", ["time.localtime(t)", "datetime.fromtimestamp(t)", "d.astimezone()", "time.mktime(s)"]
)
def test_the_check_sees_each_way_to_read_the_zone(code: str) -> None:
    assert _zone_reads(code) == [1]
    assert _zone_reads("datetime.fromtimestamp(t, tz); d.astimezone(tz); time.gmtime(t)") == []
