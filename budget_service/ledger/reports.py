"""Spend reports: the PostgreSQL ledger's usage summed per UTC time bucket and chosen dimensions.

Any range [start, end) at any granularity. usage_records holds one row per commit and one per
refund (negative cost); spend_daily holds the same rows summed per UTC day, and is what keeps
a month's report from reading a month of requests. So a report reads the whole UTC days inside
its range from spend_daily and only the parts of a day at its edges (or all of a range without
a whole day, and every HOUR report) from usage_records: the same rows the rollup is made of,
so the sums agree to the nano with a report over whole days. Weeks start on Monday. A bucket is
labeled by its calendar start even when the range starts later, and flagged `partial` when the
range covers only part of it. Buckets without usage are left out. Money stays in integers from
the SQL sums to the reply: PostgreSQL sums bigints exactly (as numeric).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg
from google.protobuf import timestamp_pb2

from genproto.budget.v1 import budget_pb2 as pb
from servicekit import validation as v
from servicekit.db import guard
from servicekit.errors import InvalidArgument

Nanos = int

MAX_BUCKETS = 10_000
# Typical rows are about 100 bytes: keeps a reply under gRPC's default 4 MiB receive limit.
MAX_ROWS = 20_000
MAX_GROUP_KEYS = 8
BASIS_POINTS = 10_000
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
DAY = dt.timedelta(days=1)
# Bounds stay a month clear of datetime's year-9999 end, so every bucket's end is a datetime.
LATEST_END = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)

# group_by key -> the column it reads. `tag:<name>` reads tags ->> <name>, the name bound as a
# parameter. Nothing a caller sends is ever spliced into the SQL text.
COLUMNS = {
    "org": "org",
    "team": "team",
    "project": "project",
    "user": '"user"',
    "provider": "provider",
    "model": "model",
}
VALID_KEYS = "org, team, project, user, provider, model, tag:<name>"

UNITS: dict[int, str] = {
    pb.GRANULARITY_HOUR: "hour",
    pb.GRANULARITY_DAY: "day",
    pb.GRANULARITY_WEEK: "week",
    pb.GRANULARITY_MONTH: "month",
}
STEPS: dict[int, dt.timedelta] = {
    pb.GRANULARITY_HOUR: dt.timedelta(hours=1),
    pb.GRANULARITY_DAY: dt.timedelta(days=1),
    pb.GRANULARITY_WEEK: dt.timedelta(weeks=1),
}
COARSER: dict[int, str] = {
    pb.GRANULARITY_HOUR: "GRANULARITY_DAY, _WEEK or _MONTH",
    pb.GRANULARITY_DAY: "GRANULARITY_WEEK or _MONTH",
    pb.GRANULARITY_WEEK: "GRANULARITY_MONTH",
    pb.GRANULARITY_MONTH: "",
}


@dataclass(frozen=True)
class ReportQuery:
    """A validated GetSpendReport request: UTC bounds [start, end), never UNSPECIFIED."""

    org: str
    group_by: tuple[str, ...]
    start: dt.datetime
    end: dt.datetime
    granularity: int


@dataclass(frozen=True)
class Sources:
    """Where a report's usage is read: usage_records ranges and whole UTC days of spend_daily."""

    records: tuple[tuple[dt.datetime, dt.datetime], ...]  # [from, to) of usage_records.at
    days: tuple[dt.date, dt.date] | None  # [first, last) of spend_daily.day


@dataclass(frozen=True)
class SpendLine:
    """One bucket and group's sums, as the query returns them."""

    bucket_start: dt.datetime
    bucket_end: dt.datetime
    partial: bool
    group: dict[str, str]
    cost_nanos: Nanos
    requests: int
    input_tokens: int
    output_tokens: int


def parse_request(request: pb.GetSpendReportRequest) -> ReportQuery:
    """The request checked field by field; InvalidArgument names the first field at fault."""
    org = v.require_id("org", request.org)
    group_by = _group_by(list(request.group_by))
    v.check_enum("granularity", request.granularity, dict(pb.Granularity.items()))
    granularity = request.granularity or pb.GRANULARITY_DAY
    start = _timestamp("start_time", request.start_time, request.HasField("start_time"))
    end = _timestamp("end_time", request.end_time, request.HasField("end_time"))
    # Compared as sent: rounding to microseconds can make two different bounds equal.
    first, last = request.start_time, request.end_time
    if (last.seconds, last.nanos) <= (first.seconds, first.nanos):
        raise InvalidArgument(
            "end_time",
            f"is {_iso(end)}, not after start_time {_iso(start)}; the range is"
            " [start_time, end_time)",
        )
    if end > LATEST_END:
        raise InvalidArgument("end_time", f"is {_iso(end)}; a report ends by {_iso(LATEST_END)}")
    buckets = bucket_count(start, end, granularity)
    if buckets > MAX_BUCKETS:
        coarser = COARSER[granularity]
        hint = f"use a coarser granularity ({coarser}) or " if coarser else ""
        raise InvalidArgument(
            "end_time",
            f"the range spans {buckets} {UNITS[granularity]} buckets; at most {MAX_BUCKETS}"
            f" are allowed: {hint}narrow the range",
        )
    return ReportQuery(org, group_by, start, end, granularity)


