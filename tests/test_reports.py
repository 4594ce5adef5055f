"""GetSpendReport: usage from the PostgreSQL ledger tables, summed per bucket and dimension.

Rows are written straight into usage_records and, summed the way the ledger writer sums them,
into spend_daily, so the two tables always agree here as they do in production.
"""

from __future__ import annotations

import datetime as dt
import json

import asyncpg
import grpc
import pytest

from budget_service import server
from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc
from tests.helpers import bad_field, rid

AdminStub = budget_pb2_grpc.BudgetAdminServiceStub
UTC = dt.UTC


def at(text: str) -> dt.datetime:
    """A UTC moment from '2024-03-04 10:05'."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


async def record(
    pool: asyncpg.Pool,
    org: str,
    when: str,
    cost_nanos: int,
    *,
    refund: bool = False,
    input_tokens: int = 0,
    output_tokens: int = 0,
    tags: dict[str, str] | None = None,
    only: str = "",
    **dims: str,
) -> None:
    """One committed request (or, with refund=True, one refund) in both ledger tables.

    only="usage_records" or "spend_daily" writes that table alone: the tables then disagree,
    which shows which one a report read.
    """
    moment = at(when)
    requests = 0 if refund else 1
    values = {d: dims.get(d, "") for d in ("team", "project", "user", "provider", "model")}
    tags_json = json.dumps(tags or {})
    async with pool.acquire() as conn, conn.transaction():
        if only != "spend_daily":
            await conn.execute(
                "INSERT INTO usage_records (org, event_id, reservation_id, at, outcome, team,"
                ' project, "user", provider, model, tags, cost_nanos, requests, input_tokens,'
                " output_tokens) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb,"
                " $12, $13, $14, $15)",
                org,
                rid("e"),
                rid("r"),
                moment,
                "refund" if refund else "ok",
                *values.values(),
                tags_json,
                cost_nanos,
                requests,
                input_tokens,
                output_tokens,
            )
        if only != "usage_records":
            await conn.execute(
                'INSERT INTO spend_daily (org, day, team, project, "user", provider, model, tags,'
                " cost_nanos, requests, input_tokens, output_tokens)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12)"
                " ON CONFLICT (org, day, dims_hash) DO UPDATE"
                " SET cost_nanos = spend_daily.cost_nanos + excluded.cost_nanos,"
                " requests = spend_daily.requests + excluded.requests,"
                " input_tokens = spend_daily.input_tokens + excluded.input_tokens,"
                " output_tokens = spend_daily.output_tokens + excluded.output_tokens",
                org,
                moment.date(),
                *values.values(),
                tags_json,
                cost_nanos,
                requests,
                input_tokens,
                output_tokens,
            )


def request(
    org: str,
    start: str | None,
    end: str | None,
    granularity: pb.Granularity.ValueType = pb.GRANULARITY_DAY,
    group_by: tuple[str, ...] = (),
) -> pb.GetSpendReportRequest:
    out = pb.GetSpendReportRequest(org=org, group_by=group_by, granularity=granularity)
    if start is not None:
        out.start_time.FromDatetime(at(start))
    if end is not None:
        out.end_time.FromDatetime(at(end))
    return out


async def report(admin: AdminStub, org: str, start: str, end: str, *args: object) -> pb.SpendReport:
    result: pb.SpendReport = await admin.GetSpendReport(request(org, start, end, *args))  # type: ignore[arg-type]
    return result


def table(result: pb.SpendReport) -> list[tuple[str, dict[str, str], int, int]]:
    """(bucket start, group, cost, requests) per row, in the report's order."""
    return [
        (
            row.bucket_start.ToDatetime(UTC).isoformat(sep=" ")[:16],
            dict(row.group),
            row.cost_nanos,
            row.requests,
        )
        for row in result.rows
    ]


def spans(result: pb.SpendReport) -> list[tuple[str, str, bool, int]]:
    """(bucket start, bucket end, partial, cost) per row, in the report's order."""
    return [
        (
            row.bucket_start.ToDatetime(UTC).isoformat(sep=" ")[:16],
            row.bucket_end.ToDatetime(UTC).isoformat(sep=" ")[:16],
            row.partial,
            row.cost_nanos,
        )
        for row in result.rows
    ]


