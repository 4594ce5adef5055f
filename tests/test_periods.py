"""Periods are calendar-aligned in the budget's time zone and reset lazily, holds carrying over."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import grpc
import pytest

from budget_service.hotpath import periods
from budget_service.hotpath.periods import bounds_ms
from genproto.budget.v1 import budget_pb2 as pb
from servicekit.clock import OffsetClock
from tests.helpers import reserve, status, upsert, usd

NEW_YORK = ZoneInfo("America/New_York")


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def utc(*fields: int) -> int:
    """Ms of a UTC date and time given as datetime fields (microseconds last, as datetime's)."""
    return ms(datetime(*fields, tzinfo=UTC))  # type: ignore[misc]


def forget_periods() -> None:
    """What a freshly started process knows about periods: nothing."""
    periods._current.clear()


def wall(zone: str, when_ms: int) -> datetime:
    """The zone's wall clock at `when_ms`, naive (which of two repeated readings is dropped)."""
    return datetime.fromtimestamp(when_ms / 1000, ZoneInfo(zone)).replace(tzinfo=None, fold=0)


@pytest.fixture
def moved_clock(clock: OffsetClock) -> Iterator[OffsetClock]:
    yield clock
    clock.offset_ms = 0


async def commit(budgets, org: str, reservation_id: str, actual: int) -> None:
    await budgets.Commit(
        pb.CommitRequest(org=org, reservation_id=reservation_id, actual_nanos=actual)
    )


async def test_month_budget_resets_at_the_calendar_boundary_in_its_time_zone(
    budgets, admin, org, moved_clock
):
    await upsert(
        admin, org, "monthly", usd("1"), period=pb.PERIOD_MONTH, timezone="America/New_York"
    )
    moved_clock.set_ms(ms(datetime(2026, 1, 31, 22, 0, tzinfo=NEW_YORK)))
    spent = await reserve(budgets, org, usd("0.60"))
    await commit(budgets, org, spent.reservation_id, usd("0.60"))
    carried = await reserve(budgets, org, usd("0.30"))  # still held at the boundary
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reserve(budgets, org, usd("0.20"))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    # 04:30 UTC on Feb 1st is still January in New York: no reset.
    moved_clock.set_ms(ms(datetime(2026, 1, 31, 23, 30, tzinfo=NEW_YORK)))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reserve(budgets, org, usd("0.20"))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    moved_clock.set_ms(ms(datetime(2026, 2, 1, 0, 0, 1, tzinfo=NEW_YORK)))
    st = await status(admin, org, "monthly")
    assert (st.spent_nanos, st.reserved_nanos) == (0, usd("0.30"))
    assert st.period_start.ToMilliseconds() == ms(datetime(2026, 2, 1, tzinfo=NEW_YORK))
    assert st.period_end.ToMilliseconds() == ms(datetime(2026, 3, 1, tzinfo=NEW_YORK))
    fresh = await reserve(budgets, org, usd("0.70"))  # spent 0 + held 0.30 + 0.70 = limit
    assert fresh.budgets[0].spent_nanos == 0
    assert fresh.budgets[0].remaining_nanos == 0
    # The hold from January commits into February's spend.
    await commit(budgets, org, carried.reservation_id, usd("0.10"))
    st = await status(admin, org, "monthly")
    assert (st.spent_nanos, st.reserved_nanos) == (usd("0.10"), usd("0.70"))


async def test_refund_of_last_periods_charge_does_not_credit_the_new_period(
    budgets, admin, org, moved_clock
):
    await upsert(admin, org, "daily", usd("1"), period=pb.PERIOD_DAY, timezone="Europe/Paris")
    paris = ZoneInfo("Europe/Paris")
    moved_clock.set_ms(ms(datetime(2026, 3, 10, 23, 0, tzinfo=paris)))
    held = await reserve(budgets, org, usd("0.50"))
    await commit(budgets, org, held.reservation_id, usd("0.50"))
    moved_clock.set_ms(ms(datetime(2026, 3, 11, 9, 0, tzinfo=paris)))
    today = await reserve(budgets, org, usd("0.20"))
    await commit(budgets, org, today.reservation_id, usd("0.20"))
    refunded = await budgets.Refund(
        pb.RefundRequest(
            org=org, reservation_id=held.reservation_id, refund_id="late", amount_nanos=usd("0.5")
        )
    )
    assert refunded.refunded_nanos == usd("0.50")  # recorded, but yesterday's period is closed
    assert (await status(admin, org, "daily")).spent_nanos == usd("0.20")


@pytest.mark.parametrize(
    ("period", "zone", "now", "start", "end"),
    [
        (
            pb.PERIOD_MONTH,
            "UTC",
            datetime(2026, 12, 31, 23, 59),
            datetime(2026, 12, 1),
            datetime(2027, 1, 1),
        ),
        (
            pb.PERIOD_YEAR,
            "Asia/Tokyo",
            datetime(2026, 6, 1),
            datetime(2026, 1, 1),
            datetime(2027, 1, 1),
        ),
        (
            pb.PERIOD_WEEK,
            "UTC",
            datetime(2026, 11, 29, 12),
            datetime(2026, 11, 23),
            datetime(2026, 11, 30),
        ),
        # The day DST starts in New York is 23 hours long.
        (
            pb.PERIOD_DAY,
            "America/New_York",
            datetime(2026, 3, 8, 12),
            datetime(2026, 3, 8),
            datetime(2026, 3, 9),
        ),
        (
            pb.PERIOD_HOUR,
            "Asia/Kolkata",
            datetime(2026, 5, 5, 10, 45),
            datetime(2026, 5, 5, 10),
            datetime(2026, 5, 5, 11),
        ),
        (
            pb.PERIOD_MINUTE,
            "UTC",
            datetime(2026, 5, 5, 10, 45, 30),
            datetime(2026, 5, 5, 10, 45),
            datetime(2026, 5, 5, 10, 46),
        ),
    ],
)
def test_period_bounds_are_calendar_aligned_in_the_zone(period, zone, now, start, end):
    tz = ZoneInfo(zone)
    got = bounds_ms(period, zone, ms(now.replace(tzinfo=tz)))
    assert got == (ms(start.replace(tzinfo=tz)), ms(end.replace(tzinfo=tz)))


def test_dst_day_in_new_york_is_23_hours():
    start, end = bounds_ms(
        pb.PERIOD_DAY, "America/New_York", ms(datetime(2026, 3, 8, 12, tzinfo=NEW_YORK))
    )
    assert end is not None
    assert end - start == 23 * 3600 * 1000


def test_lifetime_budget_never_ends():
    assert bounds_ms(pb.PERIOD_NONE, "UTC", 123)[1] is None


# Zones whose clocks go back at local midnight, with a day of that: the first 00:30 of the day,
# the 00:30 the clock shows again an hour (Casey: three hours) later, and the day's bounds by
# hand: from the first midnight (at the summer offset) to the next midnight (at winter's).
MIDNIGHT_FALL_BACK = [
    # Havana: 01:00 CDT (UTC-4) -> 00:00 CST (UTC-5) on 2026-11-01, at 05:00 UTC.
    ("America/Havana", utc(2026, 11, 1, 4, 30), utc(2026, 11, 1, 5, 30),
     utc(2026, 11, 1, 4), utc(2026, 11, 2, 5)),
    # Azores: 01:00 (UTC+0) -> 00:00 (UTC-1) on 2026-10-25, at 01:00 UTC.
    ("Atlantic/Azores", utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30),
     utc(2026, 10, 25, 0), utc(2026, 10, 26, 1)),
    # Casey: 03:00 (UTC+11) -> 00:00 (UTC+8) on 2023-03-09, at 16:00 UTC on the 8th.
    ("Antarctica/Casey", utc(2023, 3, 8, 13, 30), utc(2023, 3, 8, 16, 30),
     utc(2023, 3, 8, 13), utc(2023, 3, 9, 16)),
]  # fmt: skip