def _group_by(keys: list[str]) -> tuple[str, ...]:
    if len(keys) > MAX_GROUP_KEYS:
        raise InvalidArgument("group_by", f"has {len(keys)} keys; at most {MAX_GROUP_KEYS}")
    checked: list[str] = []
    for key in keys:
        if key.startswith("tag:"):
            if not key[4:]:
                raise InvalidArgument("group_by", "'tag:' needs a tag name, e.g. tag:env")
            # In NFC, as the ledger records subjects' tags.
            key = "tag:" + v.check_tag_name("group_by", key[4:])
        elif key not in COLUMNS:
            raise InvalidArgument("group_by", f"unknown key {v.shown(key)}; use {VALID_KEYS}")
        if key in checked:
            raise InvalidArgument("group_by", f"lists {v.shown(key)} twice")
        checked.append(key)
    return tuple(checked)


def _timestamp(field: str, stamp: timestamp_pb2.Timestamp, present: bool) -> dt.datetime:
    """The bound rounded up to a microsecond (PostgreSQL's resolution).

    Ledger times are whole microseconds, so `at >= bound` and `at < bound` select the same rows
    with the bound rounded up; ToDatetime alone would round down and take in a row at the
    microsecond just before a bound that has nanoseconds.
    """
    if not present:
        raise InvalidArgument(field, "is required (the report covers [start_time, end_time))")
    try:
        moment = stamp.ToDatetime(dt.UTC)
        return moment + dt.timedelta(microseconds=1) if stamp.nanos % 1000 else moment
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(field, f"is not a valid timestamp: {exc}") from exc


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def truncate(moment: dt.datetime, granularity: int) -> dt.datetime:
    """The start of the UTC bucket holding `moment` (like PostgreSQL's date_trunc)."""
    hour = moment.replace(minute=0, second=0, microsecond=0)
    if granularity == pb.GRANULARITY_HOUR:
        return hour
    day = hour.replace(hour=0)
    if granularity == pb.GRANULARITY_DAY:
        return day
    if granularity == pb.GRANULARITY_WEEK:
        return day - dt.timedelta(days=day.weekday())
    return day.replace(day=1)


def bucket_end(bucket_start: dt.datetime, granularity: int) -> dt.datetime:
    """The end (exclusive) of the bucket starting at `bucket_start`: the next one's start."""
    if granularity == pb.GRANULARITY_MONTH:
        year, month = divmod(bucket_start.month, 12)
        return bucket_start.replace(year=bucket_start.year + year, month=month + 1)
    return bucket_start + STEPS[granularity]


