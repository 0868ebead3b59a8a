"""What a budget is: its kind, limit, unit, mode and scope, read from text and from JSON.

Pure rules, no I/O, no clock and no datetime: reading the config (a hook call with nothing new
does) needs these and nothing of the time windows, checks and decisions (budgets.py, which
re-exports every name here).
"""

from __future__ import annotations

import json
import math
import os.path
import re
from collections.abc import Mapping

from .errors import ConfigError
from .record import Frozen

# Importing typing costs a hook call about 5 ms: these names exist for the type checker only
# (mypy reads any name TYPE_CHECKING as true), so other modules import them the same way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Literal, TypeAlias

    Kind: TypeAlias = Literal[
        "total", "daily", "weekly", "monthly", "5h", "session", "command", "project"
    ]
    Unit: TypeAlias = Literal["tokens", "usd"]
    Mode: TypeAlias = Literal["block", "warn"]
    Source: TypeAlias = Literal["user", "project"]

KINDS: tuple[Kind, ...] = (
    "total", "daily", "weekly", "monthly", "5h", "session", "command", "project"
)
# The kinds that measure time windows; only these may be limited to one project.
WINDOW_KINDS: frozenset[str] = frozenset({"total", "daily", "weekly", "monthly", "5h"})
UNITS: tuple[Unit, ...] = ("tokens", "usd")
MODES: tuple[Mode, ...] = ("block", "warn")
DEFAULT_WARN_AT = 0.8

_JSON_KEYS = frozenset({"kind", "name", "project", "limit", "unit", "mode", "warn_at"})


def _q(value: object) -> str:
    """Quote a user's value for a one-line message (JSON escaping keeps newlines out)."""
    return json.dumps(value, ensure_ascii=False, default=str)


class _FieldError(ConfigError):
    """A problem with one field of a budget, so callers can say where it is."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


# ---------------------------------------------------------------- limits and thresholds

# Patterns are compiled on first use (re keeps them): compiling at import would cost every hook
# call that never reads a limit from text.
_NUMBER = (
    r"(?P<int>\d{1,3}(?:,\d{3})+|\d+(?:_\d+)*)?(?:\.(?P<frac>\d+))?\s*(?P<suffix>[kmbt])?"
)
_SCALE = {"": 0, "k": 3, "m": 6, "b": 9, "t": 12}
_MARKERS: tuple[tuple[str, Unit], ...] = (
    ("usd", "usd"), ("dollars", "usd"), ("dollar", "usd"), ("$", "usd"),
    ("tokens", "tokens"), ("token", "tokens"),
)


def parse_limit(text: str | int | float, default_unit: Unit = "tokens") -> tuple[float, Unit]:
    """Read `200k`, `1.5M`, `2_000`, `$5`, `5 usd` as (amount, 'tokens' | 'usd')."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ConfigError(f"cannot read {_q(text)} as tokens or dollars")
    if not isinstance(text, str):
        return _checked_limit(float(text), default_unit, text)
    raw = text
    s = text.strip().lower()
    unit = default_unit  # for a bare number; a marker below overrides it
    if s.startswith("$"):
        unit, s = "usd", s[1:].strip()
        s = s.removesuffix("usd").strip()
    else:
        for marker, marked in _MARKERS:
            if s.endswith(marker):
                unit, s = marked, s.removesuffix(marker).strip()
                break
    match = re.fullmatch(_NUMBER, s)
    if not s or match is None or not (match["int"] or match["frac"]):
        raise ConfigError(
            f"cannot read {_q(raw)} as tokens or dollars (write it like 200k, 1.5M, $5 or 5usd)"
        )
    digits = (match["int"] or "0").replace(",", "").replace("_", "")
    frac = match["frac"] or ""
    # Shift the decimal point in the string, not in floats: 1.1k must be exactly 1100 tokens.
    exponent = _SCALE[match["suffix"] or ""] - len(frac)
    mantissa = int(digits + frac)
    if unit == "tokens":
        if exponent < 0 and mantissa % 10**-exponent:
            raise ConfigError(f"{_q(raw)} is not a whole number of tokens")
        count = mantissa * 10**exponent if exponent >= 0 else mantissa // 10**-exponent
        return _checked_limit(float(count), unit, raw)
    return _checked_limit(float(f"{mantissa}e{exponent}"), unit, raw)


def _checked_limit(value: float, unit: Unit, raw: object) -> tuple[float, Unit]:
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"a limit must be more than 0, not {_q(raw)}")
    if unit == "tokens" and value != int(value):
        raise ConfigError(f"{_q(raw)} is not a whole number of tokens")
    return value, unit


