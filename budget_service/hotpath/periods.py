"""Budget periods: calendar-aligned windows in a budget's IANA time zone.

The rule, for every period kind. Let L(t) = t + utcoffset(t), the wall clock in ms at instant t,
and M(t) = max over s <= t of L(s), the latest wall time shown so far. The period of t is the
calendar unit (minute, hour, day, ISO week from Monday, month, year) that contains M(t): when
clocks go back, wall time shown a second time belongs to the newest period already begun, so a
period never comes back once the next one has started. A period labelled with the unit starting
at wall time W starts at the first instant s with L(s) >= W and ends at the first instant with
L(s) >= W' (W' where the next unit starts). So start <= now < end, a later instant never has an
earlier start, every instant of [start, end) gets the very same answer (the cache below is a
pure memo), and a unit the clock skips (Pacific/Apia's 2011-12-30) is a period of no instants.

An offset change near an instant is found by probing utcoffset at the two ends of a short
window, then at the one or two instants that would answer on either side of the change; only
when the answer is the change itself (a wall time the clock jumped over, or one shown again) is
it bisected to the second (tz data has whole-second transitions). A miss costs 6 probes, up to
10 near a change, and 12-17 more for a bisection. That is sound because of these facts about
the whole tz database (2025b; tests/test_periods_all_zones.py checks them on the zones
installed, from their listed changes and the rules that generate future ones, up to 2100):
- consecutive utcoffset changes of one zone are at least 344400 s (95 h 40 min) apart
  (Africa/Freetown, 1939), so a window shorter than that holds at most one change and its two
  ends tell whether there is one;
- every utcoffset is within -15:56:08 (Asia/Manila LMT) .. +15:13:42 (America/Metlakatla LMT);
  since 1970 within -12 h .. +14 h. So the first instant whose wall time reaches W lies in
  [W - 16 h, W + 16 h], and a window of W -/+ 17 h (34 h < 95 h) finds it;
- the largest single jump is 24 h (date-line moves, e.g. Pacific/Kwajalein 1993, America/Anchorage
  1867). A jump back by d at T only matters to M(t) for t < T + d, so [t - 25 h, t] is the only
  window M(t) needs.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from genproto.budget.v1 import budget_pb2 as pb

NONE_START_MS = 1  # a lifetime budget's period "starts" once and never again

_MINUTE_MS = 60_000
_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_EPOCH_WEEKDAY = date(1970, 1, 1).weekday()  # a Thursday: Monday-based weeks are offset by 3
_ONE_MS = timedelta(milliseconds=1)
# Windows justified by the tz facts in the module docstring.
_REACH_WINDOW_S = 17 * 3600  # either side of W where the first instant showing W lies
_BACK_WINDOW_S = 25 * 3600  # how far back a jump of the clock can still hold M(t) up

# The period each (period, zone) pair is in now: most calls fall in the same period as the last.
# A pure memo (every instant of [start, end) has the same answer), bounded by the number of
# valid (period, zone) pairs; the size cap only guards against that bound being wrong.
_current: dict[tuple[int, str], tuple[int, int]] = {}
_CACHE_CAP = 4096


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The ZoneInfo for an IANA name (cached: the hot path calls this on every reserve)."""
    return ZoneInfo(name)


def _offset_ms(tz: ZoneInfo, second: int) -> int:
    offset = datetime.fromtimestamp(second, tz).utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return offset // _ONE_MS


def _change_at(tz: ZoneInfo, lo: int, hi: int, offset_lo: int) -> int:
    """The first second in (lo, hi] whose offset differs from `offset_lo` (hi's does)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_ms(tz, mid) == offset_lo:
            lo = mid
        else:
            hi = mid
    return hi


def _latest_wall(tz: ZoneInfo, now_ms: int) -> int:
    """M(now): the latest wall time (ms) the zone's clock has shown up to `now_ms`."""
    now_s = now_ms // 1000
    offset = _offset_ms(tz, now_s)
    wall = now_ms + offset
    offset_back = _offset_ms(tz, now_s - _BACK_WINDOW_S)
    if offset_back <= offset:
        return wall  # no jump back within the window: the clock shows the most it ever has
    # It went back by `jump` at some instant T in the window; before T + jump it shows wall
    # times already shown, and the latest shown was just before T.
    jump_s = (offset_back - offset) // 1000
    if _offset_ms(tz, now_s - jump_s) == offset:
        return wall  # T <= now - jump: past the repeated stretch
    change_ms = _change_at(tz, now_s - jump_s, now_s, offset_back) * 1000
    return change_ms - 1 + offset_back