@pytest.mark.parametrize(("zone", "first", "again", "start", "end"), MIDNIGHT_FALL_BACK)
def test_day_starts_at_the_first_midnight_when_clocks_go_back_at_midnight(
    zone, first, again, start, end
):
    assert wall(zone, first) == wall(zone, again)  # the premise: the same 00:30 shown twice
    assert wall(zone, first).time().isoformat() == "00:30:00"

    forget_periods()
    warm_first = bounds_ms(pb.PERIOD_DAY, zone, first)
    warm_again = bounds_ms(pb.PERIOD_DAY, zone, again)
    forget_periods()  # a process started in the repeated hour
    fresh_again = bounds_ms(pb.PERIOD_DAY, zone, again)

    assert warm_first == warm_again == fresh_again == (start, end)


async def test_restarted_service_does_not_admit_a_second_daily_limit_in_the_repeated_hour(
    budgets, admin, org, moved_clock
):
    zone, first, again, start, _ = MIDNIGHT_FALL_BACK[0]
    await upsert(admin, org, "daily", usd("1"), period=pb.PERIOD_DAY, timezone=zone)
    moved_clock.set_ms(first)
    spent = await reserve(budgets, org, usd("1"))
    await commit(budgets, org, spent.reservation_id, usd("1"))

    moved_clock.set_ms(again)
    forget_periods()  # as after a restart: nothing remembers the day began an hour ago
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reserve(budgets, org, usd("0.01"))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    st = await status(admin, org, "daily")
    assert st.spent_nanos == usd("1")
    assert st.period_start.ToMilliseconds() == start


