"""The clock every command reads (the one place the store asks the system for the time)."""

from __future__ import annotations

import os
import time

from wassette_state.store.domain.errors import ValidationError

# Seconds added to the system clock, to reproduce a host whose clock is wrong (tests, drills).
CLOCK_SKEW_ENV = "WASSETTE_STATE_CLOCK_SKEW"


def now_us() -> int:
    """The clock every command reads: UTC microseconds (shifted by $WASSETTE_STATE_CLOCK_SKEW)."""
    now = time.time_ns() // 1000
    skew = os.environ.get(CLOCK_SKEW_ENV)
    if skew:
        try:
            now += round(float(skew) * 1_000_000)
        except (ValueError, OverflowError):
            raise ValidationError(f"{CLOCK_SKEW_ENV} must be a number of seconds") from None
    return now