async def test_totals_net_refunds_against_commits_per_team(
    app: server.App, admin: AdminStub, org: str
) -> None:
    pool = app.pool
    await record(pool, org, "2024-03-04 09:00", 300, team="a", input_tokens=10, output_tokens=1)
    await record(pool, org, "2024-03-04 10:00", 500, team="a", input_tokens=20, output_tokens=2)
    await record(pool, org, "2024-03-04 11:00", -100, team="a", refund=True)
    await record(pool, org, "2024-03-04 12:00", 200, team="b", input_tokens=40, output_tokens=4)
    await record(pool, f"{org}-other", "2024-03-04 12:00", 9_999, team="a")

    result = await report(admin, org, "2024-03-04", "2024-03-05", pb.GRANULARITY_DAY, ("team",))

    assert table(result) == [
        ("2024-03-04 00:00", {"team": "a"}, 700, 2),
        ("2024-03-04 00:00", {"team": "b"}, 200, 1),
    ]
    assert [(r.input_tokens, r.output_tokens) for r in result.rows] == [(30, 3), (40, 4)]
    assert (result.total_cost_nanos, result.total_requests) == (900, 3)
    assert (result.total_input_tokens, result.total_output_tokens) == (70, 7)


async def test_hour_report_sums_usage_records_per_utc_hour_within_start_and_before_end(
    app: server.App, admin: AdminStub, org: str
) -> None:
    for when, cost in [
        ("2024-03-04 10:05", 1),  # before start_time
        ("2024-03-04 10:40", 2),
        ("2024-03-04 10:59", 4),
        ("2024-03-04 11:00", 8),
        ("2024-03-04 12:29", 16),
        ("2024-03-04 12:30", 32),  # at end_time: excluded
    ]:
        await record(app.pool, org, when, cost)

    result = await report(admin, org, "2024-03-04 10:30", "2024-03-04 12:30", pb.GRANULARITY_HOUR)

    assert table(result) == [
        ("2024-03-04 10:00", {}, 6, 2),
        ("2024-03-04 11:00", {}, 8, 1),
        ("2024-03-04 12:00", {}, 16, 1),
    ]
    assert result.total_cost_nanos == 30


async def test_hour_and_day_reports_agree_over_whole_days(
    app: server.App, admin: AdminStub, org: str
) -> None:
    for when, cost, model in [
        ("2024-03-04 00:00", 5, "m1"),
        ("2024-03-04 13:00", 7, "m2"),
        ("2024-03-05 23:59", 11, "m1"),
    ]:
        await record(app.pool, org, when, cost, model=model, input_tokens=cost)

    hourly = await report(admin, org, "2024-03-04", "2024-03-06", pb.GRANULARITY_HOUR, ("model",))
    daily = await report(admin, org, "2024-03-04", "2024-03-06", pb.GRANULARITY_DAY, ("model",))

    def totals(result: pb.SpendReport) -> tuple[int, int, int]:
        return (result.total_cost_nanos, result.total_requests, result.total_input_tokens)

    assert totals(hourly) == totals(daily) == (23, 3, 23)
    assert (
        [r[1:] for r in table(hourly)]
        == [r[1:] for r in table(daily)]
        == [
            ({"model": "m1"}, 5, 1),
            ({"model": "m2"}, 7, 1),
            ({"model": "m1"}, 11, 1),
        ]
    )


