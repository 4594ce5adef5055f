"""Period bounds in every zone of the tz database, around every clock change of 2020-2027.

The service reads utcoffsets through `zoneinfo.ZoneInfo` (the C implementation). These tests read
each zone's offset changes with Python's pure-Python implementation, `zoneinfo._zoneinfo`: a
private module, used here only, as an oracle independent of what the service runs. From those
changes they check the facts the service's probe windows rely on (see the docstring of
budget_service/hotpath/periods.py), and compare every bound with a reference model of the rule
that scans the changes directly, with no windows and no cache.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import _zoneinfo as pure_zoneinfo

import pytest

from budget_service.hotpath import periods
from budget_service.hotpath.periods import bounds_ms
from genproto.budget.v1 import budget_pb2 as pb

ALL_ZONES = sorted(zoneinfo.available_timezones())
RULES_UNTIL_YEAR = 2100  # how far the facts check follows the zones' rules for future changes
HOUR_S = 3600
MINUTE_MS = 60_000
EPOCH = datetime(1970, 1, 1)
ONE_MS = timedelta(milliseconds=1)


def utc_s(*fields: int) -> int:
    return int(datetime(*fields, tzinfo=UTC).timestamp())  # type: ignore[misc]


FROM_S, UNTIL_S = utc_s(2020, 1, 1), utc_s(2028, 1, 1)
# Instants every zone is checked at, changes or not: a leap day, a year's and a month's last ms.
EVERY_ZONE_MS = (
    utc_s(2024, 2, 29, 12) * 1000,
    utc_s(2026, 1, 1) * 1000 - 1,
    utc_s(2027, 7, 1) * 1000 - 1,
)


@dataclass(frozen=True)
class Change:
    """A change of a zone's utcoffset at `at_s`, seconds since the epoch."""

    at_s: int
    before_s: int
    after_s: int


def _oracle_offset_s(zone: pure_zoneinfo.ZoneInfo, second: int) -> int:
    offset = datetime.fromtimestamp(second, zone).utcoffset()
    assert offset is not None
    return int(offset.total_seconds())


@functools.cache
def offset_changes(key: str) -> tuple[tuple[Change, ...], int]:
    """The zone's utcoffset changes in time order (up to 2100), and its offset before them."""
    zone = pure_zoneinfo.ZoneInfo.no_cache(key)
    listed = list(zone._trans_utc)  # transitions the TZif file lists, some change no offset
    rule = zone._tz_after  # a POSIX TZ rule for the time after the listed ones
    ruled = []
    if isinstance(rule, pure_zoneinfo._TZStr):
        after = listed[-1] if listed else None
        first_year = datetime.fromtimestamp(after, UTC).year if after is not None else 1970
        std, dst = int(rule.std.utcoff.total_seconds()), int(rule.dst.utcoff.total_seconds())
        for year in range(first_year, RULES_UNTIL_YEAR + 1):
            start, end = rule.transitions(year)  # local times: start in standard, end in DST
            ruled += [t for t in (start - std, end - dst) if after is None or t > after]
    changes = []
    for at in sorted(set(listed + ruled)):
        before, now = _oracle_offset_s(zone, at - 1), _oracle_offset_s(zone, at)
        if before != now:
            changes.append(Change(at, before, now))
        else:
            assert at not in ruled, f"{key}: the rule's change at {at} changes nothing"
    initial = changes[0].before_s if changes else _oracle_offset_s(zone, 0)
    return tuple(changes), initial


def all_offsets_s(key: str) -> list[int]:
    """Every utcoffset the zone's data holds, used or not."""
    zone = pure_zoneinfo.ZoneInfo.no_cache(key)
    infos = [*zone._ttinfos, zone._tti_before]
    rule = zone._tz_after
    infos += [rule.std, rule.dst] if isinstance(rule, pure_zoneinfo._TZStr) else [rule]
    return [int(info.utcoff.total_seconds()) for info in infos if info is not None]


def test_tz_database_is_installed():
    assert len(ALL_ZONES) > 400
    assert offset_changes("America/New_York")[0]  # the oracle reads changes


def test_tz_database_keeps_changes_far_enough_apart_for_the_probe_windows():
    """The service finds an offset change by probing the two ends of a window: sound only if a
    window never holds two changes, holds the first instant that shows a given wall time, and
    reaches back past any jump of the clock that can still matter."""
    reach_s, back_s = periods._REACH_WINDOW_S, periods._BACK_WINDOW_S
    closest = (10**12, "")
    for key in ALL_ZONES:
        for offset in all_offsets_s(key):
            assert -reach_s < offset < reach_s, f"{key}: offset {offset} s outside the window"
        changes, _ = offset_changes(key)
        for change in changes:
            back = change.before_s - change.after_s
            assert back < back_s, f"{key}: clock went back {back} s at {change.at_s}"
        for a, b in itertools.pairwise(changes):
            closest = min(closest, (b.at_s - a.at_s, f"{key} at {a.at_s}"))
    # Both windows (2 * 17 h around a wall time, 25 h back from an instant) hold one change.
    assert closest[0] > max(2 * reach_s, back_s), f"changes {closest[0]} s apart: {closest[1]}"


