"""Spend reports and budgetctl on generated traffic: what the ledger writer recorded adds up."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from budget_service import server
from budget_service.hotpath import keys
from budget_service.ledger import reconcile
from genproto.budget.v1 import budget_pb2 as pb
from servicekit.clock import OffsetClock
from tests.conftest import Stack
from tests.helpers import rid, upsert, usd

ROOT = Path(__file__).resolve().parents[1]
TEAMS, PROVIDERS, ENVS = ("search", "chat", "ads"), ("openai", "anthropic"), ("prod", "dev")
MODELS = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-5"}


async def generate(budgets, admin, org: str, calls: int = 60) -> dict[str, Counter[str]]:  # type: ignore[no-untyped-def]
    """Commits and refunds over random dimensions; answers net spend per dimension value."""
    await upsert(admin, org, "cap", usd("1000"))
    rng = random.Random(org)
    net: dict[str, Counter[str]] = {k: Counter() for k in ("team", "provider", "model", "env")}
    requests: Counter[str] = Counter()
    for _ in range(calls):
        team, provider, env = rng.choice(TEAMS), rng.choice(PROVIDERS), rng.choice(ENVS)
        subject = pb.Subject(org=org, team=team, provider=provider, model=MODELS[provider],
                             tags={"env": env})  # fmt: skip
        r = rid()
        await budgets.Reserve(pb.ReserveRequest(reservation_id=r, subject=subject,
                                                amount_nanos=usd("0.05")))  # fmt: skip
        done = await budgets.Commit(pb.CommitRequest(
            org=org, reservation_id=r, actual_nanos=rng.randrange(1, 60_000_000)))  # fmt: skip
        spent = done.charged_nanos
        if rng.random() < 0.3:
            back = await budgets.Refund(pb.RefundRequest(
                org=org, reservation_id=r, refund_id=rid("rf"),
                amount_nanos=rng.randrange(1, spent + 1)))  # fmt: skip
            spent -= back.refunded_nanos
        for key, value in (("team", team), ("provider", provider),
                           ("model", MODELS[provider]), ("env", env)):  # fmt: skip
            net[key][value] += spent
        requests[team] += 1
    net["requests"] = requests
    return net


def today_bounds() -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start - dt.timedelta(days=1), start + dt.timedelta(days=2)


async def report(admin, org: str, group_by: list[str], granularity: int) -> pb.SpendReport:  # type: ignore[no-untyped-def]
    start, end = today_bounds()
    request = pb.GetSpendReportRequest(org=org, group_by=group_by, granularity=granularity)
    request.start_time.FromDatetime(start)
    request.end_time.FromDatetime(end)
    answer: pb.SpendReport = await admin.GetSpendReport(request)
    return answer


def per_value(answer: pb.SpendReport, key: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for row in answer.rows:
        out[row.group[key]] += row.cost_nanos
    return out


async def test_spend_report_totals_equal_charges_minus_refunds_per_dimension(
    app: server.App, budgets, admin, org
):
    net = await generate(budgets, admin, org)
    assert await reconcile.compare(app.engine.scripts, app.pool, org=org) == []  # all written
    for key, group_by in (("team", "team"), ("provider", "provider"), ("model", "model"),
                          ("env", "tag:env")):  # fmt: skip
        for granularity in (pb.GRANULARITY_HOUR, pb.GRANULARITY_DAY, pb.GRANULARITY_MONTH):
            answer = await report(admin, org, [group_by], granularity)
            assert per_value(answer, group_by) == +net[key], (key, granularity)
            assert answer.total_cost_nanos == sum(net["team"].values())
            assert answer.total_requests == sum(net["requests"].values())
    by_team = await report(admin, org, ["team"], pb.GRANULARITY_DAY)
    requests = Counter({row.group["team"]: row.requests for row in by_team.rows})
    assert requests == net["requests"]


def budgetctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "budgetctl", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


async def test_budgetctl_exports_reports_as_csv_and_json(app: server.App, budgets, admin, org):
    net = await generate(budgets, admin, org, calls=20)
    assert await reconcile.compare(app.engine.scripts, app.pool, org=org) == []
    start, end = today_bounds()
    common = ["--addr", f"127.0.0.1:{app.port}", "report", "--org", org, "--group-by", "team",
              "--from", start.date().isoformat(), "--to", end.date().isoformat()]  # fmt: skip
    as_csv, as_json, as_table = await asyncio.gather(
        asyncio.to_thread(budgetctl, *common, "--format", "csv"),
        asyncio.to_thread(budgetctl, *common, "--format", "json"),
        asyncio.to_thread(budgetctl, *common),
    )
    assert as_csv.returncode == as_json.returncode == as_table.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert Counter({r["team"]: int(r["cost_nanos"]) for r in rows}) == +net["team"]
    assert all(Decimal(r["cost_usd"]) * 10**9 == int(r["cost_nanos"]) for r in rows)
    data = json.loads(as_json.stdout)
    assert data["total_cost_nanos"] == sum(net["team"].values())
    assert "total: $" in as_table.stdout and "team" in as_table.stdout.splitlines()[0]


async def test_budgetctl_errors_name_the_problem_with_reliable_exit_codes(app: server.App):
    bad_flag = await asyncio.to_thread(budgetctl, "report", "--org", "x", "--from", "yesterday",
                                       "--to", "2026-01-02")  # fmt: skip
    assert bad_flag.returncode == 2 and "--from" in bad_flag.stderr
    refused = await asyncio.to_thread(
        budgetctl, "--addr", f"127.0.0.1:{app.port}", "report", "--org", "x", "--from",
        "2026-01-02", "--to", "2026-01-01")  # fmt: skip
    assert refused.returncode == 3 and "INVALID_ARGUMENT" in refused.stderr
    assert "end_time" in refused.stderr
    down = await asyncio.to_thread(
        budgetctl, "--addr", "127.0.0.1:1", "--timeout", "2", "report", "--org", "x",
        "--from", "2026-01-01", "--to", "2026-01-02")  # fmt: skip
    assert down.returncode == 4 and "UNAVAILABLE" in down.stderr


@pytest.fixture
def store_env(stack: Stack) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": stack.redis.url, "DATABASE_URL": stack.postgres.url}


async def test_budgetctl_reconcile_reports_a_drifted_counter_and_exits_1(
    app: server.App, budgets, admin, org, store_env
):
    await generate(budgets, admin, org, calls=5)
    clean = await asyncio.to_thread(budgetctl, "reconcile", "--org", org, env=store_env)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "no differences" in clean.stdout
    uid = next(iter(k for k in await app.redis.hkeys(keys.config(org)) if k != "_v"))
    await app.redis.hincrby(keys.budget(org, uid), "reserved", 5)
    try:
        drift = await asyncio.to_thread(budgetctl, "reconcile", "--org", org, "--json",
                                        env=store_env)  # fmt: skip
        assert drift.returncode == 1, drift.stderr
        [difference] = json.loads(drift.stdout)
        assert (difference["counter"], difference["redis_nanos"] - difference["ledger_nanos"]) == (
            "reserved", 5)  # fmt: skip
    finally:
        await app.redis.hincrby(keys.budget(org, uid), "reserved", -5)


@pytest.fixture
def moved_clock(clock: OffsetClock) -> Iterator[OffsetClock]:
    yield clock
    clock.offset_ms = 0


class Timed:
    """Commits and refunds through the service, each at a UTC time the test names.

    The clock runs on from each set time, so an event lands a few ms after it: a test puts
    events exactly on a bound (inside [start, end) at start_time, outside at end_time) or at
    least a minute before one, never just after.
    """

    def __init__(self, budgets, clock: OffsetClock, org: str) -> None:  # type: ignore[no-untyped-def]
        self.budgets, self.clock, self.org = budgets, clock, org

    def at(self, when: str) -> None:
        moment = dt.datetime.fromisoformat(when).replace(tzinfo=dt.UTC)
        self.clock.set_ms(int(moment.timestamp()) * 1000)

    async def commit(self, when: str, cost_nanos: int, team: str = "") -> str:
        self.at(when)
        r = rid()
        await self.budgets.Reserve(pb.ReserveRequest(
            reservation_id=r, subject=pb.Subject(org=self.org, team=team),
            amount_nanos=cost_nanos))  # fmt: skip
        done = await self.budgets.Commit(
            pb.CommitRequest(org=self.org, reservation_id=r, actual_nanos=cost_nanos)
        )
        assert done.charged_nanos == cost_nanos
        return r

    async def refund(self, when: str, reservation_id: str, amount_nanos: int) -> None:
        self.at(when)
        done = await self.budgets.Refund(pb.RefundRequest(
            org=self.org, reservation_id=reservation_id, refund_id=rid("rf"),
            amount_nanos=amount_nanos))  # fmt: skip
        assert done.refunded_nanos == amount_nanos


async def window(admin, org: str, start: str, end: str, granularity: int,  # type: ignore[no-untyped-def]
                 group_by: tuple[str, ...] = ()) -> pb.SpendReport:  # fmt: skip
    request = pb.GetSpendReportRequest(org=org, group_by=group_by, granularity=granularity)
    request.start_time.FromDatetime(dt.datetime.fromisoformat(start).replace(tzinfo=dt.UTC))
    request.end_time.FromDatetime(dt.datetime.fromisoformat(end).replace(tzinfo=dt.UTC))
    answer: pb.SpendReport = await admin.GetSpendReport(request)
    return answer


def rows(answer: pb.SpendReport) -> list[tuple[str, str, bool, dict[str, str], int, int]]:
    """(bucket start, bucket end, partial, group, cost, requests) per row."""
    return [(r.bucket_start.ToJsonString(), r.bucket_end.ToJsonString(), r.partial,
             dict(r.group), r.cost_nanos, r.requests) for r in answer.rows]  # fmt: skip


async def test_a_day_report_from_14_20_to_later_that_day_sums_the_ledger_inside_the_window(
    app: server.App, budgets, admin, moved_clock, org
):
    await upsert(admin, org, "cap", usd("1000"))
    t = Timed(budgets, moved_clock, org)
    early = await t.commit("2024-03-06 09:00", 1_000, "a")  # before the window
    await t.commit("2024-03-06 14:19", 2_000, "a")  # a minute before it
    await t.commit("2024-03-06 14:20", 4_000, "a")  # at start_time: inside
    b = await t.commit("2024-03-06 15:00", 8_000, "b")
    await t.refund("2024-03-06 16:00", early, 300)  # inside, of a commit outside
    await t.commit("2024-03-06 17:59", 16_000, "a")
    await t.commit("2024-03-06 18:00", 32_000, "b")  # at end_time: outside
    await t.refund("2024-03-06 19:00", b, 500)  # after the window
    moved_clock.offset_ms = 0
    assert await reconcile.compare(app.engine.scripts, app.pool, org=org) == []  # all written
    span = (org, "2024-03-06 14:20", "2024-03-06 18:00")
    day, end = "2024-03-06T00:00:00Z", "2024-03-07T00:00:00Z"

    by_team = await window(admin, *span, pb.GRANULARITY_DAY, ("team",))
    default = await window(admin, *span, pb.GRANULARITY_UNSPECIFIED, ("team",))
    week = await window(admin, *span, pb.GRANULARITY_WEEK)
    month = await window(admin, *span, pb.GRANULARITY_MONTH)
    hours = await window(admin, *span, pb.GRANULARITY_HOUR)

    assert rows(by_team) == [
        (day, end, True, {"team": "a"}, 4_000 - 300 + 16_000, 2),
        (day, end, True, {"team": "b"}, 8_000, 1),
    ]
    assert (by_team.total_cost_nanos, by_team.total_requests) == (27_700, 3)
    assert default == by_team
    assert rows(week) == [("2024-03-04T00:00:00Z", "2024-03-11T00:00:00Z", True, {}, 27_700, 3)]
    assert rows(month) == [("2024-03-01T00:00:00Z", "2024-04-01T00:00:00Z", True, {}, 27_700, 3)]
    assert [(r[0][11:16], r[2], r[4]) for r in rows(hours)] == [
        ("14:00", True, 4_000),
        ("15:00", False, 8_000),
        ("16:00", False, -300),
        ("17:00", False, 16_000),
    ]

    as_json = await asyncio.to_thread(
        budgetctl, "--addr", f"127.0.0.1:{app.port}", "report", "--org", org, "--group-by",
        "team", "--from", "2024-03-06T14:20:00Z", "--to", "2024-03-06T18:00:00Z",
        "--format", "json")  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert [(r["bucket_start"], r["bucket_end"], r["partial"], r["team"], r["cost_nanos"])
            for r in data["rows"]] == [(day, end, True, "a", 19_700),
                                       (day, end, True, "b", 8_000)]  # fmt: skip


async def test_a_range_of_partial_first_day_whole_days_and_partial_last_day_sums_exactly(
    app: server.App, budgets, admin, moved_clock, org
):
    await upsert(admin, org, "cap", usd("1000"))
    t = Timed(budgets, moved_clock, org)
    a = await t.commit("2024-03-05 12:00", 1_000)  # Tuesday, before the window
    await t.commit("2024-03-06 14:19", 2_000)  # a minute before the window
    c = await t.commit("2024-03-06 14:20", 4_000)  # at start_time: inside
    d = await t.commit("2024-03-06 23:59", 8_000)
    await t.commit("2024-03-07 00:00", 16_000)
    await t.refund("2024-03-08 10:00", a, 500)  # inside, of a commit before the window
    await t.commit("2024-03-10 23:59", 32_000)  # Sunday
    await t.commit("2024-03-11 00:00", 64_000)  # Monday: a new week
    await t.refund("2024-03-12 09:00", d, 300)  # inside, on the partial last day
    await t.commit("2024-03-12 09:29", 128_000)
    await t.commit("2024-03-12 09:30", 256_000)  # at end_time: outside
    await t.refund("2024-03-12 10:00", c, 700)  # after the window
    moved_clock.offset_ms = 0
    assert await reconcile.compare(app.engine.scripts, app.pool, org=org) == []
    span = (org, "2024-03-06 14:20", "2024-03-12 09:30")

    days = await window(admin, *span, pb.GRANULARITY_DAY)
    weeks = await window(admin, *span, pb.GRANULARITY_WEEK)
    months = await window(admin, *span, pb.GRANULARITY_MONTH)
    hours = await window(admin, *span, pb.GRANULARITY_HOUR)

    def z(date: str) -> str:
        return f"2024-03-{date}T00:00:00Z"

    assert rows(days) == [
        (z("06"), z("07"), True, {}, 4_000 + 8_000, 2),
        (z("07"), z("08"), False, {}, 16_000, 1),
        (z("08"), z("09"), False, {}, -500, 0),
        (z("10"), z("11"), False, {}, 32_000, 1),
        (z("11"), z("12"), False, {}, 64_000, 1),
        (z("12"), z("13"), True, {}, -300 + 128_000, 1),
    ]
    assert rows(weeks) == [
        (z("04"), z("11"), True, {}, 4_000 + 8_000 + 16_000 - 500 + 32_000, 4),
        (z("11"), z("18"), True, {}, 64_000 - 300 + 128_000, 2),
    ]
    total = 4_000 + 8_000 + 16_000 - 500 + 32_000 + 64_000 - 300 + 128_000
    assert rows(months) == [(z("01"), "2024-04-01T00:00:00Z", True, {}, total, 6)]
    for answer in (days, weeks, months, hours):
        assert (answer.total_cost_nanos, answer.total_requests) == (total, 6)