async def test_day_week_and_month_buckets_start_at_utc_midnight_monday_and_the_first(
    app: server.App, admin: AdminStub, org: str
) -> None:
    for when, cost in [
        ("2024-02-28 23:59", 1),  # Wednesday
        ("2024-03-03 00:00", 2),  # Sunday: same week as the Wednesday
        ("2024-03-04 00:00", 4),  # Monday: a new week
        ("2024-03-31 12:00", 8),  # Sunday of the week starting 2024-03-25
        ("2024-04-01 00:00", 16),  # at end_time: excluded
    ]:
        await record(app.pool, org, when, cost)
    span = (org, "2024-02-26", "2024-04-01")

    days = await report(admin, *span, pb.GRANULARITY_DAY)
    weeks = await report(admin, *span, pb.GRANULARITY_WEEK)
    months = await report(admin, *span, pb.GRANULARITY_MONTH)
    default = await report(admin, *span, pb.GRANULARITY_UNSPECIFIED)

    assert [(r[0], r[2]) for r in table(days)] == [
        ("2024-02-28 00:00", 1),
        ("2024-03-03 00:00", 2),
        ("2024-03-04 00:00", 4),
        ("2024-03-31 00:00", 8),
    ]
    assert [(r[0], r[2]) for r in table(weeks)] == [
        ("2024-02-26 00:00", 3),
        ("2024-03-04 00:00", 4),
        ("2024-03-25 00:00", 8),
    ]
    assert [(r[0], r[2]) for r in table(months)] == [
        ("2024-02-01 00:00", 1),
        ("2024-03-01 00:00", 14),
    ]
    assert default == days


async def test_group_by_provider_and_model_gives_one_row_per_pair(
    app: server.App, admin: AdminStub, org: str
) -> None:
    for provider, model, cost in [
        ("openai", "gpt-4o", 10),
        ("openai", "gpt-4o", 20),
        ("openai", "gpt-4o-mini", 1),
        ("anthropic", "claude", 40),
    ]:
        await record(app.pool, org, "2024-03-04 10:00", cost, provider=provider, model=model)

    result = await report(
        admin, org, "2024-03-04", "2024-03-05", pb.GRANULARITY_DAY, ("provider", "model")
    )

    assert [(r[1], r[2], r[3]) for r in table(result)] == [
        ({"provider": "anthropic", "model": "claude"}, 40, 1),
        ({"provider": "openai", "model": "gpt-4o"}, 30, 2),
        ({"provider": "openai", "model": "gpt-4o-mini"}, 1, 1),
    ]


@pytest.mark.parametrize("granularity", [pb.GRANULARITY_HOUR, pb.GRANULARITY_DAY])
async def test_group_by_tag_reads_the_tag_value_and_empty_when_a_row_lacks_it(
    app: server.App, admin: AdminStub, org: str, granularity: pb.Granularity.ValueType
) -> None:
    await record(app.pool, org, "2024-03-04 10:00", 1, tags={"env": "prod", "app": "x"})
    await record(app.pool, org, "2024-03-04 10:10", 2, tags={"env": "prod"})
    await record(app.pool, org, "2024-03-04 10:20", 4, tags={"env": "dev"})
    await record(app.pool, org, "2024-03-04 10:30", 8, tags={"app": "x"})
    await record(app.pool, org, "2024-03-04 10:40", 16)

    result = await report(admin, org, "2024-03-04", "2024-03-05", granularity, ("tag:env", "team"))

    assert sorted((r[1]["tag:env"], r[1]["team"], r[2]) for r in table(result)) == [
        ("", "", 24),
        ("dev", "", 4),
        ("prod", "", 3),
    ]


async def test_a_tag_name_with_quotes_is_matched_as_a_name_not_run_as_sql(
    app: server.App, admin: AdminStub, org: str
) -> None:
    name = "x'); DELETE FROM usage_records; --"
    await record(app.pool, org, "2024-03-04 10:00", 5, tags={name: "v"})

    result = await report(
        admin, org, "2024-03-04", "2024-03-05", pb.GRANULARITY_HOUR, (f"tag:{name}",)
    )

    assert table(result) == [("2024-03-04 10:00", {f"tag:{name}": "v"}, 5, 1)]
    assert await app.pool.fetchval("SELECT count(*) FROM usage_records WHERE org = $1", org) == 1