def bucket_count(start: dt.datetime, end: dt.datetime, granularity: int) -> int:
    """How many buckets [start, end) touches."""
    first = truncate(start, granularity)
    if granularity == pb.GRANULARITY_MONTH:
        last = truncate(end - dt.timedelta(microseconds=1), granularity)
        return (last.year - first.year) * 12 + last.month - first.month + 1
    step = STEPS[granularity]
    return -(-(end - first) // step)


def ratio_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator (denominator > 0) to the nearest integer, halves away from zero."""
    quotient = (2 * abs(numerator) + denominator) // (2 * denominator)
    return quotient if numerator >= 0 else -quotient


def cost_per_request(cost_nanos: Nanos, requests: int) -> Nanos:
    """Blended cost of one request; 0 when there were none (a bucket of refunds only)."""
    return ratio_half_up(cost_nanos, requests) if requests > 0 else 0


def share_basis_points(cost_nanos: Nanos, total_nanos: Nanos) -> int:
    """cost's share of total in basis points; 0 when the total is not positive.

    Clamped to int32: refunds netted into a small total can make one row's share huge.
    """
    if total_nanos <= 0:
        return 0
    return min(max(ratio_half_up(cost_nanos * BASIS_POINTS, total_nanos), INT32_MIN), INT32_MAX)


def sources(query: ReportQuery) -> Sources:
    """The whole UTC days inside the range from spend_daily, the rest from usage_records."""
    if query.granularity == pb.GRANULARITY_HOUR:
        return Sources(((query.start, query.end),), None)
    day = truncate(query.start, pb.GRANULARITY_DAY)
    first_midnight = day if day == query.start else day + DAY
    last_midnight = truncate(query.end, pb.GRANULARITY_DAY)
    if first_midnight >= last_midnight:  # no whole day: less than two days of usage_records
        return Sources(((query.start, query.end),), None)
    edges = ((query.start, first_midnight), (last_midnight, query.end))
    return Sources(
        tuple((lo, hi) for lo, hi in edges if lo < hi),
        (first_midnight.date(), last_midnight.date()),
    )


def build_sql(query: ReportQuery) -> tuple[str, list[Any]]:
    """The report's SQL and its parameters, from whitelisted column expressions only.

    Both tables name the dimension columns alike, so one list of expressions reads either.
    """
    params: list[Any] = [query.org, UNITS[query.granularity]]
    dims: list[str] = []
    for key in query.group_by:
        if key.startswith("tag:"):
            params.append(key[4:])
            dims.append(f"coalesce(tags ->> ${len(params)}, '')")
        else:
            dims.append(COLUMNS[key])
    inner = "".join(f", {d} AS g{i}" for i, d in enumerate(dims))
    columns = f"{inner}, cost_nanos, requests, input_tokens, output_tokens"
    parts: list[str] = []
    plan = sources(query)
    # One branch per range, each a plain range on its table's index (an OR would hide it).
    for lo, hi in plan.records:
        params += [lo, hi]
        parts.append(
            f"SELECT date_trunc($2, at AT TIME ZONE 'UTC') AS bucket{columns} FROM usage_records"
            f" WHERE org = $1 AND at >= ${len(params) - 1} AND at < ${len(params)}"
        )
    if plan.days is not None:
        params += list(plan.days)
        parts.append(
            f"SELECT date_trunc($2, day::timestamp) AS bucket{columns} FROM spend_daily"
            f" WHERE org = $1 AND day >= ${len(params) - 1} AND day < ${len(params)}"
        )
    params.append(MAX_ROWS + 1)
    outer = "".join(f", g{i}" for i in range(len(dims)))
    sql = (
        f"SELECT bucket{outer}, sum(cost_nanos) AS cost_nanos, sum(requests) AS requests,"
        " sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens"
        f" FROM ({' UNION ALL '.join(parts)}) AS usage"
        f" GROUP BY bucket{outer} ORDER BY bucket{outer} LIMIT ${len(params)}"
    )
    return sql, params


class SpendReports:
    """GetSpendReport's reads of the ledger tables."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def lines(self, query: ReportQuery) -> list[SpendLine]:
        """The report's rows, ordered by bucket then group values."""
        sql, params = build_sql(query)
        async with guard():
            rows = await self.pool.fetch(sql, *params)
        if len(rows) > MAX_ROWS:
            coarser = COARSER[query.granularity]
            hint = f"a coarser granularity ({coarser}), " if coarser else ""
            raise InvalidArgument(
                "group_by",
                f"the report has more than {MAX_ROWS} rows; use {hint}fewer group_by keys"
                " or a narrower range",
            )
        lines = []
        for r in rows:
            # date_trunc of a UTC wall-clock time: a naive timestamp that is UTC.
            start = r["bucket"].replace(tzinfo=dt.UTC)
            end = bucket_end(start, query.granularity)
            line = SpendLine(
                bucket_start=start,
                bucket_end=end,
                partial=start < query.start or end > query.end,
                group={key: r[f"g{i}"] for i, key in enumerate(query.group_by)},
                cost_nanos=int(r["cost_nanos"]),
                requests=int(r["requests"]),
                input_tokens=int(r["input_tokens"]),
                output_tokens=int(r["output_tokens"]),
            )
            lines.append(line)
        return lines

    async def report(self, query: ReportQuery) -> pb.SpendReport:
        """The SpendReport of a validated query."""
        return to_proto(await self.lines(query))


def to_proto(lines: list[SpendLine]) -> pb.SpendReport:
    """Rows with their blended cost and share, and the totals over all of them."""
    total_cost = sum(line.cost_nanos for line in lines)
    total_requests = sum(line.requests for line in lines)
    report = pb.SpendReport(
        total_cost_nanos=total_cost,
        total_requests=total_requests,
        total_input_tokens=sum(line.input_tokens for line in lines),
        total_output_tokens=sum(line.output_tokens for line in lines),
        cost_per_request_nanos=cost_per_request(total_cost, total_requests),
    )
    for line in lines:
        row = report.rows.add(
            group=line.group,
            cost_nanos=line.cost_nanos,
            requests=line.requests,
            input_tokens=line.input_tokens,
            output_tokens=line.output_tokens,
            cost_per_request_nanos=cost_per_request(line.cost_nanos, line.requests),
            share_basis_points=share_basis_points(line.cost_nanos, total_cost),
            partial=line.partial,
        )
        row.bucket_start.FromDatetime(line.bucket_start)
        row.bucket_end.FromDatetime(line.bucket_end)
    return report
