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


def _imported(modules: str) -> list[str]:
    # -S: without site, which may import some of them itself (an editable install's finder does).
    code = f"import sys, {modules}; print(' '.join(m for m in {SLOW!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    return out.stdout.split()


@pytest.mark.parametrize("module", ["budgets", "usage", "record"])
def test_no_slow_imports(module: str) -> None:
    assert _imported(f"tokenbudget.{module}") == []


def test_config_imports_no_dataclasses_or_typing() -> None:
    # pathlib comes in through paths.py, which config only hands its paths to.
    assert _imported("tokenbudget.config") in ([], ["pathlib"])