async def test_blended_cost_per_request_rounds_half_up_and_is_zero_without_requests(
    app: server.App, admin: AdminStub, org: str
) -> None:
    await record(app.pool, org, "2024-03-04 10:00", 1, team="half")
    await record(app.pool, org, "2024-03-04 10:00", 2, team="half")  # 3 / 2 = 1.5 -> 2
    for cost in (10, 10, 11):  # 31 / 3 = 10.33 -> 10
        await record(app.pool, org, "2024-03-04 10:00", cost, team="third")
    await record(app.pool, org, "2024-03-04 10:00", 100, team="refunded")
    await record(app.pool, org, "2024-03-05 10:00", -40, team="refunded", refund=True)

    result = await report(admin, org, "2024-03-04", "2024-03-06", pb.GRANULARITY_DAY, ("team",))

    assert [(r.group["team"], r.cost_nanos, r.cost_per_request_nanos) for r in result.rows] == [
        ("half", 3, 2),
        ("refunded", 100, 100),
        ("third", 31, 10),
        ("refunded", -40, 0),  # a day with only a refund: no requests
    ]
    # 94 nanos over 6 requests = 15.67 -> 16
    assert (result.total_cost_nanos, result.total_requests) == (94, 6)
    assert result.cost_per_request_nanos == 16


async def test_share_basis_points_is_each_rows_part_of_the_report_total(
    app: server.App, admin: AdminStub, org: str
) -> None:
    await record(app.pool, org, "2024-03-04 10:00", 1_000, model="small")
    await record(app.pool, org, "2024-03-04 10:00", 2_000, model="large")
    await record(app.pool, org, "2024-03-04 10:00", 100, model="tiny")
    await record(app.pool, org, "2024-03-05 10:00", -100, model="tiny", refund=True)

    result = await report(admin, org, "2024-03-04", "2024-03-06", pb.GRANULARITY_DAY, ("model",))

    # total 3000: 2000/3000 = 6666.67 -> 6667, 1000/3000 = 3333.33 -> 3333, 100/3000 = 333.3
    assert [(r.group["model"], r.share_basis_points) for r in result.rows] == [
        ("large", 6667),
        ("small", 3333),
        ("tiny", 333),
        ("tiny", -333),
    ]


async def test_shares_are_zero_when_refunds_bring_the_total_to_zero(
    app: server.App, admin: AdminStub, org: str
) -> None:
    await record(app.pool, org, "2024-03-04 10:00", 50)
    await record(app.pool, org, "2024-03-04 11:00", -50, refund=True)

    result = await report(admin, org, "2024-03-04", "2024-03-05", pb.GRANULARITY_HOUR)

    assert [(r.cost_nanos, r.share_basis_points) for r in result.rows] == [(50, 0), (-50, 0)]
    assert (result.total_cost_nanos, result.cost_per_request_nanos) == (0, 0)


async def test_a_range_without_usage_reports_no_rows_and_zero_totals(
    admin: AdminStub, org: str
) -> None:
    result = await report(admin, org, "2024-03-04", "2024-04-04", pb.GRANULARITY_WEEK, ("team",))

    assert list(result.rows) == []
    assert result == pb.SpendReport()


async def test_a_report_over_the_row_limit_is_refused_rather_than_cut_short(
    app: server.App, admin: AdminStub, org: str
) -> None:
    await app.pool.execute(
        'INSERT INTO spend_daily (org, day, team, project, "user", provider, model, tags,'
        " cost_nanos, requests, input_tokens, output_tokens)"
        " SELECT $1, DATE '2024-03-04', '', '', 'u' || n, '', '', '{}', 1, 1, 0, 0"
        " FROM generate_series(1, 20001) AS n",
        org,
    )
    day = ("2024-03-04", "2024-03-05", pb.GRANULARITY_DAY)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await report(admin, org, *day, ("user",))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "more than 20000 rows" in str(caught.value.details())

    whole = await report(admin, org, *day)
    assert (len(whole.rows), whole.total_cost_nanos) == (1, 20_001)


