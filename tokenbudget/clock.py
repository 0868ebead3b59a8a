"""The one wall clock: every "now" in tokenbudget comes from `now()`.

`TOKENBUDGET_NOW` (seconds since the epoch) pins it. Tests set it so that the CLI and the hooks
they run in a subprocess see the day their fixtures were recorded, whatever day the suite runs on;
users have no reason to. Durations (lock waits) use the monotonic clock, never this one.
"""

from __future__ import annotations

import os
import time

from tokenbudget.errors import ConfigError

ENV = "TOKENBUDGET_NOW"


def now() -> float:
    """Seconds since the epoch: the system clock, or the time `TOKENBUDGET_NOW` pins."""
    pinned = os.environ.get(ENV)
    if not pinned:
        return time.time()
    try:
        value = float(pinned)
    except ValueError:
        value = float("nan")
    if value != value or value in (float("inf"), float("-inf")) or value < 0:
        raise ConfigError(f"{ENV}={pinned!r} is not a time in seconds since the epoch")
    return value
