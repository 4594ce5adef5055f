"""Budget periods: calendar-aligned windows in a budget's IANA time zone."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from genproto.budget.v1 import budget_pb2 as pb

NONE_START_MS = 1  # a lifetime budget's period "starts" once and never again

# The period each (period, zone) pair is in now: most calls fall in the same period as the last.
_current: dict[tuple[int, str], tuple[int, int]] = {}


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The ZoneInfo for an IANA name (cached: the hot path calls this on every reserve)."""
    return ZoneInfo(name)


def _start(period: int, local: datetime) -> datetime:
    if period == pb.PERIOD_MINUTE:
        return local.replace(second=0, microsecond=0)
    if period == pb.PERIOD_HOUR:
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == pb.PERIOD_DAY:
        return day
    if period == pb.PERIOD_WEEK:
        return day - timedelta(days=day.weekday())
    if period == pb.PERIOD_MONTH:
        return day.replace(day=1)
    if period == pb.PERIOD_YEAR:
        return day.replace(month=1, day=1)
    raise ValueError(f"unknown period {period}")


def _next(period: int, start: datetime) -> datetime:
    if period == pb.PERIOD_DAY:
        return start + timedelta(days=1)
    if period == pb.PERIOD_WEEK:
        return start + timedelta(days=7)
    if period == pb.PERIOD_MONTH:
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    if period == pb.PERIOD_YEAR:
        return start.replace(year=start.year + 1)
    raise ValueError(f"unknown period {period}")


def _ms(local: datetime) -> int:
    # Aware-datetime arithmetic above is wall-clock arithmetic; timestamp() maps the wall time
    # back to one real instant through the zone's offset (DST included).
    return int(local.timestamp()) * 1000


def bounds_ms(period: int, timezone: str, now_ms: int) -> tuple[int, int | None]:
    """(start, end) in ms of the period containing `now_ms`; end is None for PERIOD_NONE."""
    if period in (pb.PERIOD_NONE, pb.PERIOD_UNSPECIFIED):
        return NONE_START_MS, None
    cached = _current.get((period, timezone))
    if cached is not None and cached[0] <= now_ms < cached[1]:
        return cached
    local = datetime.fromtimestamp(now_ms / 1000, zone(timezone))
    start = _start(period, local)
    start_ms = _ms(start)
    if period == pb.PERIOD_MINUTE:
        end_ms = start_ms + 60_000
    elif period == pb.PERIOD_HOUR:
        end_ms = start_ms + 3_600_000
    else:
        end_ms = _ms(_next(period, start))
    if len(_current) > 4096:
        _current.clear()
    _current[(period, timezone)] = (start_ms, end_ms)
    return start_ms, end_ms


def spent_in_period(spent: str | None, pstart: str | None, start_ms: int) -> int:
    """A budget's spent counter as of the period starting at `start_ms`.

    Resets are lazy: a counter still holding an earlier period's spend counts as zero.
    """
    return int(spent or 0) if int(pstart or 0) >= start_ms else 0