class Reference:
    """The period rule, straight from a zone's offset changes: no windows, no cache."""

    def __init__(self, key: str) -> None:
        changes, initial = offset_changes(key)
        self.at = [c.at_s * 1000 for c in changes]
        # offsets[i] holds from at[i - 1] (or forever before) until at[i] (or forever after).
        self.offsets = [initial * 1000] + [c.after_s * 1000 for c in changes]
        # The latest wall time shown before each change, and before any earlier one.
        self.shown = list(
            itertools.accumulate((at - 1 + self.offsets[i] for i, at in enumerate(self.at)), max)
        )

    def latest_wall(self, now: int) -> int:
        passed = bisect.bisect_right(self.at, now)
        wall = now + self.offsets[passed]
        return max(wall, self.shown[passed - 1]) if passed else wall

    def first_reaching(self, wall: int) -> int:
        lo = wall - 48 * HOUR_S * 1000  # no offset is 48 h: every instant before shows less
        i = bisect.bisect_right(self.at, lo)
        while True:
            begin = max(lo, self.at[i - 1]) if i else lo
            offset = self.offsets[i]
            if begin + offset >= wall:
                return begin
            if i == len(self.at) or wall - offset < self.at[i]:
                return wall - offset
            i += 1

    def bounds(self, period: int, now: int) -> tuple[int, int]:
        shown = EPOCH + self.latest_wall(now) * ONE_MS
        begin, after = UNITS[period](shown)
        return (
            self.first_reaching((begin - EPOCH) // ONE_MS),
            self.first_reaching((after - EPOCH) // ONE_MS),
        )


def _month_after(first: datetime) -> datetime:
    return first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)


def _day(shown: datetime) -> datetime:
    return datetime.combine(shown.date(), time())


# A naive wall time -> where its calendar unit begins, and where the next one begins.
UNITS: dict[int, Callable[[datetime], tuple[datetime, datetime]]] = {
    pb.PERIOD_MINUTE: lambda w: (
        w.replace(second=0, microsecond=0),
        w.replace(second=0, microsecond=0) + timedelta(minutes=1),
    ),
    pb.PERIOD_HOUR: lambda w: (
        w.replace(minute=0, second=0, microsecond=0),
        w.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1),
    ),
    pb.PERIOD_DAY: lambda w: (_day(w), _day(w) + timedelta(days=1)),
    pb.PERIOD_WEEK: lambda w: (
        _day(w) - timedelta(days=w.weekday()),
        _day(w) + timedelta(days=7 - w.weekday()),
    ),
    pb.PERIOD_MONTH: lambda w: (_day(w).replace(day=1), _month_after(_day(w).replace(day=1))),
    pb.PERIOD_YEAR: lambda w: (
        _day(w).replace(month=1, day=1),
        _day(w).replace(year=w.year + 1, month=1, day=1),
    ),
}


def instants_near_changes(key: str) -> list[int]:
    """Instants around each offset change of 2020-2027: +-2 h by 20 min, +-1 s, +-1 ms, and
    +-1 ms around the end of the stretch a change back makes the clock show again."""
    instants = set(EVERY_ZONE_MS)
    for change in offset_changes(key)[0]:
        if FROM_S <= change.at_s < UNTIL_S:
            at = change.at_s * 1000
            instants.update(at + k * 20 * MINUTE_MS for k in range(-6, 7))
            instants.update((at - 1000, at - 1, at + 1, at + 1000))
            if change.before_s > change.after_s:
                repeated_until = at + (change.before_s - change.after_s) * 1000
                instants.update((repeated_until - 1, repeated_until, repeated_until + 1))
    return sorted(instants)


@pytest.mark.parametrize("period", list(UNITS), ids=lambda p: pb.Period.Name(p))
def test_bounds_in_every_zone_around_every_clock_change(period: int):
    """For every zone: bounds contain the instant, never move back as it grows, match the
    reference model, and a fresh process (cache cleared) agrees with a warm one (cache filled
    by earlier calls in time order), also at each period's first and last ms and its end."""
    for key in ALL_ZONES:
        reference = Reference(key)
        periods._current.clear()
        first = [bounds_ms(period, key, t) for t in instants_near_changes(key)]
        edges = {t for start, end in first if end is not None for t in (start - 1, start, end - 1)}
        instants = sorted(set(instants_near_changes(key)) | edges | {end for _, end in first})

        periods._current.clear()
        warm = [bounds_ms(period, key, t) for t in instants]
        previous = (-(2**63), -(2**63))
        for t, (start, end) in zip(instants, warm, strict=True):
            assert end is not None
            where = f"{key} at {t} ms"
            assert start <= t < end, where
            assert start >= previous[0] and end >= previous[1], f"went back: {where}"
            assert (start, end) == reference.bounds(period, t), where
            previous = (start, end)
        for t, expected in zip(instants, warm, strict=True):
            periods._current.clear()
            assert bounds_ms(period, key, t) == expected, f"fresh differs: {key} at {t} ms"
        for start, end in set(warm):
            periods._current.clear()
            assert bounds_ms(period, key, start) == (start, end), f"{key} from {start} ms"