def _first_reaching(tz: ZoneInfo, wall: int) -> int:
    """The first instant (ms) at which the zone's wall clock shows `wall` (ms) or later."""
    wall_s = wall // 1000
    offset_lo = _offset_ms(tz, wall_s - _REACH_WINDOW_S)
    offset_hi = _offset_ms(tz, wall_s + _REACH_WINDOW_S)
    if offset_lo == offset_hi:
        return wall - offset_lo
    # One change at some T in the window: before it the clock shows s + offset_lo, after it
    # s + offset_hi, each rising. Whichever stretch shows `wall` first holds the answer.
    if _offset_ms(tz, (wall - offset_lo) // 1000) == offset_lo:
        return wall - offset_lo  # shown before T
    if _offset_ms(tz, (wall - offset_hi) // 1000) == offset_hi:
        return wall - offset_hi  # shown after T, and never before
    # `wall` falls in the stretch the clock jumped over: it is passed at T itself.
    lo_s, hi_s = (wall - offset_hi) // 1000, (wall - offset_lo) // 1000
    return _change_at(tz, lo_s, hi_s, offset_lo) * 1000


def _day(wall: int) -> date:
    return date.fromordinal(_EPOCH_ORDINAL + wall // _DAY_MS)


def _wall_ms(day: date) -> int:
    return (day.toordinal() - _EPOCH_ORDINAL) * _DAY_MS


def _unit_start(period: int, wall: int) -> int:
    """Wall time (ms) at which the calendar unit containing `wall` begins."""
    if period == pb.PERIOD_MINUTE:
        return wall - wall % _MINUTE_MS
    if period == pb.PERIOD_HOUR:
        return wall - wall % _HOUR_MS
    if period == pb.PERIOD_DAY:
        return wall - wall % _DAY_MS
    if period == pb.PERIOD_WEEK:
        days = wall // _DAY_MS
        return (days - (days + _EPOCH_WEEKDAY) % 7) * _DAY_MS
    if period == pb.PERIOD_MONTH:
        return _wall_ms(_day(wall).replace(day=1))
    if period == pb.PERIOD_YEAR:
        return _wall_ms(_day(wall).replace(month=1, day=1))
    raise ValueError(f"unknown period {period}")


def _unit_after(period: int, start: int) -> int:
    """Wall time (ms) at which the unit after the one beginning at `start` begins."""
    if period == pb.PERIOD_MINUTE:
        return start + _MINUTE_MS
    if period == pb.PERIOD_HOUR:
        return start + _HOUR_MS
    if period == pb.PERIOD_DAY:
        return start + _DAY_MS
    if period == pb.PERIOD_WEEK:
        return start + 7 * _DAY_MS
    first = _day(start)
    if period == pb.PERIOD_MONTH:
        year, month_index = divmod(first.year * 12 + first.month, 12)  # the next, from 0
        return _wall_ms(date(year, month_index + 1, 1))
    if period == pb.PERIOD_YEAR:
        return _wall_ms(first.replace(year=first.year + 1))
    raise ValueError(f"unknown period {period}")


def bounds_ms(period: int, timezone: str, now_ms: int) -> tuple[int, int | None]:
    """(start, end) in ms of the period containing `now_ms`; end is None for PERIOD_NONE.

    See the module docstring for the rule across clock changes: start <= now_ms < end always,
    and the start never goes backwards as `now_ms` grows.
    """
    if period in (pb.PERIOD_NONE, pb.PERIOD_UNSPECIFIED):
        return NONE_START_MS, None
    cached = _current.get((period, timezone))
    if cached is not None and cached[0] <= now_ms < cached[1]:
        return cached
    tz = zone(timezone)
    unit = _unit_start(period, _latest_wall(tz, now_ms))
    bounds = (_first_reaching(tz, unit), _first_reaching(tz, _unit_after(period, unit)))
    if len(_current) >= _CACHE_CAP:
        _current.clear()
    _current[(period, timezone)] = bounds
    return bounds


def spent_in_period(spent: str | None, pstart: str | None, start_ms: int) -> int:
    """A budget's spent counter as of the period starting at `start_ms`.

    Resets are lazy: a counter still holding an earlier period's spend counts as zero.
    """
    return int(spent or 0) if int(pstart or 0) >= start_ms else 0