async def test_day_and_week_reports_with_bounds_inside_a_day_are_answered_not_refused(
    app: server.App, admin: AdminStub, org: str
) -> None:
    for when, cost in [
        ("2024-03-04 05:59", 1),  # before the day report's start
        ("2024-03-04 06:00", 2),
        ("2024-03-10 23:59", 4),
        ("2024-03-11 05:59", 8),
        ("2024-03-11 06:00", 16),  # at the week report's end
    ]:
        await record(app.pool, org, when, cost)

    day = await report(admin, org, "2024-03-04 06:00", "2024-03-05", pb.GRANULARITY_DAY)
    week = await report(admin, org, "2024-03-04", "2024-03-11 06:00", pb.GRANULARITY_WEEK)

    assert spans(day) == [("2024-03-04 00:00", "2024-03-05 00:00", True, 2)]
    assert spans(week) == [
        ("2024-03-04 00:00", "2024-03-11 00:00", False, 1 + 2 + 4),
        ("2024-03-11 00:00", "2024-03-18 00:00", True, 8),
    ]


async def test_whole_days_are_read_from_the_daily_rollup_and_the_edges_from_usage_records(
    app: server.App, admin: AdminStub, org: str
) -> None:
    # Rows written to one table only make the tables disagree: the sums show which was read.
    await record(app.pool, org, "2024-03-04 14:00", 1)  # before start_time
    await record(app.pool, org, "2024-03-04 15:00", 2)
    await record(app.pool, org, "2024-03-04 16:00", 4, only="spend_daily")  # partial day
    await record(app.pool, org, "2024-03-05 12:00", 8, only="usage_records")  # a whole day
    await record(app.pool, org, "2024-03-06 12:00", 16, only="spend_daily")  # a whole day
    await record(app.pool, org, "2024-03-07 08:00", 32, only="spend_daily")  # partial day
    await record(app.pool, org, "2024-03-07 09:00", 64)
    await record(app.pool, org, "2024-03-07 09:30", 128)  # at end_time
    span = (org, "2024-03-04 14:20", "2024-03-07 09:30")

    days = await report(admin, *span, pb.GRANULARITY_DAY)
    month = await report(admin, *span, pb.GRANULARITY_MONTH)
    # A range without a whole UTC day is read from usage_records alone.
    inside_a_day = await report(admin, org, "2024-03-05 10:00", "2024-03-05 13:00")
    across_midnight = await report(admin, org, "2024-03-06 20:00", "2024-03-07 08:30")

    assert spans(days) == [
        ("2024-03-04 00:00", "2024-03-05 00:00", True, 2),
        ("2024-03-06 00:00", "2024-03-07 00:00", False, 16),
        ("2024-03-07 00:00", "2024-03-08 00:00", True, 64),
    ]
    assert spans(month) == [("2024-03-01 00:00", "2024-04-01 00:00", True, 2 + 16 + 64)]
    assert spans(inside_a_day) == [("2024-03-05 00:00", "2024-03-06 00:00", True, 8)]
    assert list(across_midnight.rows) == []


async def test_buckets_carry_their_calendar_end_and_are_partial_only_where_the_range_cuts_them(
    app: server.App, admin: AdminStub, org: str
) -> None:
    await record(app.pool, org, "2024-02-29 10:00", 1)  # a leap day
    await record(app.pool, org, "2024-12-31 23:00", 2)
    await record(app.pool, org, "2025-01-01 00:30", 4)

    whole = await report(admin, org, "2024-02-01", "2025-02-01", pb.GRANULARITY_MONTH)
    cut = await report(admin, org, "2024-02-29 10:00", "2025-01-01 00:31", pb.GRANULARITY_MONTH)
    hours = await report(admin, org, "2024-12-31 23:00", "2025-01-01 00:45", pb.GRANULARITY_HOUR)
    week = await report(admin, org, "2024-12-31", "2025-01-02", pb.GRANULARITY_WEEK)

    assert spans(whole) == [
        ("2024-02-01 00:00", "2024-03-01 00:00", False, 1),
        ("2024-12-01 00:00", "2025-01-01 00:00", False, 2),
        ("2025-01-01 00:00", "2025-02-01 00:00", False, 4),
    ]
    assert spans(cut) == [
        ("2024-02-01 00:00", "2024-03-01 00:00", True, 1),
        ("2024-12-01 00:00", "2025-01-01 00:00", False, 2),
        ("2025-01-01 00:00", "2025-02-01 00:00", True, 4),
    ]
    assert spans(hours) == [
        ("2024-12-31 23:00", "2025-01-01 00:00", False, 2),
        ("2025-01-01 00:00", "2025-01-01 01:00", True, 4),
    ]
    assert spans(week) == [("2024-12-30 00:00", "2025-01-06 00:00", True, 2 + 4)]


