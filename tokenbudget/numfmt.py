"""How numbers read, everywhere: tokens, dollars, limits and durations, with one rounding rule.

Every figure a user sees (status, report, the status line, refusals and warnings, the HTML
report) comes from here, so the same count never reads two ways. Halves round up, away from
zero (1,250 is 1.3k): `round()` rounds them to even, which reads as a bug. Imports only `math`:
a hook formats its messages with it.
"""

from __future__ import annotations

import math

TYPE_CHECKING = False  # datetime stays off the imports of whoever formats only numbers
if TYPE_CHECKING:
    from datetime import timedelta

UNPRICED = "unpriced"
UNITS = ("k", "M", "B", "T")


def round_half_up(x: float) -> int:
    """The whole number nearest `x`, halves rounded up (away from zero for negatives)."""
    if x < 0:
        return -round_half_up(-x)
    # `x` may carry float noise (1.005 * 100 is 100.49999999999999): settle it first.
    return math.floor(round(x, 6) + 0.5)


def _tenths(n: int, scale: int) -> int:
    # Integer arithmetic: exact for any count, where n / scale in floats is not.
    return (n * 10 + scale // 2) // scale


def format_tokens(count: float) -> str:
    """A count rounded for reading: `950`, `1.3k` (1,250), `182.3k`, `1M`, `2.5B`, `1000T`."""
    if isinstance(count, float) and not math.isfinite(count):
        return str(count)
    n = round_half_up(count)
    sign, n = ("-", -n) if n < 0 else ("", n)
    if n < 1000:
        return f"{sign}{n}"
    scale = 1
    for unit in UNITS:
        scale *= 1000
        tenths = _tenths(n, scale)
        # 999,960 would read "1000k": step up to the next unit instead (T is the last).
        if tenths < 10_000 or unit == UNITS[-1]:
            whole, tenth = divmod(tenths, 10)
            return f"{sign}{whole}{f'.{tenth}' if tenth else ''}{unit}"
    raise AssertionError("unreachable: the last unit always returns")


def format_exact(count: float) -> str:
    """A count in full with thousands separators: `1,234,567`."""
    return f"{round_half_up(count):,}"


def format_cost(x: float | None) -> str:
    """Dollars: $0.53, $12.40, $1,234.00; under a cent $0.0053; below $0.0001 <$0.0001."""
    if x is None:
        return UNPRICED
    if not math.isfinite(x):
        return f"${x}"
    sign = "-" if x < 0 else ""
    value = abs(x)
    if value == 0:
        return "$0.00"
    if value >= 0.00995:  # anything that rounds to at least a cent
        cents = round_half_up(value * 100)
        return f"{sign}${cents // 100:,}.{cents % 100:02d}"
    if value >= 0.00005:  # a request's cost: keep what a cent would hide
        ten_thousandths = round_half_up(value * 10_000)
        return f"{sign}$0.{ten_thousandths:04d}"
    return f"{sign}<$0.0001"


def format_amount(value: float, unit: str) -> str:
    """An amount used, rounded for reading: `182.3k` or `$4.12`."""
    return format_tokens(value) if unit == "tokens" else format_cost(value)


def _trim(number: str) -> str:
    return number.rstrip("0").rstrip(".") if "." in number else number


def exact_tokens(count: int) -> str:
    """A count with a unit only where it stays exact: `200k`, `1.25M`, `100T`, `1,234,567`."""
    scale = 1000 ** len(UNITS)
    for unit in reversed(UNITS):
        # Two decimals at most: a limit must read as what it is.
        if count >= scale and count % (scale // 100) == 0:
            whole, hundredths = divmod(count // (scale // 100), 100)
            return f"{whole:,}" + _trim(f".{hundredths:02d}") + unit
        scale //= 1000
    return f"{count:,}"


def _format_usd(value: float) -> str:
    text = f"{value:,.6f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def short_limit(value: float, unit: str) -> str:
    """A limit where space is short: `18k`, but dollars exactly as set (`$0.125`, not $0.13)."""
    return format_tokens(value) if unit == "tokens" else _format_usd(value)


def format_limit(value: float, unit: str) -> str:
    """A limit, exactly and readably: `200k tokens`, `1,234,567 tokens`, `$5.00`."""
    if unit == "usd":
        return _format_usd(value)
    count = int(value)
    return f"{exact_tokens(count)} {'token' if count == 1 else 'tokens'}"


def format_percent(fraction: float) -> str:
    """`62%`: how full a budget is, floored (99.6% is not yet 100%: the limit is not reached),
    so the figure never reads past the state it sits beside."""
    scaled = fraction * 100  # may overflow to inf for absurd fractions
    if not math.isfinite(scaled) or abs(scaled) >= 10_000:
        return ">9999%" if scaled > 0 else "<-9999%"
    # round() first: 0.29 * 100 is 28.999999999999996 and must read 29%, not 28%.
    return f"{math.floor(round(scaled, 6))}%"


def format_duration(delta: timedelta) -> str:
    """`3h 12m`, `2d 4h`, `45m`: whole minutes, rounded up so it never reads 0m too early."""
    minutes = max(0, math.ceil(delta.total_seconds() / 60))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m"