@pytest.mark.parametrize(
    ("period", "zone", "now", "start", "end"),
    [
        # Havana jumps 00:00 CST (UTC-5) -> 01:00 CDT (UTC-4) on 2026-03-08 at 05:00 UTC: the
        # day begins at the jump and lasts 23 hours; the day before ends there.
        (pb.PERIOD_DAY, "America/Havana", utc(2026, 3, 8, 12),
         utc(2026, 3, 8, 5), utc(2026, 3, 9, 4)),
        (pb.PERIOD_DAY, "America/Havana", utc(2026, 3, 8, 4, 59, 59, 999_000),
         utc(2026, 3, 7, 5), utc(2026, 3, 8, 5)),
        # New York goes back from 02:00 EDT (UTC-4) to 01:00 EST (UTC-5) on 2026-11-01 at 06:00
        # UTC: hour 01 and minute 01:59 last until 02:00 is shown, at 07:00 UTC.
        (pb.PERIOD_HOUR, "America/New_York", utc(2026, 11, 1, 6, 30),
         utc(2026, 11, 1, 5), utc(2026, 11, 1, 7)),
        (pb.PERIOD_MINUTE, "America/New_York", utc(2026, 11, 1, 6, 30),
         utc(2026, 11, 1, 5, 59), utc(2026, 11, 1, 7)),
        # Lord Howe moves by 30 minutes. 2026-04-05 02:00 (UTC+11) -> 01:30 (UTC+10:30), at
        # 15:00 UTC on the 4th: hour 01 began at 14:00 UTC and runs until 02:00 is shown, at
        # 15:30 UTC (90 minutes); the repeated 01:30-02:00 stays in it.
        (pb.PERIOD_HOUR, "Australia/Lord_Howe", utc(2026, 4, 4, 15, 10),
         utc(2026, 4, 4, 14), utc(2026, 4, 4, 15, 30)),
        (pb.PERIOD_HOUR, "Australia/Lord_Howe", utc(2026, 4, 4, 15, 30),
         utc(2026, 4, 4, 15, 30), utc(2026, 4, 4, 16, 30)),
        # ... and minute 01:59, begun at 14:59 UTC, lasts until 02:00 is shown: 31 minutes.
        (pb.PERIOD_MINUTE, "Australia/Lord_Howe", utc(2026, 4, 4, 15, 0, 30),
         utc(2026, 4, 4, 14, 59), utc(2026, 4, 4, 15, 30)),
        # 2026-10-04 02:00 (UTC+10:30) -> 02:30 (UTC+11), at 15:30 UTC on the 3rd: hour 02
        # begins at the jump and lasts 30 minutes.
        (pb.PERIOD_HOUR, "Australia/Lord_Howe", utc(2026, 10, 3, 15, 29),
         utc(2026, 10, 3, 14, 30), utc(2026, 10, 3, 15, 30)),
        (pb.PERIOD_HOUR, "Australia/Lord_Howe", utc(2026, 10, 3, 15, 40),
         utc(2026, 10, 3, 15, 30), utc(2026, 10, 3, 16)),
        # Apia skipped 2011-12-30: Dec 29 24:00 (UTC-10) was Dec 31 00:00 (UTC+14), at 10:00
        # UTC on the 30th. Dec 29 ends and Dec 31 begins there.
        (pb.PERIOD_DAY, "Pacific/Apia", utc(2011, 12, 30, 9, 59),
         utc(2011, 12, 29, 10), utc(2011, 12, 30, 10)),
        (pb.PERIOD_DAY, "Pacific/Apia", utc(2011, 12, 30, 10),
         utc(2011, 12, 30, 10), utc(2011, 12, 31, 10)),
        # Vostok went back from Monday 2023-12-18 02:00 (UTC+7) to 00:00 (UTC+5), at 19:00 UTC
        # on the 17th: the week began at the first Monday midnight, the next at UTC+5.
        (pb.PERIOD_WEEK, "Antarctica/Vostok", utc(2023, 12, 17, 20),
         utc(2023, 12, 17, 17), utc(2023, 12, 24, 19)),
        (pb.PERIOD_DAY, "Antarctica/Vostok", utc(2023, 12, 17, 20),
         utc(2023, 12, 17, 17), utc(2023, 12, 18, 19)),
        # Havana's November (and its week) begin at the first midnight of 2026-11-01.
        (pb.PERIOD_MONTH, "America/Havana", utc(2026, 11, 1, 5, 30),
         utc(2026, 11, 1, 4), utc(2026, 12, 1, 5)),
        (pb.PERIOD_WEEK, "America/Havana", utc(2026, 11, 1, 5, 30),
         utc(2026, 10, 26, 4), utc(2026, 11, 2, 5)),
        # Almaty went from 2024-03-01 00:00 (UTC+6) back to Feb 29 23:00 (UTC+5), at 18:00 UTC:
        # March begins when 00:00 is shown again, an hour later; February keeps the hour.
        (pb.PERIOD_MONTH, "Asia/Almaty", utc(2024, 2, 29, 18, 30),
         utc(2024, 1, 31, 18), utc(2024, 2, 29, 19)),
        (pb.PERIOD_MONTH, "Asia/Almaty", utc(2024, 2, 29, 19),
         utc(2024, 2, 29, 19), utc(2024, 3, 31, 19)),
        # Dhaka went from 2010-01-01 00:00 (UTC+7) back to 2009-12-31 23:00 (UTC+6).
        (pb.PERIOD_YEAR, "Asia/Dhaka", utc(2009, 12, 31, 17, 30),
         utc(2008, 12, 31, 18), utc(2009, 12, 31, 18)),
    ],
)  # fmt: skip
def test_period_bounds_across_clock_changes(period, zone, now, start, end):
    forget_periods()
    assert bounds_ms(period, zone, now) == (start, end)
