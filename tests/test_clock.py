"""One clock: every "now" comes from tokenbudget.clock, which tests can pin."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest

from tokenbudget import clock
from tokenbudget.errors import ConfigError

PACKAGE = Path(__file__).resolve().parent.parent / "tokenbudget"
# Calls that read the system's wall clock or calendar.
READS = {("time", "time"), ("datetime", "now"), ("datetime", "today"), ("date", "today"),
         ("datetime", "utcnow"), ("time", "time_ns")}


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


def test_no_module_reads_the_system_clock_but_the_clock() -> None:
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name == "clock.py":
            continue
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and (node.func.value.id, node.func.attr) in READS
                and not lines[node.lineno - 1].endswith("# the real clock")
            ):
                found.append(f"{path.name}:{node.lineno}")
    assert found == []
