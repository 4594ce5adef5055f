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
from decimal import Decimal
from pathlib import Path

import pytest

from budget_service import server
from budget_service.hotpath import keys
from budget_service.ledger import reconcile
from genproto.budget.v1 import budget_pb2 as pb
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
