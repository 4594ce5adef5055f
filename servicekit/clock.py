"""The service's one clock: period boundaries and expiries all come from it (passed to Lua)."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Milliseconds since the Unix epoch."""

    def now_ms(self) -> int: ...


class SystemClock:
    """Wall-clock time."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class OffsetClock:
    """Wall-clock time shifted by an offset the tests may move (to cross period boundaries)."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def set_ms(self, when_ms: int) -> None:
        """Make now_ms() answer `when_ms` from this instant on (then run on with real time)."""
        self.offset_ms = when_ms - time.time_ns() // 1_000_000
