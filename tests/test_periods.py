"""Periods are calendar-aligned in the budget's time zone and reset lazily, holds carrying over."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import grpc
import pytest

from budget_service.hotpath.periods import bounds_ms
from genproto.budget.v1 import budget_pb2 as pb
from servicekit.clock import OffsetClock
from tests.helpers import reserve, status, upsert, usd

NEW_YORK = ZoneInfo("America/New_York")


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


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