def parse_warn_at(text: str | int | float) -> float:
    """Read a warning threshold: `80`, `80%` and `0.8` all mean 80% of the limit."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ConfigError(f"cannot read {_q(text)} as a percentage")
    s = str(text).strip()
    percent = s.endswith("%")
    try:
        value = float(s.removesuffix("%").strip())
    except ValueError:
        raise ConfigError(f"cannot read {_q(text)} as a percentage (write it like 80%)") from None
    # Numbers above 1 can only be percentages; 1 and below are fractions (so "1" means 100%).
    if percent or value > 1:
        value /= 100
    if not math.isfinite(value) or not 0 < value <= 1:
        raise ConfigError(f"warn_at must be above 0% and at most 100%, not {_q(text)}")
    return value


def limit_arg(value: float, unit: Unit) -> str:
    """A limit as a shell-safe argument `parse_limit` reads back: `400k`, `10usd`."""
    if unit == "usd":
        return f"{value:.6f}".rstrip("0").rstrip(".") + "usd"  # not "$10": a shell would expand $1
    from .numfmt import exact_tokens  # here: reading a config never needs it

    return exact_tokens(int(value)).replace(",", "_")


# ---------------------------------------------------------------- budgets


# A slash command's name: letters, digits, `_`, `-`, `.`, and `:` for a plugin's namespace.
# `/etc/passwd what is this` is a prompt that starts with a path, not a command.
_SLASH = r"/[A-Za-z0-9_][A-Za-z0-9_.:-]*"


def slash_command(text: str) -> str | None:
    """`/test` for a prompt typed as `/test --fast`; None if it is not a slash command."""
    words = text.split(maxsplit=1)
    return words[0] if words and re.fullmatch(_SLASH, words[0]) else None


def normalize_command(name: str) -> str:
    """`test` and `/test` both name the slash command `/test`."""
    name = name.strip()
    return name if name.startswith("/") else f"/{name}"


def normalize_project(path: str) -> str:
    """One spelling per folder (no trailing slash, no `..`), so paths compare as strings."""
    return os.path.normpath(path.strip())


def project_matches(project: str, path: str) -> bool:
    """True if `path` is the folder `project` or inside it."""
    project, path = normalize_project(project), normalize_project(path)
    if path == project:
        return True
    return path.startswith(project if project.endswith(os.sep) else project + os.sep)


class Budget(Frozen):
    """One limit: what it counts (kind, name, project), how much, and what happens at it."""

    _fields = ("kind", "limit", "unit", "name", "mode", "warn_at", "project", "source")
    __slots__ = _fields
    kind: Kind
    limit: float
    unit: Unit
    name: str | None  # the slash command for `command`, the folder for `project`
    mode: Mode
    warn_at: float
    project: str | None  # limits a window kind to one folder
    source: Source

    def __init__(
        self,
        kind: Kind,
        limit: float,
        unit: Unit = "tokens",
        *,
        name: str | None = None,
        mode: Mode = "block",
        warn_at: float = DEFAULT_WARN_AT,
        project: str | None = None,
        source: Source = "user",
    ) -> None:
        kind = _checked_kind(kind)
        if unit not in UNITS:
            raise _FieldError("unit", f"unknown unit {_q(unit)}; use tokens or usd")
        if isinstance(limit, bool) or not isinstance(limit, int | float):
            raise _FieldError("limit", f"must be a number, not {_q(limit)}")
        try:
            _checked_limit(float(limit), unit, limit)
        except ConfigError as e:
            raise _FieldError("limit", str(e)) from None
        if mode not in MODES:
            raise _FieldError("mode", f"unknown mode {_q(mode)}; use block or warn")
        if isinstance(warn_at, bool) or not isinstance(warn_at, int | float):
            raise _FieldError("warn_at", f"must be a number, not {_q(warn_at)}")
        if not 0 < warn_at <= 1:
            raise _FieldError("warn_at", f"must be above 0 and at most 1, not {warn_at}")
        name = _checked_name(kind, name)
        if project is not None:
            if kind not in WINDOW_KINDS:
                raise _FieldError("project", f"only {', '.join(sorted(WINDOW_KINDS))} budgets "
                                  "can be limited to a project")
            project = _checked_path("project", project)
        if source not in ("user", "project"):
            raise _FieldError("source", f"unknown source {_q(source)}")
        self._set(kind=kind, limit=float(limit), unit=unit, name=name, mode=mode,
                  warn_at=float(warn_at), project=project, source=source)

    @property
    def id(self) -> str:
        """A stable label: `daily`, `command /test`, `project /p`, `daily@/p`."""
        text = self.kind if self.name is None else f"{self.kind} {self.name}"
        return text if self.project is None else f"{text}@{self.project}"

    @property
    def scope(self) -> str | None:
        """The folder the budget is limited to: a project budget's own, a window's `project`."""
        return self.name if self.kind == "project" else self.project

    @property
    def key(self) -> tuple[str, str | None, str | None, str]:
        """What makes two budgets the same one: kind, name, project scope and unit."""
        return (self.kind, self.name, self.project, self.unit)

    def to_json(self) -> dict[str, object]:
        """The budget as stored in a config file (its source is the file it is in)."""
        data: dict[str, object] = {"kind": self.kind}
        if self.name is not None:
            data["name"] = self.name
        if self.project is not None:
            data["project"] = self.project
        data["limit"] = int(self.limit) if self.unit == "tokens" else self.limit
        data.update(unit=self.unit, mode=self.mode, warn_at=self.warn_at)
        return data

    @classmethod
    def from_json(
        cls, data: object, *, where: str = "budget", source: Source = "user"
    ) -> Budget:
        """Read one budget object; a ConfigError names `where` and the field at fault."""
        if not isinstance(data, Mapping):
            example = '{"kind": "daily", "limit": "200k"}'
            raise ConfigError(f"{where}: must be an object like {example}")
        for key in data:
            if key not in _JSON_KEYS:
                raise ConfigError(f"{where}: unknown key {_q(key)}")
        try:
            if "kind" not in data or "limit" not in data:
                missing = "kind" if "kind" not in data else "limit"
                raise _FieldError(missing, "missing")
            kind = data["kind"]
            if not isinstance(kind, str):
                raise _FieldError("kind", f"must be a string, not {_q(kind)}")
            limit, unit = _limit_from_json(data["limit"], data.get("unit"))
            warn_at = data.get("warn_at", DEFAULT_WARN_AT)
            try:
                warn_at = parse_warn_at(warn_at)
            except ConfigError as e:
                raise _FieldError("warn_at", str(e)) from None
            for key in ("name", "project", "mode"):
                if data.get(key) is not None and not isinstance(data[key], str):
                    raise _FieldError(key, f"must be a string, not {_q(data[key])}")
            # Only known to be strings (or absent) here: the constructor checks them.
            return cls(
                _checked_kind(kind.strip().lower()),
                limit,
                unit,
                name=data.get("name"),
                mode=data.get("mode", "block"),
                warn_at=warn_at,
                project=data.get("project"),
                source=source,
            )
        except _FieldError as e:
            raise ConfigError(f"{where}.{e.field}: {e.problem}") from None


def _checked_kind(value: object) -> Kind:
    for kind in KINDS:
        if value == kind:
            return kind
    raise _FieldError("kind", f"unknown kind {_q(value)}; use one of {', '.join(KINDS)}")


def _checked_name(kind: str, name: str | None) -> str | None:
    if kind == "command":
        if not isinstance(name, str) or not name.strip("/ "):
            raise _FieldError("name", "a command budget needs a slash command, like /test")
        command = normalize_command(name)
        if any(c.isspace() for c in command):
            raise _FieldError("name", f"{_q(name)} is not one slash command, like /test")
        return command
    if kind == "project":
        if not isinstance(name, str) or not name.strip():
            raise _FieldError("name", "a project budget needs the project's folder")
        return _checked_path("name", name)
    if name is not None:
        raise _FieldError("name", f"a {kind} budget takes no name")
    return None


def _limit_from_json(limit: object, unit: object) -> tuple[float, Unit]:
    if unit is not None and unit not in UNITS:
        raise _FieldError("unit", f"unknown unit {_q(unit)}; use tokens or usd")
    if isinstance(limit, bool) or not isinstance(limit, str | int | float):
        raise _FieldError("limit", f"cannot read {_q(limit)} as tokens or dollars")
    final: Unit = unit if unit is not None else "tokens"
    try:
        # A bare number takes the unit field's unit: "5" with unit usd is $5.
        value, read_unit = parse_limit(limit, final)
    except ConfigError as e:
        raise _FieldError("limit", str(e)) from None
    if unit is not None and read_unit != unit:
        raise _FieldError("unit", f"{_q(unit)} disagrees with limit {_q(limit)}")
    return value, read_unit


def _checked_path(field: str, path: str) -> str:
    if not os.path.isabs(path.strip()):
        raise _FieldError(field, f"must be an absolute folder path, not {_q(path)}")
    return normalize_project(path)


def applies_to(budget: Budget, project_dir: str | None) -> bool:
    """Can work in `project_dir` (None: outside any project) count toward this budget?

    The one project-scope rule: measuring, deciding, the burn rate and the config all ask it.
    """
    scope = budget.scope
    if scope is None:
        return True
    return project_dir is not None and project_matches(scope, project_dir)


def merge(user: Iterable[Budget], project: Iterable[Budget]) -> list[Budget]:
    """Both lists apply; where both set the same budget, the stricter setting of each wins."""
    merged: dict[tuple[str, str | None, str | None, str], Budget] = {}
    for budget in [*user, *project]:
        old = merged.get(budget.key)
        merged[budget.key] = budget if old is None else _stricter(old, budget)
    return list(merged.values())


def _stricter(a: Budget, b: Budget) -> Budget:
    # The lower limit's source is named in messages; on a tie the project's, since the team
    # file binds either way and is the one a user cannot simply raise.
    if a.limit != b.limit:
        source = a.source if a.limit < b.limit else b.source
    else:
        source = "project" if "project" in (a.source, b.source) else a.source
    return a.replace(
        limit=min(a.limit, b.limit),
        mode="block" if "block" in (a.mode, b.mode) else "warn",
        warn_at=min(a.warn_at, b.warn_at),
        source=source,
    )