@pytest.mark.parametrize("granularity", [pb.GRANULARITY_HOUR, pb.GRANULARITY_DAY])
async def test_bounds_with_nanoseconds_select_the_rows_an_exact_comparison_would(
    app: server.App, admin: AdminStub, org: str, granularity: pb.Granularity.ValueType
) -> None:
    await record(app.pool, org, "2024-03-04 10:00:00", 1)  # 500 ns before start_time
    await record(app.pool, org, "2024-03-04 10:00:00.000001", 2)
    await record(app.pool, org, "2024-03-04 11:00:00", 4)  # 500 ns before end_time
    await record(app.pool, org, "2024-03-04 11:00:00.000001", 8)
    query = request(org, "2024-03-04 10:00", "2024-03-04 11:00", granularity)
    query.start_time.nanos = query.end_time.nanos = 500

    result = await admin.GetSpendReport(query)

    assert result.total_cost_nanos == 2 + 4


BAD_REQUESTS = [
    ("unknown_group_by_key", ("2024-03-04", "2024-03-05", 0, ("team", "color")), "group_by"),
    ("tag_without_a_name", ("2024-03-04", "2024-03-05", 0, ("tag:",)), "group_by"),
    ("group_by_key_twice", ("2024-03-04", "2024-03-05", 0, ("team", "team")), "group_by"),
    ("missing_start_time", (None, "2024-03-05", 0, ()), "start_time"),
    ("missing_end_time", ("2024-03-04", None, 0, ()), "end_time"),
    ("end_before_start", ("2024-03-05", "2024-03-04", 0, ()), "end_time"),
    ("end_equal_to_start", ("2024-03-04", "2024-03-04", pb.GRANULARITY_HOUR, ()), "end_time"),
    ("end_after_9999_01_01", ("9999-12-30", "9999-12-31 12:00", 0, ()), "end_time"),
    ("unknown_granularity", ("2024-03-04", "2024-03-05", 99, ()), "granularity"),
]


@pytest.mark.parametrize(
    ("start", "end", "granularity", "group_by", "field"),
    [case[1] + (case[2],) for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
async def test_bad_request_is_invalid_argument_naming_the_field(
    admin: AdminStub,
    org: str,
    start: str | None,
    end: str | None,
    granularity: pb.Granularity.ValueType,
    group_by: tuple[str, ...],
    field: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.GetSpendReport(request(org, start, end, granularity, group_by))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field(caught.value) == field


async def test_unknown_group_by_key_lists_the_valid_keys(admin: AdminStub, org: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.GetSpendReport(request(org, "2024-03-04", "2024-03-05", group_by=("color",)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field(caught.value) == "group_by"
    assert "team, project, user, provider, model, tag:<name>" in str(caught.value.details())


async def test_too_many_hour_buckets_is_refused_with_advice_to_use_a_coarser_granularity(
    admin: AdminStub, org: str
) -> None:
    hours = request(org, "2024-01-01", "2025-03-01", pb.GRANULARITY_HOUR)  # ~10,200 hours
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.GetSpendReport(hours)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field(caught.value) == "end_time"
    assert "coarser granularity" in str(caught.value.details())

    days = request(org, "2024-01-01", "2025-03-01", pb.GRANULARITY_DAY)
    assert (await admin.GetSpendReport(days)).rows == []


async def test_missing_org_is_invalid_argument_naming_org(admin: AdminStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.GetSpendReport(request("", "2024-03-04", "2024-03-05"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field(caught.value) == "org"
